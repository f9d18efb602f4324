"""``contraseg predict CHECKPOINT IMAGES... --out DIR [--format color|trainid|labelid] [--overwrite]``

Segments each image (a folder stands for the .png/.jpg/.jpeg files in it and its
subfolders; outputs keep the path relative to the folder) with a trained checkpoint.
``--format color`` (default) writes ``<name>_pred.png`` (the dataset's palette),
``<name>_overlay.png`` (the prediction blended on the input) and a legend
(``legend.png``, ``legend.json``); ``trainid`` writes ``<name>.png`` holding the train ids
(0..K-1); ``labelid`` writes ``<name>.png`` in the training dataset's own label encoding
(Cityscapes / GTA5: Cityscapes labelIds, so a ``leftImg8bit/val`` tree gives the files
``cityscapesscripts``' evaluator looks for; ADE20K: 1..150; a dataset without a label
table: train ids). DIR must be empty, hold an earlier predict of the same settings (the
rerun continues it, skipping finished images), or ``--overwrite`` given.
``--skip-unreadable`` skips images that cannot be read and counts them at the end.
Inference uses the checkpoint config's ``eval`` section unless overridden here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from ._common import prepare_output_dir
from .predict_outputs import (IMAGE_SUFFIXES, check_continuation, collect_images, output_paths, write_legend,
                              write_manifest)

__all__ = ["IMAGE_SUFFIXES", "add_parser", "collect_images", "label_id_table", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``predict``."""
    parser = subparsers.add_parser("predict", help="colourised predictions and overlays for images",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("checkpoint", help="a .pth written by contraseg train")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the config's)")
    parser.add_argument("--scales", type=float, nargs="+", help="test-time scales")
    parser.add_argument("--flip", action="store_true", default=None, help="add horizontal-flip averaging")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the prediction (default 0.5)")
    parser.add_argument("--format", choices=("color", "trainid", "labelid"), default="color",
                        help="color: palette PNG + overlay; trainid / labelid: label-map PNG (default color)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, deleting its PNG/JSON files first")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="skip images that cannot be read (counted at the end) instead of stopping")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def label_id_table(dataset_name: str, classes: list[str]) -> tuple[np.ndarray, str]:
    """A 256-entry lookup train id -> the dataset's raw label id, and a note on what it is.

    The raw id of class k is the smallest raw id that the dataset's label table maps to
    the train id of the class named ``classes[k]`` (matched by name, so SYNTHIA's 13-class
    models map correctly); the ignore index maps to the table's first void id (0).
    """
    from ..data.registry import get_dataset_class

    table = getattr(get_dataset_class(dataset_name), "label_table", None)
    info = getattr(get_dataset_class(dataset_name), "info", None)
    lut = np.arange(256, dtype=np.uint8)
    if table is None or info is None:
        return lut, f"{dataset_name} has no label table: labelid = trainid"
    train_of_name = {name: t for t, name in enumerate(info.classes)}
    void = min((raw for raw, t in table.mapping.items() if t == table.ignore_index), default=0)
    lut[:] = void
    for k, name in enumerate(classes):
        t = train_of_name.get(name)
        raws = sorted(raw for raw, train in table.mapping.items() if train == t) if t is not None else []
        if not raws:
            raise UserError(f"--format labelid: class {name!r} of the checkpoint has no label id in {dataset_name}")
        lut[k] = raws[0]
    return lut, f"{dataset_name} label ids"


def run(args: argparse.Namespace) -> int:
    """Predict every image and write the PNGs."""
    import torch
    from PIL import Image

    from .._io import atomic_write
    from ..data.base import read_rgb_image
    from ..data.transforms import image_to_tensor, normalize
    from ..engine.evaluate import inference_options
    from ..engine.inference import predict_labels
    from ..engine.prediction_images import save_prediction_images
    from ..engine.process_group import init_process_group_from_env
    from ..engine.restore import restore_model

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    images = collect_images(args.images)
    try:
        device = init_process_group_from_env(args.device).device
    except ValueError as err:
        raise UserError(str(err)) from None
    restored = restore_model(args.checkpoint, device)
    cfg = restored.config
    if args.mode is not None:
        cfg.eval.mode = args.mode
    if args.scales is not None:
        cfg.eval.scales = list(args.scales)
    if args.flip:
        cfg.eval.flip = True
    options = inference_options(cfg)
    lut = np.arange(256, dtype=np.uint8)
    if args.format == "labelid":
        lut, note = label_id_table(cfg.data.train.name, restored.classes)
        print(f"--format labelid: {note}")
    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "format": args.format,
                "inference": options.kwargs(),
                **({"alpha": args.alpha} if args.format == "color" else {})}
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from predict.json
    out = Path(args.out)
    continuing = check_continuation(out, settings, args.overwrite)
    if not continuing:
        out = prepare_output_dir(args.out, args.overwrite, (".png", ".json"), "prediction")
    write_manifest(out, settings)  # also checks, before any work, that --out is writable
    if args.format == "color":
        write_legend(out, restored.classes, restored.palette)
    skipped: list[str] = []
    done_before = 0
    for index, job in enumerate(images, start=1):
        targets = output_paths(out, job.stem, args.format)
        if continuing and all(p.is_file() for p in targets):
            done_before += 1
            continue
        try:
            rgb = read_rgb_image(job.path)
        except ValueError as err:
            if not args.skip_unreadable:
                raise UserError(f"{err} (pass --skip-unreadable to skip such images)") from None
            skipped.append(str(job.path))
            print(f"[{index}/{len(images)}] skipped: {err}", flush=True)
            continue
        batch = normalize(image_to_tensor(rgb))[None].to(device)
        with torch.no_grad():
            prediction = predict_labels(restored.model, batch, **options.kwargs())[0].cpu().numpy()
        if args.format == "color":
            written = save_prediction_images(rgb, prediction, restored.palette, targets[0].parent,
                                             job.stem.name, args.alpha)
        else:
            mapped = lut[prediction.astype(np.int64).clip(0, 255)]
            atomic_write(targets[0], lambda handle, mapped=mapped: Image.fromarray(mapped).save(handle, format="PNG"))
            written = targets
        print(f"[{index}/{len(images)}] {job.path} -> {', '.join(str(p) for p in written)}", flush=True)
    if done_before:
        print(f"continued {out}: {done_before} image(s) already predicted were skipped")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) of {len(images)}: {', '.join(skipped[:3])}"
              f"{', ...' if len(skipped) > 3 else ''}")
    return 0
