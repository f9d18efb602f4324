"""``contraseg convert-checkpoint --from FORMAT IN.pth OUT.pth [--config CFG.yaml] [--set KEY=VALUE ...]``

Converts a released checkpoint of ContrastiveSeg / ProtoSeg (openseg HRNet-W48) or of the
DeepLab-v2 UDA line (AdaptSegNet, FDA, FADA, ProAC) into a contraseg checkpoint: the weights (loaded with
``strict=True`` into the rebuilt model before anything is written), the model keywords,
the class names and a full training config, so that ``contraseg eval OUT.pth`` (and
``predict``, ``pseudo-label``, fine-tuning) need nothing else. The config is ``--config``
(its ``model`` section is replaced by the converted model's) or, without it, Cityscapes
at ``data/cityscapes``; ``--set`` overrides either. The released model's parameter-free
behaviours are stored with it (``model.projection_norm``, ``model.hrnet_fusion`` from the
format, ``eval.align_corners: true`` unless ``--set eval.align_corners=...``), so
evaluating the file computes what the released model computed. The file is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError

# Evaluation protocol of each format when no --config is given (Cityscapes val, 19 classes).
_CITYSCAPES_DATA = {
    "train": {"name": "cityscapes", "root": "data/cityscapes", "split": "train"},
    "val": [{"name": "cityscapes", "root": "data/cityscapes", "split": "val"}],
    "crop_size": [512, 1024],
}
_DEFAULT_EVAL = {
    "openseg-hrnet-w48": {"mode": "slide", "crop_size": [512, 1024], "stride": [341, 682]},
    "protoseg-hrnet-w48": {"mode": "slide", "crop_size": [512, 1024], "stride": [341, 682]},
    "deeplabv2-r101": {"mode": "whole"},
    "proac-deeplab": {"mode": "whole"},
    "fada-deeplabv2": {"mode": "whole"},
}
# Every released tester upsamples logits with align_corners=True: ContrastiveSeg / ProtoSeg
# segmentor/tester.py:326, ProAC UDA/train.py:200, FADA test.py:38, FDA evaluation_multi.py:144.
_RELEASED_ALIGN_CORNERS = True
# Model options whose contraseg default differs from the release; a format sets them in its plan.
_OPTION_DEFAULTS = {"projection_norm": "channels", "hrnet_fusion": "pad"}
# ModelConfig fields a conversion sets (the rest of the config is the user's).
_MODEL_FIELDS = ("backbone", "head", "embed_dim", "projection", "classifier", "num_prototypes", "output_stride",
                 "prototype_feat_norm")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``convert-checkpoint``."""
    from ..models.convert import FORMATS

    formats = "; ".join(f"{name}: {description}" for name, (_, description) in FORMATS.items())
    parser = subparsers.add_parser("convert-checkpoint", help="convert a released checkpoint into a contraseg one",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("--from", dest="format", required=True, choices=sorted(FORMATS), metavar="FORMAT",
                        help=f"the released layout ({formats})")
    parser.add_argument("source", metavar="IN.pth", help="the released checkpoint")
    parser.add_argument("out", metavar="OUT.pth", help="the contraseg checkpoint to write")
    parser.add_argument("--config", help="a contraseg config whose data / eval sections to store "
                                         "(default: Cityscapes at data/cityscapes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. data.val=[...] or eval.mode=whole")
    parser.add_argument("--aspp-branches", type=int, default=None, metavar="N",
                        help="deeplabv2-r101: keep only the first N ASPP branches (2 reproduces AdaptSegNet's "
                             "Classifier_Module, which returns inside its loop); default all 4")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load IN.pth with full pickle (runs code from the file: only for files you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.pth if it exists")
    parser.set_defaults(func=run)
    return parser


def _config(fmt: str, path: str | None, overrides: list[str]) -> Any:
    from ..engine.config import config_from_dict
    from ..engine.config_io import apply_overrides, load_config

    if path is not None:
        return load_config(path, overrides)
    raw = {"name": f"converted-{fmt}", "data": _CITYSCAPES_DATA, "eval": _DEFAULT_EVAL[fmt]}
    return config_from_dict(apply_overrides(raw, overrides))


def _dataset_info(name: str) -> Any:
    """The :class:`DatasetInfo` of registered dataset ``name`` without reading its files."""
    from ..data.base import DatasetInfo
    from ..data.registry import get_dataset_class

    cls = get_dataset_class(name)
    info = getattr(cls, "info", None)
    if isinstance(info, DatasetInfo):
        return info
    try:  # datasets that need no files (the synthetic ones) build their info on construction
        return cls().info
    except Exception as err:  # noqa: BLE001 - reported as one line
        raise UserError(f"cannot tell the classes of dataset {name!r} ({err})") from None


def run(args: argparse.Namespace) -> int:
    """Convert, check with a strict load, write atomically, print what was done."""
    from ..engine.build import segmentor_kwargs
    from ..engine.checkpoint import save_checkpoint
    from ..engine.config import config_from_dict, config_to_dict
    from ..engine.config_io import config_to_yaml
    from ..models import build_segmentor
    from ..models.convert import convert_state_dict, load_released_state_dict, plan_conversion

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if Path(args.source).resolve() == out.resolve():
        raise UserError(f"OUT.pth must differ from IN.pth ({out})")
    source = load_released_state_dict(args.source, allow_pickle=args.allow_pickle)
    plan = plan_conversion(args.format, source, aspp_branches=args.aspp_branches)
    cfg = _config(args.format, args.config, args.overrides)
    for key in _MODEL_FIELDS:
        if key in plan.model_config and hasattr(cfg.model, key):
            setattr(cfg.model, key, plan.model_config[key])
    for key, default in _OPTION_DEFAULTS.items():
        setattr(cfg.model, key, plan.model_config.get(key, default))
    if not any(o.split("=", 1)[0].strip() == "eval.align_corners" for o in args.overrides):
        cfg.eval.align_corners = _RELEASED_ALIGN_CORNERS
    cfg.model.pretrained = None
    cfg = config_from_dict(config_to_dict(cfg))  # the other sections must suit the converted model
    info = _dataset_info(cfg.data.train.name)
    num_classes = plan.model_config["num_classes"]
    if info.num_classes != num_classes:
        raise UserError(f"{args.source} has {num_classes} classes but the config's data.train dataset "
                        f"{cfg.data.train.name!r} has {info.num_classes}; pass a --config for the checkpoint's dataset")
    model_config = segmentor_kwargs(cfg.model, num_classes)
    model = build_segmentor(**model_config)
    conversion = convert_state_dict(args.format, source, template=model.state_dict(), aspp_branches=args.aspp_branches)
    model.load_state_dict(conversion.state_dict, strict=True)
    state = {
        "iteration": 0,
        "config": config_to_yaml(cfg),
        "model_config": model_config,
        "model": conversion.state_dict,
        "classes": list(info.classes),
        "palette": [list(map(int, c)) for c in info.palette],
        "ignore_index": int(info.ignore_index),
        "converted_from": {"format": args.format, "file": str(args.source)},
    }
    save_checkpoint(state, out)
    print(f"{args.format}: {args.source} -> {out}")
    print(f"model: {model_config['backbone']} + {model_config['head']} head, projection "
          f"{model_config['projection']}, classifier {model_config['classifier']}, {num_classes} classes "
          f"({cfg.data.train.name})")
    released = [f"model.{k}={model_config[k]}" for k in _OPTION_DEFAULTS if k in model_config]
    print(f"released behaviours: {', '.join(released + [f'eval.align_corners={cfg.eval.align_corners}'])}")
    print(conversion.summary())
    for key, reason in sorted(conversion.dropped.items()):
        print(f"dropped {key}: {reason}")
    for note in conversion.notes:
        print(f"note: {note}")
    return 0
