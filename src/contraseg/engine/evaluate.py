"""Evaluation: predictions over a dataset into a confusion matrix, then metrics.

With W processes, rank r evaluates samples ``r, r + W, ...`` (no padding, so no
sample is counted twice) and the K x K int64 confusion matrices are summed over the
ranks: the result equals the single-process one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..distributed import all_reduce_sum, rank, world_size
from .metrics import compute_metrics, confusion_matrix
from .sampling import shard_indices


@dataclass
class InferenceOptions:
    """How ``predict_logits`` runs: ``mode`` whole or slide, slide ``crop_size``/``stride``
    as (h, w), test-time ``scales``, horizontal ``flip`` and the ``align_corners`` of
    every bilinear resize (``eval.align_corners``)."""

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: Sequence[float] = (1.0,)
    flip: bool = False
    align_corners: bool = False

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``predict_logits``."""
        return {"mode": self.mode, "crop_size": self.crop_size, "stride": self.stride,
                "scales": tuple(self.scales), "flip": self.flip, "align_corners": self.align_corners}


def inference_options(cfg: Any) -> InferenceOptions:
    """The evaluation inference settings of a :class:`~contraseg.engine.config.Config`
    (its ``eval`` section; the slide crop defaults to ``data.crop_size``, the stride to
    two thirds of the crop)."""
    crop = tuple(cfg.eval.crop_size or cfg.data.crop_size)
    stride = tuple(cfg.eval.stride) if cfg.eval.stride else tuple(max(1, (2 * c) // 3) for c in crop)
    return InferenceOptions(cfg.eval.mode, crop, stride, tuple(cfg.eval.scales), cfg.eval.flip,
                            cfg.eval.align_corners)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@torch.no_grad()
def evaluate_confusion(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    options: InferenceOptions,
    device: torch.device,
    ignore_index: int = 255,
    batch_size: int = 1,
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """K x K confusion matrix of ``model`` over ``dataset`` (summed over all ranks).

    Each batch's class scores come from ``contraseg.engine.inference.predict_logits``
    (B x K x H x W, bilinearly resized to the label size when the image was resized);
    the prediction is their argmax. ``progress(done, total)`` is called after each batch
    with this rank's image counts.
    """
    from .inference import predict_logits

    net = _unwrap(model)
    was_training = net.training
    net.eval()
    shard = Subset(dataset, shard_indices(len(dataset), rank(), world_size()))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    done = 0
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            if autocast_dtype is not None:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    logits = predict_logits(net, images, **options.kwargs())
            else:
                logits = predict_logits(net, images, **options.kwargs())
            if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):  # image resized, label native
                logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear",
                                       align_corners=options.align_corners)
            confusion += confusion_matrix(logits.argmax(1), labels, num_classes, ignore_index)
            done += images.shape[0]
            if progress is not None:
                progress(done, len(shard))
    finally:
        net.train(was_training)
    return all_reduce_sum(confusion).cpu()


def evaluate_dataset(
    model: nn.Module,
    dataset: Any,
    options: InferenceOptions,
    device: torch.device,
    eval_classes: Sequence[int | str] | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (class names and ignore index from ``dataset.info``).

    Returns :func:`contraseg.engine.metrics.compute_metrics`'s dict plus ``confusion``
    (K x K nested lists).

    Raises:
        ValueError: the dataset has no labelled pixel (every label is the ignore index,
            e.g. a misnamed label folder), so the mIoU is undefined.
    """
    info = dataset.info
    num_classes = len(info.classes)
    confusion = evaluate_confusion(model, dataset, num_classes, options, device, info.ignore_index,
                                   batch_size, num_workers, autocast_dtype, progress)
    if int(confusion.sum()) == 0:
        where = getattr(dataset, "root", None)
        raise ValueError(f"dataset {info.name}/{getattr(dataset, 'split', '?')}"
                         f"{f' under {where}' if where else ''} has no labelled pixel (every label is ignored, "
                         "or the label folder is missing): its mIoU is undefined")
    metrics = compute_metrics(confusion, info.classes, eval_classes)
    metrics["confusion"] = confusion.tolist()
    return metrics
