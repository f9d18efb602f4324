"""``contraseg predict CHECKPOINT IMAGES... --out DIR``

Segments each image (a folder stands for the .png/.jpg/.jpeg files inside it) with
a trained checkpoint and writes ``<name>_pred.png`` (the dataset's palette) and
``<name>_overlay.png`` (the prediction blended on the input) under DIR. Inference
uses the checkpoint config's ``eval`` section unless overridden here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def collect_images(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); UserError for a missing path."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"no .png/.jpg/.jpeg images in folder {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"image not found: {path}")
    return paths


def run(args: argparse.Namespace) -> int:
    """Predict every image and write the PNGs."""
    import torch

    from ..data.base import read_rgb_image
    from ..data.transforms import image_to_tensor, normalize
    from ..engine.checkpoint import CheckpointError
    from ..engine.inference import predict_labels
    from ..engine.prediction_images import save_prediction_images
    from ..engine.process_group import init_process_group_from_env
    from ..engine.restore import restore_model
    from ..engine.trainer import inference_options

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    images = collect_images(args.images)
    try:
        device = init_process_group_from_env(args.device).device
        restored = restore_model(args.checkpoint, device)
    except (CheckpointError, ValueError) as err:
        raise UserError(str(err)) from None
    cfg = restored.config
    if args.mode is not None:
        cfg.eval.mode = args.mode
    if args.scales is not None:
        cfg.eval.scales = list(args.scales)
    if args.flip:
        cfg.eval.flip = True
    options = inference_options(cfg)
    stems: dict[str, int] = {}
    for path in images:
        try:
            rgb = read_rgb_image(path)
        except ValueError as err:
            raise UserError(str(err)) from None
        batch = normalize(image_to_tensor(rgb))[None].to(device)
        with torch.no_grad():
            prediction = predict_labels(restored.model, batch, **options.kwargs())[0].cpu().numpy()
        stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
        stems[path.stem] = stems.get(path.stem, 0) + 1
        pred_path, overlay_path = save_prediction_images(rgb, prediction, restored.palette, args.out, stem, args.alpha)
        print(f"{path} -> {pred_path}, {overlay_path}")
    return 0
