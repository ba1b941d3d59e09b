"""Export and compile: the character models with Cerebral and post-bias cores through torch.export
and ONNX (run in ONNX Runtime), batch and time dynamic, and torch.compile training a step."""

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import CerebralLSTM, PostBiasLSTM
from cerebral.config import compose
from cerebral.export import export_onnx, export_program, main, output_names
from cerebral.models import build_model
from cerebral.steps import make_optimizer
from cerebral.tasks import char_lm_loss

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
VOCAB = 11
SHAPES = [(3, 7), (1, 12)]  # (batch, time), neither the traced example's (2, 5)


def small_model(name, *overrides):
    torch.manual_seed(0)
    return build_model(compose(f"model={name}", "model.state_size=16", *overrides).model, VOCAB).eval()


def flat(outputs):
    return [t for t in torch.utils._pytree.tree_leaves(outputs)]


def assert_outputs_close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(torch.as_tensor(a), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cerebral_lstm", "stacked_lstm"])
def test_torch_export_keeps_batch_and_time_dynamic(name):
    model = small_model(name)
    program = export_program(model)
    for shape in SHAPES:
        tokens = torch.randint(0, VOCAB, shape)
        with torch.no_grad():
            assert_outputs_close(flat(program.module()(tokens)), flat(model(tokens)))


@pytest.mark.parametrize("name", ["cerebral_lstm", "stacked_lstm", "single_lstm"])
def test_one_onnx_file_runs_in_onnx_runtime_at_other_batch_sizes_and_lengths(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime has no wheel for this platform")
    model = small_model(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "model.onnx")))
    assert not [w for w in caught if "_flat_weights" in str(w.message)]  # PyTorch's own, about nn.LSTM
    assert [o.name for o in session.get_outputs()] == output_names(model)
    logits = session.get_outputs()[0]
    assert all(isinstance(size, str) for size in logits.shape[:2]), logits.shape  # batch and time symbolic
    for shape in SHAPES:
        tokens = torch.randint(0, VOCAB, shape)
        with torch.no_grad():
            expected = flat(model(tokens))
        assert_outputs_close(session.run(None, {"tokens": tokens.numpy()}), expected)


@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM])
def test_a_bidirectional_projected_core_exports_to_onnx_with_batch_and_time_dynamic(cls, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime has no wheel for this platform")
    torch.manual_seed(1)
    core = cls(4, 6, num_layers=2, batch_first=True, bidirectional=True, proj_size=3).eval()
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("time", min=1)}
    with torch.no_grad():
        torch.onnx.export(core, (torch.randn(2, 5, 4),), dynamic_shapes=({**dims},), dynamo=True, verbose=False,
                          external_data=False).save(str(tmp_path / "core.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "core.onnx"))
    for batch, time in SHAPES:
        x = torch.randn(batch, time, 4)
        with torch.no_grad():
            expected = flat(core(x))
        assert_outputs_close(session.run(None, {session.get_inputs()[0].name: x.numpy()}), expected)


def test_export_refuses_a_packed_sequence_in_one_line():
    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.core = CerebralLSTM(3, 4)

        def forward(self, x):
            return self.core(pack_padded_sequence(x, torch.tensor([2, 1])))[1][0]

    with pytest.raises(Exception, match="export takes padded input .* not a PackedSequence"):
        torch.export.export(Packed(), (torch.randn(2, 2, 3),))


def test_the_command_exports_a_trained_run(tiny_runs, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime has no wheel for this platform")
    run = tiny_runs / "cerebral_lstm" / "seed0"
    main([str(run), str(tmp_path / "out" / "cerebral.onnx")])
    assert "outputs logits, h, c_upper, c_lower" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "cerebral.onnx"))
    assert session.get_inputs()[0].name == "tokens"
    (tmp_path / "no-run").mkdir()
    with pytest.raises(SystemExit, match=r"does not exist, nor committed weights \(model.pt\): train the run first"):
        main([str(tmp_path / "no-run"), str(tmp_path / "x.onnx")])


def test_an_interrupted_export_leaves_no_file(tiny_runs, tmp_path, monkeypatch):
    def save_half_then_die(program, destination):
        Path(destination).write_bytes(b"half an onnx file")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", save_half_then_die)
    out = tmp_path / "cerebral.onnx"
    with pytest.raises(KeyboardInterrupt):
        main([str(tiny_runs / "cerebral_lstm" / "seed0"), str(out)])
    assert list(tmp_path.iterdir()) == []


GRAPH_BREAKS = {"cerebral_lstm": 4, "stacked_lstm": 5}  # as docs/REFERENCE.md reports them, at the pinned torch


@pytest.mark.parametrize("name", ["cerebral_lstm", pytest.param("stacked_lstm", marks=pytest.mark.slow)])
def test_torch_compile_trains_a_step_as_eager_does(name):
    """The fused path under torch.compile (inductor's GEMMs instead of the oneDNN ops). Dynamo
    breaks the graph where FusedLayer's backward writes gate gradients into column blocks of one
    buffer (`out=` tensors it does not trace); the count is docs/REFERENCE.md's."""
    model = small_model(name).train()
    tokens = torch.randint(0, VOCAB, (4, 9))
    explanation = torch._dynamo.explain(model)(tokens[:, :-1])
    assert explanation.graph_break_count == GRAPH_BREAKS[name]
    assert explanation.graph_count == GRAPH_BREAKS[name] + 1
    assert all("out=" in reason.reason for reason in explanation.break_reasons)
    torch._dynamo.reset()
    compiled = copy.deepcopy(model)
    losses = []
    for module, run in ((model, model), (compiled, torch.compile(compiled))):
        optimizer = make_optimizer(compose().optim, module.parameters())
        loss = char_lm_loss(run, tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for ours, eager in zip(compiled.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-5)


def test_torch_compile_runs_the_sequence_kernels_model_on_the_aten_calls(kernel_calls):
    """No fake kernel lets inductor trace the C++ kernels: under torch.compile a core set to
    elementwise=seq runs the ATen path, and its outputs agree with the eager kernel's."""
    from cerebral.elementwise import use_elementwise

    model = use_elementwise(small_model("cerebral_lstm"), "seq")
    tokens = torch.randint(0, VOCAB, (4, 9))
    eager = model(tokens)[0]
    assert kernel_calls == ["layer_forward"]
    torch._dynamo.reset()
    compiled = torch.compile(model)(tokens)[0]
    assert kernel_calls == ["layer_forward"]  # none from the compiled model
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
