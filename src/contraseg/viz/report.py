"""Plain-text tables of the numbers behind each picture (printed by ``contraseg viz``)."""

from __future__ import annotations

from typing import Any, Sequence

from .cosine_stats import class_name

__all__ = ["format_embedding_stats", "format_prototype_summary", "format_prototype_diversity", "format_curves_summary"]


def _num(value: float | None, width: int = 7, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN
        return f"{'-':>{width}}"
    return f"{value:>+{width}.{digits}f}"


def format_embedding_stats(stats: dict[str, Any], title: str, method: str) -> str:
    """Per-class own / nearest-other cosine table and the silhouette scores.

    ``stats`` is an :func:`contraseg.viz.embedding_stats` result (with ``"prototypes"``).
    """
    rows = stats["per_class"]
    width = max([len(r["name"]) for r in rows] + [len("class")]) + 1
    rival = max([len(r["nearest_other_class"] or "-") for r in rows] + [len("nearest other")]) + 1
    kind = stats.get("prototypes", {}).get("kind", "?")
    lines = [f"{title}: {stats['num_pixels']} pixels, prototypes: {kind}",
             f"{'class':<{width}} {'pixels':>7} {'own cos':>8} {'other cos':>9} {'margin':>8}  {'nearest other':<{rival}}"]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        lines.append(f"{r['name']:<{width}} {r['pixels']:>7d} {_num(r['own_cosine'], 8)} "
                     f"{_num(r['nearest_other_cosine'], 9)} {_num(r['margin'], 8)}  {r['nearest_other_class'] or '-':<{rival}}")
    lines.append(f"{'mean':<{width}} {'':>7} {_num(stats['mean_own_cosine'], 8)} {_num(stats['mean_nearest_other_cosine'], 9)}")
    lines.append(f"silhouette: {_num(stats['silhouette_embedding'], 6)} (cosine, D-dim embeddings), "
                 f"{_num(stats['silhouette_2d'], 6)} (Euclidean, {method} 2-D)")
    return "\n".join(lines)


def format_prototype_summary(summary: dict[str, Any], class_names: Sequence[str]) -> str:
    """Separation (max / mean between-class cosine, simplex optimum) and per-class diversity."""
    shape = f"{summary['num_classes']} classes x {summary['per_class']} per class" if summary["per_class"] > 1 \
        else f"{summary['num_classes']} classes"
    lines = [f"prototypes: {summary['num_prototypes']} ({shape}), D={summary['dim']}",
             f"max between-class cosine:  {_num(summary['max_between_cosine'], 7, 4)}",
             f"mean between-class cosine: {_num(summary['mean_between_cosine'], 7, 4)}"]
    optimum = summary["simplex_optimum"]
    if optimum is not None:
        lines.append(f"simplex optimum -1/(K-1):  {_num(optimum, 7, 4)} (K={summary['num_classes']} <= D+1)")
    else:
        lines.append(f"simplex optimum: n/a (K={summary['num_classes']} > D+1={summary['dim'] + 1} or K < 2)")
    diversity = summary["diversity"]
    if diversity:
        width = max(len(class_name(k, class_names)) for k in diversity) + 1
        lines.append("diversity (mean within-class cosine; 1 = collapsed):")
        for k, value in diversity.items():
            flag = "  <- collapsed" if value == value and value > 0.999 else ""
            lines.append(f"  {class_name(k, class_names):<{width}} {_num(value, 7, 4)}{flag}")
    return "\n".join(lines)


def format_prototype_diversity(rows: dict[Any, dict[str, Any]], class_names: Sequence[str]) -> str:
    """Per class: prototypes, mean / max within-class cosine, prototypes used / pixels."""
    width = max([len(class_name(k, class_names)) for k in rows] + [5]) + 1
    lines = [f"{'class':<{width}} {'M':>3} {'mean cos':>8} {'max cos':>8} {'used':>5} {'pixels':>8}"]
    for k, r in rows.items():
        used = f"{r['used']:>5d} {sum(r['pixels']):>8d}" if "used" in r else f"{'-':>5} {'-':>8}"
        lines.append(f"{class_name(k, class_names):<{width}} {r['prototypes']:>3d} {_num(r['mean_cosine'], 8, 4)} "
                     f"{_num(r['max_cosine'], 8, 4)} {used}")
    return "\n".join(lines)


def format_curves_summary(summary: dict[str, Any]) -> str:
    """Last / best mIoU per evaluation set and the final loss terms."""
    lines = [f"{summary['log']}: {summary['train_records']} training records, "
             f"last iteration {summary['last_iteration']}"]
    for dataset, ev in summary["eval"].items():
        last = ev["last"]
        best = ev["best"]
        last_text = "-" if last["mIoU"] is None else f"{100 * last['mIoU']:.2f}%"
        best_text = "-" if best is None else f"{100 * best['mIoU']:.2f}% at iteration {best['iteration']}"
        lines.append(f"{dataset}: last mIoU {last_text} (iteration {last['iteration']}), best mIoU {best_text}")
    if not summary["eval"]:
        lines.append("no evaluation records")
    if summary["final_losses"]:
        terms = ", ".join(f"{name} {'-' if value is None else f'{value:.4g}'}"
                          for name, value in summary["final_losses"].items())
        lines.append(f"final loss terms: {terms}")
    if summary["final_lr"] is not None:
        lines.append(f"final lr: {summary['final_lr']:.3e}")
    return "\n".join(lines)
