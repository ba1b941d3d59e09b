"""Checks a composed config before any work starts, so a bad value fails in a second with a
message that names the key and a valid example, not hours later or deep in a traceback."""

import math
import numbers
from pathlib import Path

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cerebral.elementwise import CHOICES as ELEMENTWISE_CHOICES
from cerebral.errors import ConfigError
from cerebral.models import BACKENDS, CEREBRAL_CORES, CORES, INITS, lstm_backend_problems
from cerebral.precision import PRECISIONS
from cerebral.steps import resolve_device
from cerebral.tasks import TASKS

SAMPLINGS = ("random_batches", "shuffled_pass")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adagrad", "adam")


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# ${mul:2,${model.state_size}} in a config: lstmp's cell count follows the state size
OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)


def compose(*overrides):
    """The config `python -m cerebral.train OVERRIDES` runs with, for scripts and tests; an override
    Hydra cannot apply raises ConfigError in one line (`check_overrides`)."""
    check_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose("config", overrides=list(overrides))
    except HydraException as e:
        raise ConfigError(_composition_problem(e)) from None


LIST_KEYS = "python -m cerebral.train --cfg job lists every key"


def check_overrides(overrides):
    """Refuse `+key=value` and `++key=value`: every setting of this config already exists (each
    group is in its defaults list), so `key=value` sets it, and a key that only a '+' can add is a
    misspelt one that nothing would read. And a path starting with '~', which Hydra's parser
    rejects with a lexer error."""
    for override in overrides:
        if override.startswith("++"):
            raise ConfigError(f"{override} would add its key if the config did not have it, and nothing would read "
                              f"it: drop the '++' (key=value sets any key there is; {LIST_KEYS})")
        if override.startswith("+"):
            raise ConfigError(f"{override} adds a key the config does not have, which nothing would read: drop the "
                              f"'+' and check the spelling ({LIST_KEYS})")
        key, _, value = override.partition("=")
        if value.startswith("~"):  # the shell leaves it (key.name is no variable), Hydra's grammar has no '~'
            raise ConfigError(f"{override}: Hydra cannot read an unquoted '~'; write {key}=$HOME{value[1:]} "
                              "(the shell fills in $HOME) or the full path")


def check_command_line(args):
    """Compose `python -m cerebral.train ARGS` and check its values once before Hydra runs it, so
    that a bad override gets our one line instead of Hydra's dozen. A sweep (-m, or seed=0,1,
    which a preset runs without -m) is checked at its first point. With Hydra's other flags
    (--cfg, --help, ...), or a sweep whose first point cannot be written back as key=value (a
    glob, an interval, quoted values), only the overrides' form is checked, and Hydra reports the
    rest."""
    check_overrides(args)
    overrides = [arg for arg in args if arg not in ("-m", "--multirun")]
    if any(arg.startswith("-") for arg in overrides):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(_composition_problem(e)) from None
    first_point = []
    for override, text in zip(parsed, overrides, strict=True):
        if not override.is_sweep_override():
            first_point.append(text)
            continue
        try:
            value = next(override.sweep_string_iterator())
        except HydraException:  # a glob or an interval: no list of values without Hydra's sweeper
            return
        if any(c in value for c in " ,'\"()[]{}=\\"):
            return
        first_point.append(f"{override.get_key_element()}={value}")
    check_config(compose(*first_point))  # a bad value too: refused before Hydra makes a sweep's folders


