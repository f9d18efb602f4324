"""DAFormer's rare-class sampling (RCS; Hoyer et al., CVPR 2022) of source images.

Released code: github:lhoyer/DAFormer @ e6f6e041e7477b642106c134c1715fc934ccd210,
``mmseg/datasets/uda_dataset.py``. With ``n_c`` the source pixels of class c over the
whole training set (classes with ``n_c = 0`` are left out), ``f_c = n_c / sum_c' n_c'``::

    P(c) = exp((1 - f_c) / T) / sum_c' exp((1 - f_c') / T),    T = 0.01

(``get_rcs_class_probs``, uda_dataset.py:17-39; the released configs use
``class_temp=0.01, min_pixels=3000, min_crop_ratio=0.5``,
configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:35-36).
Each sample draws a class c ~ P, then one of the images holding more than ``min_pixels``
pixels of c, uniformly (``get_rare_class_sample``, uda_dataset.py:90-92; the candidate
lists, uda_dataset.py:74-81). Deliberate difference: the released loader re-draws the crop
up to 10 times until it holds ``min_pixels * min_crop_ratio`` pixels of c
(uda_dataset.py:95-105); here the crop is the engine's ordinary random crop, drawn once
(the stream's sample seed decides it, so runs stay exactly resumable).

The pixel counts are taken from the labels at their native size (the released
``sample_class_stats.json`` is computed on the full-resolution GTA labels; ``min_pixels``
3000 is ~0.15% of a 1914 x 1052 image, so scale it for smaller images).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from ..engine.sampling import sample_seed

RELEASED_TEMPERATURE = 0.01
RELEASED_MIN_PIXELS = 3000
RCS_SEED_OFFSET = 15485863  # class / image draws: sample_seed(seed + this, global position)


def class_pixel_counts(dataset: Any, num_classes: int, ignore_index: int = 255) -> Tensor:
    """N x K int64: the pixels of each class in each image's native label
    (``dataset.load_ground_truth(i)``; ``ignore_index`` and ids >= K not counted)."""
    counts = torch.zeros(len(dataset), num_classes, dtype=torch.int64)
    for i in range(len(dataset)):
        label = dataset.load_ground_truth(i)
        if label is None:
            raise ValueError(f"rare-class sampling needs source labels; sample {i} has none")
        ids = np.asarray(label).reshape(-1).astype(np.int64)
        ids = ids[(ids != ignore_index) & (ids < num_classes)]
        counts[i] = torch.from_numpy(np.bincount(ids, minlength=num_classes))
    return counts


def rare_class_probabilities(class_pixels: Tensor, temperature: float = RELEASED_TEMPERATURE) -> tuple[list[int], Tensor]:
    """``(classes, P)``: the classes with pixels, in increasing pixel count (as released),
    and ``P(c) = softmax((1 - f_c) / T)`` over them (float64).

    Args:
        class_pixels: K pixel counts over the source set.
        temperature: T > 0.
    """
    if temperature <= 0:
        raise ValueError(f"the rare-class temperature must be > 0, got {temperature}")
    counts = class_pixels.detach().cpu().to(torch.float64)
    present = [int(c) for c in torch.nonzero(counts > 0)[:, 0]]
    if not present:
        raise ValueError("rare-class sampling: the source labels hold no pixel of any class")
    present.sort(key=lambda c: (float(counts[c]), c))
    freq = counts[present] / counts[present].sum()
    return present, torch.softmax((1 - freq) / temperature, dim=0)


def images_with_class(pixel_counts: Tensor, classes: Sequence[int], min_pixels: int) -> dict[int, list[int]]:
    """For each class, the image indices holding more than ``min_pixels`` of its pixels.

    Raises:
        ValueError: a class has no such image (the released code asserts the same), naming it.
    """
    out = {}
    for c in classes:
        images = torch.nonzero(pixel_counts[:, c] > min_pixels)[:, 0].tolist()
        if not images:
            raise ValueError(f"rare-class sampling: no source image has more than {min_pixels} pixels of class {c} "
                             f"(lower adapt.dacs.rcs_min_pixels; the most any image has is "
                             f"{int(pixel_counts[:, c].max())})")
        out[int(c)] = images
    return out


class RareClassSampler(Sampler):
    """Endless ``(dataset index, sample seed)`` pairs like the engine's stream sampler, with
    the index drawn by rare-class sampling. Global position ``p`` (rank r of W takes
    ``p = start + r, start + r + W, ...``) draws its class and image from a generator seeded
    with ``sample_seed(seed + RCS_SEED_OFFSET, p)``, so the stream is a function of the
    seed and the position (resumable, independent of the worker count)."""

    def __init__(self, classes: Sequence[int], probabilities: Tensor, images: dict[int, list[int]], seed: int,
                 rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.classes = list(classes)
        self.probabilities = probabilities.to(torch.float64)
        self.images = images
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start

    def draw(self, position: int) -> int:
        """The dataset index of global position ``position``."""
        g = torch.Generator().manual_seed(sample_seed(self.seed + RCS_SEED_OFFSET, position))
        c = self.classes[int(torch.multinomial(self.probabilities, 1, generator=g))]
        candidates = self.images[c]
        return candidates[int(torch.randint(len(candidates), (1,), generator=g))]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        while True:
            yield self.draw(position), sample_seed(self.seed, position)
            position += self.world_size
