"""Offline pseudo labels of a target split: prediction, confidence thresholds, PNG files.

For every pixel the model's class probabilities P (``predict_logits``: whole or slide,
softmax averaged) give the prediction ``y = argmax_k P_k`` and the confidence
``c = max_k P_k``. A pixel keeps ``y`` when ``c >= t_y`` and becomes 255 (ignored)
otherwise, with

* a global threshold: ``t_k = threshold`` for every class;
* class-wise thresholds (CBST / CAG / ProDA style): ``t_k = min(q_k(p), threshold)``,
  ``q_k(p)`` the p-quantile of the confidences of all pixels of the split predicted as
  class k, so that at least the most confident ``1 - p`` of every class is kept and
  rare, less confident classes are not wiped out. A class never predicted keeps the
  global threshold.

Quantiles over a whole split are computed from a streaming histogram: confidences are
quantised to ``CONFIDENCE_LEVELS + 1`` levels (``level = round(c * 65535)``, 16 bits)
and counted per class in a K x 65536 int64 table, so memory does not grow with the
split. ``q_k(p)`` is the exact "lower" quantile of the quantised values: the value at
0-based rank ``floor((n_k - 1) p)`` of class k's sorted levels (``numpy.quantile(...,
method="lower")``). All comparisons are made between levels. With class-wise
thresholds the model runs twice over the split (histogram pass, then writing pass).

Under ``torch.distributed`` every rank labels its shard of the split (rank r takes
samples r, r + W, ...), histograms and counts are summed over the ranks, and rank 0
writes the summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from .._io import atomic_write
from ..distributed import all_reduce_sum, rank, world_size

CONFIDENCE_LEVELS = 65535
SUMMARY_FILE = "summary.json"


def quantise_confidence(confidence: Tensor) -> Tensor:
    """Confidences in [0, 1] (any shape) -> int64 levels ``round(c * 65535)`` in [0, 65535]."""
    return torch.round(confidence.float().clamp(0.0, 1.0) * CONFIDENCE_LEVELS).long()


def threshold_level(threshold: float) -> int:
    """The smallest level whose confidence ``level / 65535`` is at least ``threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return int(math.ceil(threshold * CONFIDENCE_LEVELS - 1e-9))


class ConfidenceHistogram:
    """Per-class counts of quantised confidences, K x (CONFIDENCE_LEVELS + 1) int64.

    Args:
        num_classes: K.
        device: where the table lives (that of the predictions).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, CONFIDENCE_LEVELS + 1, dtype=torch.int64, device=device)

    def add(self, predictions: Tensor, levels: Tensor) -> None:
        """Count pixels: ``predictions`` and ``levels`` integer tensors of one shape."""
        if predictions.shape != levels.shape:
            raise ValueError(f"predictions {tuple(predictions.shape)} and levels {tuple(levels.shape)} must agree")
        flat = predictions.reshape(-1).long() * (CONFIDENCE_LEVELS + 1) + levels.reshape(-1).long()
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).reshape(self.counts.shape)

    def quantile_levels(self, p: float) -> Tensor:
        """K int64: the "lower" p-quantile level of each class, -1 for classes with no pixel."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"class percentile must be in [0, 1], got {p}")
        cumulative = self.counts.cumsum(dim=1)
        totals = cumulative[:, -1]
        ranks = torch.floor((totals - 1).clamp_min(0).double() * p).long()  # 0-based rank of the quantile
        # First level whose cumulative count exceeds the rank.
        level = (cumulative <= ranks[:, None]).sum(dim=1)
        return torch.where(totals > 0, level, torch.full_like(level, -1))


def class_threshold_levels(histogram: ConfidenceHistogram | None, threshold: float,
                           class_percentile: float | None, num_classes: int) -> Tensor:
    """K int64 levels ``t_k``: the global threshold, or ``min(q_k(p), threshold)`` (see module doc)."""
    cap = threshold_level(threshold)
    levels = torch.full((num_classes,), cap, dtype=torch.int64)
    if class_percentile is None:
        return levels
    if histogram is None:
        raise ValueError("class-wise thresholds need the confidence histogram of the split")
    quantiles = histogram.quantile_levels(class_percentile).cpu()
    return torch.where(quantiles >= 0, quantiles.clamp_max(cap), levels)


