import os
import shutil
from pathlib import Path

import pytest
import torch

from cerebral import data as chardata
from cerebral.config import compose

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir():
    """The project's data folder, fetched (from CEREBRAL_DATA_MIRROR or the network) if needed;
    CEREBRAL_TEST_DATA names another fetched folder (gpu-check passes its --data)."""
    folder = Path(os.environ.get("CEREBRAL_TEST_DATA", ROOT / "data"))
    chardata.fetch(folder, log=lambda message: None)
    return folder


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


def tiny_overrides(data_dir, out_dir, *extra):
    """A run of seconds: small state, few steps, small batches."""
    return [f"data.dir={data_dir}", f"out_dir={out_dir}", "model.state_size=16",
            "train.steps_per_epoch=3", "train.batch_size=8", "train.epochs=2", "device=cpu", *extra]


@pytest.fixture(scope="session")
def tiny_runs(data_dir, tmp_path_factory):
    """A runs folder with a 3-epoch tiny run of each paper model, laid out as results/runs."""
    from cerebral.curves import MODELS
    from cerebral.train import train

    runs = tmp_path_factory.mktemp("runs")
    for model in MODELS:
        train(compose(*tiny_overrides(data_dir, runs / model / "seed0", f"model={model}", "train.epochs=3")))
    return runs
