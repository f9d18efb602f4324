"""The reference anchor sampler: ContrastiveSeg's original algorithm with Python loops over
images and classes (the rule is described in :mod:`.anchor_sampler`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .anchor_samples import AnchorSamples, empty_samples
from .sampler_base import AnchorSampler


def _random_permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``torch.randperm`` drawn on the generator's device (if any), returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=where).to(device)


class LoopAnchorSampler(AnchorSampler):
    """The original ContrastiveSeg sampler, with Python loops (reference implementation).

    Same constructor, call and result rule as :class:`~.anchor_sampler.HardAnchorSampler`
    (``max_samples`` and ``max_views`` per process, ``quota`` and ``easy_threshold``); it
    loops over images and classes and calls ``nonzero`` once per class, so it is slow for
    large batches.
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
            return empty_samples(device)
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
            return empty_samples(device)

        return AnchorSamples(
            index=torch.stack(rows),
            labels=torch.tensor([cls for _, cls in kept], dtype=torch.long, device=device),
            image=torch.tensor([image for image, _ in kept], dtype=torch.long, device=device),
        )
