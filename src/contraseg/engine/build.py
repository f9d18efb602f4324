"""From config sections to objects: datasets with their transforms, and the segmentor.

:func:`checked_dataset` and :func:`checked_model` turn the usual mistakes of a config (a
dataset option that does not exist, a missing root, an unreadable weights file) into a
one-line ValueError naming the config key.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .config import DataConfig, DatasetConfig, ModelConfig
from .config_schema import ConfigError


def dataset_label(cfg: DatasetConfig) -> str:
    """A short name for logs and tables: ``"<name>/<split>"``."""
    return f"{cfg.name}/{cfg.split}"


def _build(cfg: DatasetConfig, transform: Any) -> Any:
    from ..data import build_dataset

    kwargs: dict[str, Any] = {"split": cfg.split, "transform": transform, **cfg.options}
    if cfg.root is not None:
        kwargs["root"] = cfg.root
    return build_dataset(cfg.name, **kwargs)


def train_transform(cfg: DataConfig, base_size: Any = None) -> Any:
    """The training transform of the ``data`` keys (scale / aspect / crop / flip / colour);
    ``base_size`` [h, w] replaces ``data.base_size`` (the adaptation target's own base; an empty
    tuple: each image's own size)."""
    from ..data import TrainTransform

    base = base_size if base_size is not None else cfg.base_size
    try:
        return TrainTransform(crop_size=tuple(cfg.crop_size), scale_range=tuple(cfg.scale_range), flip=cfg.hflip,
                              jitter=cfg.jitter, base_size=tuple(base) if base else None,
                              aspect_range=cfg.aspect_range, brightness_shift=cfg.brightness_shift,
                              hue_jitter=cfg.hue_jitter, scale_to_width=cfg.scale_to_width,
                              resize_interpolation=cfg.resize_interpolation, pad_fill=cfg.pad_fill)
    except ValueError as err:
        raise ConfigError(f"config key data.{str(err)}") from None


def build_train_dataset(cfg: DataConfig) -> Any:
    """``data.train`` with the random scale / crop / flip / jitter training transform."""
    transform = train_transform(cfg)
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
    ``head_channels``, ``projection_norm``, ``hrnet_fusion`` and ``aspp_rates`` only when not
    the default, so the kwargs of every other model (and the checkpoints that store them) are
    unchanged.
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
    for key, default in (("projection_norm", "channels"), ("hrnet_fusion", "pad")):
        if getattr(cfg, key) != default:  # released behaviours (converted checkpoints) only
            kwargs[key] = getattr(cfg, key)
    if list(cfg.aspp_rates) != [6, 12, 18, 24]:  # WDASS's released DeepV2R101: [12, 24, 36, 48]
        kwargs["aspp_rates"] = list(cfg.aspp_rates)
    return kwargs


def build_model(kwargs: dict[str, Any]) -> nn.Module:
    """``contraseg.models.build_segmentor(**kwargs)``."""
    from ..models import build_segmentor

    return build_segmentor(**kwargs)


def checked_dataset(key: str, ds_cfg: DatasetConfig, build: Callable[[], Any]) -> Any:
    """``build()`` (which builds dataset ``ds_cfg``), with a wrong dataset option or a
    missing root as a one-line ValueError naming the config key ``key``."""
    try:
        return build()
    except TypeError as err:
        from ..data.registry import dataset_options, get_dataset_class

        cls = get_dataset_class(ds_cfg.name)
        allowed = sorted(dataset_options(cls)) if isinstance(cls, type) else []
        text = str(err)
        if "required positional argument" in text and "root" in text:
            raise ValueError(f"config key {key}.root: dataset {ds_cfg.name} needs a root folder") from None
        unknown = sorted(set(ds_cfg.options) - set(allowed)) if allowed else []
        if unknown:
            raise ValueError(f"config key {key}.options.{unknown[0]}: dataset {ds_cfg.name} has no option "
                             f"{unknown[0]!r}; options: {', '.join(allowed) or 'none'}") from None
        raise ValueError(f"config key {key}: dataset {ds_cfg.name}: {text}") from None


def checked_model(kwargs: dict[str, Any]) -> nn.Module:
    """``build_model(kwargs)``; an unreadable ``model.pretrained`` file is a one-line ValueError."""
    try:
        return build_model(kwargs)
    except (ValueError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - torch.load raises RuntimeError / pickle errors on a bad file
        if not kwargs.get("pretrained"):
            raise
        from ..load_errors import describe_load_error

        raise ValueError(f"config key model.pretrained: {kwargs['pretrained']} is not a readable weights file "
                         f"({describe_load_error(err)})") from None
