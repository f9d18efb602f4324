"""Run segmentors over a dataset and keep a class-balanced sample of pixel embeddings.

The same pixels are taken from every model (for side-by-side comparisons): labels are
resized with nearest neighbour to the first model's embedding grid, and a model with
another grid has its ``embed`` resized to it (bilinear, then re-normalised).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .pixel_sampling import BalancedPixelSampler, PixelSample

__all__ = ["collect_pixel_sample"]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _prototype_space(model: nn.Module, embed: Tensor) -> Tensor:
    """``embed`` in the space the model's prototypes live in: B x D x h x w.

    A ProtoSeg model (``model.prototype_head``) compares its prototypes with
    ``head.features(embed)`` (the released LayerNorm over D, then L2 normalisation), so
    its pixels are drawn in that space; any other model's ``embed`` is returned as is.
    """
    head = getattr(model, "prototype_head", None)
    if head is None or not hasattr(head, "features"):
        return embed
    b, d, h, w = embed.shape
    return F.normalize(head.features(embed), dim=1).reshape(b, d, h, w)


def _to_grid(embed: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(embed.shape[-2:]) == size:
        return embed
    return F.normalize(F.interpolate(embed, size=size, mode="bilinear", align_corners=False), dim=1)


@torch.no_grad()
def collect_pixel_sample(models: Sequence[nn.Module], dataset: Any, num_pixels: int, num_images: int,
                         seed: int = 0, ignore_index: int | None = None) -> PixelSample:
    """Embeddings of a class-balanced pixel sample from the first ``num_images`` images.

    Args:
        models: segmentors in eval mode, ``model(images)["embed"]`` B x D x h x w each
            (a ProtoSeg model's pixels are taken in its prototype space, see
            :func:`_prototype_space`).
        dataset: samples ``{"image" 3 x H x W, "label" H x W}`` (``.info.ignore_index``).
        num_pixels: pixel budget (see :class:`BalancedPixelSampler`).
        num_images: images used, from the start of the dataset.
        seed: seeds the sampling.
        ignore_index: label never sampled (default: the dataset's).

    Returns:
        A :class:`PixelSample` with one N x D_j float32 CPU tensor per model; positions
        are ``(image index, row, col)`` on the first model's grid.
    """
    if not models:
        raise ValueError("collect_pixel_sample needs at least one model")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    if ignore_index is None:
        ignore_index = int(getattr(getattr(dataset, "info", None), "ignore_index", 255))
    sampler = BalancedPixelSampler(num_pixels, seed=seed, ignore_index=ignore_index)
    devices = [_model_device(m) for m in models]
    for index in range(min(num_images, len(dataset))):
        sample = dataset[index]
        image, label = sample["image"], sample["label"]
        embeds = [_prototype_space(model, model(image[None].to(device))["embed"]).float()
                  for model, device in zip(models, devices)]
        grid = tuple(embeds[0].shape[-2:])
        grid_labels = resize_labels(label[None].long(), grid)[0]
        sampler.add(index, grid_labels, [_to_grid(e, grid)[0].cpu() for e in embeds])
    return sampler.result()
