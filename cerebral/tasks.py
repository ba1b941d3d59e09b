"""What a run learns, chosen by `task=`: the paper's character model (`charlm`, the default) or
a sequence classifier (`digits`, `mnist`, `imdb`, `mnist1d`, `japanese_vowels`). A task hands the
training loop its model, the number of training items, the loss of a batch of them, the metrics
it adds after each epoch and the SHA-256 of its data; the loop, the run directory, resume and
seeding are the same for all.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import data as chardata
from cerebral import seqdata, taskdata
from cerebral.cores import use_backend
from cerebral.elementwise import resolve_elementwise, use_elementwise
from cerebral.errors import ConfigError
from cerebral.models import build_core, build_model, init_model_, resolve_backend
from cerebral.precision import full_precision, native_lstm_context

EVAL_BATCH = 1024  # sequences per forward pass when evaluating (no gradients kept)
PADDINGS = ("left", "packed")  # data.padding of task=imdb


def char_lm_loss(model, inputs, targets, reduction="mean"):
    """Cross-entropy over every character of the batch (mean, or sum), each sequence from a zero state."""
    logits, _ = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


class _Task:
    """What every task shares: training tensors `inputs` [N, T, ...] and `targets`, and further
    tensors named in `tensors` that move to the device with them."""

    tensors = ("inputs", "targets")
    columns = ()  # the metrics `evaluate` adds to metrics.csv
    vocab = None  # saved in the checkpoint: the character task's vocabulary
    data_sha256 = None  # for run.json: {what the data was read or generated from: its SHA-256}

    def __len__(self):
        return len(self.inputs)

    @staticmethod
    def check_config(cfg, checks):
        """Add the task's own invalid config values to `checks` (a `cerebral.config.Checks`)."""

    def to(self, device):
        for name in self.tensors:
            setattr(self, name, getattr(self, name).to(device))
        return self


@torch.no_grad()
def summed(measure, inputs, targets):
    """Each of the scalars `measure(inputs, targets)` returns (a tuple), summed over chunks of
    EVAL_BATCH sequences."""
    chunks = [measure(inputs[start:start + EVAL_BATCH], targets[start:start + EVAL_BATCH])
              for start in range(0, len(inputs), EVAL_BATCH)]
    return [sum(chunk[i].item() for chunk in chunks) for i in range(len(chunks[0]))]


class CharLM(_Task):
    """Next-character prediction on the Simpsons text (the paper's task). With
    `data.val_fraction` > 0 the last block of sequences is held out, and every epoch reports its
    loss and bits per character."""

    tensors = ("inputs", "targets", "val_inputs", "val_targets")
    columns = ("val_loss", "val_bpc")

    @staticmethod
    def check_config(cfg, checks):
        checks.need(cfg.model.bidirectional is not True, "model.bidirectional",
                    "false for task=charlm (a bidirectional language model would see the characters it must predict)",
                    "false")
        fraction = cfg.data.val_fraction
        checks.need(checks.is_number(fraction) and 0 <= fraction < 1, "data.val_fraction", "a number in [0, 1)", 0.1)

    def __init__(self, cfg):
        data = chardata.load(cfg.data.dir, cfg.data.seq_len)
        held_out = round(len(data.inputs) * cfg.data.val_fraction)
        if cfg.data.val_fraction > 0 and held_out == 0:
            raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} holds out no sequence of "
                              f"{len(data.inputs)}; use a larger fraction, or 0 for none")
        kept = len(data.inputs) - held_out
        if held_out and kept < cfg.train.batch_size:
            raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} leaves {kept} of {len(data.inputs)} sequences "
                              f"for training, fewer than train.batch_size={cfg.train.batch_size}; use a smaller fraction")
        self.inputs, self.targets = data.inputs[:kept], data.targets[:kept]
        self.val_inputs, self.val_targets = data.inputs[kept:], data.targets[kept:]
        self.vocab = data.vocab
        self.model = build_model(cfg.model, len(data.vocab))

    def loss(self, model, batch):
        return char_lm_loss(model, self.inputs[batch], self.targets[batch])

    def evaluate(self, model):
        if len(self.val_inputs) == 0:
            return {}
        (total,) = summed(lambda x, y: (char_lm_loss(model, x, y, "sum"),), self.val_inputs, self.val_targets)
        loss = total / self.val_targets.numel()
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}


