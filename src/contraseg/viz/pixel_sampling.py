"""Class-balanced uniform sampling of labelled pixels (the points of the embedding plots).

Every pixel gets a random key from a generator seeded by ``(seed, image index)``, so a
pixel's key does not depend on which other images were seen, nor in which order. Each
class present keeps the pixels with the ``quota`` smallest keys, a uniform sample
without replacement of its pixels::

    quota = max(1, num_pixels // number of classes present)

or all of a class's pixels when it has fewer. Pixels labelled ``ignore_index`` are never
sampled.

:class:`BalancedPixelSampler` does the same image by image with bounded memory: it
keeps, per class, the ``num_pixels // classes seen so far`` smallest keys. The final
number of classes is at least the number seen so far, so no pixel of the final sample
is ever dropped, and the result equals :func:`sample_pixels` on all images at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["PixelSample", "BalancedPixelSampler", "sample_pixels", "pixel_keys", "class_quota", "gather_pixels"]

_SEED_MASK = (1 << 63) - 1


def pixel_keys(seed: int, image_index: int, count: int) -> Tensor:
    """The random sort keys (float64 in [0, 1)) of the ``count`` pixels of one image."""
    if seed < 0 or image_index < 0:
        raise ValueError(f"seed and image_index must be >= 0, got {seed} and {image_index}")
    generator = torch.Generator().manual_seed((seed * 1_000_003 + image_index) & _SEED_MASK)
    return torch.rand(count, generator=generator, dtype=torch.float64)


def class_quota(num_pixels: int, num_classes: int) -> int:
    """Pixels kept per class: ``max(1, num_pixels // num_classes)`` (0 with no class)."""
    if num_classes <= 0:
        return 0
    return max(1, num_pixels // num_classes)


def _check_grid_labels(labels: Tensor, name: str = "labels") -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")


def _check_num_pixels(num_pixels: int) -> None:
    if isinstance(num_pixels, bool) or not isinstance(num_pixels, int) or num_pixels < 1:
        raise ValueError(f"num_pixels must be a positive integer, got {num_pixels!r}")


def sample_pixels(labels: Tensor, num_pixels: int, seed: int = 0, ignore_index: int = 255,
                  first_image: int = 0) -> Tensor:
    """Class-balanced sample of labelled pixels of a batch of label maps.

    Args:
        labels: B x h x w integer labels on the embedding grid (image ``b`` is image
            number ``first_image + b`` for the keys).
        num_pixels: the pixel budget, shared equally by the classes present.
        seed: seeds the keys (see :func:`pixel_keys`).
        ignore_index: label of pixels never sampled.

    Returns:
        M x 3 long tensor of ``(image index, row, col)``, ordered by key (classes
        interleaved at random). ``M = sum over present classes of min(count, quota)``.
    """
    _check_grid_labels(labels)
    _check_num_pixels(num_pixels)
    if labels.dim() != 3:
        raise ValueError(f"labels must be B x h x w, got shape {tuple(labels.shape)}")
    b, h, w = labels.shape
    keys = torch.cat([pixel_keys(seed, first_image + i, h * w) for i in range(b)]).to(labels.device)
    flat = labels.reshape(-1)
    kept = (flat != ignore_index).nonzero().squeeze(1)
    classes = torch.unique(flat[kept])
    quota = class_quota(num_pixels, len(classes))
    chosen = []
    for c in classes.tolist():
        members = kept[flat[kept] == c]
        take = min(quota, len(members))
        chosen.append(members[keys[members].topk(take, largest=False).indices])
    index = torch.cat(chosen) if chosen else kept[:0]
    index = index[keys[index].argsort()]
    image = index // (h * w) + first_image
    return torch.stack([image, (index % (h * w)) // w, index % w], dim=1)


def gather_pixels(embeddings: Tensor, positions: Tensor, first_image: int = 0) -> Tensor:
    """The N x D embeddings at ``positions`` (N x 3 ``(image, row, col)``) of B x D x h x w."""
    if embeddings.dim() != 4:
        raise ValueError(f"embeddings must be B x D x h x w, got shape {tuple(embeddings.shape)}")
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be N x 3 (image, row, col), got shape {tuple(positions.shape)}")
    pos = positions.to(embeddings.device)
    return embeddings[pos[:, 0] - first_image, :, pos[:, 1], pos[:, 2]]


@dataclass
class PixelSample:
    """Sampled pixels and their embeddings under one or more models.

    Attributes:
        positions: N x 3 long ``(image index, row, col)`` on the embedding grid.
        labels: N class ids.
        embeddings: one N x D_j tensor per model (same pixels, same order).
        keys: N sort keys (float64), ascending.
    """

    positions: Tensor
    labels: Tensor
    embeddings: list[Tensor]
    keys: Tensor = field(repr=False)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def class_counts(self) -> dict[int, int]:
        """Sampled pixels per class id, classes in increasing order."""
        ids, counts = torch.unique(self.labels, return_counts=True)
        return {int(i): int(n) for i, n in zip(ids.tolist(), counts.tolist())}


@dataclass
class _ClassPool:
    keys: Tensor
    positions: Tensor
    embeddings: list[Tensor]

    def merged(self, other: "_ClassPool") -> "_ClassPool":
        return _ClassPool(torch.cat([self.keys, other.keys]), torch.cat([self.positions, other.positions]),
                          [torch.cat([a, b]) for a, b in zip(self.embeddings, other.embeddings)])

    def smallest(self, count: int) -> "_ClassPool":
        if len(self.keys) <= count:
            return self
        keep = self.keys.topk(count, largest=False).indices
        return _ClassPool(self.keys[keep], self.positions[keep], [e[keep] for e in self.embeddings])


class BalancedPixelSampler:
    """Streaming version of :func:`sample_pixels` that also keeps the sampled embeddings.

    Args:
        num_pixels: the pixel budget, shared equally by the classes present.
        seed: seeds the per-image keys.
        ignore_index: label of pixels never sampled.

    Example:
        >>> sampler = BalancedPixelSampler(20000)
        >>> for i, (embed, grid_labels) in enumerate(per_image):   # D x h x w, h x w
        ...     sampler.add(i, grid_labels, [embed])
        >>> sample = sampler.result()                                # PixelSample
    """

    def __init__(self, num_pixels: int, seed: int = 0, ignore_index: int = 255) -> None:
        _check_num_pixels(num_pixels)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_pixels = num_pixels
        self.seed = int(seed)
        self.ignore_index = int(ignore_index)
        self._pools: dict[int, _ClassPool] = {}
        self._num_models: int | None = None
        self._images: set[int] = set()

    @property
    def classes_seen(self) -> list[int]:
        """Class ids met so far, sorted."""
        return sorted(self._pools)

    def add(self, image_index: int, labels: Tensor, embeddings: Sequence[Tensor]) -> None:
        """Offer the pixels of one image.

        Args:
            image_index: the image's number (keys and positions use it; each once).
            labels: h x w integer labels on the embedding grid.
            embeddings: one D_j x h x w tensor per model, all on that grid.
        """
        _check_grid_labels(labels)
        if labels.dim() != 2:
            raise ValueError(f"labels must be h x w (one image on the embedding grid), got shape {tuple(labels.shape)}")
        if image_index in self._images:
            raise ValueError(f"image_index {image_index} was already added")
        if len(embeddings) == 0:
            raise ValueError("embeddings must hold at least one D x h x w tensor")
        if self._num_models is not None and len(embeddings) != self._num_models:
            raise ValueError(f"embeddings has {len(embeddings)} tensors but earlier images had {self._num_models}")
        h, w = labels.shape
        for j, emb in enumerate(embeddings):
            if emb.dim() != 3 or tuple(emb.shape[1:]) != (h, w):
                raise ValueError(f"embeddings[{j}] must be D x {h} x {w} like the labels, got {tuple(emb.shape)}")
        self._num_models = len(embeddings)
        self._images.add(image_index)
        keys = pixel_keys(self.seed, image_index, h * w).to(labels.device)
        flat = labels.reshape(-1)
        flat_embeddings = [emb.reshape(emb.shape[0], -1).T for emb in embeddings]
        for c in torch.unique(flat[flat != self.ignore_index]).tolist():
            members = (flat == c).nonzero().squeeze(1)
            rows, cols = members // w, members % w
            image = torch.full_like(members, image_index)
            new = _ClassPool(keys[members], torch.stack([image, rows, cols], dim=1),
                             [e[members.to(e.device)].detach() for e in flat_embeddings])
            self._pools[c] = self._pools[c].merged(new) if c in self._pools else new
        cap = class_quota(self.num_pixels, len(self._pools))
        self._pools = {c: pool.smallest(cap) for c, pool in self._pools.items()}

    def result(self) -> PixelSample:
        """The class-balanced sample of everything added, ordered by key.

        Raises:
            ValueError: when no labelled pixel was added.
        """
        if not self._pools:
            raise ValueError(f"no labelled pixel (label != {self.ignore_index}) among the {len(self._images)} images added")
        quota = class_quota(self.num_pixels, len(self._pools))
        pools = [self._pools[c].smallest(quota) for c in sorted(self._pools)]
        labels = torch.cat([torch.full_like(p.keys, c, dtype=torch.long) for c, p in zip(sorted(self._pools), pools)])
        keys = torch.cat([p.keys for p in pools])
        order = keys.argsort()
        positions = torch.cat([p.positions for p in pools])[order]
        embeddings = [torch.cat([p.embeddings[j] for p in pools])[order.to(pools[0].embeddings[j].device)]
                      for j in range(len(pools[0].embeddings))]
        return PixelSample(positions, labels[order], embeddings, keys[order])
