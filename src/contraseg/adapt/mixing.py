"""ClassMix cross-domain mixing (Olsson et al., WACV 2021; DACS, Tranheden et al., WACV 2021).

For each pair (source image i, target image i): draw ``ceil(n / 2)`` of the n classes
present in source label i (``ignore_index`` is no class), let M be the mask of their
pixels, and paste them onto the target image::

    image_mix  = M * image_source  + (1 - M) * image_target
    label_mix  = M * label_source  + (1 - M) * pseudo_label_target
    weight_mix = M * 1             + (1 - M) * weight_target

where ``weight_target`` is the target pixels' pseudo-label weight (DACS: the fraction
of confident pixels). The draws come from an explicit ``torch.Generator`` so that a run
is reproducible and resumable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def class_mix_masks(source_labels: Tensor, generator: torch.Generator, ignore_index: int = 255) -> Tensor:
    """B x H x W bool masks of ceil(n/2) randomly chosen source classes per image.

    Args:
        source_labels: B x H x W integer labels.
        generator: a CPU generator (draws ``randperm(n)`` per image).
    """
    if source_labels.dim() != 3 or source_labels.is_floating_point():
        raise ValueError(f"source_labels must be an integer B x H x W tensor, got shape "
                         f"{tuple(source_labels.shape)} dtype {source_labels.dtype}")
    masks = torch.zeros(source_labels.shape, dtype=torch.bool, device=source_labels.device)
    for i, label in enumerate(source_labels):
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]
        if classes.numel() == 0:
            continue
        order = torch.randperm(classes.numel(), generator=generator).to(classes.device)
        chosen = classes[order[: (classes.numel() + 1) // 2]]
        masks[i] = torch.isin(label, chosen)
    return masks


def mix(mask: Tensor, pasted: Tensor, background: Tensor) -> Tensor:
    """``pasted`` where ``mask`` (B x H x W) else ``background``; B x C x H x W or B x H x W tensors."""
    if pasted.shape != background.shape:
        raise ValueError(f"pasted {tuple(pasted.shape)} and background {tuple(background.shape)} must agree")
    if mask.shape != pasted.shape[:1] + pasted.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} must be B x H x W of {tuple(pasted.shape)}")
    selector = mask[:, None] if pasted.dim() == 4 else mask
    return torch.where(selector, pasted, background)
