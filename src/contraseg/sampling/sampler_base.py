"""The anchor samplers' shared part: :class:`AnchorSampler` (constructor, input checks, the
call) and the "balanced" hard / easy quota of every pair, :func:`view_quotas`.

The sampling rule itself is described in :mod:`.anchor_sampler`; the two samplers are
:class:`~.anchor_sampler.HardAnchorSampler` (vectorised) and
:class:`~.loop_anchor_sampler.LoopAnchorSampler` (loops, the reference).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .._validation import check_labels
from .anchor_samples import AnchorSamples

QUOTAS = ("balanced", "hard_first")


class AnchorSampler(ABC):
    """Constructor, input checks and call shape shared by both samplers; a subclass
    implements ``_sample`` (see :mod:`.anchor_sampler` for the rule)."""

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
