"""The first epochs at the paper's defaults against the published curves (minutes: `make test-slow`)."""

import pytest

from cerebral.config import compose
from cerebral.data import PUBLISHED_CURVES
from cerebral.losslog import read_losses
from cerebral.train import train


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(PUBLISHED_CURVES))
def test_first_three_epochs_land_on_the_published_curve(model, data_dir, tmp_path):
    """docs/PROTOCOL.md, P10: a correct implementation lands within a few hundredths at seed 0."""
    ours = train(compose(f"model={model}", "train.epochs=3", f"data.dir={data_dir}",
                                f"out_dir={tmp_path / model}"))
    published = read_losses(data_dir / PUBLISHED_CURVES[model])[:3]
    assert max(abs(a - b) for a, b in zip(ours, published, strict=True)) < 0.05, (ours, published)
