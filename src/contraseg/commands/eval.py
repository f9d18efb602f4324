"""``contraseg eval CHECKPOINT [--dataset NAME --root R --split S] [--mode whole|slide]
[--scales S ...] [--flip] [--out JSON]``

Evaluates a checkpoint on its config's evaluation sets (or the one dataset given),
prints a per-class IoU table and writes the metrics as JSON (default:
``<checkpoint>.eval.json`` next to the checkpoint). Runs sharded under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``eval``."""
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (per-class IoU, mIoU)",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("checkpoint", help="a .pth written by contraseg train")
    parser.add_argument("--dataset", help="dataset name (default: the config's data.val sets)")
    parser.add_argument("--root", help="dataset root folder")
    parser.add_argument("--split", default="val", help="dataset split (default val)")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the config's)")
    parser.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), help="slide window size")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide window step")
    parser.add_argument("--scales", type=float, nargs="+", help="test-time scales, e.g. 0.75 1.0 1.25")
    parser.add_argument("--flip", action="store_true", default=None, help="add horizontal-flip averaging")
    parser.add_argument("--out", help="JSON output file")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.add_argument("--num-workers", type=int, default=2, help="data loading workers (default 2)")
    parser.set_defaults(func=run)


def _apply_cli(cfg: Any, args: argparse.Namespace) -> None:
    """Command-line inference options override the stored config's ``eval`` section."""
    if args.mode is not None:
        cfg.eval.mode = args.mode
    if args.crop_size is not None:
        cfg.eval.crop_size = list(args.crop_size)
    if args.stride is not None:
        cfg.eval.stride = list(args.stride)
    if args.scales is not None:
        if not all(s > 0 for s in args.scales):
            raise UserError(f"--scales must be positive, got {args.scales}")
        cfg.eval.scales = list(args.scales)
    if args.flip is not None:
        cfg.eval.flip = True


def run(args: argparse.Namespace) -> int:
    """Evaluate; print tables; write JSON on rank 0."""
    from ..engine.build import build_eval_dataset, dataset_label
    from ..engine.checkpoint import CheckpointError
    from ..engine.config import DatasetConfig
    from ..engine.evaluate import evaluate_dataset
    from ..engine.metrics import format_metrics_table
    from ..engine.process_group import destroy_process_group, init_process_group_from_env
    from ..engine.restore import restore_model
    from ..engine.run_log import json_safe
    from ..engine.trainer import inference_options

    try:
        context = init_process_group_from_env(args.device)
        restored = restore_model(args.checkpoint, context.device)
    except (CheckpointError, ValueError) as err:
        raise UserError(str(err)) from None
    cfg = restored.config
    _apply_cli(cfg, args)
    if args.dataset is not None:
        datasets = [DatasetConfig(name=args.dataset, root=args.root, split=args.split)]
    else:
        datasets = list(cfg.data.val)
    results: dict[str, Any] = {}
    try:
        for ds_cfg in datasets:
            label = dataset_label(ds_cfg)
            try:
                dataset = build_eval_dataset(ds_cfg, cfg.eval.resize)
            except (FileNotFoundError, ValueError) as err:
                raise UserError(f"dataset {label}: {' '.join(str(err).split())}") from None
            if len(dataset.info.classes) != len(restored.classes):
                raise UserError(f"dataset {label} has {len(dataset.info.classes)} classes, "
                                f"the checkpoint's model {len(restored.classes)}")
            try:
                options = inference_options(cfg)
                metrics = evaluate_dataset(restored.model, dataset, options, context.device,
                                           cfg.data.eval_classes or dataset.info.eval_classes,
                                           cfg.eval.batch_size, args.num_workers)
            except ValueError as err:
                raise UserError(" ".join(str(err).split())) from None
            results[label] = metrics
            if context.is_main:
                print(f"{label}: mIoU {100 * metrics['mIoU']:.2f}  (checkpoint {args.checkpoint}, "
                      f"iteration {restored.iteration}, {options.mode}, scales {list(options.scales)}, "
                      f"flip {options.flip})")
                print(format_metrics_table(metrics))
    finally:
        destroy_process_group()
    if context.is_main:
        out = Path(args.out) if args.out else Path(str(args.checkpoint) + ".eval.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_safe({"checkpoint": str(args.checkpoint), "iteration": restored.iteration,
                                             "results": results}), indent=1))
        print(f"metrics written to {out}")
    return 0
