"""The paper's comparison figures (Figs. 12-14) and an overview, ours solid, published dashed;
with several seeds ours is the mean with the seeds' min-max range as a band. With runs of ours,
a figure of every model in the folder over our epochs only, and one of their held-out loss when
the runs hold some out."""

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cerebral.atomic import atomic_path
from cerebral.curves import MODELS, band, color, label, mean_curve

FIGURES = {
    "fig12_single_vs_stacked": ("Fig. 12: single vs two-stacked LSTM", ("single_lstm", "stacked_lstm")),
    "fig13_single_vs_cerebral": ("Fig. 13: single vs Cerebral LSTM", ("single_lstm", "cerebral_lstm")),
    "fig14_stacked_vs_cerebral": ("Fig. 14: two-stacked vs Cerebral LSTM", ("stacked_lstm", "cerebral_lstm")),
    "overview": ("All models: ours (solid) and published (dashed)", MODELS),
}
EPOCH_AXIS = "epoch (100 steps of 128 sequences)"


def draw(title, models, ours, published, logy=False, ours_label="ours", bands=None,
         ylabel="training loss (nats/char)", xlabel=EPOCH_AXIS):
    """One figure of a loss against epoch for `models`; any of the dicts may lack a model.
    `bands`: model -> (lowest, highest) per epoch, shaded around our curve."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for model in models:
        for curves, style, source in ((published, "--", "published"), (ours, "-", ours_label)):
            curve = curves.get(model)
            if curve:
                marker = "o" if len(curve) < 50 else None  # keep a short run visible beside 500 epochs
                ax.plot(range(len(curve)), curve, style, color=color(model), marker=marker, markersize=3,
                        linewidth=1.4, label=f"{label(model)} ({source})")
        if bands and bands.get(model) and ours.get(model):
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
    if ax.lines:
        ax.legend(fontsize="small")
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
    paths = [save(draw(title, models, ours, published, logy, ours_label, bands), out_dir / f"{name}{suffix}")
             for name, (title, models) in FIGURES.items()]
    if runs:  # our epochs only, so that short runs and their bands are readable
        epochs = max(len(curve) for curve in ours.values())
        cut = {m: published[m][:epochs] for m in runs if m in published}
        paths.append(save(draw(f"Our runs, epochs 0-{epochs - 1}", list(runs), ours, cut, logy, ours_label, bands),
                          out_dir / f"study{suffix}"))
    held_out = {m: mean_curve(rs, "val_loss") for m, rs in runs.items()}
    if any(held_out.values()):
        held_out_bands = {m: band(rs, "val_loss") for m, rs in runs.items()}
        paths.append(save(draw("Held-out loss (data.val_fraction)", list(runs), held_out, {}, logy, ours_label,
                               held_out_bands, ylabel="held-out loss (nats/char)"), out_dir / f"held_out{suffix}"))
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
