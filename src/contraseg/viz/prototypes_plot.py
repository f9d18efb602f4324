"""Draw a prototype cosine matrix as a heatmap, with ProtoSeg's per-class diversity beside it.

Drawing only; the numbers come from :func:`contraseg.viz.prototype_similarity`. With M
prototypes per class the K*M x K*M matrix is drawn in class blocks (a collapsed class
shows as a uniformly bright block on the diagonal) and the diversity of each class (its
mean within-class cosine) as a horizontal bar chart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .cosine_stats import class_name
from .prototype_stats import PrototypeSimilarity
from .style import DIVERSITY_INCHES, DPI, HEATMAP_INCHES, NEUTRAL, new_figure, palette_colours

__all__ = ["plot_prototype_similarity"]


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(class, start, stop)`` of each run of equal consecutive labels."""
    runs = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((int(labels[start]), start, i))
            start = i
    return runs


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def plot_prototype_similarity(similarity: PrototypeSimilarity, class_names: Sequence[str],
                              palette: Sequence[Sequence[int]] | None = None, title: str = "",
                              dpi: int = DPI) -> Figure:
    """Heatmap of the P x P prototype cosines (and a diversity bar chart when M >= 2).

    The figure is 7 x 6.5 inches, plus 4 inches of width for the bar chart, at ``dpi``.

    Args:
        similarity: from :func:`contraseg.viz.prototype_similarity`.
        class_names: K names for the axes. palette: K RGB triples (bar colours) or None.
        title: a first title line (e.g. the file name).
    """
    summary = similarity.summary
    cosine = similarity.cosine.numpy()
    labels = similarity.labels.numpy()
    diversity = summary["diversity"]
    width, height = HEATMAP_INCHES
    fig = new_figure(width + (DIVERSITY_INCHES if diversity else 0.0), height, dpi)
    if diversity:
        heat_ax, bar_ax = fig.subplots(1, 2, width_ratios=[width, DIVERSITY_INCHES])
    else:
        heat_ax, bar_ax = fig.subplots(1, 1), None
    image = heat_ax.imshow(cosine, vmin=-1.0, vmax=1.0, cmap="coolwarm", interpolation="nearest")
    fig.colorbar(image, ax=heat_ax, shrink=0.8, label="cosine")
    runs = _runs(labels)
    centres = [(start + stop - 1) / 2.0 for _, start, stop in runs]
    names = [class_name(k, class_names) for k, _, _ in runs]
    font = float(np.clip(260.0 / max(1, len(runs)), 4.0, 9.0))
    heat_ax.set_xticks(centres, names, rotation=90, fontsize=font)
    heat_ax.set_yticks(centres, names, fontsize=font)
    if summary["per_class"] > 1:
        for _, _, stop in runs[:-1]:
            heat_ax.axhline(stop - 0.5, color="black", linewidth=0.4)
            heat_ax.axvline(stop - 0.5, color="black", linewidth=0.4)
    shape = f"{summary['num_classes']} classes x {summary['per_class']}" if summary["per_class"] > 1 \
        else f"{summary['num_classes']} classes"
    heading = (f"{summary['num_prototypes']} prototypes ({shape}), D={summary['dim']}\n"
               f"between classes: max cos {_fmt(summary['max_between_cosine'])}, "
               f"mean {_fmt(summary['mean_between_cosine'])}; simplex optimum {_fmt(summary['simplex_optimum'])}")
    heat_ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    if bar_ax is not None:
        classes = sorted(diversity)
        values = [diversity[k] for k in classes]
        colours = palette_colours(palette) if palette else np.zeros((0, 3))
        bar_colours = [tuple(colours[k]) if k < len(colours) else NEUTRAL for k in classes]
        positions = np.arange(len(classes))
        bar_ax.barh(positions, np.nan_to_num(values, nan=0.0), color=bar_colours, edgecolor="black", linewidth=0.4)
        bar_ax.set_yticks(positions, [class_name(k, class_names) for k in classes], fontsize=font)
        bar_ax.invert_yaxis()
        bar_ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
        bar_ax.set_xlim(min(-0.1, float(np.nanmin(values)) - 0.05) if np.isfinite(values).any() else -0.1, 1.05)
        bar_ax.set_xlabel("mean within-class cosine (1 = collapsed)", fontsize=8)
        bar_ax.set_title("diversity per class", fontsize=9)
    return fig
