"""One training loop for every model: `python -m cerebral.train model=cerebral_lstm key=value ...`

Each run directory (`out_dir`) holds config.yaml (the resolved config), checkpoint.pt (written
atomically after every epoch), loss.txt in the published format, metrics.csv and run.json
(device, versions, commit). Re-running the same command resumes from the checkpoint and ends
bit for bit where an uninterrupted run would (on CPU); raising train.epochs extends a run.
"""

import fcntl
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from cerebral import data as chardata
from cerebral.atomic import atomic_path, write_text_atomic
from cerebral.config import ConfigError, check_config, config_differences, resolve_device
from cerebral.losslog import write_losses
from cerebral.models import parameter_count
from cerebral.precision import autocast, speed_warning
from cerebral.tasks import make_task

# Deterministic cuBLAS needs a fixed workspace, set before the first CUDA GEMM of the process.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CHECKPOINT = "checkpoint.pt"
# Raised whenever the meaning of saved parameters changes (e.g. the gate order), so that an old
# checkpoint is refused instead of silently resumed with its weights read the wrong way.
CHECKPOINT_FORMAT = 2
METRICS_COLUMNS = ("epoch", "train_loss", "seconds", "chars_per_second")  # then the task's own columns
# (chars_per_second counts time steps: characters for charlm, pixel rows or words for the classifiers)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


USER_ERRORS = (ConfigError, chardata.DataError, TrainingDiverged)  # reported as one line, no traceback


class BatchSampler:
    """Batches of sequence indices for one epoch, from a generator of its own (saved in the
    checkpoint, so a resumed run draws the same batches).

    random_batches: every step draws `batch_size` sequences uniformly without replacement,
    independently of the other steps (PROTOCOL fact 2). shuffled_pass: one permutation per
    epoch, cut into len // batch_size batches.
    """

    def __init__(self, num_sequences, train_cfg, seed):
        self.n, self.batch, self.sampling = num_sequences, train_cfg.batch_size, train_cfg.sampling
        self.steps = (train_cfg.steps_per_epoch if self.sampling == "random_batches"
                      else num_sequences // self.batch)
        self.generator = torch.Generator().manual_seed(seed)

    def epoch(self):
        if self.sampling == "random_batches":
            for _ in range(self.steps):
                yield torch.randperm(self.n, generator=self.generator)[: self.batch]
        else:
            order = torch.randperm(self.n, generator=self.generator)
            yield from order[: self.steps * self.batch].view(self.steps, self.batch)


def make_optimizer(cfg, params):
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.Adagrad(params, lr=cfg.lr, initial_accumulator_value=cfg.initial_accumulator_value)


def make_scheduler(cfg, optimizer):
    """The learning rate times `lr_decay_factor` every `lr_decay_every` epochs, or None."""
    if cfg.lr_decay_every is None:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_decay_every, cfg.lr_decay_factor)


