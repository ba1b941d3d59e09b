"""Every line of every figure `write_figures` draws shows the data of the model its label names:
our mean over seeds (solid) and the published curve (dashed), cut to our epochs in the study
figure, and our mean minus the published curve in the difference figure. Figures are captured
instead of saved, so no training and no file is needed."""


import pytest
from conftest import runs_of

from cerebral import plots
from cerebral.curves import MODELS, color, label


def lines_by_label(fig):
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert len(lines) == len(ax.lines)  # no two lines share a label
    return lines


def test_every_line_shows_its_own_models_data(captured, tmp_path):
    # distinct curves per model and seed, so a line drawn from the wrong model or seed shows
    published = {m: [10.0 * (k + 1) + e / 100 for e in range(8)] for k, m in enumerate(MODELS)}
    seeds = {m: [[k + 1 + s / 10 + e / 1000 for e in range(5)] for s in range(2)] for k, m in enumerate(MODELS)}
    seeds["single_lstm"][1] = seeds["single_lstm"][1][:4]  # a shorter seed: the mean covers 4 epochs
    mean = {m: [sum(v) / len(v) for v in zip(*curves, strict=False)] for m, curves in seeds.items()}
    plots.write_figures(tmp_path, runs_of(seeds), published)
    assert set(captured) == {*plots.FIGURES, "study", "difference"}
    difference = lines_by_label(captured.pop("difference"))
    for m in MODELS:
        line = difference[f"{label(m)} (ours)"]
        expected = [a - b for a, b in zip(mean[m], published[m], strict=False)]
        assert list(line.get_ydata()) == pytest.approx(expected, rel=1e-12) and line.get_color() == color(m), m

    for stem, fig in captured.items():
        models = plots.FIGURES[stem][1] if stem in plots.FIGURES else list(MODELS)
        epochs = None if stem in plots.FIGURES else max(len(c) for c in mean.values())  # study: our epochs only
        lines = lines_by_label(fig)
        assert len(lines) == 2 * len(models), stem
        for m in models:
            for source, curve, style in (("ours", mean[m], "-"), ("published", published[m][:epochs], "--")):
                line = lines[f"{label(m)} ({source})"]
                assert list(line.get_ydata()) == pytest.approx(curve, rel=1e-12), (stem, m, source)
                assert list(line.get_xdata()) == list(range(len(curve))), (stem, m, source)
                assert line.get_linestyle() == style and line.get_color() == color(m), (stem, m, source)


def test_one_models_runs_leave_the_others_published_only(captured, tmp_path):
    published = {m: [float(k + 1)] * 6 for k, m in enumerate(MODELS)}
    ours = [[0.5, 0.25, 0.125]]
    plots.write_figures(tmp_path, runs_of({"cerebral_lstm": ours}), published)
    overview = lines_by_label(captured["overview"])
    assert set(overview) == {f"{label(m)} (published)" for m in MODELS} | {"Cerebral LSTM (ours)"}
    assert list(overview["Cerebral LSTM (ours)"].get_ydata()) == ours[0]
    for m in MODELS:
        assert list(overview[f"{label(m)} (published)"].get_ydata()) == published[m]
    study = lines_by_label(captured["study"])
    assert set(study) == {"Cerebral LSTM (ours)", "Cerebral LSTM (published)"}
    assert list(study["Cerebral LSTM (published)"].get_ydata()) == published["cerebral_lstm"][:3]
