"""Hard anchor sampling for pixel-to-pixel contrast (ContrastiveSeg).

Wang, Zhou, Yu, Dai, Konukoglu and Van Gool, "Exploring Cross-Image Pixel Contrast for
Semantic Segmentation", ICCV 2021.

A sampler (a "miner" in pytorch-metric-learning's words) picks the anchor pixels of a
batch; the loss only ever sees these. The rule of the paper:

- per image, the candidate classes are those (not ``ignore_index``) with more than
  ``max_views`` pixels in that image; P is the number of such (image, class) pairs;
- every pair gets ``n_view = min(max_samples // P, max_views)`` views;
- half of them hard (predicted class != label), half easy (predicted == label):
  ``n_view // 2`` hard and ``n_view - n_view // 2`` easy when both kinds have at least
  ``n_view / 2`` pixels; otherwise all pixels of the short kind are kept and the other
  kind tops the pair up to ``n_view``. Since a candidate class has more than
  ``max_views >= n_view`` pixels, one of the two kinds always has enough.

Within a kind the pixels are chosen uniformly at random, reproducibly from a
``torch.Generator``.

Two options give the sampler of WDASS (Das et al., CVPR 2023, released code), off by
default so that pixel contrast samples exactly as above:

- ``easy_threshold``: a correctly predicted pixel is easy only where its predicted
  probability (``confidence`` of the call) exceeds the threshold (strictly, as released);
  correct but less confident pixels still count towards a class's pixels (the
  ``> max_views`` rule) but are never sampled;
- ``quota="hard_first"``: every hard pixel first (up to ``n_view``), easy pixels top up.
  A pair with fewer than ``n_view`` hard + easy pixels is dropped (it still counts in P,
  hence in ``n_view``, as in the released code). That can only happen with
  ``easy_threshold`` set (otherwise every pixel of a pair is hard or easy).

``max_samples`` and ``max_views`` are per process: under DistributedDataParallel every
rank samples its own batch, so the whole job contrasts up to ``world_size * max_samples``
anchors per step.

Two samplers with the same constructor and call:

- :class:`HardAnchorSampler` is vectorised (one sort over the batch's pixels, no loop
  over images, classes or pixels);
- :class:`LoopAnchorSampler` is the original algorithm, with Python loops over images
  and classes and one ``nonzero`` per class: the readable reference for tests and the
  benchmark.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_labels


@dataclass(frozen=True)
class AnchorSamples:
    """The anchors picked by a sampler: P (image, class) pairs with V views each.

    Attributes:
        index: P x V long, indices into the flattened B*h*w grid (``b * h * w + y * w + x``).
            Row p holds the hard views first, then the easy ones.
        labels: P long, the class of every pair (every view of row p has this label).
        image: P long, the image of every pair (every view of row p lies in this image).
    """

    index: Tensor
    labels: Tensor
    image: Tensor

    @property
    def num_pairs(self) -> int:
        """P, the number of sampled (image, class) pairs."""
        return int(self.index.shape[0])

    @property
    def num_views(self) -> int:
        """V, the number of views (pixels) per pair."""
        return int(self.index.shape[1])

    def anchor_labels(self) -> Tensor:
        """The label of every anchor, P*V long, in the row-major order of ``index``."""
        return self.labels.repeat_interleave(self.num_views)


def _empty_samples(device: torch.device) -> AnchorSamples:
    """No candidate pair in the batch: P = V = 0."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return AnchorSamples(index=empty.reshape(0, 0), labels=empty, image=empty)


