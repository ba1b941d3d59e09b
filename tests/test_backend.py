"""train.backend: a Cerebral core (or the projected LSTM of lstmp) trains through torch's own
nn.LSTM, its weights computed from ours each call (cuDNN's kernel on CUDA). On a CPU that path
runs PyTorch's native LSTM, and is held here against the fused path in every mode; `auto` is
`fused` everywhere but CUDA, and the run folder records the resolved value."""

import itertools
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_overrides
from test_cerebral_as_lstmp import FEATURES, HIDDEN, PROJECTION, results
from test_lstm_oracle import INPUTS
from test_precision import AUTOGRAD_GRADIENT_TOLERANCE, OUTPUT_TOLERANCE, relative_error

from cerebral import CerebralLSTM, PostBiasLSTM, precision, rundir
from cerebral.config import ConfigError, check_config, compose
from cerebral.cores import use_backend
from cerebral.models import build_model, resolve_backend
from cerebral.rundir import read_config
from cerebral.tasks import decide_kernels
from cerebral.train import train

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def on_both_backends(make, compare):
    """`compare(fused results, lstm results)` for two copies of one core, one on each backend."""
    torch.manual_seed(0)
    fused, lstm = make(), make()
    lstm.load_state_dict(fused.state_dict())
    lstm.backend = "lstm"
    return compare(fused, lstm)


MODES = list(itertools.product([1, 2], [False, True], [False, True], [True, False], [0, PROJECTION], INPUTS))


