"""The training configuration: nested dataclasses with defaults and checked values.

A config is a YAML file read into :class:`Config` (see :mod:`contraseg.engine.config_io`
for files, ``_base_`` includes and ``--set`` overrides). Each section is a dataclass;
each field's type annotation and ``metadata`` (allowed values, lower bound, list
length) are checked by :func:`config_from_dict` (:mod:`contraseg.engine.config_schema`),
so a typo or a bad value fails at once with a one-line :class:`ConfigError` that names
the key and what is allowed. The ``regulariser`` section's names and keys come from the
regulariser table (:mod:`contraseg.engine.regularisers`).

Sections::

    name          run name (the default run directory is runs/<name>)
    model         segmentor (contraseg.models.build_segmentor keyword arguments)
    data          training set, evaluation sets, crop, batch size, workers
    optim         SGD or AdamW, learning rates, weight decay, gradient clipping
    schedule      iterations and the poly learning-rate schedule with warm-up
    regulariser   the contrastive term added to cross-entropy
    loss          the segmentation loss: ce / ohem, class weights, aux weight
                  (:mod:`contraseg.engine.recipe_sections`)
    train         seed, mixed precision, logging/eval/checkpoint intervals
    eval          inference mode (whole / slide), scales, flip
    adapt         domain adaptation, parsed and run by ``contraseg adapt``
                  (:mod:`contraseg.adapt.config`); null for plain training
    recipe        optional: the released experiment, its world size and total batch
                  (:mod:`contraseg.engine.recipe_sections`)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .config_schema import ConfigError, build_section, config_field, size_field
from .recipe_sections import LossConfig, RecipeConfig, check_recipe_sections
from .regularisers import REGULARISERS, RegulariserConfig

__all__ = ["Config", "ConfigError", "DataConfig", "DatasetConfig", "EvalConfig", "InferenceMode", "LossConfig",
           "ModelConfig", "OptimConfig", "RecipeConfig", "RegulariserConfig", "ScheduleConfig", "TrainConfig",
           "config_from_dict", "config_to_dict"]

InferenceMode = Literal["whole", "slide"]  # predict_logits over the whole image, or slide a crop over it


@dataclass
class ModelConfig:
    """Keyword arguments of ``contraseg.models.build_segmentor`` (``num_classes`` comes
    from the training set). ``pretrained`` is a local weights file or null: nothing is
    downloaded. ``sync_bn`` converts BatchNorm to SyncBatchNorm when world size > 1.
    ``prototype_feat_norm``: with ``classifier: prototype``, apply ProtoSeg's feature
    LayerNorm before the cosines to the prototypes (as the released code does).
    ``head_channels``: the decoder's width (null: the head's default, 256; OCR 512)."""

    backbone: str = "resnet101"
    head: str = "deeplabv3"
    head_channels: int | None = config_field(None, minimum=1)
    embed_dim: int = config_field(256, minimum=1)
    projection: str | None = "convmlp"
    classifier: Literal["linear", "prototype"] = "linear"
    num_prototypes: int = config_field(10, minimum=1)
    prototype_feat_norm: bool = True
    output_stride: Literal[8, 16, 32] = 8
    pretrained: str | None = None
    sync_bn: bool = True
    # Released behaviours for converted checkpoints (issue 22; contraseg's fixes stay the defaults):
    # projection_norm "width" = ProtoSeg's F.normalize(dim=-1); hrnet_fusion "interpolate" = openseg's
    # size-targeted branch fusion (see contraseg.models.projection / contraseg.models.hrnet).
    projection_norm: Literal["channels", "width"] = "channels"
    hrnet_fusion: Literal["pad", "interpolate"] = "pad"
    # DeepLab-v2 ASPP dilations (head deeplabv2 only); WDASS's released model uses [12, 24, 36, 48].
    aspp_rates: list[int] = config_field(factory=lambda: [6, 12, 18, 24], minimum=1)


@dataclass
class DatasetConfig:
    """One dataset: ``contraseg.data.build_dataset(name, root=root, split=split, **options)``."""

    name: str = "synthetic-source"
    root: str | None = None
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)


def _default_val() -> list[DatasetConfig]:
    return [DatasetConfig(name="synthetic-source", split="val")]


@dataclass
class DataConfig:
    """Training set, evaluation sets and the training augmentation.

    ``val`` is a list; the best checkpoint is chosen by the mIoU on the first entry.
    ``crop_size`` is [height, width]; ``scale_range`` the random rescale range, relative
    to ``base_size`` ([h, w], e.g. GTA5 at [720, 1280]) or to each image's own size when
    null; ``jitter`` the colour-jitter strength; ``batch_size`` is per process. ``eval_classes`` optionally restricts the mIoU to
    these class names (SYNTHIA's 13-class protocol, say).
    """

    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: list[DatasetConfig] = field(default_factory=_default_val)
    crop_size: list[int] = config_field(factory=lambda: [512, 1024], minimum=1, length=2)
    scale_range: list[float] = config_field(factory=lambda: [0.5, 2.0], minimum=0.0, exclusive=True, length=2)
    base_size: list[int] | None = size_field()
    hflip: bool = True
    jitter: float = config_field(0.2, minimum=0.0)
    batch_size: int = config_field(8, minimum=1)
    num_workers: int = config_field(4, minimum=0)
    eval_classes: list[str] | None = None
    # Released-recipe augmentation (contraseg.data.resize_draws / photometric_transforms cite
    # the released lines): aspect_range [lo, hi] = openseg aspect jitter (w x sqrt(a), h / sqrt(a),
    # released [0.9, 1.1]); brightness_shift = openseg additive brightness, a whole number of 0-255
    # units (released 10, always applied); hue_jitter = hue shift U(-h, h) after data.jitter's
    # brightness / contrast / saturation (ProAC 0.2, WDASS 0.25); scale_to_width = ProAC's rescale
    # to width U(scale_range) x this, aspect kept (released 2200). Defaults: off.
    aspect_range: list[float] | None = config_field(None, minimum=0.0, exclusive=True, length=2)
    brightness_shift: float = config_field(0.0, minimum=0.0)
    hue_jitter: float = config_field(0.0, minimum=0.0)
    scale_to_width: int | None = config_field(None, minimum=1)
    # openseg's image resize is OpenCV INTER_CUBIC (tfzhou/ContrastiveSeg@287e5d3
    # lib/datasets/tools/cv2_aug_transforms.py:373) and its collate pads after normalising with 0,
    # the mean colour (lib/datasets/tools/collate.py:143). Defaults: bilinear, black.
    resize_interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    pad_fill: Literal["black", "mean"] = "black"


@dataclass
class OptimConfig:
    """Optimiser. The backbone trains at ``lr``, the head (decoder, projection,
    classifier) at ``lr * head_lr_mult``; ``head_lr_mult: null`` means 10 for SGD
    (DeepLab practice: a freshly initialised head learns faster than a pretrained
    backbone) and 1 for AdamW. ``grad_clip`` is a max global L2 norm or null.
    ``decay_norm_and_bias: false`` exempts the parameters of at most one dimension
    (normalisation weights and biases, every bias) from weight decay, as WDASS's release
    does (anurag-198/WDASS@7276a27d916b utils/init_func.py:102-104, train.py:227)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = config_field(0.01, minimum=0.0, exclusive=True)
    head_lr_mult: float | None = config_field(None, minimum=0.0, exclusive=True)
    momentum: float = config_field(0.9, minimum=0.0)
    nesterov: bool = False
    weight_decay: float = config_field(5e-4, minimum=0.0)
    decay_norm_and_bias: bool = True
    betas: list[float] = config_field(factory=lambda: [0.9, 0.999], minimum=0.0, length=2)
    grad_clip: float | None = config_field(None, minimum=0.0, exclusive=True)


@dataclass
class ScheduleConfig:
    """Iteration budget and poly schedule ``lr * (1 - min(it, T) / T) ** power`` with
    horizon ``T = poly_iters`` (null: ``max_iters``), multiplied during the first
    ``warmup_iters`` by a linear ramp from ``warmup_ratio`` to 1 (every trainer, the
    adaptation trainers included: :class:`contraseg.engine.optim.PolyLR`). ProAC's UDA
    recipe decays over 62500 iterations and stops at 40000 (``poly_iters: 62500``)."""

    max_iters: int = config_field(40000, minimum=1)
    poly_iters: int | None = config_field(None, minimum=1)
    power: float = config_field(0.9, minimum=0.0)
    warmup_iters: int = config_field(0, minimum=0)
    warmup_ratio: float = config_field(1e-6, minimum=0.0)


@dataclass
class TrainConfig:
    """Seed, precision and intervals (in iterations).

    ``amp``: ``auto`` = bf16 on CUDA devices that support it, else fp16 with a
    GradScaler, and off on CPU; ``bf16`` is also allowed on CPU; ``fp16`` needs CUDA.
    """

    seed: int = 0
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    log_interval: int = config_field(50, minimum=1)
    eval_interval: int = config_field(4000, minimum=1)
    checkpoint_interval: int = config_field(1000, minimum=1)
    tensorboard: bool = True
    deterministic: bool = False
    best_on: Any = "auto"  # str label or int index: which data.val set picks best.pth (contraseg.engine.model_selection)


@dataclass
class EvalConfig:
    """Inference for evaluation (``contraseg.engine.inference.predict_logits``).
    ``resize`` scales each evaluation image so its short side has that length (labels
    stay at full size; the scores are resized to them); null keeps the size.
    ``crop_size``/``stride`` ([h, w]) are for ``slide`` mode; null = data.crop_size and
    two thirds of it."""

    mode: InferenceMode = "whole"
    resize: int | None = config_field(None, minimum=1)
    crop_size: list[int] | None = size_field()
    stride: list[int] | None = size_field()
    scales: list[float] = config_field(factory=lambda: [1.0], minimum=0.0, exclusive=True)
    flip: bool = False
    batch_size: int = config_field(1, minimum=1)
    # Logit upsampling to the input / label size: bilinear with this align_corners (the openseg,
    # ProAC and AdaptSegNet testers use True; contraseg's default False). Issue 22.
    align_corners: bool = False


@dataclass
class Config:
    """A whole training configuration (see the module docstring for the sections)."""

    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regulariser: RegulariserConfig = field(default_factory=RegulariserConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    adapt: dict[str, Any] | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    recipe: RecipeConfig | None = None


# --------------------------------------------------------------------------- checking

def _check_relations(cfg: Config) -> None:
    """Checks that involve more than one key."""
    if cfg.data.jitter >= 1:
        raise ConfigError(f"config key data.jitter: {cfg.data.jitter} is not allowed; it must be in [0, 1)")
    low, high = cfg.data.scale_range
    if low > high:
        raise ConfigError(f"config key data.scale_range: {cfg.data.scale_range} must be [low, high] with low <= high")
    if cfg.schedule.warmup_iters > cfg.schedule.max_iters:
        raise ConfigError(
            f"config key schedule.warmup_iters: {cfg.schedule.warmup_iters} exceeds schedule.max_iters={cfg.schedule.max_iters}"
        )
    if not cfg.data.val:
        raise ConfigError("config key data.val: at least one evaluation dataset is needed")
    check_recipe_sections(cfg)
    needs = REGULARISERS[cfg.regulariser.name].classifier
    if needs is not None and cfg.model.classifier != needs:
        raise ConfigError(f"config key model.classifier: regulariser {cfg.regulariser.name} needs classifier {needs!r}")
    from ..models import available_backbones, available_heads
    from ..models.projection import PROJECTION_KINDS

    for key, value, allowed in (("model.backbone", cfg.model.backbone, [*available_backbones(), "timm:NAME"]),
                                ("model.head", cfg.model.head, available_heads())):
        if key == "model.backbone" and value.startswith("timm:"):  # any timm model by name
            from ..models.backbones import backbone_name_error

            error = backbone_name_error(value)
            if error is not None:
                raise ConfigError(f"config key {key}: {error}")
            continue
        if value not in allowed:
            raise ConfigError(f"config key {key}: {value!r} is not allowed; allowed values: {', '.join(allowed)}")
    if cfg.model.projection is not None and cfg.model.projection not in PROJECTION_KINDS:
        raise ConfigError(f"config key model.projection: {cfg.model.projection!r} is not allowed; "
                          f"allowed values: {', '.join(PROJECTION_KINDS)}, null")
    if not cfg.model.aspp_rates:
        raise ConfigError("config key model.aspp_rates: needs at least one rate")
    if cfg.model.aspp_rates != [6, 12, 18, 24] and cfg.model.head != "deeplabv2":
        raise ConfigError(f"config key model.aspp_rates: {cfg.model.aspp_rates} applies to head deeplabv2 only, "
                          f"got model.head {cfg.model.head!r}")
    if cfg.model.projection is None and cfg.model.classifier == "prototype":
        raise ConfigError("config key model.projection: classifier 'prototype' needs a projection (convmlp or linear)")
    from ..data.registry import dataset_names

    known = dataset_names()
    for key, ds in [("data.train", cfg.data.train)] + [(f"data.val[{i}]", v) for i, v in enumerate(cfg.data.val)]:
        if ds.name not in known:
            raise ConfigError(f"config key {key}.name: {ds.name!r} is not allowed; allowed values: {', '.join(known)}")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and check a :class:`Config` from a plain mapping (e.g. parsed YAML)."""
    cfg = build_section(Config, raw, "")
    _check_relations(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars (YAML- and checkpoint-safe)."""
    return dataclasses.asdict(cfg)
