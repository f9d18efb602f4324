"""Two config sections of a released recipe: the supervised loss (``loss:``) and the
recipe's own statement of what it is (``recipe:``), with their checks.

``loss:`` (all optional)::

    name           ce | ohem (default ce): the segmentation loss (contraseg.engine.seg_loss)
    class_weights  null | list of K floats | a preset name ("openseg_cityscapes": openseg's
                   19 Cityscapes weights, tfzhou/ContrastiveSeg@287e5d3,
                   configs/cityscapes/H_48_D_4.json:127-129)
    ohem_thresh    OHEM's probability threshold (0.7; openseg's HRNet configs say 0.9)
    ohem_min_kept  OHEM's minimum kept pixels (100000, openseg's "ohem_minkeep")
    aux_weight     weight of the auxiliary head's cross-entropy (OCR soft regions, DSN);
                   null = the head's own ``aux_loss_weight`` (0.4 as released:
                   ContrastiveSeg@287e5d3 configs/cityscapes/H_48_D_4.json:86 "aux_loss": 0.4,
                   read by lib/loss/loss_helper.py:280)

The auxiliary logits get the class-weighted cross-entropy (never OHEM, as openseg's
``FSAuxOhemCELoss``). Adaptation
methods other than ``source_only`` compute their own cross-entropies and refuse a
non-default ``loss:`` section (``contraseg.engine.trainer``).

``recipe:`` (optional; null = no recipe stated)::

    paper, experiment, source   free text (the paper, the experiment, the released config)
    world_size                  processes (GPUs) the recipe trains on
    total_batch_size            images per iteration over all processes

``data.batch_size`` stays per process; the check is ``total_batch_size == data.batch_size
* world_size``. The trainer's first line states the total batch it trains with and how it
differs from the recipe's (:func:`batch_summary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .config_schema import ConfigError, config_field
from .seg_loss import resolve_class_weights

__all__ = ["LossConfig", "RecipeConfig", "batch_summary", "check_recipe_sections"]


@dataclass
class LossConfig:
    """The ``loss:`` section (see the module docstring). ``class_weights`` is null, a
    list of K numbers or a preset name; its length is checked against the training set's
    classes when the trainer builds the loss."""

    name: Literal["ce", "ohem"] = "ce"
    class_weights: Any = None
    ohem_thresh: float = config_field(0.7, minimum=0.0)
    ohem_min_kept: int = config_field(100000, minimum=1)
    aux_weight: float | None = config_field(None, minimum=0.0)


@dataclass
class RecipeConfig:
    """The ``recipe:`` section: which released experiment the config trains, and on how
    many processes with what total batch (see the module docstring)."""

    paper: str | None = None
    experiment: str | None = None
    world_size: int = config_field(1, minimum=1)
    total_batch_size: int = config_field(1, minimum=1)
    source: str | None = None


def check_recipe_sections(cfg: Any) -> None:
    """The checks of ``loss:`` and ``recipe:`` (and ``regulariser.prototype_momentum <= 1``)
    that the field declarations cannot express."""
    weights = cfg.loss.class_weights
    if weights is not None and not isinstance(weights, str):
        if not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
            raise ConfigError(f"config key loss.class_weights: expected null, a preset name or a list of numbers, "
                              f"got {weights!r}")
    try:
        resolve_class_weights(weights)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.loss.ohem_thresh > 1:
        raise ConfigError(f"config key loss.ohem_thresh: {cfg.loss.ohem_thresh} is a probability; it must be in [0, 1]")
    momentum = getattr(cfg.regulariser, "prototype_momentum", None)
    if momentum is not None and momentum > 1:
        raise ConfigError(f"config key regulariser.prototype_momentum: {momentum} is not allowed; it must be in [0, 1]")
    recipe = cfg.recipe
    if recipe is not None and recipe.total_batch_size != cfg.data.batch_size * recipe.world_size:
        raise ConfigError(f"config key recipe.total_batch_size: {recipe.total_batch_size} != data.batch_size "
                          f"{cfg.data.batch_size} x recipe.world_size {recipe.world_size} "
                          "(data.batch_size is per process)")


def _processes(count: int, unit: str = "process") -> str:
    return f"{count} {unit}" + ("" if count == 1 else ("es" if unit == "process" else "s"))


def batch_summary(cfg: Any, world_size: int) -> str:
    """One line: the total batch this run trains with, and the recipe's if it differs,
    e.g. ``total batch 2 = 2 x 1 process; recipe 8 = 2 x 4 GPUs``."""
    per = cfg.data.batch_size
    text = f"total batch {per * world_size} = {per} x {_processes(world_size)}"
    recipe = cfg.recipe
    if recipe is None:
        return text + " (no recipe section)"
    name = " ".join(part for part in (recipe.paper, recipe.experiment) if part)
    label = f"recipe {name}".rstrip()
    stated = f"{recipe.total_batch_size} = {recipe.total_batch_size // recipe.world_size} x " \
             f"{_processes(recipe.world_size, 'GPU')}"
    if world_size == recipe.world_size:
        return f"{text}, as the {label}: {stated}"
    return f"{text}; {label}: {stated} (differs: {per * world_size} vs {recipe.total_batch_size} images per iteration)"
