"""The run directory (`out_dir`), the one module that knows its files. Training writes through
it; the comparison, the figures and sampling read through it.

    config.yaml          the resolved config, written when a session starts training
    checkpoint.pt        model, optimizer, schedule, random-number states, vocabulary and per-epoch
                         history, written atomically after every epoch (read with weights_only=True)
    checkpoint.prev.pt   the epoch before: a checkpoint cut short (full disk, a copy cut off)
                         costs one epoch, not the run
    loss.txt             the per-epoch training loss in the published format (cerebral.losslog)
    metrics.csv          epoch, train_loss, seconds, chars_per_second, then the task's columns
    run.json             the parameter count, and per session: device, thread count, versions, precision,
                         commit and the command as a user types it
    sample.json          a generated text and the settings that produced it
    model.pt             committed final weights, {"model": fp32 state_dict, "vocab": [...]} (no
                         optimizer state), listed with its SHA-256 in a MANIFEST.sha256 of a
                         folder above (`write_model`, `read_model`)
    loss.recorded.txt    only where epochs trained again did not repeat the recorded ones
    metrics.recorded.csv (RecordedEpochs): the record, kept
"""

import csv
import fcntl
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cerebral.atomic import atomic_path, nearest_existing, write_text_atomic
from cerebral.config import RESUMABLE_KEYS, check_config, complete, config_differences, config_problems
from cerebral.data import sha256
from cerebral.elementwise import resolve_elementwise
from cerebral.errors import CheckpointError, ConfigError
from cerebral.losslog import read_losses, write_losses
from cerebral.models import resolve_backend
from cerebral.steps import cpu_features, device_name, resolve_device

CONFIG, RECORD, METRICS, LOSSES, SAMPLE = "config.yaml", "run.json", "metrics.csv", "loss.txt", "sample.json"
RUN_FOLDERS = "*/seed*"  # the runs of a runs folder: <model>/seed<k>/ (conf/config.yaml's out_dir)
MODEL, MANIFEST = "model.pt", "MANIFEST.sha256"
SAMPLE_KEYS = ("prime", "temperature", "seed", "text")  # what the report shows of a sample
RECORDED_LOSSES, RECORDED_METRICS = "loss.recorded.txt", "metrics.recorded.csv"
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
    """The saved config.yaml as a dict ({} when there is none); ConfigError for one that is empty
    or cannot be read, which no run can be checked against."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return {}
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):
        config = None
    if isinstance(config, dict) and config:
        return config
    problem = "is empty" if config == {} else "cannot be read as a config"
    raise ConfigError(f"{path} {problem}: restore it from git, or delete {run_dir} to train the run again from "
                      "epoch 0, or use another out_dir=PATH")


def saved_config(run_dir):
    """The run's config, completed and checked (`check_saved_config`); ConfigError for a run
    folder without one, whose model nothing else describes."""
    saved = read_config(run_dir)
    if not saved:
        raise ConfigError(f"{Path(run_dir) / CONFIG} does not exist, and only it says which model the run "
                          "trained: restore it from git, or name a run folder that has one")
    return check_saved_config(run_dir, saved)


def check_saved_config(run_dir, saved):
    """The run's saved config (a dict) completed with keys added since it was saved
    (`config.complete`); ConfigError naming the file where a value the checks read is missing or
    invalid (`config.config_problems`, for the CPU it is read on, whatever device trained it)."""
    try:
        cfg = complete(saved)
        problems = config_problems(OmegaConf.merge(cfg, {"device": "cpu"}))
    except OmegaConfBaseException as e:  # a key missing, or a section that is no mapping
        problems = [f"{e.full_key}: {str(e).splitlines()[0]}"]
    except ConfigError as e:  # a check that stops at its first problem (a task's data package)
        problems = [str(e)]
    if problems:
        raise ConfigError(f"{Path(run_dir) / CONFIG} is invalid: {'; '.join(problems)}: restore it from git, or "
                          f"delete {run_dir} to train the run again")
    return cfg


def resume_kernels(cfg):
    """Where `cfg.out_dir` holds a run, put the backend and the elementwise kernel it recorded into
    cfg.train in place of `auto`, so that it resumes on its own. Before `check_run_dir`; a new run's
    `auto` is decided after its data are read (`tasks.decide_kernels`: deciding may build the C++
    kernels, which takes seconds)."""
    saved = read_config(cfg.out_dir)
    if not saved:
        return
    saved = complete(saved).train
    cfg.train.backend = resolve_backend(cfg, saved.backend)
    cfg.train.elementwise = resolve_elementwise(cfg, saved.elementwise)
    check_config(cfg)  # what auto resolved to, checked as if given (a recorded seq refused on CUDA)


def check_run_dir(cfg):
    """ConfigError where `cfg.out_dir` cannot take this run: a file in its place, a config.yaml or
    run.json that cannot be read, or a run of another configuration. Only reads, so that a plan
    of several runs can check them all before training any."""
    run_dir = Path(cfg.out_dir)
    nearest = nearest_existing(run_dir)
    if not nearest.is_dir():
        raise ConfigError(f"out_dir={run_dir} cannot be a folder: {nearest} is a file; use another out_dir=PATH")
    record = read_record(run_dir)
    saved = read_config(run_dir)
    differences = config_differences(saved, OmegaConf.to_container(cfg, resolve=True)) if saved else []
    if differences:
        raise ConfigError(
            f"{run_dir} holds a run with another configuration:\n  " + "\n  ".join(differences)
            + f"\nOnly {', '.join(RESUMABLE_KEYS)} may change when resuming. Use another out_dir=PATH, "
            "or delete the folder to start over.")
    last = recorded_threads(record["sessions"][-1]) if record.get("sessions") else None
    threads = torch.get_num_threads()
    if last is not None and last != threads and resolve_device(cfg.device).type == "cpu":
        raise ConfigError(f"{run_dir} trained its last session on {last} CPU threads and this process has {threads}; "
                          f"results may depend on the thread count, as on the precision: resume with "
                          f"OMP_NUM_THREADS={last}, or use another out_dir=PATH")


def recorded_threads(session):
    """The CPU threads a run.json session trained with: its "threads", or in records older than
    that field the end of its device line ("AMD EPYC, 2 threads"); None for a GPU session."""
    if "threads" in session:
        return session["threads"]
    found = re.search(r", (\d+) threads?$", session.get("device", ""))
    return int(found.group(1)) if found else None


def open_run(cfg):
    """Create and lock the run directory for this process, after `check_run_dir`. Returns the
    directory and the open lock file (keep it)."""
    check_run_dir(cfg)
    run_dir = Path(cfg.out_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / ".train.lock", "w")
    except OSError as e:
        raise ConfigError(f"cannot create out_dir={run_dir} ({e.strerror}); use another out_dir=PATH") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"another process is training in {run_dir}; wait for it, or use another out_dir=PATH") from None
    return run_dir, lock


def read_record(run_dir):
    """run.json as a dict ({} when there is none); ConfigError for one that cannot be read."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        record = None
    if isinstance(record, dict) and isinstance(record.get("sessions"), list):
        return record
    raise ConfigError(f"{path} cannot be read as a run record: restore it from git, or delete it (the run "
                      "resumes; the record of its earlier sessions is lost)")


