"""Segmentation metrics from a confusion matrix.

Conventions (those of mmsegmentation and the Cityscapes scripts):

- ``confusion[g, p]`` counts pixels of ground-truth class g predicted as p; pixels
  labelled ``ignore_index`` are not counted.
- IoU_k = TP_k / (TP_k + FP_k + FN_k). A class absent from both the ground truth and
  the prediction has 0 / 0 = NaN and is left out of the mean: mIoU averages the
  classes present in the ground truth or the prediction (a class that is predicted
  but absent from the ground truth has IoU 0 and counts).
- Acc_k = TP_k / (TP_k + FN_k), NaN for classes absent from the ground truth; mean
  accuracy averages the non-NaN ones; pixel accuracy = trace / all counted pixels.
- ``eval_classes`` restricts the means to a subset (SYNTHIA's 13 of 16 classes): the
  per-class values are unchanged (a pixel predicted as an excluded class is still an
  error), only the averages are taken over the subset.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """K x K int64 confusion matrix of predictions against labels.

    Args:
        pred: integer predictions of any shape, values in [0, K).
        label: integer labels of the same shape, values in [0, K) or ``ignore_index``.
        num_classes: K.

    Returns:
        ``C`` with ``C[g, p]`` = number of pixels with label g and prediction p,
        computed as ``bincount(K * label + pred)`` over the kept pixels.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long()
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    if pred.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        bad = label[(label < 0) | (label >= num_classes)][0]
        raise ValueError(f"label contains {int(bad)}, outside [0, {num_classes}) and not ignore_index={ignore_index}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)][0]
        raise ValueError(f"pred contains {int(bad)}, outside [0, {num_classes})")
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _nanmean(values: Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else float("nan")


def _resolve_subset(eval_classes: Sequence[int | str] | None, class_names: Sequence[str], k: int) -> list[int]:
    if eval_classes is None:
        return list(range(k))
    index = {name: i for i, name in enumerate(class_names)}
    subset = []
    for item in eval_classes:
        if isinstance(item, str):
            if item not in index:
                raise ValueError(f"eval_classes: unknown class {item!r}; classes: {', '.join(class_names)}")
            subset.append(index[item])
        elif 0 <= int(item) < k:
            subset.append(int(item))
        else:
            raise ValueError(f"eval_classes: class index {item} outside [0, {k})")
    if not subset:
        raise ValueError("eval_classes: the subset is empty")
    return subset


def compute_metrics(
    confusion: Tensor,
    class_names: Sequence[str] | None = None,
    eval_classes: Sequence[int | str] | None = None,
) -> dict[str, Any]:
    """Per-class IoU/accuracy and their means from a K x K confusion matrix.

    Returns a JSON-ready dict: ``mIoU``, ``mAcc``, ``aAcc`` (pixel accuracy), ``pixels``,
    ``classes`` (names), ``IoU`` and ``Acc`` (K floats, NaN as None), ``eval_classes``
    (the names averaged over). Values are fractions in [0, 1].
    """
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be K x K, got shape {tuple(confusion.shape)}")
    k = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but confusion is {k} x {k}")
    subset = _resolve_subset(eval_classes, names, k)
    conf = confusion.double().cpu()
    tp = conf.diag()
    gt = conf.sum(1)
    predicted = conf.sum(0)
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = float(conf.sum())
    idx = torch.tensor(subset)

    def _list(values: Tensor) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in values.tolist()]

    return {
        "mIoU": _nanmean(iou[idx]),
        "mAcc": _nanmean(acc[idx]),
        "aAcc": float(tp.sum()) / total if total else float("nan"),
        "pixels": int(total),
        "classes": names,
        "IoU": _list(iou),
        "Acc": _list(acc),
        "eval_classes": [names[i] for i in subset],
    }


def format_metrics_table(metrics: dict[str, Any], columns: dict[str, dict[str, Any]] | None = None) -> str:
    """A plain-text per-class IoU table (percentages) with the mean rows at the bottom.

    ``columns`` maps column titles to metric dicts (same classes) to compare runs side
    by side; by default the single ``metrics`` is shown with its IoU and Acc columns.
    Classes outside ``eval_classes`` are marked with ``*``.
    """
    names = metrics["classes"]
    in_subset = set(metrics["eval_classes"])

    def pct(value: float | None) -> str:
        return "    -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:5.1f}"

    if columns is None:
        header = ["IoU", "Acc"]
        rows = [[pct(metrics["IoU"][i]), pct(metrics["Acc"][i])] for i in range(len(names))]
        means = [("mean", [pct(metrics["mIoU"]), pct(metrics["mAcc"])]), ("pixel acc", [pct(metrics["aAcc"]), ""])]
    else:
        header = list(columns)
        rows = [[pct(m["IoU"][i]) for m in columns.values()] for i in range(len(names))]
        means = [("mIoU", [pct(m["mIoU"]) for m in columns.values()])]
    width = max([len(n) + 1 for n in names] + [10])
    col = max([len(h) for h in header] + [5])
    lines = [f"{'class':<{width}} " + " ".join(f"{h:>{col}}" for h in header)]
    lines.append("-" * len(lines[0]))
    for name, row in zip(names, rows):
        mark = name if name in in_subset else f"{name}*"
        lines.append(f"{mark:<{width}} " + " ".join(f"{v:>{col}}" for v in row))
    lines.append("-" * len(lines[0]))
    for title, row in means:
        lines.append(f"{title:<{width}} " + " ".join(f"{v:>{col}}" for v in row))
    return "\n".join(lines)
