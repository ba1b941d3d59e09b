"""The C++ kernels of the fused cores (train.elementwise=cpp: each step's elementwise work; seq:
the whole loop over the steps) against the ATen calls they replace, and the accuracy of their own
exp; and the option. (Their float64 gradcheck is tests/test_fused.py's, run with every choice.)"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import CerebralLSTM, PostBiasLSTM, elementwise
from cerebral.config import compose, config_differences
from cerebral.errors import ConfigError, DataError
from cerebral.precision import autocast
from cerebral.train import train


def outputs_and_gradients(core, x, state, kind, leaf=None):
    """The outputs, final state and every gradient (parameters, input, initial state) of core
    doing its elementwise work with `kind`; `leaf`: the tensor x was packed from."""
    core.elementwise = kind
    core.zero_grad()
    inputs = [t for t in torch.utils._pytree.tree_leaves([leaf if leaf is not None else x, state])
              if isinstance(t, torch.Tensor)]
    for t in inputs:
        t.grad = None
    output, final = core(x, state)
    output = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    results = [output, *torch.utils._pytree.tree_leaves(final)]
    weights = [torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(results)]
    sum((w * t).sum() for w, t in zip(weights, results, strict=True)).backward()
    return results + [p.grad for p in core.parameters()] + [t.grad for t in inputs]


def with_post_biases(core):
    with torch.no_grad():  # non-zero post-activation biases, so that their gradients are exercised
        for name, p in core.named_parameters():
            if "bias_cell" in name or "bias_hidden" in name:
                p.uniform_(-0.5, 0.5)
    return core


KERNELS = ("cpp", "seq")
# the kernel ops each choice calls, per step (cpp) or per layer (seq), forward then backward
CALLS = {"cpp": ("gates_forward", "gates_backward"), "seq": ("layer_forward", "layer_backward")}


def calls_per_layer(kind, steps):
    return steps if kind == "cpp" else 1


@pytest.mark.parametrize("kind", KERNELS)
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM])
@pytest.mark.parametrize("options", [dict(num_layers=2, bias=True), dict(bias=False), dict(proj_size=12),
                                     dict(bidirectional=True, num_layers=2)])
def test_the_kernel_matches_the_aten_calls_in_outputs_and_every_gradient(cls, options, kind, kernel_calls):
    torch.manual_seed(len(options))
    core = with_post_biases(cls(10, 48, **options))
    layers = core.num_layers * core.num_directions
    x = torch.randn(9, 6, 10, requires_grad=True)

    def s(width):
        return torch.randn(layers, 6, width, requires_grad=True)
    h = s(core.proj_size or 48)
    state = (h, (s(48), s(48))) if cls is CerebralLSTM else (h, s(48))
    ours = outputs_and_gradients(core, x, state, kind)
    forward, backward = CALLS[kind]
    assert kernel_calls.count(forward) == kernel_calls.count(backward) == calls_per_layer(kind, 9) * layers
    theirs = outputs_and_gradients(core, x, state, "aten")
    assert len(kernel_calls) == 2 * calls_per_layer(kind, 9) * layers  # the aten run called none
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KERNELS)
@pytest.mark.parametrize("projection", [0, 3])
@pytest.mark.parametrize("cls", [CerebralLSTM, PostBiasLSTM])
def test_the_kernel_matches_the_aten_calls_on_sequences_of_different_lengths(cls, projection, kind, kernel_calls):
    torch.manual_seed(3)
    core = with_post_biases(cls(5, 32, batch_first=True, proj_size=projection))
    x = torch.randn(4, 7, 5, requires_grad=True)
    def packed():
        return pack_padded_sequence(x, torch.tensor([7, 3, 5, 1]), batch_first=True, enforce_sorted=False)
    ours = outputs_and_gradients(core, packed(), None, kind, leaf=x)
    assert kernel_calls.count(CALLS[kind][1]) == calls_per_layer(kind, 7)  # cpp: one per step of the longest
    theirs = outputs_and_gradients(core, packed(), None, "aten", leaf=x)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def layer_forward_arguments():
    """Valid arguments of the sequence kernel's forward: one step of two rows, hidden 3, two
    paths, float64 (ATen's mm, no oneDNN), no projection and no post-activation biases."""
    t = dict(dtype=torch.float64)
    return dict(xz=torch.randn(2, 24, **t), xz_bias=torch.zeros(24, **t), w_hh=torch.randn(24, 3, **t), w_hr=None,
                h_all=torch.zeros(4, 3, **t), cells=torch.zeros(4, 6, **t), gates=torch.empty(2, 24, **t),
                tanh_cells=torch.empty(2, 6, **t), summed=torch.empty(2, 3, **t), out=None, summed_gemm=None,
                bias_cell=None, bias_hidden=None, batch_sizes=[2])


@pytest.mark.parametrize("change, message", [
    (dict(gates=torch.empty(2, 24)), "gates: a contiguous CPU tensor of Double expected, got Float"),
    (dict(gates=torch.empty(24, 2, dtype=torch.float64).t()),
     "gates: a contiguous CPU tensor of Double expected, got a non-contiguous Double"),
    (dict(tanh_cells=torch.empty(2, 5, dtype=torch.float64)), "tanh_cells: shape (2, 6) expected"),
    (dict(bias_cell=torch.zeros(6), bias_hidden=torch.zeros(3)), "bias_cell: a contiguous CPU tensor of Double"),
    (dict(bias_cell=torch.zeros(5, dtype=torch.float64), bias_hidden=torch.zeros(3, dtype=torch.float64)),
     "bias_cell: a vector of 6 expected"),
    (dict(summed_gemm=torch.empty(2, 3, dtype=torch.float64)), "w_hr, out and summed_gemm: all or none"),
    (dict(w_hr=torch.randn(3, 3, dtype=torch.float64), out=torch.empty(2, 3, dtype=torch.float64),
          summed_gemm=torch.empty(2, 3)), "summed_gemm: a contiguous CPU tensor of Double"),
    (dict(batch_sizes=[1, 2]), "batch_sizes: positive and non-increasing expected"),
])
def test_the_sequence_kernel_refuses_a_tensor_it_cannot_read_before_reading_it(change, message):
    ops = elementwise.kernel_ops()
    ops.layer_forward(**layer_forward_arguments())  # the unchanged arguments run
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ops.layer_forward(**(layer_forward_arguments() | change))


def gates_forward_arguments():
    """Valid arguments of the step kernel's forward: two rows, hidden 3, two paths, float32."""
    return dict(gates=torch.randn(2, 24), c_prev=torch.zeros(2, 6), c=torch.empty(2, 6), tanh_c=torch.empty(2, 6),
                h=torch.empty(2, 3), bias_cell=None, bias_hidden=None)


@pytest.mark.parametrize("change, message", [
    (dict(c_prev=torch.zeros(2, 5)), "c_prev: shape (2, 6) expected"),
    (dict(h=torch.empty(2, 3, dtype=torch.float64)), "h: a contiguous CPU tensor of Float"),
    (dict(bias_cell=torch.zeros(6), bias_hidden=torch.zeros(2)), "bias_hidden: a vector of 3 expected"),
])
def test_the_step_kernel_refuses_a_tensor_it_cannot_read_before_reading_it(change, message):
    ops = elementwise.kernel_ops()
    ops.gates_forward(**gates_forward_arguments())
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ops.gates_forward(**(gates_forward_arguments() | change))


def kernel_activations(x):
    """sigmoid(x) and tanh(x) as the kernel's float32 forward computes them: x as the
    pre-activation of every gate of a one-path, zero-state step."""
    n = x.numel()
    gates = x.repeat(4).view(1, 4 * n).contiguous()
    c, tanh_c, h = torch.empty(1, n), torch.empty(1, n), torch.empty(1, n)
    elementwise.kernel_ops().gates_forward(gates, torch.zeros(1, n), c, tanh_c, h, None, None)
    return gates[0, :n], gates[0, 3 * n :]


def test_the_kernels_sigmoid_and_tanh_are_within_a_few_ulp_everywhere():
    x = torch.cat([torch.linspace(-100, 100, 200_001), torch.logspace(-30, 1, 1000), -torch.logspace(-30, 1, 1000)])
    sigmoid, tanh = kernel_activations(x)
    exact_sigmoid, exact_tanh = torch.sigmoid(x.double()), torch.tanh(x.double())
    ulp = torch.finfo(torch.float32).eps
    assert ((sigmoid.double() - exact_sigmoid).abs() <= 2 * ulp * exact_sigmoid.clamp(min=2**-20)).all()
    assert ((tanh.double() - exact_tanh).abs() <= 3 * ulp * exact_tanh.abs().clamp(min=1e-30)).all()  # relative, near 0 too
    assert sigmoid.max() <= 1 and sigmoid.min() >= 0 and tanh.abs().max() <= 1


def test_the_kernel_carries_nan_and_saturates_at_infinity():
    x = torch.zeros(64)  # the specials inside whole vectors, not only in the scalar tail
    special = {3: float("nan"), 17: float("inf"), 18: -float("inf"), 40: 1e30, 41: -1e30, 63: float("nan")}
    for k, value in special.items():
        x[k] = value
    sigmoid, tanh = kernel_activations(x)
    assert sigmoid[[3, 63]].isnan().all() and tanh[[3, 63]].isnan().all()  # a diverged run shows in its loss
    assert sigmoid.isnan().sum() == tanh.isnan().sum() == 2
    assert sigmoid[[17, 40]].tolist() == [1.0, 1.0] and (sigmoid[[18, 41]] < 1e-37).all()  # exp clamped at -87
    assert tanh[[17, 18, 40, 41]].tolist() == [1.0, -1.0, 1.0, -1.0]


@pytest.mark.parametrize("kind", KERNELS)
def test_the_kernel_runs_under_bf16_autocast_and_agrees_with_the_aten_calls_there(kind, kernel_calls):
    torch.manual_seed(5)
    core = with_post_biases(PostBiasLSTM(32, 64, batch_first=True, num_layers=2))
    x = torch.randn(8, 10, 32, requires_grad=True)
    results = {}
    for name in ("aten", kind):
        with autocast("bf16", "cpu"):
            results[name] = outputs_and_gradients(core, x, None, name)
    assert kernel_calls == [CALLS[kind][0]] * calls_per_layer(kind, 10) * 2 + [CALLS[kind][1]] * calls_per_layer(kind, 10) * 2
    fp32 = outputs_and_gradients(core, x, None, kind)
    assert results[kind][0].dtype == torch.float32
    for ours, theirs in zip(results[kind], results["aten"], strict=True):  # the activations' own rounding apart
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)
    assert not torch.equal(results[kind][0], fp32[0])  # bf16 ran