def _composition_problem(error):
    """Hydra's dozen-line message as one line that names the override and the way out."""
    if isinstance(error, MissingConfigException) and error.options:
        group, _, name = (error.missing_cfg_file or "").partition("/")
        return (f"{group}={name} is not an option of {group}: use one of {', '.join(error.options)} "
                f"(e.g. {group}={error.options[0]})")
    first_line = str(error).strip().splitlines()[0]
    if first_line.startswith("Could not override '"):
        key = first_line.split("'")[1]
        return f"{key} is not a key of this config: check its spelling ({LIST_KEYS})"
    return f"{first_line} (overrides are key=value; {LIST_KEYS})"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    """A finite real number: inf passes every comparison a bound checks, and trains into NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class Checks:
    """Collects every invalid value of a config, so that one message lists them all. The tasks
    check their own keys through it (`Task.check_config`)."""

    is_int, is_number = staticmethod(_is_int), staticmethod(_is_number)

    def __init__(self, cfg):
        self.cfg, self.problems = cfg, []

    def need(self, ok, key, what, example):
        if not ok:
            value = OmegaConf.select(self.cfg, key)
            self.problems.append(f"{key} must be {what}, got {value!r} (e.g. {key}={example})")


def check_config(cfg):
    """Raise ConfigError listing every invalid value in `cfg`, or naming a reference (`${...}`)
    that does not resolve."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key}: {str(e).splitlines()[0]}; fix the ${{...}} reference of {e.full_key}") from None
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def config_problems(cfg):
    """Every invalid value in `cfg`, one phrase each ([] if none)."""
    checks = Checks(cfg)
    need, problems = checks.need, checks.problems

    m, t, o = cfg.model, cfg.train, cfg.optim
    need(m.core in CORES, "model.core", " or ".join(CORES), "cerebral")
    need(_is_int(m.state_size) and m.state_size > 0, "model.state_size", "a positive integer", 512)
    need(_is_int(m.num_layers) and m.num_layers > 0, "model.num_layers", "a positive integer", 1)
    need(isinstance(m.gate_bias, bool), "model.gate_bias", "true or false", "false")
    need(isinstance(m.post_bias, bool), "model.post_bias", "true or false", "false")
    need(not (m.post_bias is True and m.core != "lstm"), "model.post_bias",
         "false unless model.core=lstm (post-activation biases belong to the LSTM core)", "false")
    need(isinstance(m.tie_init, bool), "model.tie_init", "true or false", "false")
    need(isinstance(m.bidirectional, bool), "model.bidirectional", "true or false", "false")
    need(not (m.tie_init is True and m.core not in CEREBRAL_CORES), "model.tie_init",
         "false unless model.core is " + " or ".join(CEREBRAL_CORES) + " (it ties the two Cerebral paths)", "false")
    need(m.init in INITS, "model.init", " or ".join(INITS), "tf_xavier")
    need(_is_int(m.xavier_stack) and m.xavier_stack > 0, "model.xavier_stack", "a positive integer", 4)
    need(m.cells is None or (_is_int(m.cells) and _is_int(m.state_size) and m.cells > m.state_size),
         "model.cells", f"null or an integer above model.state_size ({m.state_size}), the cells it projects from",
         "1024")
    need(m.cells is None or m.core == "lstm", "model.cells", "null unless model.core=lstm (a projected LSTM)", "null")
    need(_is_number(m.dropout) and 0 <= m.dropout < 1, "model.dropout", "a number in [0, 1)", 0.0)
    task = cfg.task.name
    need(task in TASKS, "task.name", " or ".join(TASKS), "charlm")
    need(_is_int(cfg.data.seq_len) and cfg.data.seq_len > 0, "data.seq_len", "a positive integer", 20)
    if task in TASKS:
        TASKS[task].check_config(cfg, checks)
    need(_is_int(t.epochs) and t.epochs > 0, "train.epochs", "a positive integer", 500)
    need(_is_int(t.batch_size) and t.batch_size > 0, "train.batch_size", "a positive integer", 128)
    need(t.sampling in SAMPLINGS, "train.sampling", " or ".join(SAMPLINGS), "random_batches")
    need(t.precision in PRECISIONS, "train.precision", " or ".join(PRECISIONS), "bf16")
    need(t.elementwise in ELEMENTWISE_CHOICES, "train.elementwise", " or ".join(ELEMENTWISE_CHOICES), "auto")
    need(t.backend in BACKENDS, "train.backend", " or ".join(BACKENDS), "auto")
    if t.backend == "lstm":
        problems.extend(f"train.backend=lstm runs the core as torch's nn.LSTM, {problem}"
                        for problem in lstm_backend_problems(cfg))
    if t.elementwise in ("cpp", "seq") and cfg.device in DEVICES and resolve_device(cfg.device).type != "cpu":
        problems.append(f"train.elementwise={t.elementwise} is a CPU kernel, but device={cfg.device} trains on CUDA; "
                        "use train.elementwise=aten there (or device=cpu)")
    if t.sampling == "shuffled_pass":
        need(t.steps_per_epoch is None or (_is_int(t.steps_per_epoch) and t.steps_per_epoch > 0),
             "train.steps_per_epoch", "null (the whole pass) or a positive integer (at most that many of the "
             "pass's batches) with train.sampling=shuffled_pass", "null")
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
    return problems


# Keys added after runs were first saved, with the value that keeps the old behaviour: a saved
# config without one of them reads as having that value, so older runs still resume.
ADDED_KEYS = {"task.name": "charlm", "data.val_fraction": 0.0, "model.tie_init": False,
              "optim.lr_decay_every": None, "optim.lr_decay_factor": 0.1, "train.precision": "fp32",
              "model.bidirectional": False, "data.padding": "left", "train.elementwise": "aten", "model.cells": None,
              "train.backend": "fused"}


def complete(saved):
    """A saved config (dict) as an OmegaConf config, with the keys added since it was written
    (ADDED_KEYS) at their old-behaviour values."""
    cfg = OmegaConf.create(saved)
    for key, value in ADDED_KEYS.items():
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


# Keys that may differ when a run resumes: its length, and where things are (a run folder moved
# or copied elsewhere resumes; the data files are checked by SHA-256 wherever they lie).
RESUMABLE_KEYS = ("train.epochs", "out_dir", "runs_dir", "data.dir")


def config_differences(saved, new, ignore=RESUMABLE_KEYS):
    """Keys whose values differ between two configs (dicts), as 'key: old -> new' lines."""
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