class SequenceClassifier(nn.Module):
    """Reads a sequence with a recurrent core and classifies it from the last hidden state, as
    the LSTM tutorial (pixel rows, docs/MODELS.md, M4) and the upstream IMDB notebook (embedded
    words) do. Input (B, T, features), or token ids (B, T) with `vocab_size` (id 0 is padding,
    on the left); out the logits (B, num_classes), in fp32 also under bf16 autocast.

    With `packed`, each sequence goes through the core as a PackedSequence at its own length, so
    that no padding reaches the core, and the classifier reads each one's final state; a sequence
    of padding only reads as the zero state. Its padding is on the left: token id 0, or NaN
    features, which would turn the logits NaN if they ever reached the core."""

    def __init__(self, core, num_classes, vocab_size=None, packed=False):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, core.input_size, padding_idx=0) if vocab_size else None
        self.core = core
        self.packed = packed
        self.directions = 2 if getattr(core, "bidirectional", False) else 1
        self.width = getattr(core, "proj_size", 0) or core.hidden_size  # of h, per direction
        self.head = nn.Linear(self.width * self.directions, num_classes)

    def forward(self, x):
        if self.packed:
            last = self._final_states(x)
        else:
            if self.embedding is not None:
                x = self.embedding(x)
            with native_lstm_context(self.core, x):
                output, _ = self.core(x)
            last = output[:, -1]
            if self.directions == 2:  # each direction's final state: the reverse one ends at step 0
                last = torch.cat([output[:, -1, : self.width], output[:, 0, self.width :]], dim=-1)
        with full_precision(last.device):  # fp32 logits (and loss) under bf16 autocast
            return self.head(last.to(self.head.weight.dtype))

    def _final_states(self, x):
        """The last layer's final h of each direction, (B, D*H), each left-padded sequence run at
        its own length."""
        padding = x == 0 if self.embedding is not None else x[..., 0].isnan()
        lengths = (~padding).sum(1)
        steps = x.shape[1]
        # Left padding to right: row j's steps start at steps - lengths[j]; the padding wraps round behind them.
        starts = (torch.arange(steps, device=x.device) + (steps - lengths).unsqueeze(1)) % steps
        x = x.gather(1, starts if x.dim() == 2 else starts.unsqueeze(-1).expand_as(x))
        present = lengths > 0
        last = torch.zeros(len(x), self.directions * self.width, dtype=self.head.weight.dtype, device=x.device)
        if present.any():
            inputs = x[present] if self.embedding is None else self.embedding(x[present])
            packed = pack_padded_sequence(inputs, lengths[present].cpu(), batch_first=True, enforce_sorted=False)
            with native_lstm_context(self.core, packed):
                _, (h, *_) = self.core(packed)
            last[present] = torch.cat(list(h[-self.directions:]), dim=-1).to(last.dtype)
        return last


VALIDATED = ("mnist1d", "japanese_vowels")  # the tasks whose presets have data.validation
VALIDATION_FRACTION, VALIDATION_SEED = 0.1, 0


def load_classification(cfg):
    """The `seqdata.ClassificationData` of task `cfg.task.name`; files not given are downloaded
    into data.dir (`taskdata.fetch`)."""
    d, name = cfg.data, cfg.task.name
    if name == "digits":
        return seqdata.load_digits(d.test_fraction, d.split_seed)
    if name == "mnist":
        return seqdata.load_mnist(d.mnist_dir or taskdata.fetch("mnist", d.dir))
    if name == "imdb":
        path = d.imdb_csv or taskdata.fetch("imdb", d.dir) / "aclImdb_v1.tar.gz"
        return seqdata.load_imdb(path, d.num_reviews, d.vocab_size, d.seq_len, d.test_fraction, d.split_seed)
    if name == "mnist1d":
        return seqdata.load_mnist1d()
    return seqdata.load_japanese_vowels(taskdata.fetch("japanese_vowels", d.dir))


