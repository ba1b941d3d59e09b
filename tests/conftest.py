import http.server
import importlib.util
import os
import shutil
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from cerebral import data as chardata
from cerebral import plots
from cerebral.config import compose
from cerebral.curves import Run

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (and its subprocesses), not one per core each
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def load_script(name):
    """scripts/<name>.py as a module, for calling its functions in-process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_dir():
    """The project's data folder, fetched (from CEREBRAL_DATA_MIRROR or the network) if needed;
    CEREBRAL_TEST_DATA names another fetched folder (gpu-check passes its --data)."""
    folder = Path(os.environ.get("CEREBRAL_TEST_DATA", ROOT / "data"))
    chardata.fetch(folder, log=lambda message: None)
    return folder


@pytest.fixture
def captured(monkeypatch):
    """{file stem: matplotlib Figure} for each figure written, instead of files."""
    figures = {}

    def keep(fig, stem):
        figures[stem.name] = fig
        return stem.with_suffix(".png")

    monkeypatch.setattr(plots, "save", keep)
    return figures


@pytest.fixture
def upstream_layout(data_dir, tmp_path):
    """A folder laid out like the upstream repository, built from the verified files."""
    root = tmp_path / "upstream"
    for upstream_path, (local, _) in chardata.FILES.items():
        (root / upstream_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / local, root / upstream_path)
    return root


@pytest.fixture
def float64():
    """float64 as the default dtype for the test (the reference transcriptions compare at 1e-12)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def assert_close_nested(a, b):
    """Tensors, or nested tuples of them, equal within 1e-12."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    else:
        for x, y in zip(a, b, strict=True):
            assert_close_nested(x, y)


def layer_bias(core, k):
    """The equations' gate bias of layer k: b_ih + b_hh (None without biases)."""
    return getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}") if core.bias else None


def random_cerebral_state(layers, batch, hidden):
    """A random (h, (c_upper, c_lower))."""
    return torch.randn(layers, batch, hidden), (torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden))


def runs_of(curves_by_seed):
    """model -> [Run], one per seed, from {model: [losses of seed 0, losses of seed 1, ...]}, with no
    files behind them (no held-out loss, no records)."""
    return {m: [Run(m, seed, Path(f"/nonexistent/{m}/seed{seed}"), losses) for seed, losses in enumerate(seeds)]
            for m, seeds in curves_by_seed.items()}


def tiny_overrides(data_dir, out_dir, *extra):
    """A run of seconds (the debug=tiny preset: state 16, 2 epochs of 3 steps of 8 sequences, CPU)."""
    return ["debug=tiny", f"data.dir={data_dir}", f"out_dir={out_dir}", *extra]


@pytest.fixture(scope="session")
def tiny_runs(data_dir, tmp_path_factory):
    """A runs folder with a 3-epoch tiny run of each paper model, laid out as results/runs."""
    from cerebral.curves import MODELS
    from cerebral.train import train

    runs = tmp_path_factory.mktemp("runs")
    for model in MODELS:
        train(compose(*tiny_overrides(data_dir, runs / model / "seed0", f"model={model}", "train.epochs=3")))
    return runs


@pytest.fixture
def recorded_steps(monkeypatch):
    """Every optimizer step the training loop takes, recorded as it happens by wrapping
    `cerebral.train.train_step`: a list of dicts with the step's batch (the index tensors it was
    given, on the CPU) and the loss it returned, in the order of the steps."""
    import cerebral.train as training

    steps, real = [], training.train_step

    def wrapper(model, optimizer, loss_fn, *batch, **kwargs):
        loss = real(model, optimizer, loss_fn, *batch, **kwargs)
        steps.append({"batch": tuple(b.detach().cpu().clone() for b in batch), "loss": loss.item()})
        return loss

    monkeypatch.setattr(training, "train_step", wrapper)
    return steps


def assert_same_gradients(run, reference, inputs, seed=0):
    """`run(*inputs)` and `reference(*inputs)` (nested tuples of tensors) agree within 1e-12, and
    so do the gradients of one random weighting of their outputs with respect to every input:
    the code's gradients are those of the equations the reference transcribes."""
    ours, theirs = run(*inputs), reference(*inputs)
    assert_close_nested(ours, theirs)
    ours, theirs = torch.utils._pytree.tree_leaves(ours), torch.utils._pytree.tree_leaves(theirs)
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in ours]
    d_ours = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ours, strict=True)), inputs, allow_unused=True)
    d_theirs = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, theirs, strict=True)), inputs, allow_unused=True)
    for k, (a, b) in enumerate(zip(d_ours, d_theirs, strict=True)):
        assert a is not None and b is not None, f"input {k} gets no gradient"
        assert b.abs().sum() > 0, f"input {k}: the reference's gradient is zero"
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m, k=k: f"input {k}: {m}")


@pytest.fixture
def serve(monkeypatch):
    """Serve a folder over HTTP on the loopback address; yields a function folder -> base URL."""
    monkeypatch.delenv("CEREBRAL_DATA_MIRROR", raising=False)
    servers = []

    def start(folder):
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of the kernel's ops each fused layer called (forward, backward), in order."""
    from cerebral import elementwise, fused

    calls, ops = [], elementwise.kernel_ops()

    class Counted:
        def __getattr__(self, name):
            op = getattr(ops, name)
            return lambda *args: calls.append(name) or op(*args)
    monkeypatch.setattr(fused, "kernel_ops", Counted)
    return calls