@pytest.mark.parametrize("layers,bidirectional,batch_first,bias,proj_size,kind", MODES)
def test_the_lstm_backend_computes_the_fused_paths_function_and_gradients(layers, bidirectional, batch_first, bias,
                                                                          proj_size, kind):
    def make():
        return CerebralLSTM(FEATURES, HIDDEN, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                            proj_size=proj_size, stacked_state=True)

    def compare(fused, lstm):
        for ours, theirs in zip(results(lstm, kind, batch_first), results(fused, kind, batch_first), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        for (name, a), b in zip(lstm.named_parameters(), fused.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)

    on_both_backends(make, compare)


def test_the_cerebral_state_goes_in_and_comes_back_in_its_own_form():
    torch.manual_seed(1)
    core = CerebralLSTM(FEATURES, HIDDEN, batch_first=True)
    x = torch.randn(2, 4, FEATURES)
    state = (torch.randn(1, 2, HIDDEN), (torch.randn(1, 2, HIDDEN), torch.randn(1, 2, HIDDEN)))
    fused = core(x, state)
    core.backend = "lstm"
    output, (h, (c_upper, c_lower)) = core(x, state)
    for ours, theirs in zip((output, h, c_upper, c_lower), (fused[0], fused[1][0], *fused[1][1]), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    core.stacked_state = True  # (h, c) with c = [c_upper, c_lower]
    output, (h, c) = core(x, (state[0], torch.cat(state[1], dim=-1)))
    torch.testing.assert_close(c, torch.cat(fused[1][1], dim=-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,make", [
    ("cerebral", lambda: CerebralLSTM(24, 32, 2, bias=True, batch_first=True)),
    ("lstmp", lambda: PostBiasLSTM(24, 64, 2, proj_size=32, post_bias=False, batch_first=True)),
])
def test_the_lstm_backend_in_bf16_stays_within_the_precision_tolerances_of_fp32(name, make):
    x = torch.randn(16, 20, 24, requires_grad=True)

    def outputs_and_gradients(core, mode):
        core.zero_grad()
        x.grad = None
        with precision.autocast(mode, "cpu"):
            output = core(x)[0].float()
        (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
        return output.detach(), [p.grad.clone() for p in core.parameters()] + [x.grad.clone()]

    def compare(fused, lstm):
        reference, reference_grads = outputs_and_gradients(fused, "fp32")
        output, grads = outputs_and_gradients(lstm, "bf16")
        assert 0 < relative_error(output, reference) < OUTPUT_TOLERANCE  # bf16 really ran
        for grad, reference_grad in zip(grads, reference_grads, strict=True):
            assert relative_error(grad, reference_grad) < AUTOGRAD_GRADIENT_TOLERANCE  # as nn.LSTM itself

    on_both_backends(make, compare)


def test_auto_is_fused_on_a_cpu_and_for_every_core_the_lstm_backend_cannot_take(monkeypatch):
    for model in ("single_lstm", "stacked_lstm", "cerebral_lstm", "lstmp", "novo_lstm", "cerebral_lstm_printed"):
        assert resolve_backend(compose(f"model={model}")) == "fused"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a CUDA machine
    assert resolve_backend(compose("model=cerebral_lstm")) == "lstm"
    assert resolve_backend(compose("model=cerebral_lstm", "device=cpu")) == "fused"
    for overrides in (["model=stacked_lstm"], ["model=single_lstm"], ["model=lstmp"], ["model=cerebral_lstm_printed"],
                      ["model=cerebral_lstm_tied"], ["model=cerebral_lstm", "train.elementwise=cpp"]):
        assert resolve_backend(compose(*overrides)) == "fused", overrides
    assert resolve_backend(compose("model=cerebral_lstm", "train.backend=fused")) == "fused"


def test_a_run_folder_resumes_on_its_recorded_backend_under_auto(data_dir, tmp_path, monkeypatch):
    # on a CPU: fused (aten, which a CUDA machine also runs, where auto would give seq on some CPUs)
    train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.elementwise=aten")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the same command on a CUDA machine
    cfg = compose("model=cerebral_lstm", f"out_dir={tmp_path / 'run'}")
    rundir.resume_kernels(cfg)
    assert cfg.train.backend == "fused"  # as recorded
    cfg = compose("model=cerebral_lstm", f"out_dir={tmp_path / 'new'}")
    rundir.resume_kernels(cfg)
    assert cfg.train.backend == "auto"  # a new run's is decided once its data are read
    decide_kernels(cfg)
    assert cfg.train.backend == "lstm"
    legacy = tmp_path / "legacy"  # a config saved before train.backend existed reads as fused
    legacy.mkdir()
    (legacy / "config.yaml").write_text((tmp_path / "run" / "config.yaml").read_text().replace("  backend: fused\n", ""))
    cfg = compose("model=cerebral_lstm", f"out_dir={legacy}")
    rundir.resume_kernels(cfg)
    assert cfg.train.backend == "fused"


@pytest.mark.parametrize("overrides,cause", [
    (["model=stacked_lstm"], "no post-activation biases"),
    (["model=cerebral_lstm_printed"], "no nn.LSTM computes model.core=cerebral_printed's cell"),
    (["model=novo_lstm"], "no nn.LSTM computes model.core=novo's cell"),
    (["model=cerebral_lstm_tied"], "the tied-path ablation"),
    (["model=cerebral_lstm", "train.elementwise=cpp"], "train.elementwise=cpp would do nothing"),
    (["model=cerebral_lstm", "train.elementwise=seq"], "train.elementwise=seq would do nothing"),
])
def test_the_lstm_backend_refuses_what_it_cannot_run_in_one_line(overrides, cause, data_dir, tmp_path):
    with pytest.raises(ConfigError, match=cause):
        check_config(compose(*overrides, "train.backend=lstm"))
    result = subprocess.run([sys.executable, "-m", "cerebral.train", *tiny_overrides(data_dir, tmp_path / "run"),
                             *overrides, "train.backend=lstm"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and cause in result.stderr
    assert not (tmp_path / "run").exists()


def test_use_backend_refuses_a_core_no_lstm_expresses_and_an_unknown_backend():
    model = build_model(compose("model=stacked_lstm", "model.state_size=8").model, 10)
    with pytest.raises(ValueError, match="post-activation biases cannot run as nn.LSTM"):
        use_backend(model, "lstm")
    with pytest.raises(ValueError, match="backend must be one of fused, lstm, got 'auto'"):
        use_backend(model, "auto")


def test_a_run_on_the_lstm_backend_trains_records_it_and_its_folder_refuses_the_other(data_dir, tmp_path):
    runs = {backend: train(compose(*tiny_overrides(data_dir, tmp_path / backend), f"train.backend={backend}"))
            for backend in ("fused", "lstm")}
    assert runs["lstm"] == pytest.approx(runs["fused"], rel=1e-5)
    assert read_config(tmp_path / "lstm")["train"]["backend"] == "lstm"
    assert read_config(tmp_path / "fused")["train"]["backend"] == "fused"  # auto, resolved on a CPU
    assert len(train(compose(*tiny_overrides(data_dir, tmp_path / "lstm", "train.epochs=3")))) == 3  # auto: as recorded
    with pytest.raises(ConfigError, match="train.backend: 'lstm' -> 'fused'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "lstm", "train.epochs=4", "train.backend=fused")))


def test_the_lstm_backend_runs_torchs_lstm_and_none_of_our_kernels(monkeypatch):
    calls, lstm_forward = [], torch.nn.LSTM.forward

    def counted(module, *args, **kwargs):
        calls.append(module.proj_size)
        return lstm_forward(module, *args, **kwargs)

    def refused(*args):
        raise AssertionError("the fused kernel ran")

    core = use_backend(CerebralLSTM(FEATURES, HIDDEN), "lstm")
    monkeypatch.setattr(torch.nn.LSTM, "forward", counted)
    monkeypatch.setattr("cerebral.cores.FusedLayer.apply", refused)
    core(torch.randn(3, 2, FEATURES))[0].sum().backward()
    assert calls == [HIDDEN] and core.weight_hh_l0.grad is not None