def filter_predictions(predictions: Tensor, levels: Tensor, thresholds: Tensor, ignore_index: int = 255) -> Tensor:
    """Pseudo labels: ``predictions`` where ``levels >= thresholds[prediction]``, else ``ignore_index``."""
    keep = levels >= thresholds.to(predictions.device)[predictions]
    return torch.where(keep, predictions, torch.full_like(predictions, ignore_index))


@dataclass
class LabellingOptions:
    """How to predict: ``inference`` keyword arguments of ``predict_logits`` (mode, crop,
    stride, scales, flip), batch size and loader workers."""

    inference: dict[str, Any]
    batch_size: int = 1
    num_workers: int = 0


@torch.no_grad()
def predict_with_confidence(model: nn.Module, images: Tensor, size: Sequence[int],
                            inference: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``(predictions B x H x W long, confidence levels B x H x W long)`` at ``size`` (H, W).

    The probabilities of ``predict_logits`` are bilinearly resized to ``size`` when the
    image was resized for inference (labels keep the native size).
    """
    from ..engine.inference import predict_logits

    probs = predict_logits(model, images, **inference).float()
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=tuple(size), mode="bilinear",
                              align_corners=bool(inference.get("align_corners", False)))
    confidence, predictions = probs.max(dim=1)
    return predictions, quantise_confidence(confidence)


def _shard_loader(dataset: Any, options: LabellingOptions) -> DataLoader:
    from ..engine.sampling import shard_indices

    shard = Subset(dataset, shard_indices(len(dataset), rank(), world_size()))
    return DataLoader(shard, batch_size=options.batch_size, shuffle=False, num_workers=options.num_workers)


def _predicted_batches(model: nn.Module, dataset: Any, options: LabellingOptions,
                       device: torch.device, progress: Any = None) -> Any:
    """Yield ``(names, predictions, levels)`` for this rank's shard (labels' native size);
    ``progress(done, total)`` after each batch with this rank's image counts."""
    loader = _shard_loader(dataset, options)
    done = 0
    for batch in loader:
        images = batch["image"].to(device)
        size = batch["label"].shape[-2:]
        predictions, levels = predict_with_confidence(model, images, size, options.inference)
        done += images.shape[0]
        if progress is not None:
            progress(done, len(loader.dataset))
        yield list(batch["name"]), predictions, levels


