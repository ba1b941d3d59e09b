"""Numerics fingerprint: `python scripts/fingerprint.py [--precision fp32 bf16] [--elementwise cpp|seq]`.

Trains each paper model for a few steps at paper size, through the training loop's own pieces
(config, data, seeding, batch sampler, `train_step`), and prints a digest of the losses and of
the final parameters. While long runs train, any change under `cerebral/` must leave this output
unchanged: then the runs' numerics are unchanged and they may resume with the new code.
Bit patterns depend on the CPU and on the oneDNN kernels it picks, so CI does not run this;
compare outputs made on the same machine.
"""

import cerebral  # noqa: F401  first: it sets OpenMP's wait policy before torch loads

# isort: split
import argparse
import hashlib
import sys

import torch

from cerebral import data
from cerebral.config import compose
from cerebral.elementwise import ELEMENTWISE, kernel_ops
from cerebral.errors import USER_ERRORS
from cerebral.steps import BatchSampler, device_name, keep_freed_memory, make_optimizer, train_step, use_deterministic_kernels
from cerebral.tasks import make_task

MODELS = ("single_lstm", "stacked_lstm", "cerebral_lstm")


def fingerprint(model_name, steps, precision, elementwise="aten"):
    """(losses, digest of the losses, digest of the final parameters) after `steps` steps."""
    cfg = compose(f"model={model_name}", f"train.precision={precision}", f"train.elementwise={elementwise}", "device=cpu")
    use_deterministic_kernels()
    torch.manual_seed(cfg.seed)
    task = make_task(cfg)
    model = task.model
    optimizer = make_optimizer(cfg.optim, model.parameters())
    sampler = BatchSampler(len(task), cfg.train, cfg.seed)
    losses = []
    for step, batch in enumerate(sampler.epoch()):
        if step == steps:
            break
        losses.append(train_step(model, optimizer, task.loss, batch, precision=precision).item())
    params = hashlib.sha256()
    for name, p in model.state_dict().items():
        params.update(name.encode())
        params.update(p.detach().contiguous().numpy().tobytes())
    loss_digest = hashlib.sha256(" ".join(map(repr, losses)).encode()).hexdigest()
    return losses, loss_digest[:16], params.hexdigest()[:16]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--elementwise", default="aten", choices=ELEMENTWISE,
                        help="the fused cores' elementwise work (train.elementwise); cpp and seq lines say so")
    args = parser.parse_args()
    paper = compose()
    one_epoch = paper.train.steps_per_epoch  # the steps are the first epoch's batches
    if not 1 <= args.steps <= one_epoch:
        sys.exit(f"error: --steps must be from 1 to {one_epoch} (one epoch), got {args.steps}")
    try:
        data.load(paper.data.dir)  # missing or corrupt data: one line, before any work
        if args.elementwise != "aten":
            kernel_ops()
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    keep_freed_memory()  # as the training loop does
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, {args.steps} steps at paper size")
    for precision in args.precision:
        for name in MODELS:
            losses, loss_digest, param_digest = fingerprint(name, args.steps, precision, args.elementwise)
            label = precision if args.elementwise == "aten" else f"{precision} {args.elementwise}"
            print(f"{label} {name:<14} losses {loss_digest}  parameters {param_digest}  "
                  f"last loss {losses[-1]!r}")


if __name__ == "__main__":
    main()
