"""Figures without pyplot: an Agg canvas, fixed sizes and palette colours.

Every plotting function of :mod:`contraseg.viz` draws on a :class:`matplotlib.figure.Figure`
made by :func:`new_figure`, which attaches an Agg canvas directly: no global pyplot
state, no display needed, safe in scripts, notebooks and worker threads. Figures are
saved at their own size and dpi (never ``bbox_inches="tight"``), so a PNG is exactly
``round(width_in * dpi) x round(height_in * dpi)`` pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Default resolution of every saved figure.
DPI = 100
#: Size in inches of one embedding scatter panel, and of the legend column beside the panels.
EMBED_PANEL_INCHES = (6.0, 6.0)
EMBED_LEGEND_INCHES = 2.4
#: Size in inches of the prototype cosine heatmap, and of the diversity bar chart beside it.
HEATMAP_INCHES = (7.0, 6.5)
DIVERSITY_INCHES = 4.0
#: Size in inches of the training-curve figure (three stacked plots).
CURVES_INCHES = (9.0, 9.0)
#: Neutral colour for anything that has no class colour.
NEUTRAL = (0.35, 0.35, 0.35)


def new_figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    """A constrained-layout Figure of ``width_in x height_in`` inches on an Agg canvas."""
    if width_in <= 0 or height_in <= 0 or dpi <= 0:
        raise ValueError(f"figure size and dpi must be > 0, got {width_in} x {height_in} in at dpi {dpi}")
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_pixels(fig: Figure) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``fig`` when saved by :func:`save_png`."""
    width, height = fig.get_size_inches()
    return int(round(width * fig.dpi)), int(round(height * fig.dpi))


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at its own size and dpi (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, format="png")
    return path


def palette_colours(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """K RGB triples in 0..255 -> K x 3 float array in [0, 1] for matplotlib."""
    colours = np.asarray(palette, dtype=np.float64) if len(palette) else np.zeros((0, 3))
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"palette must be K RGB triples, got shape {colours.shape}")
    if colours.size and (colours.min() < 0 or colours.max() > 255):
        raise ValueError(f"palette values must be in [0, 255], got {colours.min()}..{colours.max()}")
    return colours / 255.0
