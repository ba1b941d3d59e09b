"""What a run learns, chosen by `task=`: the paper's character model (`charlm`, the default) or
a sequence classifier (`digits`, `mnist`, `imdb`). A task hands the training loop its model, the
number of training items, the loss of a batch of them, and the metrics it adds after each epoch;
the loop, the run directory, resume and seeding are the same for all.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import data as chardata
from cerebral import seqdata
from cerebral.cores import use_backend
from cerebral.elementwise import use_elementwise
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

    With `packed` (token ids only), each sequence goes through the core as a PackedSequence at
    its own length, so that no padding reaches the core, and the classifier reads each one's
    final state; a sequence without tokens reads as the zero state."""

    def __init__(self, core, num_classes, vocab_size=None, packed=False):
        super().__init__()
        if packed and not vocab_size:
            raise ValueError("SequenceClassifier: packed input needs token ids (vocab_size), whose 0 is padding")
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

    def _final_states(self, tokens):
        """The last layer's final h of each direction, (B, D*H), each left-padded sequence run at
        its own length."""
        lengths = (tokens != 0).sum(1)
        steps = tokens.shape[1]
        # Left padding to right: row j's tokens start at steps - lengths[j]; the padding wraps round behind them.
        starts = (torch.arange(steps, device=tokens.device) + (steps - lengths).unsqueeze(1)) % steps
        tokens, present = tokens.gather(1, starts), lengths > 0
        last = tokens.new_zeros(len(tokens), self.directions * self.width, dtype=self.head.weight.dtype)
        if present.any():
            packed = pack_padded_sequence(self.embedding(tokens[present]), lengths[present].cpu(), batch_first=True,
                                          enforce_sorted=False)
            with native_lstm_context(self.core, packed):
                _, (h, *_) = self.core(packed)
            last[present] = torch.cat(list(h[-self.directions:]), dim=-1).to(last.dtype)
        return last


class Classification(_Task):
    """Sequence classification: train and test loss and accuracy after every epoch."""

    tensors = ("inputs", "targets", "test_inputs", "test_targets")
    columns = ("train_accuracy", "test_loss", "test_accuracy")

    @staticmethod
    def check_config(cfg, checks):
        d, need = cfg.data, checks.need
        if cfg.task.name in ("digits", "imdb"):  # split here; MNIST comes split
            need(checks.is_number(d.test_fraction) and 0 < d.test_fraction < 1, "data.test_fraction",
                 "a number in (0, 1)", 0.25)
            need(checks.is_int(d.split_seed) and d.split_seed >= 0, "data.split_seed", "a non-negative integer", 0)
        if cfg.task.name == "mnist":
            need(isinstance(d.mnist_dir, str) and d.mnist_dir != "", "data.mnist_dir",
                 "the folder of the four MNIST IDX files", "$HOME/mnist")
        if cfg.task.name == "imdb":
            need(isinstance(d.imdb_csv, str) and d.imdb_csv != "", "data.imdb_csv",
                 'the path of Kaggle\'s "IMDB Dataset.csv"', "'$HOME/IMDB Dataset.csv'")
            need(checks.is_int(cfg.task.embedding_size) and cfg.task.embedding_size > 0, "task.embedding_size",
                 "a positive integer", 64)
            for key, example in (("num_reviews", 5000), ("vocab_size", 1000)):
                need(checks.is_int(d[key]) and d[key] > 0, f"data.{key}", "a positive integer", example)
            need(d.padding in PADDINGS, "data.padding", "left (padded to data.seq_len, as the notebook) or packed "
                 "(each review at its own length)", "packed")

    def __init__(self, cfg):
        d, t = cfg.data, cfg.task
        if t.name == "digits":
            data = seqdata.load_digits(d.test_fraction, d.split_seed)
        elif t.name == "mnist":
            data = seqdata.load_mnist(d.mnist_dir)
        else:
            data = seqdata.load_imdb(d.imdb_csv, d.num_reviews, d.vocab_size, d.seq_len, d.test_fraction, d.split_seed)
        self.inputs, self.targets = data.train_x, data.train_y
        self.test_inputs, self.test_targets = data.test_x, data.test_y
        core = build_core(cfg.model, data.input_size or t.embedding_size)
        packed = t.name == "imdb" and d.padding == "packed"
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
        test_loss, test_accuracy = self._loss_and_accuracy(model, self.test_inputs, self.test_targets)
        return {"train_accuracy": train_accuracy, "test_loss": test_loss, "test_accuracy": test_accuracy}


TASKS = {"charlm": CharLM, "digits": Classification, "mnist": Classification, "imdb": Classification}


def make_task(cfg):
    """The task `cfg.task.name` names, with its data loaded and its model built (on the CPU), its
    fused cores doing their elementwise work as `train.elementwise` says, on `train.backend`."""
    task = TASKS[cfg.task.name](cfg)
    use_elementwise(task.model, cfg.train.elementwise)
    use_backend(task.model, resolve_backend(cfg))
    return task