def train_step(model, optimizer, loss_fn, *batch, precision="fp32"):
    """One optimizer step on the loss `loss_fn(model, *batch)`, its forward pass at `precision`."""
    with autocast(precision, next(model.parameters()).device):
        loss = loss_fn(model, *batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def git_commit():
    """The checkout's commit, with "-dirty" for uncommitted changes outside results/."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/results"],
                               capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except OSError:
        return None


# Asked once, when this process loads the code: a sweep's later runs report the code they ran,
# not a commit made while they trained.
LOADED_COMMIT = git_commit()


def cpu_model():
    """The processor's model name (e.g. "AMD EPYC 9R14"): timings and bit patterns depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def record_session(run_dir, cfg, device, parameters):
    """Save the resolved config, and append this process's device, versions and commit to
    run.json (one entry per session that trains), with the model's parameter count."""
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    path = run_dir / "run.json"
    record = json.loads(path.read_text()) if path.exists() else {"sessions": []}
    record["parameters"] = parameters
    record["sessions"].append({
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "torch": torch.__version__,
        "python": platform.python_version(), "git_commit": LOADED_COMMIT, "precision": cfg.train.precision,
        "command": " ".join(sys.argv),
    })
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def prepare_run_dir(cfg):
    """Create the run directory and lock it for this process, after checking that a run already
    in it was made with this config. Returns the directory and the open lock file (keep it)."""
    run_dir = Path(cfg.out_dir)
    saved_path = run_dir / "config.yaml"
    if saved_path.exists():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
        differences = config_differences(saved, OmegaConf.to_container(cfg, resolve=True))
        if differences:
            raise ConfigError(
                f"{run_dir} holds a run with another configuration:\n  " + "\n  ".join(differences)
                + "\nOnly train.epochs may change when resuming. Use another out_dir=PATH, "
                "or delete the folder to start over.")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".train.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"another process is training in {run_dir}; wait for it, or use another out_dir=PATH") from None
    return run_dir, lock


def save_checkpoint(path, model, optimizer, scheduler, sampler, history, vocab):
    state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None,
             "vocab": vocab, "sampler_rng": sampler.generator.get_state(), "torch_rng": torch.get_rng_state(),
             "history": history}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path):
    """The saved state, on the CPU, refusing another format (`CHECKPOINT_FORMAT`)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} was written by another version of this code (format "
                          f"{state.get('format', 1)}, this code reads {CHECKPOINT_FORMAT}); delete "
                          f"{path.parent} to train it again, or use another out_dir=PATH.")
    return state


def load_checkpoint(path, model, optimizer, scheduler, sampler):
    """Restore everything `save_checkpoint` wrote; return the per-epoch history."""
    state = read_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    sampler.generator.set_state(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["history"]


def write_outputs(run_dir, history, columns):
    write_losses(run_dir / "loss.txt", [row["train_loss"] for row in history])
    cell = lambda value: "" if value is None else repr(value)  # e.g. a column added after the run began
    lines = [",".join(columns)] + [",".join(cell(row.get(c)) for c in columns) for row in history]
    write_text_atomic(run_dir / "metrics.csv", "\n".join(lines) + "\n")


def train(cfg):
    """Train (or resume, or extend) the run described by `cfg`; return the per-epoch losses."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    # Deterministic kernels everywhere (PROTOCOL.md: scatter-add backward drifts otherwise).
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg)  # loads (and checks) the data, then builds the model from the seed
    if cfg.train.batch_size > len(task):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the "
                          f"{len(task)} training sequences")
    run_dir, lock = prepare_run_dir(cfg)  # noqa: F841 (held until this function returns)
    warning = speed_warning(cfg.train.precision, device)
    if warning:
        print(warning, flush=True)
    model, task = task.model.to(device), task.to(device)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scheduler = make_scheduler(cfg.optim, optimizer)
    sampler = BatchSampler(len(task), cfg.train, cfg.seed)
    columns = METRICS_COLUMNS + task.columns
    checkpoint = run_dir / CHECKPOINT
    history = load_checkpoint(checkpoint, model, optimizer, scheduler, sampler) if checkpoint.exists() else []
    write_outputs(run_dir, history, columns)
    if len(history) >= cfg.train.epochs:
        print(f"{run_dir}: already trained for {len(history)} epochs (train.epochs={cfg.train.epochs})")
        return [row["train_loss"] for row in history]

    print(f"{cfg.task.name} {cfg.model.name}, seed {cfg.seed}: epochs {len(history)}-{cfg.train.epochs - 1} of "
          f"{sampler.steps} steps x {sampler.batch} sequences on {device_name(device)}, {cfg.train.precision} "
          f"-> {run_dir}")
    record_session(run_dir, cfg, device, parameter_count(model))
    items_per_step = sampler.batch * task.inputs.shape[1]  # time steps: characters, pixel rows or words
    bar = tqdm(total=cfg.train.epochs * sampler.steps, initial=len(history) * sampler.steps,
               desc=f"{cfg.model.name} seed {cfg.seed}", unit="step", dynamic_ncols=True)
    for epoch in range(len(history), cfg.train.epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        for step, batch in enumerate(sampler.epoch()):
            loss = train_step(model, optimizer, task.loss, batch.to(device), precision=cfg.train.precision).item()
            if not math.isfinite(loss):
                bar.close()
                kept = (f"{checkpoint} keeps the last good state (epoch {len(history) - 1})" if history
                        else "no epoch had finished, so there is no checkpoint")
                raise TrainingDiverged(f"the loss became {loss} at epoch {epoch}, step {step}; stopped. "
                                       f"{kept}. Try a smaller optim.lr.")
            total += loss
            bar.set_postfix(epoch=epoch, loss=f"{total / (step + 1):.4f}", refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        model.eval()
        with autocast(cfg.train.precision, device):
            metrics = task.evaluate(model)
        row = {"epoch": epoch, "train_loss": total / sampler.steps, "seconds": seconds,
               "chars_per_second": sampler.steps * items_per_step / seconds, **metrics}
        history.append({c: row.get(c) for c in columns})
        save_checkpoint(checkpoint, model, optimizer, scheduler, sampler, history, task.vocab)
        write_outputs(run_dir, history, columns)
    bar.close()
    last = history[-1]
    extra = ", ".join(f"{c} {last[c]:.4f}" for c in task.columns if last[c] is not None)
    print(f"{run_dir}: {len(history)} epochs, final loss {last['train_loss']:.4f}{', ' + extra if extra else ''}"
          f" -> {run_dir / 'metrics.csv'}")
    return [row["train_loss"] for row in history]


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg):
    try:
        train(cfg)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
