"""The paper's comparison figures (Figs. 12-14) and an overview, ours solid, published dashed;
with several seeds ours is the mean with the seeds' min-max range as a band. Fig. 14 marks claim
C5 where the curves are long enough. With runs of ours, a figure of ours minus published, one of
every model in the folder over our epochs only (unless every run has its published length, where
it would repeat the overview), and, when the runs hold text out, their held-out loss, alone and
beside the training loss."""

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cerebral import claims
from cerebral.atomic import atomic_path
from cerebral.curves import MODELS, band, color, label, mean_curve

FIGURES = {
    "fig12_single_vs_stacked": ("Fig. 12: single vs two-stacked LSTM", ("single_lstm", "stacked_lstm")),
    "fig13_single_vs_cerebral": ("Fig. 13: single vs Cerebral LSTM", ("single_lstm", "cerebral_lstm")),
    "fig14_stacked_vs_cerebral": ("Fig. 14: two-stacked vs Cerebral LSTM", ("stacked_lstm", "cerebral_lstm")),
    "overview": ("All models: ours (solid) and published (dashed)", MODELS),
}
EPOCH_AXIS = "epoch (100 steps of 128 sequences)"
LOSS_AXIS = "training loss (nats/char)"


def draw(title, models, ours, published, logy=False, ours_label="ours", bands=None, ylabel=LOSS_AXIS, xlabel=EPOCH_AXIS):
    """One figure of a loss against epoch for `models`, published dashed and ours solid; any of the
    dicts may lack a model. `bands`: model -> (lowest, highest) per epoch, shaded around our curve."""
    return draw_series(title, models, ((published, "--", "published"), (ours, "-", ours_label)), logy, bands, ylabel, xlabel)


def draw_series(title, models, series, logy=False, bands=None, ylabel=LOSS_AXIS, xlabel=EPOCH_AXIS):
    """One figure of curves against epoch: per model, a line for each (curves, line style, source) in
    `series` that has the model, in the model's colour, and its band from `bands` if any."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for model in models:
        for curves, style, source in series:
            curve = curves.get(model)
            if curve:
                marker = "o" if len(curve) < 50 else None  # keep a short run visible beside 500 epochs
                ax.plot(range(len(curve)), curve, style, color=color(model), marker=marker, markersize=3,
                        linewidth=1.4, label=f"{label(model)} ({source})")
        if bands and bands.get(model):
            low, high = bands[model]
            ax.fill_between(range(len(low)), low, high, color=color(model), alpha=0.2, linewidth=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if logy:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def legend(ax):
    if ax.lines:
        ax.legend(fontsize="small")


def mark_c5(ax, curves, style, source):
    """Claim C5 on `curves`: Cerebral's loss at index 499 as a horizontal line and the first epoch where
    two-stacked reaches it as a vertical one, each only where the curves are long enough to have it."""
    cerebral = curves.get("cerebral_lstm") or []
    if len(cerebral) < claims.PAPER_EPOCHS:
        return
    target = cerebral[claims.PAPER_EPOCHS - 1]
    ax.axhline(target, linestyle=style, color=color("cerebral_lstm"), linewidth=0.9, alpha=0.8,
               label=f"Cerebral at index {claims.PAPER_EPOCHS - 1}: {target:.4f} ({source})")
    reached = claims.judge_c5(curves).value
    if reached is not None:
        ax.axvline(reached, linestyle=style, color=color("stacked_lstm"), linewidth=0.9, alpha=0.8,
                   label=f"two-stacked first <= it: epoch {reached} ({source})")


def draw_difference(runs, published, ours_label):
    """Per model with a published curve: ours minus published, the mean over seeds as a line and the
    seeds' range of it as a band, around a zero line; None when no model has both."""
    mean, bands = {}, {}
    for model, model_runs in runs.items():
        if model in published:
            p = published[model]
            mean[model] = [o - q for o, q in zip(mean_curve(model_runs), p, strict=False)]
            lowest_highest = band(model_runs)
            if lowest_highest:
                bands[model] = tuple([v - q for v, q in zip(c, p, strict=False)] for c in lowest_highest)
    if not mean:
        return None
    fig = draw_series("Ours minus published (above zero: ours higher)", list(mean), ((mean, "-", ours_label),),
                      bands=bands, ylabel="ours - published training loss (nats/char)")
    fig.axes[0].axhline(0, color="black", linewidth=0.8)
    return fig


