"""Sample text from a trained run (the paper's Table 3):

    python -m cerebral.generate results/runs/cerebral_lstm/seed0 --prime "Moe_Szyslak:" --length 300

The checkpoint carries the vocabulary and the run's config.yaml the model, so nothing else is
needed. `--save` writes the sample with its settings to sample.json in the run directory.
"""

import argparse
import math
import sys
from pathlib import Path

import torch

from cerebral import rundir
from cerebral.errors import USER_ERRORS, CheckpointError, ConfigError
from cerebral.models import build_model

DEFAULTS = {"prime": "Moe_Szyslak:", "length": 300, "temperature": 1.0, "seed": 0}


def load_trained(run_dir, device="cpu"):
    """The run's model in eval mode, and its vocabulary: from its checkpoint, or where there is
    none, from its committed weights (model.pt, checked against its manifest)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist: give the folder of a trained run, the one holding "
                          f"{rundir.CHECKPOINT} or {rundir.MODEL}")
    if run_dir.is_file():
        raise ConfigError(f"{run_dir} is a file: give the run's folder (the one holding {rundir.CHECKPOINT} and "
                          f"{rundir.CONFIG}), e.g. {run_dir.parent}")
    state, passed_over = rundir.readable_checkpoint(run_dir)  # only reads: a command that samples moves no files
    if state is None:
        state = rundir.committed_model(run_dir)
    if state is None:
        example = min(run_dir.glob(f"{rundir.RUN_FOLDERS}/{rundir.CONFIG}"), default=None)  # a folder of runs
        if example:
            raise ConfigError(f"{run_dir} holds runs, not one run: give a run's folder, e.g. {example.parent}")
        raise CheckpointError(f"{run_dir / rundir.CHECKPOINT} does not exist, nor committed weights "
                              f"({rundir.MODEL}): train the run first (python -m cerebral.train out_dir={run_dir} ...)")
    if passed_over:
        print(f"warning: {passed_over}; sampling from {rundir.PREVIOUS_CHECKPOINT} "
              f"(after epoch {len(state['history']) - 1})", file=sys.stderr)
    cfg = rundir.saved_config(run_dir)
    if cfg.task.name != "charlm":
        raise ConfigError(f"{run_dir} is a task={cfg.task.name} classifier; only character models (task=charlm "
                          "runs) are sampled, exported and evaluated")
    model = build_model(cfg.model, len(state["vocab"])).to(device)
    rundir.load_weights(model, state, run_dir)
    return model.eval(), state["vocab"]


@torch.no_grad()
def sample(model, vocab, prime, length, temperature=1.0, seed=0):
    """`length` characters drawn one at a time from softmax(logits / temperature) after `prime`."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(prime) - set(index))
    if not prime or unknown:
        raise ValueError(f"the prime must be a non-empty string of vocabulary characters; "
                         f"not in the vocabulary: {unknown}")
    if not (isinstance(length, int) and length >= 0):
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    if not -2**63 <= seed < 2**64:  # what a torch.Generator takes
        raise ValueError(f"seed must lie in [-2**63, 2**64), got {seed}")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    logits, state = model(torch.tensor([[index[c] for c in prime]], device=device))
    chars = []
    for _ in range(length):
        probs = torch.softmax(logits[0, -1].double().cpu() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        chars.append(vocab[token.item()])
        logits, state = model(token.view(1, 1).to(device), state)
    return "".join(chars)


def generate_for_run(run_dir, save=False, **settings):
    """Prime plus sample for a run; with `save`, also written to run_dir/sample.json."""
    settings = {**DEFAULTS, **settings}
    model, vocab = load_trained(run_dir)
    text = settings["prime"] + sample(model, vocab, **settings)
    if save:
        rundir.write_sample(run_dir, {**settings, "text": text})
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sample characters from a trained run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prime", default=DEFAULTS["prime"])
    parser.add_argument("--length", type=int, default=DEFAULTS["length"])
    parser.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--save", action="store_true", help="also write run_dir/sample.json")
    args = parser.parse_args(argv)
    try:
        print(generate_for_run(args.run_dir, args.save, prime=args.prime, length=args.length,
                               temperature=args.temperature, seed=args.seed))
    except (*USER_ERRORS, ValueError) as e:  # ValueError: sample()'s refusals of a bad prime, length or temperature
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