def _compact_classes(labels: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Map the labels of the valid pixels to compact class ids.

    Args:
        labels: B x N integer labels.
        valid: B x N bool, the pixels to keep (at least one).

    Returns:
        ``(classes C, class_ids B x N in [0, C))``; ``class_ids`` is 0 where not valid.
        Usual labels (0 <= label, and B * (max + 1) no more than the pixels or 65536) are
        their own ids with C = max + 1 (an absent class just gets no pair); other labels
        are compacted with ``torch.unique`` (a sort).
    """
    # Ignored pixels read 0: that can neither hide a negative label from min nor raise max.
    class_ids = torch.where(valid, labels, 0)
    low, high = int(class_ids.min()), int(class_ids.max())
    if low >= 0 and labels.shape[0] * (high + 1) <= max(labels.numel(), 65536):
        return torch.arange(high + 1, device=labels.device), class_ids
    classes, inverse = torch.unique(labels[valid], return_inverse=True)
    class_ids = torch.zeros_like(labels)
    class_ids[valid] = inverse
    return classes, class_ids


QUOTAS = ("balanced", "hard_first")


def _random_permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``torch.randperm`` drawn on the generator's device (if any), returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=where).to(device)


class _AnchorSampler(ABC):
    """Constructor, input checks and call shape shared by both samplers."""

    def __init__(
        self,
        max_samples: int = 1024,
        max_views: int = 100,
        ignore_index: int = 255,
        quota: str = "balanced",
        easy_threshold: float | None = None,
    ) -> None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
        if isinstance(max_views, bool) or not isinstance(max_views, int) or max_views < 1:
            raise ValueError(f"max_views must be a positive int, got {max_views!r}")
        if quota not in QUOTAS:
            raise ValueError(f"quota must be one of {', '.join(QUOTAS)}, got {quota!r}")
        if easy_threshold is not None and (
            isinstance(easy_threshold, bool) or not isinstance(easy_threshold, (int, float))
        ):
            raise ValueError(f"easy_threshold must be a number or None, got {easy_threshold!r}")
        self.max_samples = max_samples
        self.max_views = max_views
        self.ignore_index = int(ignore_index)
        self.quota = quota
        self.easy_threshold = None if easy_threshold is None else float(easy_threshold)

    def __repr__(self) -> str:
        extra = ""
        if self.quota != "balanced":
            extra += f", quota={self.quota!r}"
        if self.easy_threshold is not None:
            extra += f", easy_threshold={self.easy_threshold}"
        return (
            f"{type(self).__name__}(max_samples={self.max_samples}, "
            f"max_views={self.max_views}, ignore_index={self.ignore_index}{extra})"
        )

    def __call__(
        self,
        labels: Tensor,
        predictions: Tensor,
        generator: torch.Generator | None = None,
        confidence: Tensor | None = None,
    ) -> AnchorSamples:
        """Sample anchors.

        Args:
            labels: B x h x w integer ground truth (``ignore_index`` pixels are never sampled).
            predictions: B x h x w integer predicted classes (argmax of the logits), on the
                same grid as ``labels``.
            generator: optional ``torch.Generator`` that makes the random choice reproducible.
            confidence: B x h x w predicted probability of ``predictions``; required when
                ``easy_threshold`` is set, not allowed otherwise.

        Returns:
            :class:`AnchorSamples` with ``index`` P x V into the flattened B*h*w grid;
            P = V = 0 when no class of any image has more than ``max_views`` pixels (or,
            with ``easy_threshold``, when every pair was dropped).
        """
        batch = labels.shape[0] if isinstance(labels, Tensor) and labels.dim() == 3 else -1
        check_labels(labels, batch)  # type and dimensions; the batch size is checked on predictions
        check_labels(predictions, labels.shape[0], name="predictions")
        if predictions.shape != labels.shape:
            raise ValueError(
                f"predictions must have the shape of labels {tuple(labels.shape)}, "
                f"got {tuple(predictions.shape)}"
            )
        if (confidence is None) != (self.easy_threshold is None):
            raise ValueError(
                "confidence must be given exactly when the sampler has an easy_threshold "
                f"(easy_threshold={self.easy_threshold}, confidence given: {confidence is not None})"
            )
        confident = None
        if confidence is not None:
            if not isinstance(confidence, Tensor) or tuple(confidence.shape) != tuple(labels.shape):
                shape = tuple(confidence.shape) if isinstance(confidence, Tensor) else type(confidence).__name__
                raise ValueError(f"confidence must have the shape of labels {tuple(labels.shape)}, got {shape}")
            confident = confidence.to(labels.device) > self.easy_threshold
        return self._sample(labels.long(), predictions.to(labels.device).long(), generator, confident)

    def _pair_quotas(self, num_hard: Tensor, num_easy: Tensor, n_view: int) -> tuple[Tensor, Tensor]:
        """Hard and easy views per pair under ``self.quota`` (pairs short of ``n_view`` are dropped elsewhere)."""
        if self.quota == "hard_first":
            hard_keep = num_hard.clamp(max=n_view)
            return hard_keep, n_view - hard_keep
        return view_quotas(num_hard, num_easy, n_view)

    @abstractmethod
    def _sample(
        self, labels: Tensor, predictions: Tensor, generator: torch.Generator | None, confident: Tensor | None
    ) -> AnchorSamples:
        """Sample from checked B x h x w long ``labels`` and ``predictions`` on one device.

        ``confident`` (B x h x w bool or None): where a correct prediction may be easy.
        """


class HardAnchorSampler(_AnchorSampler):
    """Vectorised hard/easy anchor sampler of ContrastiveSeg.

    Args:
        max_samples: at most this many anchors per process (per rank under DDP).
        max_views: at most this many views per (image, class) pair, and a class needs more
            than this many pixels in an image to be sampled there (per process).
        ignore_index: label of pixels that are never sampled.
        quota: ``"balanced"`` (half hard, half easy; ContrastiveSeg) or ``"hard_first"``
            (WDASS; see the module docstring).
        easy_threshold: None, or the probability a correct pixel must exceed to be easy
            (WDASS: 0.95); the call then needs ``confidence``.

    Call: ``sampler(labels B x h x w, predictions B x h x w, generator=None, confidence=None)
    -> AnchorSamples``.

    How: every pixel of a candidate pair belongs to the group ``pair * 2 + is_easy``
    where ``pair = image * C + class``; group sizes come from one ``bincount``, the
    hard/easy quotas from :func:`view_quotas`, and each group keeps the pixels of lowest
    random priority (:func:`_smallest_priorities`): one ``torch.rand`` over the B*h*w
    pixels, a threshold that drops all but a few thousand of them, and one sort of
    those. No Python loop over pixels, classes or pairs, no ``nonzero`` per class.

    Example:
        >>> sampler = HardAnchorSampler(max_samples=1024, max_views=100)
        >>> samples = sampler(labels, logits.argmax(1), generator=torch.Generator().manual_seed(0))
        >>> samples.index.shape  # P x V
    """

    def _sample(
        self, labels: Tensor, predictions: Tensor, generator: torch.Generator | None, confident: Tensor | None
    ) -> AnchorSamples:
        device = labels.device
        batch = labels.shape[0]
        flat_labels = labels.reshape(batch, -1)
        valid = flat_labels != self.ignore_index
        if not bool(valid.any()):
            return _empty_samples(device)
        classes, class_ids = _compact_classes(flat_labels, valid)
        num_classes = classes.numel()

        # Group of every pixel: 2 * pair + is_easy with pair = image * C + class; ignored
        # pixels go to the extra pair "none". One bincount gives hard and easy counts.
        none = batch * num_classes
        image_offset = torch.arange(batch, device=device)[:, None] * num_classes
        pair = torch.where(valid, image_offset + class_ids, none)
        is_easy = predictions.reshape(batch, -1) == flat_labels
        group = 2 * pair + is_easy
        if confident is not None:
            # Correct but not confident: neither hard nor easy. Such pixels go to the easy
            # group of the spare pair (quota 0) and are counted per pair separately below.
            unusable = valid & is_easy & ~confident.reshape(batch, -1)
            group = torch.where(unusable, 2 * none + 1, group)
        group = group.reshape(-1)
        group_counts = torch.bincount(group, minlength=2 * none + 2)
        num_hard, num_easy = group_counts[0::2], group_counts[1::2]
        if confident is None:
            class_pixels = num_hard + num_easy
        else:
            class_pixels = torch.bincount(pair.reshape(-1), minlength=none + 1)
        is_candidate = class_pixels > self.max_views
        is_candidate[none] = False
        num_pairs = int(is_candidate.sum())
        if num_pairs == 0:
            return _empty_samples(device)
        n_view = min(self.max_samples // num_pairs, self.max_views)
        # Without a threshold every candidate has > max_views >= n_view usable pixels.
        kept = is_candidate & (num_hard + num_easy >= n_view)
        num_kept = int(kept.sum())
        if num_kept == 0:
            return _empty_samples(device)
        hard_keep, easy_keep = self._pair_quotas(num_hard, num_easy, n_view)
        quota = torch.stack((hard_keep, easy_keep), dim=1).reshape(-1)
        quota = quota * kept.repeat_interleave(2)  # other pairs keep nothing

        sorted_pixels, positions = _smallest_priorities(group, group_counts, quota, generator)

        pair_ids = kept.nonzero().squeeze(1)
        return AnchorSamples(
            index=sorted_pixels[positions].reshape(num_kept, n_view),
            labels=classes[pair_ids % num_classes],
            image=pair_ids // num_classes,
        )


def _smallest_priorities(
    group: Tensor, group_counts: Tensor, quota: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Per group g, the ``quota[g]`` pixels of lowest uniform random priority.

    Args:
        group: N group of every pixel, in [0, G).
        group_counts: G pixels per group; quota: G pixels to pick per group (0 for
            groups that are not sampled).

    Returns:
        ``(pixels, positions)``: ``pixels[positions]`` lists the picks group by group
        (groups in increasing order), each group's picks in random order.

    Each pixel draws u ~ U[0, 1); a group keeps its quota smallest u, a uniformly random
    subset. Only pixels with u below a per-group threshold of about
    ``(2 * quota + 16) / count`` can be among them with any real chance, so the others
    are dropped before sorting: the sort is over a few thousand survivors, not all N
    pixels. Should a group keep fewer survivors than its quota (astronomically rare),
    its threshold is raised to 1 and the pick is repeated with the same priorities,
    which gives the very same answer as no thinning at all.
    """
    device = group.device
    num_groups = quota.numel()
    priority = torch.rand(group.numel(), generator=generator, device=generator.device if generator is not None else device).to(device)
    counts = group_counts.to(priority.dtype).clamp_min(1.0)
    threshold = ((2 * quota + 16).to(priority.dtype) / counts).clamp(max=1.0)
    threshold = torch.where(quota > 0, threshold, torch.zeros_like(threshold))
    while True:
        survivors = (priority < threshold[group]).nonzero().squeeze(1)
        survivor_group = group[survivors]
        survivor_counts = torch.bincount(survivor_group, minlength=num_groups)
        short = survivor_counts < quota
        if not bool(short.any()):
            break
        threshold[short] = 1.0
    # Sort survivors by (group, priority): the key group + u keeps groups apart since u < 1.
    key = survivor_group.to(torch.float64) + priority[survivors].to(torch.float64)
    order = torch.argsort(key)
    pixels = survivors[order]
    total = int(quota.sum())
    group_start = torch.cumsum(survivor_counts, 0) - survivor_counts
    taken_before = torch.cumsum(quota, 0) - quota
    within = torch.arange(total, device=device) - taken_before.repeat_interleave(quota, output_size=total)
    positions = group_start.repeat_interleave(quota, output_size=total) + within
    return pixels, positions


def view_quotas(num_hard: Tensor, num_easy: Tensor, n_view: int) -> tuple[Tensor, Tensor]:
    """How many hard and easy views every pair keeps (vectorised).

    Args:
        num_hard: P long, hard pixels (predicted != label) per pair.
        num_easy: P long, easy pixels per pair.
        n_view: views per pair; every pair must have ``num_hard + num_easy >= n_view``.

    Returns:
        ``(hard_keep, easy_keep)``, each P long, summing to ``n_view`` for every pair:
        ``n_view // 2`` and ``n_view - n_view // 2`` when both kinds have at least
        ``n_view / 2`` pixels, else all of the short kind and the rest from the other.
    """
    hard_enough = 2 * num_hard >= n_view
    easy_enough = 2 * num_easy >= n_view
    half = torch.full_like(num_hard, n_view // 2)
    top_up = torch.where(hard_enough, n_view - num_easy, num_hard)  # one kind short: all of it
    hard_keep = torch.where(hard_enough & easy_enough, half, top_up)
    return hard_keep, n_view - hard_keep


class LoopAnchorSampler(_AnchorSampler):
    """The original ContrastiveSeg sampler, with Python loops (reference implementation).

    Same constructor, call and result rule as :class:`HardAnchorSampler` (``max_samples``
    and ``max_views`` per process, ``quota`` and ``easy_threshold``); it loops over images
    and classes and calls ``nonzero`` once per class, so it is slow for large batches.
    Kept as the readable statement of the rule, for tests and the benchmark.
    """

    def _sample(
        self, labels: Tensor, predictions: Tensor, generator: torch.Generator | None, confident: Tensor | None
    ) -> AnchorSamples:
        device = labels.device
        batch = labels.shape[0]
        flat_labels = labels.reshape(batch, -1)
        flat_preds = predictions.reshape(batch, -1)
        flat_confident = None if confident is None else confident.reshape(batch, -1)
        pixels_per_image = flat_labels.shape[1]

        pairs: list[tuple[int, int]] = []
        for image in range(batch):
            for cls in torch.unique(flat_labels[image]).tolist():
                if cls == self.ignore_index:
                    continue
                if int((flat_labels[image] == cls).sum()) > self.max_views:
                    pairs.append((image, cls))
        if not pairs:
            return _empty_samples(device)
        n_view = min(self.max_samples // len(pairs), self.max_views)

        rows, kept = [], []
        for image, cls in pairs:
            is_class = flat_labels[image] == cls
            hard = (is_class & (flat_preds[image] != cls)).nonzero().squeeze(1)
            is_easy = is_class & (flat_preds[image] == cls)
            if flat_confident is not None:
                is_easy = is_easy & flat_confident[image]
            easy = is_easy.nonzero().squeeze(1)
            num_hard, num_easy = hard.numel(), easy.numel()
            if num_hard + num_easy < n_view:
                continue  # only with easy_threshold: the pair is dropped
            if self.quota == "hard_first":
                hard_keep = min(num_hard, n_view)
                easy_keep = n_view - hard_keep
            elif num_hard >= n_view / 2 and num_easy >= n_view / 2:
                hard_keep = n_view // 2
                easy_keep = n_view - hard_keep
            elif num_hard >= n_view / 2:
                easy_keep = num_easy
                hard_keep = n_view - easy_keep
            else:
                hard_keep = num_hard
                easy_keep = n_view - hard_keep
            hard = hard[_random_permutation(num_hard, generator, device)[:hard_keep]]
            easy = easy[_random_permutation(num_easy, generator, device)[:easy_keep]]
            rows.append(torch.cat((hard, easy)) + image * pixels_per_image)
            kept.append((image, cls))
        if not rows:
            return _empty_samples(device)

        return AnchorSamples(
            index=torch.stack(rows),
            labels=torch.tensor([cls for _, cls in kept], dtype=torch.long, device=device),
            image=torch.tensor([image for image, _ in kept], dtype=torch.long, device=device),
        )
