"""Loss curves to compare: the published ones and our runs (`<runs>/<model>/seed<seed>/`).

A runs folder may hold the three paper models and any variant a study adds (e.g.
`single_lstm_matched`); with several seeds a model is drawn and judged by its mean curve, with
the seeds' spread as a band."""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cerebral import data as chardata
from cerebral import rundir
from cerebral.atomic import nearest_existing
from cerebral.errors import USER_ERRORS, ConfigError, DataError
from cerebral.losslog import read_losses

MODELS = ("single_lstm", "stacked_lstm", "cerebral_lstm")  # the paper's three
LABELS = {"single_lstm": "single LSTM", "stacked_lstm": "two-stacked LSTM", "cerebral_lstm": "Cerebral LSTM",
          "single_lstm_matched": "single LSTM, Cerebral's size", "cerebral_lstm_tied": "Cerebral LSTM, tied init",
          "cerebral_lstm_printed": "Cerebral LSTM, printed cell", "novo_lstm": "NovoLSTM",
          "lstmp": "LSTMP, learned projection", "lstmp_matched": "LSTMP, Cerebral's size"}
DEFAULT_RUNS = Path("results/runs")
COLORS = {"single_lstm": "tab:blue", "stacked_lstm": "tab:orange", "cerebral_lstm": "tab:green",
          "single_lstm_matched": "tab:purple", "cerebral_lstm_tied": "tab:olive",
          "cerebral_lstm_printed": "tab:red", "novo_lstm": "tab:brown", "lstmp": "tab:pink", "lstmp_matched": "tab:cyan"}


def label(model):
    return LABELS.get(model, model)


def color(model):
    return COLORS.get(model, "tab:gray")


@dataclass
class Run:
    """One training run as it lies on disk: its losses and its own records."""

    model: str
    seed: int
    path: Path
    losses: list
    config: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)  # run.json: device, versions, commit per session
    sample: dict | None = None                  # sample.json: generated text and its settings
    metrics: dict = field(default_factory=dict)  # metrics.csv: column -> floats per epoch, or None

    def metric(self, column):
        """One column of metrics.csv as floats per epoch, or None where the run has none."""
        return self.metrics.get(column)

    @property
    def seconds(self):
        """Training wall time, summed over epochs from metrics.csv."""
        seconds = self.metric("seconds")
        return sum(seconds) if seconds is not None else None

    @property
    def session(self):
        """The record of the last session that trained the run (device, versions, commit), or {}."""
        return (self.record.get("sessions") or [{}])[-1]

    @property
    def task(self):
        """The task the run trained on (runs from before tasks existed are charlm)."""
        return self.config.get("task", {}).get("name", "charlm")

    @property
    def precision(self):
        """The run's train.precision (runs from before the option existed trained in fp32)."""
        return self.config.get("train", {}).get("precision", "fp32")

    @property
    def validation(self):
        """Whether the run held out a validation split in place of the test set (data.validation=true)."""
        return bool(self.config.get("data", {}).get("validation"))

    @property
    def parameters(self):
        """The model's parameter count, as recorded by training (run.json)."""
        return self.record.get("parameters")


def default_out_dir(runs_dir):
    """Where figures and the report of `runs_dir` go: `results/` for `results/runs`, else the folder itself."""
    return Path("results") if Path(runs_dir) == DEFAULT_RUNS else Path(runs_dir)


def published_curves(data_dir=chardata.DEFAULT_DIR):
    """model -> the published per-epoch losses (verified against their pinned digests)."""
    return {m: read_losses(chardata.verified_path(data_dir, chardata.PUBLISHED_CURVES[m])) for m in MODELS}


def load_run(path, model, seed):
    """The run in `path`, filed as `model`, its files read (LossFileError or ConfigError naming a damaged one, and a
    character model's config.yaml that `rundir.check_saved_config` refuses); ConfigError too when
    its config.yaml names another model, so that a run copied into the wrong folder is not compared
    as that model's curve."""
    path = Path(path)
    run = Run(model, seed, path, read_losses(path / rundir.LOSSES), rundir.read_config(path),
              rundir.read_record(path), rundir.read_sample(path), rundir.read_metrics(path))
    if run.config and run.task == "charlm":  # the report reads its settings, and may rebuild its model
        rundir.check_saved_config(path, run.config)
    trained = run.config.get("model", {}).get("name", model)
    if trained != model:
        raise ConfigError(f"{path} is filed as {model}, but its {rundir.CONFIG} says model {trained}: "
                          f"move it to {path.parent.parent / trained / path.name}, or out of the runs folder")
    return run


def find_runs(runs_dir):
    """model -> its runs under `runs_dir` (`<model>/seed<k>/loss.txt`, non-empty), by seed; the
    paper's three models first, then the others by name."""
    found = {}
    for loss_file in sorted(Path(runs_dir).glob(f"{rundir.RUN_FOLDERS}/{rundir.LOSSES}")):
        model, seed = loss_file.parent.parent.name, loss_file.parent.name.removeprefix("seed")
        if seed.isdigit() and loss_file.stat().st_size > 0:
            found.setdefault(model, []).append(load_run(loss_file.parent, model, int(seed)))
    order = [m for m in MODELS if m in found] + sorted(m for m in found if m not in MODELS)
    return {m: sorted(found[m], key=lambda r: r.seed) for m in order}


