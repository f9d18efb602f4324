"""Draw a run's training curves: loss terms, learning rate and validation mIoU.

Drawing only; the series come from :func:`contraseg.viz.read_run_curves`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .curves import RunCurves
from .style import CURVES_INCHES, DPI, new_figure

__all__ = ["plot_curves"]


def plot_curves(curves: RunCurves, title: str = "", dpi: int = DPI) -> Figure:
    """Three stacked plots sharing the iteration axis: loss terms (log scale when all
    positive), learning rate, and mIoU (%) of every evaluation dataset with its best
    point marked. The figure is 9 x 9 inches at ``dpi``."""
    fig = new_figure(*CURVES_INCHES, dpi=dpi)
    loss_ax, lr_ax, miou_ax = fig.subplots(3, 1, sharex=True, height_ratios=[2.0, 1.0, 1.6])
    its = np.asarray(curves.iterations, dtype=np.float64)
    finite_values = []
    for name, values in curves.losses.items():
        series = np.asarray(values, dtype=np.float64)
        loss_ax.plot(its, series, linewidth=1.6 if name == "loss" else 1.0, label=name)
        finite_values.extend(series[np.isfinite(series)].tolist())
    if finite_values and min(finite_values) > 0:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss terms")
    if curves.losses:
        loss_ax.legend(fontsize=8, ncols=min(4, len(curves.losses)))
    else:
        loss_ax.text(0.5, 0.5, "no training records", ha="center", va="center", transform=loss_ax.transAxes)
    loss_ax.grid(alpha=0.3)
    lr_ax.plot(its, np.asarray(curves.lr, dtype=np.float64), color="tab:gray")
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    lr_ax.grid(alpha=0.3)
    for dataset, (eval_its, values) in curves.evals.items():
        percent = 100.0 * np.asarray(values, dtype=np.float64)
        (line,) = miou_ax.plot(eval_its, percent, marker="o", markersize=3, label=dataset)
        if np.isfinite(percent).any():
            best = int(np.nanargmax(percent))
            miou_ax.scatter([eval_its[best]], [percent[best]], marker="*", s=140, color=line.get_color(),
                            edgecolors="black", zorder=3)
            miou_ax.annotate(f"{percent[best]:.1f}", (eval_its[best], percent[best]), textcoords="offset points",
                             xytext=(4, 6), fontsize=8)
    if curves.evals:
        miou_ax.legend(fontsize=8)
    else:
        miou_ax.text(0.5, 0.5, "no evaluation records", ha="center", va="center", transform=miou_ax.transAxes)
    miou_ax.set_ylabel("val mIoU (%)")
    miou_ax.set_xlabel("iteration")
    miou_ax.grid(alpha=0.3)
    if title:
        loss_ax.set_title(title, fontsize=10)
    return fig
