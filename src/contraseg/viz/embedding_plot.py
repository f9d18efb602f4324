"""Draw 2-D embedding maps: pixels coloured by class, prototypes marked, one panel per model.

Drawing only; the coordinates come from :func:`contraseg.viz.project_2d` and the numbers
from :func:`contraseg.viz.embedding_stats`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .cosine_stats import class_name
from .style import DPI, EMBED_LEGEND_INCHES, EMBED_PANEL_INCHES, NEUTRAL, new_figure, palette_colours

__all__ = ["EmbeddingPanel", "PROTOTYPE_MARKERS", "plot_embedding"]

#: Marker and size of each kind of prototype (see :data:`contraseg.viz.prototype_sources.KIND_LABELS`).
PROTOTYPE_MARKERS = {"proac": ("*", 320.0), "protoseg": ("D", 45.0), "class-mean": ("X", 160.0), "file": ("*", 320.0)}


@dataclass
class EmbeddingPanel:
    """One scatter panel.

    Attributes:
        title: panel title (e.g. the checkpoint name).
        coords: N x 2 pixel coordinates; labels: their N class ids.
        prototype_coords: P x 2 prototype coordinates in the same map; prototype_labels: P ids.
        prototype_kind: key of :data:`PROTOTYPE_MARKERS`; prototype_legend: its legend text.
        note: a line under the title (e.g. the silhouette scores).
    """

    title: str
    coords: np.ndarray
    labels: np.ndarray
    prototype_coords: np.ndarray
    prototype_labels: np.ndarray
    prototype_kind: str
    prototype_legend: str
    note: str = ""

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.prototype_coords = np.asarray(self.prototype_coords, dtype=np.float64).reshape(-1, 2)
        self.prototype_labels = np.asarray(self.prototype_labels, dtype=np.int64).reshape(-1)
        if len(self.coords) != len(self.labels):
            raise ValueError(f"panel {self.title!r}: {len(self.coords)} coordinates but {len(self.labels)} labels")
        if len(self.prototype_coords) != len(self.prototype_labels):
            raise ValueError(f"panel {self.title!r}: {len(self.prototype_coords)} prototype coordinates but "
                             f"{len(self.prototype_labels)} prototype labels")
        if self.prototype_kind not in PROTOTYPE_MARKERS:
            raise ValueError(f"panel {self.title!r}: prototype_kind must be one of {', '.join(PROTOTYPE_MARKERS)}, "
                             f"got {self.prototype_kind!r}")


def _class_colours(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    out = np.tile(np.asarray(NEUTRAL, dtype=np.float64), (len(labels), 1))
    known = (labels >= 0) & (labels < len(colours))
    out[known] = colours[labels[known]]
    return out


def plot_embedding(panels: Sequence[EmbeddingPanel], class_names: Sequence[str], palette: Sequence[Sequence[int]],
                   dpi: int = DPI) -> Figure:
    """Side-by-side scatter panels with a shared class legend.

    The figure is ``(len(panels) * 6 + 2.4) x 6`` inches at ``dpi``.

    Args:
        panels: one :class:`EmbeddingPanel` per model (same pixels, own projection).
        class_names: K class names (legend). palette: K RGB triples in 0..255.
    """
    if not panels:
        raise ValueError("plot_embedding needs at least one panel")
    colours = palette_colours(palette)
    width, height = EMBED_PANEL_INCHES
    fig = new_figure(len(panels) * width + EMBED_LEGEND_INCHES, height, dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        size = float(np.clip(6000.0 / max(1, len(panel.labels)), 1.0, 14.0))
        ax.scatter(panel.coords[:, 0], panel.coords[:, 1], c=_class_colours(panel.labels, colours), s=size,
                   alpha=0.6, linewidths=0, rasterized=True)
        marker, marker_size = PROTOTYPE_MARKERS[panel.prototype_kind]
        ax.scatter(panel.prototype_coords[:, 0], panel.prototype_coords[:, 1],
                   c=_class_colours(panel.prototype_labels, colours), marker=marker, s=marker_size,
                   edgecolors="black", linewidths=0.9, zorder=3)
        ax.set_title(f"{panel.title}\n{panel.note}" if panel.note else panel.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    sampled = set(np.concatenate([p.labels for p in panels]).tolist())
    shown = sorted(sampled | set(np.concatenate([p.prototype_labels for p in panels]).tolist()))
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=6, markerfacecolor=tuple(c),
                      markeredgewidth=0, alpha=1.0 if k in sampled else 0.4,
                      label=class_name(k, class_names) + ("" if k in sampled else " (no pixels)"))
               for k, c in zip(shown, _class_colours(np.asarray(shown, dtype=np.int64), colours))]
    for kind, text in dict.fromkeys((p.prototype_kind, p.prototype_legend) for p in panels):
        marker, _ = PROTOTYPE_MARKERS[kind]
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=11 if marker == "*" else 7,
                              markerfacecolor="white", markeredgecolor="black", label=textwrap.fill(text, 30)))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig
