"""Optimiser with backbone / head learning rates, and the poly schedule with warm-up.

Two parameter groups: the backbone at ``lr`` and everything else (decoder,
projection, classifier) at ``lr * head_lr_mult``. The default multiplier is 10 for
SGD (DeepLab practice: the head starts from scratch while the backbone is
pretrained) and 1 for AdamW. Weight decay applies to all parameters, or with
``decay_norm_and_bias: false`` only to those of two or more dimensions: each group is
split in two, ``<name>`` and ``<name>.no_decay`` (weight decay 0, same learning rate).

The schedule is a pure function of the iteration (nothing to save but the
iteration):  lr_it = base_lr * (1 - min(it, T) / T) ** power with the poly horizon
T = ``poly_iters`` (null: ``max_iters``), times a linear ramp from ``warmup_ratio`` to 1
over the first ``warmup_iters`` iterations. A horizon beyond ``max_iters`` stops training
before the lr reaches 0, as ProAC's UDA recipe does (renqinghuaha/ProAC_TCSVT2024@084d77d,
UDA/configs/ssl.yml:93 "max_iter: 62500" (the poly horizon) and :67 "train_iters: 40000").
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig


def head_lr_multiplier(cfg: OptimConfig) -> float:
    """The configured head multiplier, or the default: 10 for SGD, 1 for AdamW."""
    if cfg.head_lr_mult is not None:
        return cfg.head_lr_mult
    return 10.0 if cfg.name == "sgd" else 1.0


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``model.param_groups()`` ({"backbone": [...], "head": [...]}) checked to cover every
    trainable parameter exactly once; a model without ``param_groups`` is all head."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not hasattr(model, "param_groups"):
        return {"backbone": [], "head": trainable}
    groups = model.param_groups()
    if set(groups) != {"backbone", "head"}:
        raise ValueError(f"model.param_groups() must return keys backbone and head, got {sorted(groups)}")
    seen: dict[int, str] = {}
    for name, params in groups.items():
        for p in params:
            if id(p) in seen:
                raise ValueError(f"model.param_groups(): a parameter is in both {seen[id(p)]} and {name}")
            seen[id(p)] = name
    missing = sum(1 for p in trainable if id(p) not in seen)
    if missing:
        raise ValueError(f"model.param_groups() leaves out {missing} trainable parameters")
    return {name: [p for p in params if p.requires_grad] for name, params in groups.items()}


def build_optimizer(groups: dict[str, Iterable[nn.Parameter]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the named groups.

    Each group dict carries ``name`` and ``base_lr`` (used by :class:`PolyLR`).
    """
    mult = {"backbone": 1.0, "head": head_lr_multiplier(cfg)}
    param_groups = []
    for name, params in groups.items():
        params = list(params)
        lr = cfg.lr * mult.get(name, 1.0)
        parts = [(name, params, cfg.weight_decay)]
        if not cfg.decay_norm_and_bias:
            parts = [(name, [p for p in params if p.ndim > 1], cfg.weight_decay),
                     (f"{name}.no_decay", [p for p in params if p.ndim <= 1], 0.0)]
        for part, members, decay in parts:
            if members:
                param_groups.append({"params": members, "name": part, "lr": lr, "base_lr": lr,
                                     "weight_decay": decay})
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class PolyLR:
    """Poly learning-rate schedule with linear warm-up (a function of the iteration).

    ``factor(it) = (1 - min(it, T) / T) ** power * ramp(it)``, ``T = poly_iters or max_iters``, with
    ``ramp(it) = warmup_ratio + (1 - warmup_ratio) * it / warmup_iters`` for
    ``it < warmup_iters`` and 1 afterwards.
    """

    def __init__(self, cfg: ScheduleConfig) -> None:
        self.max_iters = cfg.max_iters
        self.horizon = cfg.poly_iters if cfg.poly_iters is not None else cfg.max_iters
        self.power = cfg.power
        self.warmup_iters = cfg.warmup_iters
        self.warmup_ratio = cfg.warmup_ratio

    def factor(self, iteration: int) -> float:
        """The multiplier of every group's ``base_lr`` at ``iteration`` (0-based)."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        progress = min(iteration, self.horizon) / self.horizon
        value = (1.0 - progress) ** self.power
        if iteration < self.warmup_iters:
            value *= self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters
        return value

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set each group's lr for ``iteration``; return the first group's lr."""
        f = self.factor(iteration)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return optimizer.param_groups[0]["lr"]