def generate_pseudo_labels(model: nn.Module, dataset: Any, out: str | Path, *, threshold: float = 0.9,
                           class_percentile: float | None = None, options: LabellingOptions | None = None,
                           device: torch.device | str = "cpu", progress: Any = None) -> dict[str, Any]:
    """Label every sample of ``dataset`` and write ``out/<name>.png`` plus ``out/summary.json``.

    Args:
        model: a segmentor (put in eval mode here; its mode is restored afterwards).
        dataset: samples ``{"image", "label", "name"}`` with ``info`` (the label only
            gives the output size; an unlabeled split is fine).
        out: the pseudo-label folder (created); files are written atomically.
        threshold: global confidence threshold in [0, 1], the cap of class-wise ones.
        class_percentile: p in [0, 1] for class-wise thresholds, or None.
        options: inference settings; default whole-image, batch 1.
        progress: optional ``progress(pass_name)`` returning a ``(done, total)`` callback
            for each pass over the data (``"confidences"``, then ``"labels"``).

    Returns:
        The summary (also in ``summary.json``, written last so that its presence means
        the folder is complete): per class its threshold, predicted and kept pixels.
    """
    from ..data.pseudo_labels import PseudoLabelDir

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if class_percentile is not None and not 0.0 <= class_percentile <= 1.0:
        raise ValueError(f"class_percentile must be in [0, 1], got {class_percentile}")
    options = options or LabellingOptions(inference={"mode": "whole"})
    device = torch.device(device)
    info = dataset.info
    num_classes = len(info.classes)
    ignore = int(info.ignore_index)
    folder = PseudoLabelDir(out, create=True)
    summary_path = folder.path / SUMMARY_FILE
    if summary_path.exists() and rank() == 0:
        summary_path.unlink()  # the folder is incomplete until the new summary is written

    was_training = model.training
    model.eval()
    try:
        histogram = None
        if class_percentile is not None:
            histogram = ConfidenceHistogram(num_classes, device)
            report = progress("confidences") if progress is not None else None
            for _, predictions, levels in _predicted_batches(model, dataset, options, device, report):
                histogram.add(predictions, levels)
            all_reduce_sum(histogram.counts)
        thresholds = class_threshold_levels(histogram, threshold, class_percentile, num_classes)
        predicted = torch.zeros(num_classes, dtype=torch.int64, device=device)
        kept = torch.zeros(num_classes, dtype=torch.int64, device=device)
        report = progress("labels") if progress is not None else None
        for names, predictions, levels in _predicted_batches(model, dataset, options, device, report):
            labels = filter_predictions(predictions, levels, thresholds, ignore)
            predicted += torch.bincount(predictions.reshape(-1), minlength=num_classes)[:num_classes]
            kept_labels = labels[labels != ignore]
            kept += torch.bincount(kept_labels, minlength=num_classes)[:num_classes]
            for name, label in zip(names, labels.cpu()):
                folder.write(name, label)
    finally:
        model.train(was_training)
    all_reduce_sum(predicted)
    all_reduce_sum(kept)
    summary = _summary(info.classes, thresholds, predicted.cpu(), kept.cpu(), len(dataset), threshold,
                       class_percentile)
    if rank() == 0:
        text = json.dumps(summary, indent=1)
        atomic_write(summary_path, lambda handle: handle.write(text.encode()))
    return summary


def _summary(classes: Sequence[str], thresholds: Tensor, predicted: Tensor, kept: Tensor, images: int,
             threshold: float, class_percentile: float | None) -> dict[str, Any]:
    per_class = []
    for k, name in enumerate(classes):
        per_class.append({"class": name, "threshold": float(thresholds[k]) / CONFIDENCE_LEVELS,
                          "predicted_pixels": int(predicted[k]), "kept_pixels": int(kept[k])})
    total_predicted, total_kept = int(predicted.sum()), int(kept.sum())
    return {
        "images": images,
        "threshold": threshold,
        "class_percentile": class_percentile,
        "predicted_pixels": total_predicted,
        "kept_pixels": total_kept,
        "kept_fraction": total_kept / total_predicted if total_predicted else 0.0,
        "classes": per_class,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a table: class, threshold, predicted and kept pixels, kept %."""
    rows = summary["classes"]
    width = max(len("class"), *(len(r["class"]) for r in rows)) + 2
    lines = [f"{'class':<{width}}{'threshold':>10}{'predicted':>12}{'kept':>12}{'kept %':>8}"]
    for row in rows:
        share = 100.0 * row["kept_pixels"] / row["predicted_pixels"] if row["predicted_pixels"] else 0.0
        lines.append(f"{row['class']:<{width}}{row['threshold']:>10.4f}{row['predicted_pixels']:>12}"
                     f"{row['kept_pixels']:>12}{share:>8.1f}")
    lines.append(f"{'all':<{width}}{'':>10}{summary['predicted_pixels']:>12}{summary['kept_pixels']:>12}"
                 f"{100.0 * summary['kept_fraction']:>8.1f}")
    return "\n".join(lines)


def is_complete(folder: str | Path) -> bool:
    """True when ``folder`` holds a finished pseudo-label set (its ``summary.json``)."""
    return (Path(folder) / SUMMARY_FILE).is_file()
