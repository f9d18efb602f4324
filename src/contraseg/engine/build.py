"""From config sections to objects: datasets with their transforms, and the segmentor."""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import DataConfig, DatasetConfig, ModelConfig


def dataset_label(cfg: DatasetConfig) -> str:
    """A short name for logs and tables: ``"<name>/<split>"``."""
    return f"{cfg.name}/{cfg.split}"


def _build(cfg: DatasetConfig, transform: Any) -> Any:
    from ..data import build_dataset

    kwargs: dict[str, Any] = {"split": cfg.split, "transform": transform, **cfg.options}
    if cfg.root is not None:
        kwargs["root"] = cfg.root
    return build_dataset(cfg.name, **kwargs)


def build_train_dataset(cfg: DataConfig) -> Any:
    """``data.train`` with the random scale / crop / flip / jitter training transform."""
    from ..data import TrainTransform

    transform = TrainTransform(crop_size=tuple(cfg.crop_size), scale_range=tuple(cfg.scale_range), flip=cfg.hflip,
                               jitter=cfg.jitter, base_size=tuple(cfg.base_size) if cfg.base_size else None)
    dataset = _build(cfg.train, transform)
    if len(dataset) == 0:
        raise ValueError(f"data.train: dataset {dataset_label(cfg.train)} is empty")
    return dataset


def build_eval_dataset(cfg: DatasetConfig, resize: int | None = None) -> Any:
    """An evaluation dataset: optional short-side ``resize`` and normalisation; labels
    stay at their native size."""
    from ..data import EvalTransform

    dataset = _build(cfg, EvalTransform(resize=resize))
    if len(dataset) == 0:
        raise ValueError(f"evaluation dataset {dataset_label(cfg)} is empty")
    return dataset


def segmentor_kwargs(cfg: ModelConfig, num_classes: int) -> dict[str, Any]:
    """``build_segmentor`` keyword arguments of a model section for K classes.

    ``prototype_feat_norm`` is included only for the prototype classifier and
    ``head_channels`` only when set, so the kwargs of every other model (and the
    checkpoints that store them) are unchanged.
    """
    kwargs = {
        "backbone": cfg.backbone,
        "head": cfg.head,
        "num_classes": num_classes,
        "embed_dim": cfg.embed_dim,
        "projection": cfg.projection,
        "classifier": cfg.classifier,
        "num_prototypes": cfg.num_prototypes,
        "output_stride": cfg.output_stride,
        "pretrained": cfg.pretrained,
    }
    if cfg.classifier == "prototype":
        kwargs["prototype_feat_norm"] = cfg.prototype_feat_norm
    if cfg.head_channels is not None:
        kwargs["head_channels"] = cfg.head_channels
    return kwargs


def build_model(kwargs: dict[str, Any]) -> nn.Module:
    """``contraseg.models.build_segmentor(**kwargs)``."""
    from ..models import build_segmentor

    return build_segmentor(**kwargs)
