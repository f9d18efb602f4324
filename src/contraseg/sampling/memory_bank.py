"""Per-class pixel and segment memory for cross-image pixel contrast (ContrastiveSeg).

Wang et al., "Exploring Cross-Image Pixel Contrast for Semantic Segmentation", ICCV 2021,
Sec. 3.3: besides the pixels of the current batch, anchors are contrasted with a memory
of embeddings from earlier batches, kept as two first-in first-out queues per class:

- the pixel queue (K x pixel_size x D): per image and class present, up to
  ``pixels_per_image`` randomly chosen pixel embeddings (L2-normalised);
- the segment queue (K x segment_size x D): per image and class present, one entry,
  ``normalize(mean_i normalize(f_i))`` over the class's pixels in that image: the mean
  of the unit-norm keys, as the released code does (its keys are the projection head's
  normalised output). Earlier versions of contraseg stored ``normalize(mean_i f_i)``,
  which agrees only when the embeddings are already unit-norm.

Entries are stored L2-normalised, each kind in one contiguous K x S x D buffer where
class k fills slots ``[0, count_k)``, so the loss reads them in place (no gather, no
re-normalisation; see :func:`contraseg.losses.memory_contrast.memory_contrast`).

Every class present is enqueued, class 0 included (the original code skipped class 0),
and ``ignore_index`` pixels are dropped. A class's pointer advances by the number of
entries enqueued, modulo the queue size, so the oldest entries are overwritten first.

Under ``torch.distributed`` the new entries of all ranks are gathered before they are
enqueued (in rank order), so every rank holds the same bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from ..distributed import all_gather_cat, broadcast_first
from .._labels import resize_labels


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class PixelMemoryBank(nn.Module):
    """Per-class FIFO queues of pixel and segment embeddings.

    Args:
        num_classes: K, the number of classes (labels in [0, K) or ``ignore_index``).
        dim: D, the embedding dimension.
        pixel_size: pixel-queue entries per class (the original uses 5000).
        segment_size: segment-queue entries per class (the original uses 5000).
        pixels_per_image: pixel entries enqueued per (image, class) pair at most
            (the original's ``pixel_update_freq``, 10).
        ignore_index: label of pixels that are never enqueued.
        enqueue_ranks: under ``torch.distributed``, ``"all"`` enqueues the entries of every
            rank's batch (gathered: the bank is the same on every rank), ``"first"`` only rank
            0's (broadcast), which is what ContrastiveSeg's release does in effect: its queues
            are module buffers, and DistributedDataParallel (default ``broadcast_buffers``)
            copies rank 0's buffers to every rank before each forward, overwriting what the
            other ranks enqueued (tfzhou/ContrastiveSeg@287e5d3 lib/models/nets/hrnet.py:165-171,
            segmentor/trainer_contrastive.py:247-252, segmentor/tools/module_runner.py:66-71).
            The same in one process.

    State (buffers, so the bank follows ``.to(device)`` / ``.to(dtype)`` and is saved in
    ``state_dict``):
        - ``pixel_queue`` K x pixel_size x D, ``segment_queue`` K x segment_size x D;
        - ``pixel_ptr``, ``segment_ptr`` K long: the slot the next entry of each class goes to;
        - ``pixel_count``, ``segment_count`` K long: how many slots of each class are filled.

    Cost: the loss contrasts every anchor with all filled entries, at most
    ``K * (pixel_size + segment_size)``; with 1024 anchors, 19 classes and the original
    sizes that is 1024 x 190000 similarities per step, which the streaming loss computes
    block by block (:meth:`queues`) without ever holding them all.

    Example:
        >>> bank = PixelMemoryBank(num_classes=19, dim=256)
        >>> loss_fn = PixelContrastLoss(memory=bank)
        >>> loss = loss_fn(embed, labels, logits.argmax(1))
        >>> bank.enqueue(embed.detach(), labels)   # after the loss
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        pixel_size: int = 5000,
        segment_size: int = 5000,
        pixels_per_image: int = 10,
        ignore_index: int = 255,
        enqueue_ranks: str = "all",
    ) -> None:
        super().__init__()
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.dim = _positive_int(dim, "dim")
        self.pixel_size = _positive_int(pixel_size, "pixel_size")
        self.segment_size = _positive_int(segment_size, "segment_size")
        self.pixels_per_image = _positive_int(pixels_per_image, "pixels_per_image")
        self.ignore_index = int(ignore_index)
        if enqueue_ranks not in ("all", "first"):
            raise ValueError(f"enqueue_ranks must be 'all' or 'first', got {enqueue_ranks!r}")
        self.enqueue_ranks = enqueue_ranks
        self.register_buffer("pixel_queue", torch.zeros(num_classes, pixel_size, dim))
        self.register_buffer("segment_queue", torch.zeros(num_classes, segment_size, dim))
        for name in ("pixel_ptr", "pixel_count", "segment_ptr", "segment_count"):
            self.register_buffer(name, torch.zeros(num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, pixel_size={self.pixel_size}, "
            f"segment_size={self.segment_size}, pixels_per_image={self.pixels_per_image}, "
            f"ignore_index={self.ignore_index}, enqueue_ranks={self.enqueue_ranks!r}"
        )

    def __len__(self) -> int:
        """The number of filled entries, pixel and segment queues together."""
        return int(self.pixel_count.sum() + self.segment_count.sum())

    def reset(self) -> None:
        """Empty both queues (pointers and fill counts back to 0)."""
        for buffer in (self.pixel_queue, self.segment_queue, self.pixel_ptr, self.pixel_count,
                       self.segment_ptr, self.segment_count):
            buffer.zero_()

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> None:
        """Push the segments and a few pixels of every (image, class) pair of a batch.

        Args:
            embeddings: B x D x h x w (detached here; any float dtype, stored in the bank's dtype).
            labels: B x H x W integer labels, resized to h x w with nearest neighbour;
                values in [0, K) or ``ignore_index``.
            generator: optional ``torch.Generator`` for the choice of pixels.

        Under ``torch.distributed`` every rank must call it (it gathers from all ranks, or
        takes rank 0's with ``enqueue_ranks="first"``).
        """
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        check_dim(embeddings.shape[1], self.dim, "embeddings", "the memory bank")
        segments, segment_labels, pixels, pixel_labels = self._batch_entries(embeddings.detach(), labels, generator)
        share = all_gather_cat if self.enqueue_ranks == "all" else broadcast_first
        segments, segment_labels, pixels, pixel_labels = (share(t) for t in (segments, segment_labels, pixels,
                                                                              pixel_labels))
        self._push(self.segment_queue, self.segment_ptr, self.segment_count, segments, segment_labels)
        self._push(self.pixel_queue, self.pixel_ptr, self.pixel_count, pixels, pixel_labels)

    def queues(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """The stored buffers as they are: ``((pixel_queue, segment_queue), (pixel_count, segment_count))``.

        Each queue is K x S x D with class k's normalised entries in slots
        ``[0, count[k])`` (FIFO fills slots in order and only ever wraps a full class).
        No copy is made: this is what the streaming loss reads.
        """
        return (self.pixel_queue, self.segment_queue), (self.pixel_count, self.segment_count)

    def contrast_set(self) -> tuple[Tensor, Tensor]:
        """The filled entries gathered into one copy: ``(features M x D, labels M long)``.

        Pixel entries first, then segment entries, each class by class and slot by slot.
        An empty bank gives M = 0. (Used by the dense reference path of the loss and by
        tests; the streaming loss reads :meth:`queues` instead.)
        """
        feats, labels = [], []
        for queue, count in ((self.pixel_queue, self.pixel_count), (self.segment_queue, self.segment_count)):
            filled = torch.arange(queue.shape[1], device=queue.device)[None, :] < count[:, None]  # K x S
            feats.append(queue[filled])
            labels.append(torch.arange(self.num_classes, device=queue.device)[:, None].expand_as(filled)[filled])
        return torch.cat(feats), torch.cat(labels)

    def _batch_entries(
        self, embeddings: Tensor, labels: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The entries one batch contributes: segments, their labels, pixels, their labels.

        Segments (one per (image, class) pair, ordered by image then class) are the
        normalised means of the pair's normalised embeddings; pixels are up to
        ``pixels_per_image`` random ones per pair, normalised. Everything is in the
        bank's dtype and on its device.
        """
        queue = self.pixel_queue
        b, d, h, w = embeddings.shape
        flat_labels = resize_labels(labels, (h, w)).reshape(-1).to(queue.device)
        check_label_range(flat_labels, self.num_classes, self.ignore_index)
        work_dtype = torch.promote_types(queue.dtype, torch.float32)  # means of half inputs in float32
        feats = embeddings.permute(0, 2, 3, 1).reshape(-1, d).to(device=queue.device, dtype=work_dtype)
        feats = F.normalize(feats, dim=1)  # the keys are unit-norm, as in the released code

        pixel_index = (flat_labels != self.ignore_index).nonzero().squeeze(1)
        pair_of_pixel = (pixel_index // (h * w)) * self.num_classes + flat_labels[pixel_index]
        num_pairs = b * self.num_classes

        # Segments: per-pair means of the unit-norm keys by one scatter-add, renormalised.
        pair_counts = torch.bincount(pair_of_pixel, minlength=num_pairs)
        sums = feats.new_zeros(num_pairs, d).index_add_(0, pair_of_pixel, feats[pixel_index])
        present = (pair_counts > 0).nonzero().squeeze(1)
        segments = F.normalize(sums[present] / pair_counts[present, None], dim=1)
        segment_labels = present % self.num_classes

        # Pixels: random order within each pair (shuffle, stable sort), keep the first few.
        where = generator.device if generator is not None else queue.device
        shuffle = torch.randperm(pixel_index.numel(), generator=generator, device=where).to(queue.device)
        sorted_pairs, order = torch.sort(pair_of_pixel[shuffle], stable=True)
        sorted_pixels = pixel_index[shuffle][order]
        pair_start = torch.cumsum(pair_counts, 0) - pair_counts
        rank_in_pair = torch.arange(sorted_pixels.numel(), device=queue.device) - pair_start[sorted_pairs]
        chosen = rank_in_pair < self.pixels_per_image
        pixels = feats[sorted_pixels[chosen]]
        pixel_labels = sorted_pairs[chosen] % self.num_classes
        return segments.to(queue.dtype), segment_labels, pixels.to(queue.dtype), pixel_labels

    @staticmethod
    def _push(queue: Tensor, ptr: Tensor, count: Tensor, entries: Tensor, labels: Tensor) -> None:
        """FIFO write of ``entries`` (N x D) with ``labels`` (N) into ``queue`` (K x S x D), in place.

        Entries of a class go to consecutive slots from the class's pointer, wrapping
        modulo S, in the order given; if a class gets more than S entries, only its last
        S are written. The pointer advances by the number of entries, modulo S.
        """
        if labels.numel() == 0:
            return
        num_classes, size = queue.shape[0], queue.shape[1]
        labels, order = torch.sort(labels, stable=True)
        entries = entries[order]
        per_class = torch.bincount(labels, minlength=num_classes)
        start = torch.cumsum(per_class, 0) - per_class
        rank = torch.arange(labels.numel(), device=labels.device) - start[labels]
        newest = rank >= per_class[labels] - size  # drop what would be overwritten in this same push
        slot = (ptr[labels] + rank) % size
        queue[labels[newest], slot[newest]] = entries[newest].to(queue.dtype)
        ptr.copy_((ptr + per_class) % size)
        count.copy_(torch.clamp(count + per_class, max=size))
