"""The paper's comparison figures (Figs. 12-14) and an overview, ours solid, published dashed."""

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from cerebral.atomic import atomic_path
from cerebral.curves import COLORS, LABELS, MODELS

FIGURES = {
    "fig12_single_vs_stacked": ("Fig. 12: single vs two-stacked LSTM", ("single_lstm", "stacked_lstm")),
    "fig13_single_vs_cerebral": ("Fig. 13: single vs Cerebral LSTM", ("single_lstm", "cerebral_lstm")),
    "fig14_stacked_vs_cerebral": ("Fig. 14: two-stacked vs Cerebral LSTM", ("stacked_lstm", "cerebral_lstm")),
    "overview": ("All models: ours (solid) and published (dashed)", MODELS),
}


def draw(title, models, ours, published, logy=False, ours_label="ours"):
    """One figure of training loss against epoch for `models`; either dict may lack a model."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for model in models:
        for curves, style, source in ((published, "--", "published"), (ours, "-", ours_label)):
            curve = curves.get(model)
            if curve:
                marker = "o" if len(curve) < 50 else None  # keep a short run visible beside 500 epochs
                ax.plot(range(len(curve)), curve, style, color=COLORS[model], marker=marker, markersize=3,
                        linewidth=1.4, label=f"{LABELS[model]} ({source})")
    ax.set(title=title, xlabel="epoch (100 steps of 128 sequences)", ylabel="training loss (nats/char)")
    if logy:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return fig


def write_figures(out_dir, ours, published, logy=False, ours_label="ours"):
    """Write every figure as PNG and PDF into `out_dir`; return the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (title, models) in FIGURES.items():
        fig = draw(title, models, ours, published, logy, ours_label)
        stem = out_dir / (f"{name}_log" if logy else name)
        for suffix in ("png", "pdf"):
            with atomic_path(stem.with_suffix(f".{suffix}")) as tmp:
                fig.savefig(tmp, format=suffix, dpi=150, metadata={"CreationDate": None} if suffix == "pdf" else None)
        paths.append(stem.with_suffix(".png"))
    return paths