def record_session(run_dir, cfg, device, parameters, commit, data_sha256=None):
    """Save the resolved config, and append this process's device (on a CPU with its family, model
    and bf16 flags, cpu_features, and its thread count), versions, precision, commit
    (of the code it runs), command and, where the task gives them, the SHA-256s of what its data
    was read or generated from, to run.json (one entry per session that trains), with the model's
    parameter count."""
    write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    record = read_record(run_dir) or {"sessions": []}
    record["parameters"] = parameters
    record["sessions"].append({
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        **({"cpu": cpu_features(), "threads": torch.get_num_threads()} if device.type == "cpu" else {}),
        "torch": torch.__version__,
        "python": platform.python_version(), "git_commit": commit, "precision": cfg.train.precision,
        "command": command_line(), **({"data_sha256": data_sha256} if data_sha256 else {}),
    })
    _write_record(run_dir, record)


def update_session(run_dir, **fields):
    """Add fields to this session's (the last) entry in run.json."""
    record = read_record(run_dir)
    record["sessions"][-1].update(fields)
    _write_record(run_dir, record)


def _write_record(run_dir, record):
    write_text_atomic(Path(run_dir) / RECORD, json.dumps(record, indent=2) + "\n")


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


def _start_over(run_dir):
    return f"delete {run_dir} to train the run again from epoch 0, or use another out_dir=PATH"


