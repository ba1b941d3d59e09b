"""The run directory (`out_dir`), the one module that knows its files. Training writes through
it; the comparison, the figures and sampling read through it.

    config.yaml          the resolved config, written when a session starts training
    checkpoint.pt        model, optimizer, schedule, random-number states, vocabulary and per-epoch
                         history, written atomically after every epoch (read with weights_only=True)
    checkpoint.prev.pt   the epoch before: a checkpoint cut short (full disk, a copy cut off)
                         costs one epoch, not the run
    loss.txt             the per-epoch training loss in the published format (cerebral.losslog)
    metrics.csv          epoch, train_loss, seconds, chars_per_second, then the task's columns
    run.json             the parameter count, and per session: device, versions, precision,
                         commit and the command as a user types it
    sample.json          a generated text and the settings that produced it
"""

import csv
import fcntl
import json
import os
import pickle
import platform
import shlex
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cerebral.atomic import atomic_path, write_text_atomic
from cerebral.config import RESUMABLE_KEYS, complete, config_differences
from cerebral.errors import CheckpointError, ConfigError
from cerebral.losslog import write_losses
from cerebral.steps import cpu_features, device_name

CONFIG, RECORD, METRICS, LOSSES, SAMPLE = "config.yaml", "run.json", "metrics.csv", "loss.txt", "sample.json"
CHECKPOINT, PREVIOUS_CHECKPOINT, UNREADABLE_CHECKPOINT = "checkpoint.pt", "checkpoint.prev.pt", "checkpoint.unreadable.pt"
# Raised whenever the meaning of saved parameters changes (e.g. the gate order), so that an old
# checkpoint is refused instead of silently resumed with its weights read the wrong way.
CHECKPOINT_FORMAT = 2
METRICS_COLUMNS = ("epoch", "train_loss", "seconds", "chars_per_second")  # then the task's own columns
# (chars_per_second counts time steps: characters for charlm, pixel rows or words for the classifiers)
ROOT = Path(__file__).resolve().parents[1]


def git_commit():
    """The checkout's commit, with "-dirty" for uncommitted changes outside results/."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/results"],
                               capture_output=True, text=True, cwd=ROOT, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except OSError:
        return None


def command_line(argv=None):
    """The command as a user types it (`python -m cerebral.train key=value ...`), not the path of
    train.py on the machine that ran it."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0])
    if program.name == "train.py" and program.parent.name == "cerebral":
        head = ["python", "-m", "cerebral.train"]
    else:
        try:
            program = program.resolve().relative_to(ROOT)
        except ValueError:
            pass
        head = ["python", str(program)]
    return shlex.join(head + list(argv[1:]))


def read_config(run_dir):
    """The saved config.yaml as a dict ({} when there is none)."""
    path = Path(run_dir) / CONFIG
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.exists() else {}


def saved_config(run_dir):
    """The run's config, completed with keys added since it was saved (`config.complete`)."""
    return complete(read_config(run_dir))


def open_run(cfg):
    """Create and lock the run directory for this process, after checking that a run already in it
    was made with this config. Returns the directory and the open lock file (keep it)."""
    run_dir = Path(cfg.out_dir)
    if (run_dir / CONFIG).exists():
        differences = config_differences(read_config(run_dir), OmegaConf.to_container(cfg, resolve=True))
        if differences:
            raise ConfigError(
                f"{run_dir} holds a run with another configuration:\n  " + "\n  ".join(differences)
                + f"\nOnly {', '.join(RESUMABLE_KEYS)} may change when resuming. Use another out_dir=PATH, "
                "or delete the folder to start over.")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".train.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"another process is training in {run_dir}; wait for it, or use another out_dir=PATH") from None
    return run_dir, lock


