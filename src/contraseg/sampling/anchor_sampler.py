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

- :class:`HardAnchorSampler` (this module) is vectorised (one sort over the batch's
  pixels, no loop over images, classes or pixels);
- :class:`~.loop_anchor_sampler.LoopAnchorSampler` is the original algorithm, with Python
  loops over images and classes and one ``nonzero`` per class: the readable reference for
  tests and the benchmark.

Both share :class:`~.sampler_base.AnchorSampler` (constructor, checks, call) and return
:class:`~.anchor_samples.AnchorSamples`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .anchor_samples import AnchorSamples, empty_samples
from .sampler_base import AnchorSampler


class HardAnchorSampler(AnchorSampler):
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
    hard/easy quotas from :func:`~.sampler_base.view_quotas`, and each group keeps the
    pixels of lowest random priority (:func:`_smallest_priorities`): one ``torch.rand``
    over the B*h*w pixels, a threshold that drops all but a few thousand of them, and
    one sort of those. No Python loop over pixels, classes or pairs, no ``nonzero`` per
    class.

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
            return empty_samples(device)
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
            return empty_samples(device)
        n_view = min(self.max_samples // num_pairs, self.max_views)
        # Without a threshold every candidate has > max_views >= n_view usable pixels.
        kept = is_candidate & (num_hard + num_easy >= n_view)
        num_kept = int(kept.sum())
        if num_kept == 0:
            return empty_samples(device)
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