def _load_checkpoint(path):
    """The state saved at `path`, on the CPU; CheckpointError saying in a few words what is wrong
    with the file, after its name (the caller names it, and the fix)."""
    if not path.exists():
        raise CheckpointError("does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"cannot be read ({e.strerror})") from None
    except Exception:  # a damaged file fails in many ways: EOFError, KeyError, struct.error, zip errors...
        raise CheckpointError("cannot be read as a checkpoint (cut short, or not one)") from None
    if not (isinstance(state, dict) and {"model", "history"} <= state.keys()):
        raise CheckpointError("is not a checkpoint of this project (it holds no model and history)")
    found = state.get("format", 1)  # format 1 had no field
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(f"was written by another version of this code (format {found}, this code reads "
                              f"{CHECKPOINT_FORMAT})")
    return state


def read_checkpoint(path):
    """The state saved at `path`, on the CPU; CheckpointError naming the file, what is wrong with
    it (missing, cut short, not a checkpoint, another `CHECKPOINT_FORMAT`) and the fix."""
    path = Path(path)
    try:
        return _load_checkpoint(path)
    except CheckpointError as problem:
        fix = _start_over(path.parent) if path.exists() else "name the folder of a run that has trained an epoch"
        raise CheckpointError(f"{path} {problem}; {fix}") from None


def readable_checkpoint(run_dir):
    """Only reads: (the state of checkpoint.pt, None), or where that is gone or unreadable, (the
    state of checkpoint.prev.pt, what is wrong with checkpoint.pt); (None, None) for a run with
    neither. CheckpointError naming the fix where neither can be read."""
    path, previous = Path(run_dir) / CHECKPOINT, Path(run_dir) / PREVIOUS_CHECKPOINT
    if not previous.exists():
        return (read_checkpoint(path), None) if path.exists() else (None, None)
    try:
        return _load_checkpoint(path), None
    except CheckpointError as problem:
        try:
            return _load_checkpoint(previous), f"{path} {problem}"
        except CheckpointError as also:
            raise CheckpointError(f"{path} {problem}, and {previous.name} {also}; {_start_over(run_dir)}") from None


def latest_checkpoint(run_dir, log=print):
    """The state training resumes from (`readable_checkpoint`), or None. Where checkpoint.pt was
    passed over, says so in one line and moves an unreadable one aside to checkpoint.unreadable.pt,
    so that it never becomes the next checkpoint.prev.pt."""
    state, passed_over = readable_checkpoint(run_dir)
    if passed_over:
        path, moved = Path(run_dir) / CHECKPOINT, ""
        if path.exists():
            os.replace(path, Path(run_dir) / UNREADABLE_CHECKPOINT)
            moved = f"moved it to {UNREADABLE_CHECKPOINT}, "
        log(f"warning: {passed_over}; {moved}resuming from {PREVIOUS_CHECKPOINT} "
            f"(after epoch {len(state['history']) - 1})")
    return state


def load_weights(model, state, run_dir):
    """Put the checkpoint's weights into `model`; CheckpointError where they do not fit it (a
    checkpoint of another run copied in), instead of PyTorch's list of mismatched tensors."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[-1].strip().split(":")[0]  # e.g. "size mismatch for head.bias"
        raise CheckpointError(f"the checkpoint in {run_dir} does not fit the model its {CONFIG} describes "
                              f"({first}); {_start_over(run_dir)}") from None


def restore_checkpoint(run_dir, state, model, optimizer, scheduler, sampler):
    """Restore everything `save_checkpoint` wrote; return the per-epoch history."""
    load_weights(model, state, run_dir)
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


def _metrics_rows(run_dir):
    """metrics.csv as one dict of strings per row ([] when there is none)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_history(run_dir, columns):
    """The per-epoch rows the outputs record: the losses of loss.txt, with the other columns from
    metrics.csv where it has them ([] when there is no loss.txt)."""
    run_dir = Path(run_dir)
    if not (run_dir / LOSSES).exists():
        return []
    losses = read_losses(run_dir / LOSSES)
    try:
        rows = {int(r["epoch"]): {c: float(r[c]) if r.get(c) else None for c in columns} for r in _metrics_rows(run_dir)}
    except (OSError, KeyError, ValueError):  # malformed metrics.csv: its columns stay empty
        rows = {}
    return [{**dict.fromkeys(columns), **rows.get(i, {}), "epoch": i, "train_loss": loss}
            for i, loss in enumerate(losses)]


def recorded_epochs(run_dir):
    """How many epochs loss.txt records (0 without one)."""
    path = Path(run_dir) / LOSSES
    return len(read_losses(path)) if path.exists() else 0


class RecordedEpochs:
    """Epochs the outputs record beyond the checkpoint: a fresh clone has the committed loss files
    but no checkpoints (they stay out of git), or a checkpoint was lost. Training them again from
    the checkpoint (or from epoch 0) checks each against the record; on a CPU at the same code
    they repeat bit for bit, and each epoch that does keeps its recorded row (timings included).
    At the first difference the record is kept as loss.recorded.txt and metrics.recorded.csv,
    the outputs follow the new run, and run.json says where the two parted."""

    def __init__(self, run_dir, history, columns):
        self.run_dir, self.rows, self.kept = Path(run_dir), read_history(run_dir, columns), None
        self.start = len(history)  # the first epoch trained again
        self.agree = len(self.rows) > len(history)
        self.parted = None
        if self.agree:
            self.parted = next((e for e in range(len(history))
                                if history[e]["train_loss"] != self.rows[e]["train_loss"]), None)
        if self.parted is not None:  # the outputs are not this checkpoint's: keep them, don't extend them
            self._keep_record()

    def _keep_record(self):
        """Copy loss.txt and metrics.csv (still the record) to loss.recorded.txt and
        metrics.recorded.csv, or to the first free -N names, so that an earlier kept record
        stays; a copy the same as one kept already (a crash after keeping it) is not made twice."""
        self.agree, record, n = False, (self.run_dir / LOSSES).read_text(), 1
        while True:
            suffix = "" if n == 1 else f"-{n}"
            losses = self.run_dir / RECORDED_LOSSES.replace(".txt", f"{suffix}.txt")
            metrics = self.run_dir / RECORDED_METRICS.replace(".csv", f"{suffix}.csv")
            if not losses.exists() or losses.read_text() == record:
                break
            n += 1
        write_text_atomic(losses, record)
        if (self.run_dir / METRICS).exists():
            write_text_atomic(metrics, (self.run_dir / METRICS).read_text())
        self.kept = f"{losses.name} and {metrics.name}"

    def ahead(self, history):
        """The recorded rows past `history`, while the training agrees with them."""
        return self.rows[len(history):] if self.agree else []

    def start_line(self, epochs):
        """What training them again means, in one line (None when nothing recorded lies ahead)."""
        if self.parted is not None:
            return (f"warning: {self.run_dir / LOSSES} differs from its checkpoint at epoch {self.parted}; "
                    f"kept as {self.kept}, and {LOSSES} follows the checkpoint")
        if not self.agree:
            return None
        held = f"its checkpoint holds {self.start}" if self.start else "it has no checkpoint"
        return (f"{self.run_dir}: {LOSSES} records {len(self.rows)} epochs, {held}; training epochs "
                f"{self.start}-{min(len(self.rows), epochs) - 1} again and checking each against the record")

    def stopped(self, epoch):
        """Training stopped (a non-finite loss) in `epoch`: where that was an epoch still being
        checked, run.json says so (the record stays in loss.txt). Returns a clause for the error
        line, or ""."""
        if not self.agree or epoch >= len(self.rows):
            return ""
        update_session(self.run_dir, replay={"recorded_epochs": len(self.rows), "stopped_at_epoch": epoch,
                                             "recorded": self.rows[epoch]["train_loss"]})
        return (f" The record had loss {self.rows[epoch]['train_loss']!r} there, so this machine or code does not "
                f"repeat it; {LOSSES} keeps the record.")

    def check(self, history):
        """Compare the epoch just trained (history[-1]) with the record; where they agree, put the
        recorded row in its place. Returns the line to print (and writes the outcome to run.json)
        once the training has repeated every recorded epoch, or parted from one, else None."""
        epoch = len(history) - 1
        if not self.agree or epoch >= len(self.rows):
            return None
        new, old = history[epoch]["train_loss"], self.rows[epoch]["train_loss"]
        if new != old:
            self._keep_record()
            update_session(self.run_dir, replay={"recorded_epochs": len(self.rows), "kept_as": self.kept,
                                                 "first_difference": {"epoch": epoch, "recorded": old, "trained": new}})
            return (f"warning: epoch {epoch} gave loss {new!r}, the record {old!r}: this machine or code does not "
                    f"repeat the recorded run bit for bit. The record is kept as {self.kept}; {LOSSES} follows "
                    f"this run from here.")
        history[epoch] = self.rows[epoch]
        if epoch == len(self.rows) - 1:
            self.agree = False
            update_session(self.run_dir, replay={"recorded_epochs": len(self.rows), "identical": True})
            return f"{self.run_dir}: epochs {self.start}-{epoch} repeated the record bit for bit"
        return None


def checkpoint_epochs(run_dir, model):
    """How many epochs the run's checkpoint (or, that unreadable, the one before) holds: where
    training goes on (0 without one); CheckpointError where neither can be read or its weights
    do not fit `model` (the one the run's config builds), as training would refuse. Only reads;
    `latest_checkpoint` does the recovering."""
    state, _ = readable_checkpoint(run_dir)
    if state is None:
        return 0
    load_weights(model, state, run_dir)
    return len(state["history"])


def read_metrics(run_dir):
    """metrics.csv as {column: floats per epoch, or None where a cell is empty} ({} without one);
    ConfigError for one that cannot be read, or holds a cell that is not a number."""
    try:
        rows = _metrics_rows(run_dir)
        header = [c for c in rows[0] if c is not None] if rows else []  # None: cells past the header's end
        columns = {c: [float(row[c]) if row.get(c) else None for row in rows] for c in header}
    except (OSError, ValueError) as e:  # a folder in its place, not UTF-8, a cell such as "abc"
        raise ConfigError(f"{Path(run_dir) / METRICS} cannot be read as the run's metrics ({e}): restore it from "
                          f"git, or delete {run_dir} to train the run again") from None
    return {c: None if None in values else values for c, values in columns.items()}


def write_model(run_dir, state):
    """model.pt from a checkpoint's state: its weights in fp32 and its vocabulary, nothing else."""
    weights = {"model": {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()},
               "vocab": state["vocab"]}
    with atomic_path(Path(run_dir) / MODEL) as tmp:
        torch.save(weights, tmp)


def write_manifest(folder):
    """MANIFEST.sha256 in `folder`: every model.pt below it with its SHA-256 (sha256sum's format)."""
    folder = Path(folder)
    lines = [f"{sha256(path)}  {path.relative_to(folder).as_posix()}" for path in sorted(folder.glob(f"**/{MODEL}"))]
    write_text_atomic(folder / MANIFEST, "".join(f"{line}\n" for line in lines))


def _manifest_entry(run_dir):
    """(manifest path, expected SHA-256) of the run's model.pt in the nearest MANIFEST.sha256 above
    it that lists it, or (None, None)."""
    path = (Path(run_dir) / MODEL).resolve()
    for folder in path.parents:
        manifest = folder / MANIFEST
        if manifest.is_file():
            for line in manifest.read_text().splitlines():
                digest, _, name = line.partition("  ")
                if (folder / name).resolve() == path:
                    return manifest, digest
    return None, None


def committed_model(run_dir):
    """The run's committed weights (`read_model`) where it has any (a model.pt, or a manifest that
    lists one), else None."""
    if (Path(run_dir) / MODEL).exists() or _manifest_entry(run_dir)[0] is not None:
        return read_model(run_dir)
    return None


def read_model(run_dir):
    """The committed weights of a run ({"model", "vocab"}), checked against their manifest;
    CheckpointError naming the file, the expected SHA-256 and the fix where the file is missing,
    cut short or changed, or listed in no manifest."""
    path = Path(run_dir) / MODEL
    manifest, expected = _manifest_entry(run_dir)
    if manifest is None:
        raise CheckpointError(f"{path} is listed in no {MANIFEST} above it, so it cannot be checked; restore the "
                              f"manifest from git, or write one (scripts/release_weights.py)")
    fix = f"restore it from git (git checkout -- {path}); the manifest is {manifest}"
    if not path.exists():
        raise CheckpointError(f"{path} is missing (expected SHA-256 {expected}); {fix}")
    found = sha256(path)
    if found != expected:
        raise CheckpointError(f"{path} has SHA-256 {found}, its manifest {expected}: it is cut short or changed; {fix}")
    return torch.load(path, map_location="cpu", weights_only=True)


def write_sample(run_dir, sample):
    write_text_atomic(Path(run_dir) / SAMPLE, json.dumps(sample, indent=2) + "\n")


def read_sample(run_dir):
    """sample.json as a dict (None when there is none); ConfigError for one that cannot be read, or
    lacks a key the report shows."""
    path = Path(run_dir) / SAMPLE
    if not path.exists():
        return None
    try:
        sample = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        sample = None
    if isinstance(sample, dict) and set(SAMPLE_KEYS) <= sample.keys():
        return sample
    raise ConfigError(f"{path} cannot be read as a generated sample (a JSON object with {', '.join(SAMPLE_KEYS)}): "
                      f"restore it from git, or delete it (python -m cerebral.generate {run_dir} --save writes it again)")