@pytest.mark.parametrize("kind", KERNELS)
def test_the_kernel_under_bf16_autocast_on_packed_sequences_with_a_projection(kind, kernel_calls):
    """bf16 operands through the projection's GEMMs and the rows of sequences that end early."""
    torch.manual_seed(6)
    core = CerebralLSTM(12, 32, batch_first=True, proj_size=16)
    x = torch.randn(5, 9, 12, requires_grad=True)
    def packed():
        return pack_padded_sequence(x, torch.tensor([9, 4, 7, 1, 9]), batch_first=True, enforce_sorted=False)
    results = {}
    for name in ("aten", kind):
        with autocast("bf16", "cpu"):
            results[name] = outputs_and_gradients(core, packed(), None, name, leaf=x)
    assert CALLS[kind][1] in kernel_calls
    for ours, theirs in zip(results[kind], results["aten"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", KERNELS)
def test_a_run_trains_with_the_kernel_near_the_aten_run_and_its_folder_keeps_its_choice(kind, data_dir, tmp_path, capsys,
                                                                                         kernel_calls, monkeypatch):
    aten = train(compose(*tiny_overrides(data_dir, tmp_path / "aten", "train.elementwise=aten")))
    assert kernel_calls == []
    ours = train(compose(*tiny_overrides(data_dir, tmp_path / kind, f"train.elementwise={kind}")))
    steps = 3 * 2  # 3 steps an epoch, 2 epochs; the tiny Cerebral LSTM runs 20 characters a step
    forward, backward = CALLS[kind]
    assert kernel_calls.count(forward) == kernel_calls.count(backward) == calls_per_layer(kind, 20) * steps
    assert max(abs(a - b) for a, b in zip(aten, ours, strict=True)) < 1e-4
    assert f"elementwise {kind} ->" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=f"train.elementwise: '{kind}' -> 'aten'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / kind, "train.elementwise=aten", "train.epochs=3")))
    monkeypatch.setattr(elementwise, "kernel_ops", lambda: pytest.fail("built for a folder that refuses the run"))
    with pytest.raises(ConfigError, match=f"train.elementwise: 'aten' -> '{kind}'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "aten", f"train.elementwise={kind}", "train.epochs=3")))


@pytest.mark.parametrize("kind", KERNELS)
def test_a_run_on_the_kernel_resumes_bit_for_bit(kind, data_dir, tmp_path):
    def run(folder, epochs):
        train(compose(*tiny_overrides(data_dir, tmp_path / folder, f"train.elementwise={kind}", f"train.epochs={epochs}")))
        return (tmp_path / folder / "loss.txt").read_bytes()

    straight = run("straight", 3)
    run("resumed", 2)
    assert run("resumed", 3) == straight


def test_auto_gives_a_new_cpu_run_the_sequence_kernel_only_on_a_listed_cpu(monkeypatch):
    cfg = compose("device=cpu")
    assert cfg.train.elementwise == "auto"
    monkeypatch.setattr(elementwise, "SEQUENCE_CPUS", {})
    assert elementwise.resolve_elementwise(cfg) == "aten"  # this CPU not listed
    monkeypatch.setattr(elementwise, "SEQUENCE_CPUS", {elementwise.cpu_key(): "listed"})
    assert elementwise.resolve_elementwise(cfg) == "seq"
    assert elementwise.resolve_elementwise(cfg, recorded="aten") == "aten"  # a run folder keeps its own
    assert elementwise.resolve_elementwise(compose("device=cpu", "train.backend=lstm")) == "aten"
    assert elementwise.resolve_elementwise(compose("device=cpu", "train.elementwise=cpp")) == "cpp"
    for model in ("single_lstm", "novo_lstm", "cerebral_lstm_tied"):  # no fused core: nothing to build for
        assert elementwise.resolve_elementwise(compose("device=cpu", f"model={model}")) == "aten"
    assert elementwise.resolve_elementwise(compose("device=cpu", "model=lstmp")) == "seq"
    monkeypatch.setattr(elementwise, "kernel_ops", lambda: (_ for _ in ()).throw(elementwise.KernelBuildError("no c++")))
    assert elementwise.resolve_elementwise(cfg) == "aten"  # no compiler: auto falls back, an explicit seq would stop
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert elementwise.resolve_elementwise(compose()) == "aten"  # device=auto on a CUDA machine


def test_missing_data_are_reported_before_auto_builds_the_kernels(tmp_path, monkeypatch):
    monkeypatch.setattr(elementwise, "SEQUENCE_CPUS", {elementwise.cpu_key(): "listed"})
    builds = []
    monkeypatch.setattr(elementwise, "kernel_ops", lambda: builds.append("built"))
    with pytest.raises(DataError, match="is missing"):
        train(compose("device=cpu", f"data.dir={tmp_path / 'no-data'}", f"out_dir={tmp_path / 'run'}"))
    assert builds == [] and not (tmp_path / "run").exists()


def test_a_committed_aten_run_resumes_under_auto_and_a_new_run_records_the_kernel(data_dir, tmp_path, monkeypatch,
                                                                                 kernel_calls):
    train(compose(*tiny_overrides(data_dir, tmp_path / "aten", "train.elementwise=aten")))
    monkeypatch.setattr(elementwise, "SEQUENCE_CPUS", {elementwise.cpu_key(): "listed"})
    train(compose(*tiny_overrides(data_dir, tmp_path / "aten", "train.epochs=3")))  # no override: resumes
    assert kernel_calls == []
    assert "elementwise: aten" in (tmp_path / "aten" / "config.yaml").read_text()
    train(compose(*tiny_overrides(data_dir, tmp_path / "new")))
    assert "layer_forward" in kernel_calls
    assert "elementwise: seq" in (tmp_path / "new" / "config.yaml").read_text()


def test_a_run_folder_of_the_kernel_resumed_on_a_cuda_machine_is_refused_in_one_line(data_dir, tmp_path, monkeypatch):
    from cerebral import rundir

    train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.elementwise=seq")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the same command, device=auto, on a CUDA machine
    with pytest.raises(ConfigError, match="train.elementwise=seq is a CPU kernel, but device=auto trains on CUDA"):
        rundir.resume_kernels(compose(f"out_dir={tmp_path / 'run'}", f"data.dir={data_dir}"))


def test_a_saved_config_without_the_key_reads_as_the_aten_calls():
    new = {"train": {"elementwise": "aten", "epochs": 2}}
    assert config_differences({"train": {"epochs": 2}}, new) == []
    assert config_differences({"train": {"epochs": 2}}, {"train": {"elementwise": "cpp", "epochs": 2}}) \
        == ["train.elementwise: 'aten' -> 'cpp'"]


def test_an_unknown_elementwise_choice_is_refused_before_any_work(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="train.elementwise must be aten or cpp or seq or auto, got 'triton'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.elementwise=triton")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", KERNELS)
def test_a_kernel_that_cannot_be_built_is_one_line_before_any_work(kind, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(elementwise, "kernel_ops", elementwise.kernel_ops.__wrapped__)  # not the cached build
    with pytest.raises(ConfigError, match=r"could not build the C\+\+ kernels of .*csrc \(no C\+\+ compiler: "
                                          r"'.*no-such-compiler' is not on PATH\); they need a C\+\+ compiler") as caught:
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", f"train.elementwise={kind}")))
    assert "\n" not in str(caught.value) and "train.elementwise=aten" in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_a_failed_compile_names_the_compilers_error_not_its_command_line():
    error = RuntimeError("Error building extension 'cerebral_gates_avx2': [1/2] c++ -MMD -O3 -c gates.cpp -o gates.o\n"
                         "FAILED: gates.o\ngates.cpp:12:3: error: 'bit_cast' is not a member of 'std'\nninja: stopped")
    assert elementwise._cause(error) == "gates.cpp:12:3: error: 'bit_cast' is not a member of 'std'"


@pytest.mark.parametrize("kind", KERNELS)
def test_the_kernel_on_a_cuda_device_is_refused(kind, monkeypatch):
    from cerebral.config import check_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match=f"train.elementwise={kind} is a CPU kernel, but device=auto trains on CUDA"):
        check_config(compose(f"train.elementwise={kind}"))
    check_config(compose(f"train.elementwise={kind}", "device=cpu"))
    check_config(compose())  # auto: aten there


@pytest.mark.parametrize("kind", KERNELS)
def test_the_kernels_results_do_not_depend_on_the_number_of_threads(kind, kernel_calls):
    """The kernels' own sums over rows (the bias gradients) in one order at any thread count; the
    recurrent weights zero, so that no GEMM library's own choices enter the sequence kernel's bits."""
    torch.manual_seed(7)
    core = with_post_biases(PostBiasLSTM(16, 256, batch_first=True))  # 256 columns: split over threads
    with torch.no_grad():
        core.weight_hh_l0.zero_()
    x = torch.randn(32, 6, 16, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(outputs_and_gradients(core, x, None, kind))
    finally:
        torch.set_num_threads(threads)
    assert CALLS[kind][1] in kernel_calls
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_every_kernel_source_ships_in_the_package():
    """A wheel without a header the kernels include cannot build them (`pip install .` copies only
    the package-data globs of pyproject.toml)."""
    root = Path(elementwise.__file__).parents[1]
    table = re.search(r"\[tool\.setuptools\.package-data\]\s*cerebral = \[([^\]]*)\]", (root / "pyproject.toml").read_text())
    globs = re.findall(r'"([^"]+)"', table.group(1))  # (tomllib is Python 3.11's; we support 3.10)
    package = root / "cerebral"
    shipped = {path for pattern in globs for path in package.glob(pattern)}
    sources = [path for path in (package / "csrc").iterdir() if path.suffix in (".cpp", ".h")]
    included = {package / "csrc" / name for path in sources
                for name in re.findall(r'#include "([^"]+)"', path.read_text())}
    assert sources and set(sources) | included <= shipped


def test_each_checkout_and_torch_installation_builds_into_a_folder_of_its_own(tmp_path, monkeypatch):
    """cpp_extension writes the sources' and torch's headers' paths into the build folder's ninja
    file; two checkouts or two venvs sharing one folder would rebuild it in turn, each for itself."""
    folder = elementwise.kernel_build()[1]
    assert elementwise.kernel_build()[1] == folder
    monkeypatch.setattr(torch, "__file__", "/another/venv/site-packages/torch/__init__.py")
    assert elementwise.kernel_build()[1] != folder
    monkeypatch.undo()
    monkeypatch.setattr(elementwise, "CSRC", Path(shutil.copytree(elementwise.CSRC, tmp_path / "csrc")))  # same sources
    assert elementwise.kernel_build()[1] != folder


def test_a_lock_file_left_by_a_killed_build_does_not_stop_the_next_load():
    """cpp_extension waits forever on the lock file of a process killed while it loaded the kernels."""
    elementwise.kernel_ops()  # built: the process below only loads
    build_dir = elementwise.kernel_build()[1]
    with elementwise.build_lock(build_dir):  # not while another process of ours loads
        (build_dir / "lock").touch()
    try:
        load = "from cerebral import elementwise; elementwise.kernel_ops(); print('loaded')"
        result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120)
    finally:
        with elementwise.build_lock(build_dir):
            pass  # which takes a leftover lock file away
    assert result.stdout.strip() == "loaded", result.stderr