def sweep_folders(root):
    """The runs folders of a validation sweep under `root`, one per learning rate: lr<lr>/."""
    return sorted(folder for folder in Path(root).glob("lr*") if folder.is_dir())


def seeds_of(runs):
    """The seeds any model of {model: [Run]} has, in order."""
    return sorted({run.seed for model_runs in runs.values() for run in model_runs})


def _aligned(runs, column):
    """Each run's curve (loss.txt, or a metrics.csv column) cut to the epochs every run has, or
    None when a run lacks the column."""
    curves = [r.losses if column is None else r.metric(column) for r in runs]
    if any(c is None for c in curves):
        return None
    length = min(len(c) for c in curves)
    return [c[:length] for c in curves]


def mean_curve(runs, column=None):
    """The per-epoch mean over runs (of loss.txt, or of a metrics.csv column), over the epochs
    every run has; None when a run lacks the column."""
    curves = _aligned(runs, column)
    return None if curves is None else [sum(values) / len(values) for values in zip(*curves, strict=True)]


def band(runs, column=None):
    """(lowest, highest) per epoch over runs, over the epochs every run has, or None for one run."""
    curves = _aligned(runs, column)
    if curves is None or len(curves) < 2:
        return None
    return [min(values) for values in zip(*curves, strict=True)], [max(values) for values in zip(*curves, strict=True)]


def run_task(runs):
    """The one task the runs trained on ("charlm" when there are none); ValueError if they mix tasks."""
    tasks = {run.task for model_runs in runs.values() for run in model_runs}
    if len(tasks) > 1:
        raise ValueError(f"the runs mix the tasks {', '.join(sorted(tasks))}; give each task its own folder")
    return tasks.pop() if tasks else "charlm"


def check_test_scores(runs_dir, runs):
    """ConfigError for a classification run without its test accuracy and loss per epoch: a
    validation run (a sweep of them is compared with --validation), or one whose metrics.csv is gone."""
    for run in (r for model_runs in runs.values() for r in model_runs):
        if run.validation:
            raise ConfigError(f"{runs_dir} holds validation runs (data.validation=true), which have no test "
                              "accuracy: use --validation EPOCHS on the folder above the lr<lr>/ folders, e.g. "
                              f"scripts/compare.py --runs {run.path.parents[2]} --validation 10,20,30")
        if run.metric("test_accuracy") is None or run.metric("test_loss") is None:
            raise ConfigError(f"{run.path / rundir.METRICS} has no test accuracy and loss per epoch: restore it from "
                              f"git, or delete {run.path} to train the run again")


def comparison_parser(description):
    """The options shared by the figure and report commands."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS,
                        help="folder of <model>/seed<seed>/ runs (only the default may hold none: the published curves alone)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/ for results/runs, else RUNS)")
    parser.add_argument("--data", type=Path, default=chardata.DEFAULT_DIR, help="the fetched data folder")
    return parser


def make_output_folder(path):
    """Create the folder outputs go into first, or exit in one line where it cannot be (a file in
    its place, no permission), so that no work is done that cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"error: cannot make the output folder {path} ({e.strerror}); choose another --out")
    return path


def check_writable(path, fix="choose another --out"):
    """Exit in one line where no file can be written at `path` (a folder in its place, a file
    above it), before the work that would fill it."""
    path = Path(path)
    blocker = path if path.is_dir() else nearest_existing(path.parent)
    if blocker.is_dir() and blocker != path:
        return
    sys.exit(f"error: cannot write {path}: {blocker} is {'a folder' if blocker == path else 'a file'}; {fix}")


def load_comparison(runs_dir, data_dir, need_runs=None):
    """(published curves, our runs, each model's mean training-loss curve), or exit naming the bad
    file (the data's metadata.pkl too, for character-model runs), a folder that mixes runs of
    several tasks, classification runs without test scores
    (`check_test_scores`), or a folder without runs where some are needed: `need_runs`, by default
    everywhere but the default folder, which a fresh clone lacks (the published curves are then
    drawn and judged alone)."""
    try:
        published, runs = published_curves(data_dir), find_runs(runs_dir)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    if need_runs is None:
        need_runs = Path(runs_dir) != DEFAULT_RUNS
    if need_runs and not runs:
        if any(any(folder.glob(f"{rundir.RUN_FOLDERS}/{rundir.LOSSES}")) for folder in sweep_folders(runs_dir)):
            sys.exit(f"error: no runs found under {runs_dir}, but a validation sweep (lr<lr>/MODEL/seedN/): use "
                     f"scripts/compare.py --runs {runs_dir} --validation EPOCHS, e.g. --validation 10,20,30")
        sys.exit(f"error: no runs found under {runs_dir}: a runs folder holds MODEL/seedN/loss.txt, "
                 "e.g. cerebral_lstm/seed0/loss.txt")
    try:
        if run_task(runs) != "charlm":
            check_test_scores(runs_dir, runs)
        elif runs:  # the report counts each model's parameters under the data's vocabulary
            chardata.verified_path(data_dir, "data/metadata.pkl")
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except ValueError as e:  # run_task's: the runs mix tasks
        sys.exit(f"error: {runs_dir}: {e}")
    return published, runs, {model: mean_curve(model_runs) for model, model_runs in runs.items()}
