"""Loss curves to compare: the published ones and our runs (`<runs>/<model>/seed<seed>/`)."""

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cerebral import data as chardata
from cerebral.losslog import LossFileError, read_losses

MODELS = ("single_lstm", "stacked_lstm", "cerebral_lstm")
LABELS = {"single_lstm": "single LSTM", "stacked_lstm": "two-stacked LSTM", "cerebral_lstm": "Cerebral LSTM"}
DEFAULT_RUNS = Path("results/runs")
COLORS = {"single_lstm": "tab:blue", "stacked_lstm": "tab:orange", "cerebral_lstm": "tab:green"}


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

    @property
    def seconds(self):
        """Training wall time, summed over epochs from metrics.csv."""
        metrics = self.path / "metrics.csv"
        if not metrics.exists():
            return None
        with open(metrics, newline="") as f:
            return sum(float(row["seconds"]) for row in csv.DictReader(f))


def default_out_dir(runs_dir):
    """Where figures and the report of `runs_dir` go: `results/` for `results/runs`, else the folder itself."""
    return Path("results") if Path(runs_dir) == DEFAULT_RUNS else Path(runs_dir)


def published_curves(data_dir=chardata.DEFAULT_DIR):
    """model -> the published per-epoch losses (verified against their pinned digests)."""
    return {m: read_losses(chardata.verified_path(data_dir, chardata.PUBLISHED_CURVES[m])) for m in MODELS}


def load_run(path, model, seed):
    path = Path(path)
    config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml")) if (path / "config.yaml").exists() else {}
    record = json.loads((path / "run.json").read_text()) if (path / "run.json").exists() else {}
    sample = json.loads((path / "sample.json").read_text(encoding="utf-8")) if (path / "sample.json").exists() else None
    return Run(model, seed, path, read_losses(path / "loss.txt"), config, record, sample)


def find_runs(runs_dir):
    """model -> its runs under `runs_dir`, by seed; models without a non-empty loss.txt are left out."""
    found = {}
    for model in MODELS:
        runs = []
        for loss_file in sorted(Path(runs_dir).glob(f"{model}/seed*/loss.txt")):
            seed = loss_file.parent.name.removeprefix("seed")
            if seed.isdigit() and loss_file.stat().st_size > 0:
                runs.append(load_run(loss_file.parent, model, int(seed)))
        if runs:
            found[model] = sorted(runs, key=lambda r: r.seed)
    return found


def mean_curve(runs):
    """The per-epoch mean over runs, over the epochs every run has."""
    length = min(len(r.losses) for r in runs)
    return [sum(r.losses[i] for r in runs) / len(runs) for i in range(length)]


def comparison_parser(description):
    """The options shared by the figure and report commands."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="folder of <model>/seed<seed>/ runs")
    parser.add_argument("--out", type=Path, help="output folder (default: results/ for results/runs, else RUNS)")
    parser.add_argument("--data", type=Path, default=chardata.DEFAULT_DIR, help="the fetched data folder")
    return parser


def load_comparison(runs_dir, data_dir):
    """(published curves, our runs, each model's mean curve), or exit naming the bad file."""
    try:
        published, runs = published_curves(data_dir), find_runs(runs_dir)
    except (chardata.DataError, LossFileError) as e:
        sys.exit(f"error: {e}")
    return published, runs, {model: mean_curve(model_runs) for model, model_runs in runs.items()}