class Classification(_Task):
    """Sequence classification: loss and accuracy on the training and the test set after every
    epoch. With data.validation=true (MNIST-1D, Japanese Vowels) a stratified 10% of the training
    set, drawn with seed 0, is held out and takes the test set's place (val_loss, val_accuracy),
    so that epochs and learning rate are chosen without looking at the test set."""

    tensors = ("inputs", "targets", "held_inputs", "held_targets")

    @staticmethod
    def check_config(cfg, checks):
        d, need, name = cfg.data, checks.need, cfg.task.name
        if name in ("digits", "imdb"):  # split here; the others come split
            need(checks.is_number(d.test_fraction) and 0 < d.test_fraction < 1, "data.test_fraction",
                 "a number in (0, 1)", 0.25)
            need(checks.is_int(d.split_seed) and d.split_seed >= 0, "data.split_seed", "a non-negative integer", 0)
        if name == "mnist":
            need(d.mnist_dir is None or (isinstance(d.mnist_dir, str) and d.mnist_dir != ""), "data.mnist_dir",
                 "null (downloaded into data.dir) or the folder of the four MNIST IDX files", "$HOME/mnist")
        if name == "imdb":
            need(d.imdb_csv is None or (isinstance(d.imdb_csv, str) and d.imdb_csv != ""), "data.imdb_csv",
                 'null (the Stanford archive, downloaded into data.dir) or the path of Kaggle\'s "IMDB Dataset.csv"',
                 "'$HOME/IMDB Dataset.csv'")
            need(checks.is_int(cfg.task.embedding_size) and cfg.task.embedding_size > 0, "task.embedding_size",
                 "a positive integer", 64)
            for key, example in (("num_reviews", 5000), ("vocab_size", 1000)):
                need(checks.is_int(d[key]) and d[key] > 0, f"data.{key}", "a positive integer", example)
            need(d.padding in PADDINGS, "data.padding", "left (padded to data.seq_len, as the notebook) or packed "
                 "(each review at its own length)", "packed")
        if name in VALIDATED:
            need(isinstance(d.validation, bool), "data.validation", "true (a held-out 10% of the training set in "
                 "place of the test set) or false", "true")
        if name == "mnist1d":
            seqdata.require_mnist1d()  # a missing package: one line, before any work

    def __init__(self, cfg):
        d, t = cfg.data, cfg.task
        data = load_classification(cfg)
        self.data_sha256 = data.digests
        self.inputs, self.targets = data.train_x, data.train_y
        self.held_inputs, self.held_targets, held_out = data.test_x, data.test_y, "test"
        if t.name in VALIDATED and d.validation:
            kept, val = seqdata.validation_split(self.targets, VALIDATION_FRACTION, VALIDATION_SEED)
            self.held_inputs, self.held_targets, held_out = self.inputs[val], self.targets[val], "val"
            self.inputs, self.targets = self.inputs[kept], self.targets[kept]
        self.columns = ("train_accuracy", f"{held_out}_loss", f"{held_out}_accuracy")
        core = build_core(cfg.model, data.input_size or t.embedding_size)
        packed = t.name == "japanese_vowels" or (t.name == "imdb" and d.padding == "packed")
        self.model = init_model_(SequenceClassifier(core, data.num_classes, data.vocab_size, packed), cfg.model)

    def loss(self, model, batch):
        return F.cross_entropy(model(self.inputs[batch]), self.targets[batch])

    @staticmethod
    def _loss_and_accuracy(model, inputs, targets):
        def measure(x, y):
            logits = model(x)
            return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum()
        loss, correct = summed(measure, inputs, targets)
        return loss / len(inputs), correct / len(inputs)

    def evaluate(self, model):
        _, train_accuracy = self._loss_and_accuracy(model, self.inputs, self.targets)
        held_loss, held_accuracy = self._loss_and_accuracy(model, self.held_inputs, self.held_targets)
        return dict(zip(self.columns, (train_accuracy, held_loss, held_accuracy), strict=True))


TASKS = {"charlm": CharLM, **{name: Classification for name in ("digits", "mnist", "imdb", *VALIDATED)}}


def decide_kernels(cfg):
    """Put the backend and the elementwise kernel the run trains on into cfg.train, which the run
    records (`models.resolve_backend`, `elementwise.resolve_elementwise`): an explicit or recorded
    choice stays, `auto` is decided now, building the C++ kernels where it picks them. After the
    data are read, so that missing data are reported before a build of seconds."""
    cfg.train.backend = resolve_backend(cfg)
    cfg.train.elementwise = resolve_elementwise(cfg)


def make_task(cfg):
    """The task `cfg.task.name` names, with its data loaded and its model built (on the CPU), its
    fused cores doing their elementwise work as `train.elementwise` says, on `train.backend`
    (`auto` decided by `decide_kernels`, into cfg)."""
    task = TASKS[cfg.task.name](cfg)
    decide_kernels(cfg)
    use_backend(use_elementwise(task.model, cfg.train.elementwise), cfg.train.backend)
    return task