def read_record(run_dir):
    path = Path(run_dir) / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def record_session(run_dir, cfg, device, parameters, commit):
    """Save the resolved config, and append this process's device (on a CPU with its family, model
    and bf16 flags: cpu_features), versions, precision, commit
    (of the code it runs) and command to run.json (one entry per session that trains), with the
    model's parameter count."""
    write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    record = read_record(run_dir) or {"sessions": []}
    record["parameters"] = parameters
    record["sessions"].append({
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), **({"cpu": cpu_features()} if device.type == "cpu" else {}),
        "torch": torch.__version__,
        "python": platform.python_version(), "git_commit": commit, "precision": cfg.train.precision,
        "command": command_line(),
    })
    write_text_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def save_checkpoint(run_dir, model, optimizer, scheduler, sampler, history, vocab):
    """Write checkpoint.pt atomically, keeping the one it replaces as checkpoint.prev.pt."""
    state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None,
             "vocab": vocab, "sampler_rng": sampler.generator.get_state(), "torch_rng": torch.get_rng_state(),
             "history": history}
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if path.exists():  # checkpoint.pt stays in place until the new one replaces it
            with atomic_path(previous) as previous_tmp:
                try:
                    os.link(path, previous_tmp)
                except OSError:  # a file system without hard links
                    shutil.copyfile(path, previous_tmp)


def read_checkpoint(path):
    """The saved state, on the CPU; CheckpointError for a file cut short, not a checkpoint, or
    of another format (`CHECKPOINT_FORMAT`)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({reason}): it was cut short or is not a "
                              f"checkpoint. Delete {path.parent} to train the run again from epoch 0, or use "
                              f"another out_dir=PATH.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format", 1) if isinstance(state, dict) else "none"
        raise CheckpointError(f"{path} was written by another version of this code (format {found}, this code "
                              f"reads {CHECKPOINT_FORMAT}); delete {path.parent} to train it again, or use "
                              f"another out_dir=PATH.")
    return state


def latest_checkpoint(run_dir, log=print):
    """The newest readable checkpoint's state, or None when the run has none. When checkpoint.pt
    cannot be read (or is gone) but checkpoint.prev.pt can, says so in one line, moves the
    unreadable file aside to checkpoint.unreadable.pt (so that it never becomes the next
    checkpoint.prev.pt) and returns the earlier state."""
    path, previous = Path(run_dir) / CHECKPOINT, Path(run_dir) / PREVIOUS_CHECKPOINT
    if not path.exists() and not previous.exists():
        return None
    if not path.exists():
        state = read_checkpoint(previous)
        log(f"warning: {path} is missing; resuming from {previous} (after epoch {len(state['history']) - 1})")
        return state
    try:
        return read_checkpoint(path)
    except CheckpointError as error:
        if not previous.exists():
            raise
        state = read_checkpoint(previous)
        os.replace(path, Path(run_dir) / UNREADABLE_CHECKPOINT)
        log(f"warning: {error}\n  moved it to {UNREADABLE_CHECKPOINT}; resuming from {previous} instead "
            f"(after epoch {len(state['history']) - 1})")
        return state


def restore_checkpoint(state, model, optimizer, scheduler, sampler):
    """Restore everything `save_checkpoint` wrote; return the per-epoch history."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    sampler.generator.set_state(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["history"]


def write_outputs(run_dir, history, columns):
    """loss.txt and metrics.csv from the per-epoch history."""
    write_losses(run_dir / LOSSES, [row["train_loss"] for row in history])

    def cell(value):  # empty: e.g. a column added after the run began
        return "" if value is None else repr(value)

    lines = [",".join(columns)] + [",".join(cell(row.get(c)) for c in columns) for row in history]
    write_text_atomic(run_dir / METRICS, "\n".join(lines) + "\n")


def read_metric(run_dir, column):
    """One column of metrics.csv as floats per epoch, or None where the run has none."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return None
    with open(path, newline="") as f:
        values = [row.get(column) or None for row in csv.DictReader(f)]
    return [float(v) for v in values] if values and None not in values else None


def write_sample(run_dir, sample):
    write_text_atomic(Path(run_dir) / SAMPLE, json.dumps(sample, indent=2) + "\n")


def read_sample(run_dir):
    path = Path(run_dir) / SAMPLE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
