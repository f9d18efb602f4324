"""ContrastiveSeg: cross-image pixel-to-pixel contrast.

Wang, Zhou, Yu, Dai, Konukoglu and Van Gool, "Exploring Cross-Image Pixel Contrast for
Semantic Segmentation", ICCV 2021 (Eq. 3 of the paper, a supervised InfoNCE).

Anchors are pixels picked by a sampler (:class:`contraseg.sampling.HardAnchorSampler`:
per (image, class) pair, half hard and half easy views). With ``f`` the L2-normalised
embeddings, ``s_ac = f_a . f_c / t`` and, per anchor ``a``, its positives ``P(a)`` (same
class; ``a`` itself excluded) and negatives ``N(a)`` (other classes) in the contrast set::

    loss_a = -(t / t_base) * mean_{p in P(a)} [ s_ap - log( exp(s_ap) + sum_{n in N(a)} exp(s_an) ) ]
    loss   = mean of loss_a over the anchors with at least one positive

The contrast set is the sampled anchors themselves (all views of all pairs of the
batch) or, with a :class:`contraseg.sampling.PixelMemoryBank`, the bank's filled entries
(pixel and segment queues, all classes; the anchors are not in the bank, so nothing is
excluded). An anchor without negatives has ``loss_a = 0``.

Cost: without memory, one A x A similarity matrix, A <= ``max_samples`` anchors; never
N x N over all pixels. With memory (M entries, up to 190,000 for the paper's bank), the
default ``memory_impl="streaming"`` walks the bank in blocks
(:mod:`contraseg.losses.memory_contrast`): three A x D x M matmuls' worth of work and
O(A x block) extra memory, whatever M. ``memory_impl="dense"`` gathers the bank and
builds the A x M matrix (:func:`supervised_contrast`); it is kept as the reference the
streaming loss is tested and benchmarked against.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from ..sampling.anchor_sampler import AnchorSamples, HardAnchorSampler
from ..sampling.memory_bank import PixelMemoryBank
from .._labels import resize_labels
from ..distributed import rank
from ._pixels import zero_loss
from .memory_contrast import memory_contrast
from .memory_sampling import SAMPLINGS, sampled_memory_contrast

MEMORY_IMPLS = ("streaming", "dense")


def supervised_contrast(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    temperature: float,
    base_temperature: float,
    exclude_self: bool,
) -> Tensor | None:
    """The ContrastiveSeg loss of L2-normalised anchors against a contrast set.

    Args:
        anchors: A x D normalised features.
        anchor_labels: A long.
        contrast: M x D normalised features (the anchors themselves when ``exclude_self``).
        contrast_labels: M long.
        temperature, base_temperature: t and t_base.
        exclude_self: drop the diagonal from the positives (contrast set = anchors, A = M).

    Returns:
        The scalar mean of ``loss_a`` over anchors with a positive, or ``None`` when no
        anchor has one. Computed with per-row log-sum-exp, so any temperature is safe.
    """
    logits = anchors @ contrast.T / temperature  # A x M
    same = anchor_labels[:, None] == contrast_labels[None, :]
    negative = ~same
    positive = same
    if exclude_self:
        positive = same & ~torch.eye(same.shape[0], same.shape[1], dtype=torch.bool, device=same.device)

    # log sum_{n in N(a)} exp(s_an), shifted by the row max over negatives; -inf for rows
    # without negatives (computed from a finite placeholder, so no NaN gradient).
    has_negative = negative.any(dim=1)
    negative_logits = logits.masked_fill(~negative, float("-inf"))
    row_max = negative_logits.amax(dim=1).detach()
    row_max = torch.where(has_negative, row_max, torch.zeros_like(row_max))
    negative_sum = torch.exp(negative_logits - row_max[:, None]).sum(dim=1)
    negative_lse = row_max + torch.log(torch.where(has_negative, negative_sum, torch.ones_like(negative_sum)))
    negative_lse = torch.where(has_negative, negative_lse, torch.full_like(negative_lse, float("-inf")))

    # s_ap - log(exp(s_ap) + exp(negative_lse)); exactly 0 for a row without negatives.
    log_prob = logits - torch.logaddexp(logits, negative_lse[:, None])

    positive_count = positive.sum(dim=1)
    has_positive = positive_count > 0
    if not bool(has_positive.any()):
        return None
    mean_log_prob = (log_prob * positive).sum(dim=1)[has_positive] / positive_count[has_positive]
    return -(temperature / base_temperature) * mean_log_prob.mean()


class PixelContrastLoss(nn.Module):
    """Cross-image pixel-to-pixel contrastive loss (ContrastiveSeg).

    Defaults are the released ones: tfzhou/ContrastiveSeg@287e5d3,
    ``configs/cityscapes/H_48_D_4.json`` lines 138-141 (``"contrast": {"temperature": 0.1,
    "base_temperature": 0.07, "max_samples": 1024, "max_views": 100}``), read by
    ``lib/loss/loss_contrast.py`` lines 20-28. (The memory config ``H_48_D_4_MEM.json``
    sets temperature 0.07 and max_views 1.)

    Args:
        temperature: t in ``s = f . f' / t`` (released: 0.1).
        base_temperature: t_base; the loss is scaled by ``t / t_base`` (released: 0.07).
        max_samples: anchors per process at most (per rank under DDP), for the default sampler
            (released: 1024).
        max_views: views per (image, class) pair at most (per process), for the default sampler
            (released: 100). It is also the minimum: a class is an anchor class in an image
            only with **more than** ``max_views`` labelled pixels there, counted on the
            embedding grid h x w (labels resized to it), as released
            (tfzhou/ContrastiveSeg@287e5d3, ``lib/loss/loss_contrast.py`` line 39). E.g. at
            output stride 32 a 512 x 1024 crop gives 16 x 32 = 512 embedding pixels, so
            ``max_views=20`` needs a class covering > 20/512 ~ 4% of the image. When a batch
            with labelled pixels yields no anchor, the loss is 0 and a warning is issued
            (once per loss module).
        ignore_index: label of pixels that are never anchors.
        memory: optional :class:`PixelMemoryBank`; when given, anchors are contrasted with
            its entries instead of with each other. The caller enqueues the batch after
            the loss (``memory.enqueue(embed.detach(), labels)``) or passes ``enqueue=True``.
        sampler: optional anchor sampler (``sampler(labels, predictions, generator)`` ->
            :class:`AnchorSamples`); default ``HardAnchorSampler(max_samples, max_views,
            ignore_index)``. When given, ``max_samples`` and ``max_views`` are unused.
        memory_impl: how anchors meet the memory bank: ``"streaming"`` (default; blocks
            of the bank, memory independent of its size) or ``"dense"`` (the whole
            A x M matrix; the reference). Same value and gradient.
        block_size: bank entries per block of the streaming loss (default: chosen per
            device, :func:`contraseg.losses.memory_contrast.default_block_size`).
        memory_sampling: which bank entries each anchor meets: ``"all"`` (default, the whole
            bank) or per-anchor sampling, ``"random"``, ``"hardest"``, ``"semi_hard"``
            (:mod:`contraseg.losses.memory_sampling`; streaming only).
        memory_positives, memory_negatives: K+ and K- kept per anchor by the sampling.
        memory_semi_hard_fraction: x, the hardest fraction semi-hard samples from.

    Shape:
        - embeddings: B x D x h x w, any float dtype (normalised over D inside; half
          inputs are contrasted in float32, also under autocast)
        - labels: B x H x W integer, resized to h x w with nearest neighbour
        - predictions: B x H' x W' integer predicted classes (argmax), resized to h x w
        - samples: optional precomputed :class:`AnchorSamples` on the h x w grid
        - output: scalar, float32 for half inputs (else the input dtype); ``0 * embeddings.sum()`` when nothing
          is contrasted (no candidate pair, no positive, empty memory, an empty batch B = 0:
          a zero loss with a gradient path, as ProAC and PPC return 0)

    Example:
        >>> loss_fn = PixelContrastLoss()  # the released t = 0.1, t_base = 0.07, 1024 anchors, 100 views
        >>> out = model(images)
        >>> loss = ce + 0.1 * loss_fn(out["embed"], labels, out["logits"].argmax(1))
    """

    def __init__(
        self,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        max_samples: int = 1024,
        max_views: int = 100,
        ignore_index: int = 255,
        memory: PixelMemoryBank | None = None,
        sampler: Callable[..., AnchorSamples] | None = None,
        memory_impl: str = "streaming",
        block_size: int | None = None,
        memory_sampling: str = "all",
        memory_positives: int = 1024,
        memory_negatives: int = 2048,
        memory_semi_hard_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if memory_sampling not in SAMPLINGS:
            raise ValueError(f"memory_sampling must be one of {', '.join(SAMPLINGS)}, got {memory_sampling!r}")
        if memory_sampling != "all" and memory_impl != "streaming":
            raise ValueError(f"memory_sampling={memory_sampling!r} needs memory_impl='streaming'")
        if memory_impl not in MEMORY_IMPLS:
            raise ValueError(f"memory_impl must be one of {', '.join(MEMORY_IMPLS)}, got {memory_impl!r}")
        if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                       or block_size < 1):
            raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if base_temperature <= 0:
            raise ValueError(f"base_temperature must be > 0, got {base_temperature}")
        if memory is not None and not isinstance(memory, PixelMemoryBank):
            raise TypeError(f"memory must be a PixelMemoryBank or None, got {type(memory).__name__}")
        if memory is not None and memory.ignore_index != ignore_index:
            raise ValueError(
                f"memory.ignore_index={memory.ignore_index} differs from ignore_index={ignore_index}"
            )
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.ignore_index = int(ignore_index)
        self.sampler = sampler if sampler is not None else HardAnchorSampler(max_samples, max_views, ignore_index)
        self.memory = memory
        self.memory_impl = memory_impl
        self.block_size = block_size
        self._warned = False
        self.memory_sampling = memory_sampling
        self.memory_positives, self.memory_negatives = int(memory_positives), int(memory_negatives)
        self.memory_semi_hard_fraction = float(memory_semi_hard_fraction)

    def extra_repr(self) -> str:
        memory = f", memory_impl={self.memory_impl!r}" if self.memory is not None else ""
        if self.memory is not None and self.memory_sampling != "all":
            memory += (f", memory_sampling={self.memory_sampling!r}, positives={self.memory_positives}, "
                       f"negatives={self.memory_negatives}")
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
            f"ignore_index={self.ignore_index}, sampler={self.sampler!r}{memory}"
        )

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        predictions: Tensor,
        samples: AnchorSamples | None = None,
        enqueue: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample anchors (unless ``samples`` is given) and contrast them.

        Args:
            embeddings: B x D x h x w.
            labels: B x H x W integer ground truth.
            predictions: B x H' x W' integer predicted classes.
            samples: precomputed anchors (``index`` P x V into the flattened B*h*w grid).
            enqueue: after computing the loss, push this batch into ``memory``. The
                streaming loss then contrasts against a copy of the bank (its backward
                re-reads the entries); enqueue after ``backward()`` to avoid that copy.
            generator: ``torch.Generator`` passed to the sampler.

        Returns:
            The scalar loss.
        """
        check_embeddings(embeddings)
        batch, dim, h, w = embeddings.shape
        check_labels(labels, batch)
        check_labels(predictions, batch, name="predictions")
        if enqueue and self.memory is None:
            raise ValueError("enqueue=True needs a memory bank: PixelContrastLoss(memory=PixelMemoryBank(...))")
        if embeddings.numel() == 0:  # B = 0 (or an empty grid): nothing to contrast
            return zero_loss(embeddings)
        flat_labels = resize_labels(labels, (h, w)).to(embeddings.device)
        if self.memory is not None:
            check_dim(dim, self.memory.dim, "embeddings", "the memory bank")
            check_label_range(flat_labels, self.memory.num_classes, self.ignore_index)
        else:
            _check_nonnegative(flat_labels, self.ignore_index)

        if samples is None:
            flat_preds = resize_labels(predictions, (h, w)).to(embeddings.device)
            samples = self.sampler(flat_labels, flat_preds, generator=generator)
            if samples.index.numel() == 0 and not self._warned:
                self._warn_no_anchors(flat_labels)
        else:
            _check_samples(samples, flat_labels)

        seed = None
        if self.memory is not None and self.memory_sampling != "all":  # the draws of the example sampling
            device = generator.device if generator is not None else None
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device)) ^ (rank() * 0x9E3779B97F4A7C15)
        loss = self._contrast(embeddings, samples, copy_memory=enqueue, seed=seed)
        if enqueue:
            self.memory.enqueue(embeddings.detach(), labels)
        return loss

    def _warn_no_anchors(self, flat_labels: Tensor) -> None:
        """Warn (once per module) when labelled pixels exist but no (image, class) pair qualifies."""
        labelled = flat_labels != self.ignore_index
        if not bool(labelled.any()):
            return
        self._warned = True
        views = getattr(self.sampler, "max_views", None)
        most = max(int(torch.bincount(row[row != self.ignore_index].flatten()).max())
                   for row in flat_labels.flatten(1) if bool((row != self.ignore_index).any()))
        rule = (f"a class needs more than max_views={views} labelled pixels in an image on the "
                f"{flat_labels.shape[-2]} x {flat_labels.shape[-1]} embedding grid (the largest has {most}); "
                f"lower max_views or use a finer output stride" if views is not None
                else "the sampler returned no anchor")
        warnings.warn(f"PixelContrastLoss: this batch gives no anchor although it has labelled pixels, so the "
                      f"loss is 0: {rule} (warned once)", RuntimeWarning, stacklevel=3)

    def _contrast(self, embeddings: Tensor, samples: AnchorSamples, copy_memory: bool = False,
                  seed: int | None = None) -> Tensor:
        """The loss of the sampled anchors, in float32 (or float64) with autocast off."""
        if samples.index.numel() == 0:
            return zero_loss(embeddings)
        compute_dtype = torch.promote_types(embeddings.dtype, torch.float32)
        dim = embeddings.shape[1]
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            # Gather the A anchors from the native B x D x n layout: no copy of all N x D.
            index = samples.index.reshape(-1).to(embeddings.device)
            pixels = embeddings.shape[2] * embeddings.shape[3]
            picked = embeddings.reshape(embeddings.shape[0], dim, pixels)[index // pixels, :, index % pixels]
            anchors = F.normalize(picked.to(compute_dtype), dim=1)
            anchor_labels = samples.anchor_labels().to(embeddings.device)
            if self.memory is None:
                loss = supervised_contrast(
                    anchors, anchor_labels, anchors, anchor_labels,
                    self.temperature, self.base_temperature, exclude_self=True,
                )
            elif self.memory_impl == "streaming":
                queues, counts = self.memory.queues()
                if copy_memory:
                    queues = tuple(queue.clone() for queue in queues)
                if self.memory_sampling == "all":
                    loss = memory_contrast(anchors, anchor_labels, queues, counts,
                                           self.temperature, self.base_temperature, self.block_size)
                else:
                    loss = sampled_memory_contrast(
                        anchors, anchor_labels, queues, counts, self.temperature, self.base_temperature,
                        self.memory_sampling, self.memory_positives, self.memory_negatives, seed or 0,
                        self.memory_semi_hard_fraction, self.block_size)
            else:
                bank_feats, bank_labels = self.memory.contrast_set()
                if bank_labels.numel() == 0:
                    return zero_loss(embeddings)
                contrast = F.normalize(bank_feats.to(device=embeddings.device, dtype=compute_dtype), dim=1)
                loss = supervised_contrast(
                    anchors, anchor_labels, contrast, bank_labels.to(embeddings.device),
                    self.temperature, self.base_temperature, exclude_self=False,
                )
        if loss is None:
            return zero_loss(embeddings)
        return loss


def _check_nonnegative(labels: Tensor, ignore_index: int) -> None:
    """Without a memory bank the class count is unknown: labels need only be >= 0."""
    bad = (labels != ignore_index) & (labels < 0)
    if bool(bad.any()):
        raise ValueError(
            f"labels contains {int(labels[bad][0])}, negative and not ignore_index={ignore_index}"
        )


def _check_samples(samples: AnchorSamples, flat_labels: Tensor) -> None:
    """Precomputed samples must index the B x h x w grid and agree with its labels."""
    if not isinstance(samples, AnchorSamples):
        raise TypeError(f"samples must be AnchorSamples, got {type(samples).__name__}")
    index, sample_labels = samples.index, samples.labels
    if index.dim() != 2 or index.dtype != torch.long:
        raise ValueError(f"samples.index must be a P x V long tensor, got shape {tuple(index.shape)} {index.dtype}")
    if sample_labels.shape != (index.shape[0],):
        raise ValueError(
            f"samples.labels must have shape ({index.shape[0]},) for index {tuple(index.shape)}, "
            f"got {tuple(sample_labels.shape)}"
        )
    if index.numel() == 0:
        return
    grid = flat_labels.numel()
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= grid:
        raise ValueError(
            f"samples.index has values in [{low}, {high}], outside the B*h*w grid of {tuple(flat_labels.shape)}"
        )
    at_index = flat_labels.reshape(-1)[index.to(flat_labels.device)]
    if not bool((at_index == sample_labels.to(flat_labels.device)[:, None]).all()):
        raise ValueError(
            f"samples.labels disagree with labels at samples.index; were the samples drawn on the "
            f"{tuple(flat_labels.shape)} grid of these labels?"
        )
