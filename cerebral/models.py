"""The character-level models of the paper: embedding -> recurrent core -> linear head.

`build_model(cfg.model, vocab_size)` makes `single_lstm`, `stacked_lstm` or `cerebral_lstm`
(and the studies' variants) from the options in `conf/model/*.yaml`; docs/PROTOCOL.md gives the
evidence behind each default.
"""

import math

import torch
from torch import nn

from cerebral.cores import BACKENDS as CORE_BACKENDS
from cerebral.cores import CerebralLSTM, CerebralLSTMPrinted, NovoLSTM, PostBiasLSTM
from cerebral.errors import ConfigError
from cerebral.precision import full_precision, native_lstm_context
from cerebral.steps import resolve_device

CORES = ("lstm", "cerebral", "cerebral_printed", "novo")
CEREBRAL_CORES = ("cerebral", "cerebral_printed")
INITS = ("tf_xavier", "torch")
BACKENDS = ("auto", *CORE_BACKENDS)  # train.backend


class CharRNN(nn.Module):
    """A learned embedding of the core's output width (`proj_size`, else `hidden_size`; no
    one-hot), a recurrent core, and a linear layer with bias over the vocabulary (docs/PROTOCOL.md,
    P3). Token ids (B, T) in, batch-first; out the logits (B, T, vocab_size), in fp32 also under
    bf16 autocast, and the core's state."""

    def __init__(self, vocab_size, core):
        super().__init__()
        width = getattr(core, "proj_size", 0) or core.hidden_size
        self.embedding = nn.Embedding(vocab_size, width)
        self.core = core
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens, state=None):
        inputs = self.embedding(tokens)
        with native_lstm_context(self.core, inputs):
            output, state = self.core(inputs, state)
        with full_precision(tokens.device):  # fp32 logits (and loss) under bf16 autocast
            return self.head(output.to(self.head.weight.dtype)), state


def tf_xavier_bound(fan_in, fan_out, stacked=1):
    """TF1 `xavier_initializer` (uniform) on a tensor [stacked..., fan_in, fan_out]: both fans
    are multiplied by the leading dimensions (docs/PROTOCOL.md, P5)."""
    return math.sqrt(6.0 / (stacked * (fan_in + fan_out)))


def tf_xavier_init_(model, xavier_stack):
    """Initialise `model` as the TF1 code behind the published curves did.

    Gate weights are uniform in +-tf_xavier_bound(fan_in, hidden, xavier_stack), where
    `xavier_stack` is the number of gate matrices TF stored in one tensor ([4, 512, 512] for the
    single LSTM and for each Cerebral path, [2, 4, 512, 512] for the two-stacked LSTM, [4, 512, 1024]
    for `lstmp`); the embedding, the head and a projection `weight_hr` are plain 2-D Xavier; every
    bias starts at zero.
    """
    hidden = model.core.hidden_size
    for name, p in model.named_parameters():
        if name.startswith("core.weight_hr") or name in ("embedding.weight", "head.weight"):
            bound = tf_xavier_bound(*p.shape)
        elif name.startswith("core.weight_"):
            bound = tf_xavier_bound(p.shape[1], hidden, xavier_stack)
        else:
            if "bias" in name:
                nn.init.zeros_(p)
            continue
        nn.init.uniform_(p, -bound, bound)


def build_core(cfg, input_size):
    """The recurrent core described by a `conf/model/*.yaml` config (batch-first)."""
    size, layers = cfg.state_size, cfg.num_layers
    options = dict(bias=cfg.gate_bias, batch_first=True, dropout=cfg.dropout, bidirectional=cfg.bidirectional)
    if cfg.core == "cerebral":
        return CerebralLSTM(input_size, size, layers, **options)
    if cfg.core == "cerebral_printed":
        return CerebralLSTMPrinted(input_size, size, layers, **options)
    if cfg.core == "novo":
        return NovoLSTM(input_size, size, layers, **options)
    if cfg.core != "lstm":
        raise ConfigError(f"model.core must be {' or '.join(CORES)}, got {cfg.core!r}")
    if cfg.cells:  # LSTMP on our fused path, which trains it faster than nn.LSTM's (docs/PERFORMANCE.md)
        return PostBiasLSTM(input_size, cfg.cells, layers, proj_size=size, post_bias=cfg.post_bias, **options)
    if cfg.post_bias:
        return PostBiasLSTM(input_size, size, layers, **options)
    return nn.LSTM(input_size, size, layers, **options)


def init_model_(model, cfg):
    """The configured initialisation; with `tie_init`, the Cerebral lower path then copies the
    upper, and the core runs on its equation-by-equation path: there the two paths stay equal bit
    for bit, while the fused kernel's vectorised sigmoid may round the two copies of a value apart."""
    if cfg.init == "tf_xavier":
        tf_xavier_init_(model, cfg.xavier_stack)
    embedding = getattr(model, "embedding", None)
    if embedding is not None and embedding.padding_idx is not None:
        with torch.no_grad():
            embedding.weight[embedding.padding_idx] = 0  # padding reads as no input, as nn.Embedding starts it
    if cfg.tie_init:
        model.core.tie_paths_()
        model.core.fused = False
    return model


def build_model(cfg, vocab_size):
    """The character model described by a `conf/model/*.yaml` config."""
    return init_model_(CharRNN(vocab_size, build_core(cfg, cfg.state_size)), cfg)


def lstm_backend_problems(cfg):
    """Why `cfg` cannot train on train.backend=lstm (torch's nn.LSTM), as phrases; [] if it can."""
    m, problems = cfg.model, []
    if m.core in ("cerebral_printed", "novo"):
        problems.append(f"and no nn.LSTM computes model.core={m.core}'s cell; use train.backend=fused")
    if m.core == "lstm" and m.post_bias is True:
        problems.append("which has no post-activation biases (model.post_bias=true, the two-stacked model); "
                        "use train.backend=fused")
    if m.tie_init is True:
        problems.append("but the tied-path ablation (model.tie_init=true) runs on the equation path to keep its "
                        "paths equal; use train.backend=fused")
    if cfg.train.elementwise not in ("aten", "auto"):
        problems.append(f"so train.elementwise={cfg.train.elementwise} would do nothing; use train.elementwise=aten")
    return problems


def resolve_backend(cfg, recorded=None):
    """train.backend as a run records it. An explicit value stays; `auto` is the value the run
    folder recorded (`recorded`, if any: a resume keeps its kernels), else "lstm" (cuDNN's
    kernel) on CUDA for a Cerebral core that nn.LSTM can express, and "fused" everywhere else."""
    backend = cfg.train.backend
    if backend != "auto":
        return backend
    if recorded is not None:
        return recorded
    on_cuda = cfg.device in ("auto", "cuda") and resolve_device(cfg.device).type == "cuda"
    return "lstm" if on_cuda and cfg.model.core == "cerebral" and not lstm_backend_problems(cfg) else "fused"


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())