def save(fig, stem):
    """PNG and PDF, each written atomically; returns the PNG path."""
    for suffix in ("png", "pdf"):
        with atomic_path(stem.with_suffix(f".{suffix}")) as tmp:
            fig.savefig(tmp, format=suffix, dpi=150, metadata={"CreationDate": None} if suffix == "pdf" else None)
    return stem.with_suffix(".png")


def write_figures(out_dir, runs, published, logy=False, ours_label="ours"):
    """Write every figure for `runs` (model -> runs) as PNG and PDF into `out_dir`; return the PNGs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_log" if logy else ""
    ours = {m: mean_curve(rs) for m, rs in runs.items()}
    bands = {m: band(rs) for m, rs in runs.items()}
    paths = []
    for name, (title, models) in FIGURES.items():
        fig = draw(title, models, ours, published, logy, ours_label, bands)
        if name == "fig14_stacked_vs_cerebral":
            for curves, style, source in ((ours, "-", ours_label), (published, "--", "published")):
                mark_c5(fig.axes[0], curves, style, source)
            legend(fig.axes[0])
        paths.append(save(fig, out_dir / f"{name}{suffix}"))
    difference = None if logy else draw_difference(runs, published, ours_label)  # a difference has no log view
    if difference:
        paths.append(save(difference, out_dir / "difference"))
    if runs and not all(m in published and len(c) >= len(published[m]) for m, c in ours.items()):
        epochs = max(len(curve) for curve in ours.values())  # our epochs only, so that short runs are readable
        cut = {m: published[m][:epochs] for m in runs if m in published}
        paths.append(save(draw(f"Our runs, epochs 0-{epochs - 1}", list(runs), ours, cut, logy, ours_label, bands),
                          out_dir / f"study{suffix}"))
    held_out = {m: mean_curve(rs, "val_loss") for m, rs in runs.items()}
    if any(held_out.values()):
        held_out_bands = {m: band(rs, "val_loss") for m, rs in runs.items()}
        paths.append(save(draw("Held-out loss (data.val_fraction)", list(runs), held_out, {}, logy, ours_label,
                               held_out_bands, ylabel="held-out loss (nats/char)"), out_dir / f"held_out{suffix}"))
        training = {m: ours[m] for m, curve in held_out.items() if curve}
        paths.append(save(draw_series(f"Training (solid) and held-out (dotted) loss, {ours_label}", list(runs),
                                      ((training, "-", "training"), (held_out, ":", "held-out")), logy,
                                      ylabel="loss (nats/char)"), out_dir / f"train_vs_held_out{suffix}"))
    return paths


def write_task_figures(out_dir, runs, logy=False):
    """For classification runs: test accuracy and training loss per epoch, mean with the seeds' band."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_log" if logy else ""
    paths = []
    figures = [("train_loss", None, "Training loss", "training loss (cross-entropy)")]
    if not logy:  # accuracy has no log view
        figures.insert(0, ("test_accuracy", "test_accuracy", "Test accuracy", "test accuracy"))
    for name, column, title, ylabel in figures:
        curves = {m: mean_curve(rs, column) for m, rs in runs.items()}
        bands = {m: band(rs, column) for m, rs in runs.items()}
        fig = draw(title, list(runs), curves, {}, logy, "mean over seeds", bands,
                   ylabel=ylabel, xlabel="epoch (one pass over the training set)")
        paths.append(save(fig, out_dir / f"{name}{suffix}"))
    return paths
