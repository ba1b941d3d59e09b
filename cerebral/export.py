"""Export a trained character model to ONNX, with the batch and time dimensions dynamic:

    python -m cerebral.export results/paper/cerebral_lstm/seed0 cerebral_lstm.onnx

Under export the Cerebral, post-bias and NovoLSTM cores run their `scan` form (the equations
of the reference path; cerebral/cores.py), which both exporters keep as one loop: a Scan node in
ONNX, so one file takes any batch size and sequence length. `nn.LSTM` (the single LSTM) goes
through PyTorch's own export of it. The model's input is `tokens` (B, T), int64 ids of the run's
vocabulary; its outputs are `logits` (B, T, vocab) and the final state: `h`, then the cell
state(s) `c` (or `c_upper`, `c_lower`), each (L*D, B, H). Needs the `onnx` and `onnxscript`
packages (requirements.txt pins them); ONNX Runtime runs the file.
"""

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import torch
from torch.export._patches import register_lstm_while_loop_decomposition

from cerebral.atomic import atomic_path
from cerebral.curves import check_writable
from cerebral.errors import USER_ERRORS
from cerebral.generate import load_trained

EXAMPLE_BATCH, EXAMPLE_STEPS = 2, 5  # the example input traced; the exported sizes stay free


def _dynamic_shapes():
    return {"tokens": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("time", min=1)}}


def _example(model):
    device = next(model.parameters()).device
    return (torch.zeros(EXAMPLE_BATCH, EXAMPLE_STEPS, dtype=torch.long, device=device),)


def output_names(model):
    """The names of the exported outputs: logits, then the state as the core returns it."""
    cells = ("c_upper", "c_lower") if getattr(model.core, "num_cells", 1) == 2 else ("c",)
    return ["logits", "h", *cells]


@contextlib.contextmanager
def _exporting():
    """No gradients, and nn.LSTM's time loop as a while_loop (PyTorch's own decomposition, without
    which its time is fixed). That decomposition assigns nn.LSTM's `_flat_weights` and PyTorch then
    warns that they are no buffers: a warning about its own module, not about the export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights", category=UserWarning)
        with torch.no_grad(), register_lstm_while_loop_decomposition():
            yield


def export_program(model):
    """`torch.export` of the eval-mode model, batch and time dynamic."""
    with _exporting():
        return torch.export.export(model.eval(), _example(model), dynamic_shapes=_dynamic_shapes())


def export_onnx(model, path):
    """Write the eval-mode model to `path` as one ONNX file, batch and time dynamic."""
    with _exporting():
        program = torch.onnx.export(model.eval(), _example(model), dynamic_shapes=_dynamic_shapes(), dynamo=True,
                                    input_names=["tokens"], output_names=output_names(model),
                                    external_data=False, verbose=False)
    with atomic_path(path) as tmp:  # an interrupted export leaves no cut-short file
        program.save(str(tmp))
    return Path(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a trained character model to ONNX (batch and time dynamic).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    args = parser.parse_args(argv)
    check_writable(args.out, "give the path of the .onnx file to write")
    try:
        model, vocab = load_trained(args.run_dir)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, args.out)
    print(f"wrote {args.out}: input tokens (batch, time) of {len(vocab)} characters; outputs "
          f"{', '.join(output_names(model))}")


if __name__ == "__main__":
    main()
