"""The built-in synthetic two-domain street-scene benchmark (nothing to download).

Every sample is drawn on the fly from its seed: a random street layout with the 19
Cityscapes train ids (:mod:`contraseg.data.synthetic_scenes`), then painted in the
style of one of two domains that share the layout distribution (hence the label
statistics) but not the appearance:

* ``source`` -- clean, game-like: flat saturated colours per class with mild
  per-instance variation (3 vehicles / garments in 8 wear loud shared paints instead),
  faint low-frequency textures, sharp edges, a mild per-image exposure.
* ``target`` -- camera-like: a muted palette in which the stuff classes keep a hint of
  their source hue, thin things (pole, fence, sign) are re-mapped and 5 vehicles /
  garments in 8 take colours from tables shared across classes (colour no longer tells
  a car from a bus); textures at another frequency; cast shadows, global gain / gamma /
  colour cast, vignetting, haze near the horizon, lens blur and sensor noise.

Shape and context transfer between the domains, colour only partly. Measured with
``benchmarks/synthetic_domain_gap.py`` (a small conv net trained from scratch on CPU,
64 x 128 images, 1000 iterations): trained on source 15.4 mIoU on target val, trained
on target 48.6, a gap of 33 points.

Sample ``i`` of a split is a pure function of ``(seed, domain, split, i)`` and the
image size; train and val use disjoint scene seeds by construction.

This module holds the dataset side: scene seeds, the scene cache and the dataset
classes. The domain styles live in :mod:`contraseg.data.synthetic_styles` and the
renderer in :mod:`contraseg.data.synthetic_render`; :func:`render_scene`, the styles
and :data:`DOMAINS` are re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import DatasetInfo, JointTransform, SegmentationDataset
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .pseudo_labels import PseudoLabelDir
from .synthetic_render import _check_size, render_scene
from .synthetic_styles import DOMAINS
from .synthetic_styles import CameraEffects, DomainStyle, SOURCE_STYLE, STYLES, TARGET_STYLE  # noqa: F401 - re-exported

__all__ = [
    "DOMAINS",
    "SCENE_CACHE",
    "SceneCache",
    "SPLITS",
    "DEFAULT_LENGTHS",
    "SyntheticStreetDataset",
    "SyntheticSourceDataset",
    "SyntheticTargetDataset",
    "render_scene",
    "scene_seed",
]

SPLITS = ("train", "val")
#: Samples per split when ``length`` is None: enough variety for a few thousand
#: iterations at batch 8 without repeats mattering, and a quick but stable validation.
DEFAULT_LENGTHS = {"train": 2000, "val": 200}
#: Scene index bits in a scene seed; the index must stay below ``2**_INDEX_BITS``.
_INDEX_BITS = 40


def scene_seed(seed: int, domain: str, split: str, index: int) -> int:
    """The :func:`render_scene` seed of sample ``index`` of ``(seed, domain, split)``.

    An injective packing of the four values, so distinct samples (train vs val, source
    vs target, two base seeds) never share a scene seed.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < 2**_INDEX_BITS:
        raise ValueError(f"index must be in [0, 2**{_INDEX_BITS}), got {index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    tag = (seed * len(DOMAINS) + DOMAINS.index(domain)) * len(SPLITS) + SPLITS.index(split)
    return (tag << _INDEX_BITS) + index


# ------------------------------------------------------------------------- datasets
SYNTHETIC_INFOS = {
    domain: DatasetInfo(f"synthetic-{domain}", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE) for domain in DOMAINS
}


class SceneCache:
    """A process-wide LRU memory cache of drawn scenes, at most ``max_bytes`` of arrays.

    ``render(domain, seed, size)`` equals :func:`render_scene` (a pure function of its
    arguments) and returns fresh copies, so a transform that writes into its input cannot
    alter the cache.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._scenes: OrderedDict[tuple[str, int, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scenes)

    def render(self, domain: str, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        key = (domain, seed, tuple(size))
        scene = self._scenes.get(key)
        if scene is None:
            scene = render_scene(domain, seed, size)
            self._scenes[key] = scene
            self.bytes += scene[0].nbytes + scene[1].nbytes
            while self.bytes > self.max_bytes and len(self._scenes) > 1:
                _, (image, label) = self._scenes.popitem(last=False)
                self.bytes -= image.nbytes + label.nbytes
        else:
            self._scenes.move_to_end(key)
        return scene[0].copy(), scene[1].copy()

    def clear(self) -> None:
        self._scenes.clear()
        self.bytes = 0


#: The cache used by datasets built with ``cache=True`` (1 GiB: 30,000 scenes at 64 x 128).
SCENE_CACHE = SceneCache()


class SyntheticStreetDataset(SegmentationDataset):
    """Synthetic street scenes of one domain, drawn on the fly (nothing stored).

    Args:
        domain: ``"source"`` or ``"target"``.
        split: ``"train"`` or ``"val"`` (disjoint scene seeds).
        length: number of samples; None -> :data:`DEFAULT_LENGTHS` (train 2000, val 200).
        size: ``(H, W)`` of the images, default (128, 256).
        seed: base seed; sample ``i`` is ``render_scene(domain, scene_seed(seed, domain, split, i), size)``.
        transform: joint transform ``(image uint8 H x W x 3, label uint8 H x W) -> (image, label)``;
            None -> ImageNet normalisation only (``EvalTransform``).
        pseudo_label_dir: optional ``<name>.png`` pseudo labels replacing the label
            (the drawn label is then returned as ``"gt_label"``).
        cache: keep drawn scenes in a process-wide memory cache (:data:`SCENE_CACHE`,
            bounded in bytes), so that later epochs and other datasets of the same scenes
            (the demo's two runs) do not draw them again. Use it with ``num_workers: 0``:
            a DataLoader worker's cache dies with the worker.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W (0..18),
    "name": "synthetic-target_val_000012"}`` (no ``/`` in names: pseudo-label files use them).
    """

    def __init__(
        self,
        domain: str,
        split: str = "train",
        length: int | None = None,
        size: Sequence[int] = (128, 256),
        seed: int = 0,
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        cache: bool = False,
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if split not in SPLITS:
            raise ValueError(f"synthetic-{domain}: split must be one of {SPLITS}, got {split!r}")
        if length is None:
            length = DEFAULT_LENGTHS[split]
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 < length < 2**_INDEX_BITS:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        super().__init__(SYNTHETIC_INFOS[domain], transform, pseudo_label_dir)
        self.domain = domain
        self.split = split
        self.length = int(length)
        self.size = _check_size(size)
        self.seed = int(seed)
        if not isinstance(cache, bool):
            raise ValueError(f"cache must be true or false, got {cache!r}")
        self.cache = cache
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def scene_seed(self, index: int) -> int:
        """The :func:`render_scene` seed of sample ``index``."""
        return scene_seed(self.seed, self.domain, self.split, index)

    def sample_name(self, index: int) -> str:
        """``synthetic-<domain>_<split>_<index, zero-padded to 6 digits>``."""
        width = max(6, len(str(self.length - 1)))
        return f"synthetic-{self.domain}_{self.split}_{index:0{width}d}"

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # load_image and load_ground_truth are called back to back: draw the scene once.
        if self._cache is None or self._cache[0] != index:
            draw = SCENE_CACHE.render if self.cache else render_scene
            image, label = draw(self.domain, self.scene_seed(index), self.size)
            self._cache = (index, image, label)
        return self._cache[1], self._cache[2]

    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index``'s image, uint8 H x W x 3 RGB."""
        return self._render(index)[0]

    def load_ground_truth(self, index: int) -> np.ndarray:
        """Sample ``index``'s label, uint8 H x W train ids."""
        return self._render(index)[1]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(domain={self.domain!r}, split={self.split!r}, length={self.length}, "
                f"size={self.size}, seed={self.seed})")


class SyntheticSourceDataset(SyntheticStreetDataset):
    """``synthetic-source``: the clean, game-like domain (see :class:`SyntheticStreetDataset`)."""

    def __init__(self, split: str = "train", length: int | None = None, size: Sequence[int] = (128, 256),
                 seed: int = 0, transform: JointTransform | None = None,
                 pseudo_label_dir: str | Path | PseudoLabelDir | None = None, cache: bool = False) -> None:
        super().__init__("source", split, length, size, seed, transform, pseudo_label_dir, cache)


class SyntheticTargetDataset(SyntheticStreetDataset):
    """``synthetic-target``: the camera-like domain (see :class:`SyntheticStreetDataset`)."""

    def __init__(self, split: str = "train", length: int | None = None, size: Sequence[int] = (128, 256),
                 seed: int = 0, transform: JointTransform | None = None,
                 pseudo_label_dir: str | Path | PseudoLabelDir | None = None, cache: bool = False) -> None:
        super().__init__("target", split, length, size, seed, transform, pseudo_label_dir, cache)
