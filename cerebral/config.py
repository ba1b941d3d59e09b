"""Checks a composed config before any work starts, so a bad value fails in a second with a
message that names the key and a valid example, not hours later or deep in a traceback."""

import numbers
from pathlib import Path

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from cerebral.models import CEREBRAL_CORES, CORES, INITS
from cerebral.precision import PRECISIONS

SAMPLINGS = ("random_batches", "shuffled_pass")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adagrad", "adam")


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(*overrides):
    """The config `python -m cerebral.train OVERRIDES` runs with, for scripts and tests."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


class ConfigError(ValueError):
    """A config value that cannot be trained with."""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_config(cfg):
    """Raise ConfigError listing every invalid value in `cfg`."""
    problems = []

    def need(ok, key, what, example):
        if not ok:
            value = OmegaConf.select(cfg, key)
            problems.append(f"{key} must be {what}, got {value!r} (e.g. {key}={example})")

    m, t, o = cfg.model, cfg.train, cfg.optim
    need(m.core in CORES, "model.core", " or ".join(CORES), "cerebral")
    need(_is_int(m.state_size) and m.state_size > 0, "model.state_size", "a positive integer", 512)
    need(_is_int(m.num_layers) and m.num_layers > 0, "model.num_layers", "a positive integer", 1)
    need(isinstance(m.gate_bias, bool), "model.gate_bias", "true or false", "false")
    need(isinstance(m.post_bias, bool), "model.post_bias", "true or false", "false")
    need(not (m.post_bias is True and m.core != "lstm"), "model.post_bias",
         "false unless model.core=lstm (post-activation biases belong to the LSTM core)", "false")
    need(isinstance(m.tie_init, bool), "model.tie_init", "true or false", "false")
    need(not (m.tie_init is True and m.core not in CEREBRAL_CORES), "model.tie_init",
         "false unless model.core is " + " or ".join(CEREBRAL_CORES) + " (it ties the two Cerebral paths)", "false")
    need(m.init in INITS, "model.init", " or ".join(INITS), "tf_xavier")
    need(_is_int(m.xavier_stack) and m.xavier_stack > 0, "model.xavier_stack", "a positive integer", 4)
    need(_is_number(m.dropout) and 0 <= m.dropout < 1, "model.dropout", "a number in [0, 1)", 0.0)
    from cerebral.tasks import TASKS  # here: tasks.py imports this module

    d, task = cfg.data, cfg.task.name
    need(task in TASKS, "task.name", " or ".join(TASKS), "charlm")
    need(_is_int(d.seq_len) and d.seq_len > 0, "data.seq_len", "a positive integer", 20)
    if task == "charlm":
        need(_is_number(d.val_fraction) and 0 <= d.val_fraction < 1, "data.val_fraction", "a number in [0, 1)", 0.1)
    if task in ("digits", "imdb"):  # split here; MNIST comes split
        need(_is_number(d.test_fraction) and 0 < d.test_fraction < 1, "data.test_fraction", "a number in (0, 1)", 0.25)
        need(_is_int(d.split_seed) and d.split_seed >= 0, "data.split_seed", "a non-negative integer", 0)
    if task == "mnist":
        need(isinstance(d.mnist_dir, str) and d.mnist_dir != "", "data.mnist_dir",
             "the folder of the four MNIST IDX files", "~/mnist")
    if task == "imdb":
        need(isinstance(d.imdb_csv, str) and d.imdb_csv != "", "data.imdb_csv",
             'the path of Kaggle\'s "IMDB Dataset.csv"', "'~/IMDB Dataset.csv'")
        need(_is_int(cfg.task.embedding_size) and cfg.task.embedding_size > 0, "task.embedding_size",
             "a positive integer", 64)
        for key, example in (("num_reviews", 5000), ("vocab_size", 1000)):
            need(_is_int(d[key]) and d[key] > 0, f"data.{key}", "a positive integer", example)
    need(_is_int(t.epochs) and t.epochs > 0, "train.epochs", "a positive integer", 500)
    need(_is_int(t.batch_size) and t.batch_size > 0, "train.batch_size", "a positive integer", 128)
    need(t.sampling in SAMPLINGS, "train.sampling", " or ".join(SAMPLINGS), "random_batches")
    need(t.precision in PRECISIONS, "train.precision", " or ".join(PRECISIONS), "bf16")
    if t.sampling == "shuffled_pass":
        need(t.steps_per_epoch is None, "train.steps_per_epoch",
             "null with train.sampling=shuffled_pass (one pass sets it)", "null")
    else:
        need(_is_int(t.steps_per_epoch) and t.steps_per_epoch > 0, "train.steps_per_epoch",
             "a positive integer", 100)
    need(o.name in OPTIMIZERS, "optim.name", " or ".join(OPTIMIZERS), "adagrad")
    need(_is_number(o.lr) and o.lr > 0, "optim.lr", "a positive number", 0.05)
    if o.name == "adagrad":
        need(_is_number(o.initial_accumulator_value) and o.initial_accumulator_value >= 0,
             "optim.initial_accumulator_value", "a number >= 0", 0.1)
    need(o.lr_decay_every is None or (_is_int(o.lr_decay_every) and o.lr_decay_every > 0),
         "optim.lr_decay_every", "null or a positive number of epochs", 2)
    need(_is_number(o.lr_decay_factor) and 0 < o.lr_decay_factor <= 1, "optim.lr_decay_factor",
         "a number in (0, 1]", 0.1)
    need(_is_int(cfg.seed) and cfg.seed >= 0, "seed", "a non-negative integer", 0)
    need(cfg.device in DEVICES, "device", " or ".join(DEVICES), "auto")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("device=cuda, but PyTorch sees no CUDA device; use device=auto or device=cpu")
    need(isinstance(cfg.out_dir, str) and cfg.out_dir != "", "out_dir", "a folder path", "results/runs/my_run")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# Keys added after runs were first saved, with the value that keeps the old behaviour: a saved
# config without one of them reads as having that value, so older runs still resume.
ADDED_KEYS = {"task.name": "charlm", "data.val_fraction": 0.0, "model.tie_init": False,
              "optim.lr_decay_every": None, "optim.lr_decay_factor": 0.1, "train.precision": "fp32"}


def complete(saved):
    """A saved config (dict) as an OmegaConf config, with the keys added since it was written
    (ADDED_KEYS) at their old-behaviour values."""
    cfg = OmegaConf.create(saved)
    for key, value in ADDED_KEYS.items():
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def config_differences(saved, new, ignore=("train.epochs", "runs_dir")):
    """Keys whose values differ between two configs (dicts), as 'key: old -> new' lines.
    `runs_dir` only feeds `out_dir`, which is compared itself."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    b = flat(new)
    a = {**{k: v for k, v in ADDED_KEYS.items() if k in b}, **flat(saved)}
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]
