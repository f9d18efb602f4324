"""``contraseg pseudo-label CHECKPOINT --dataset NAME [--root R] [--split train]
[--option KEY=VALUE ...] --out DIR [--threshold 0.9] [--class-percentile P] [--mode whole|slide]
[--average CHECKPOINT ...]``

Predicts every image of a (target) split with a checkpoint and writes confidence-filtered
pseudo labels ``DIR/<sample name>.png`` (train ids, 255 = not confident), which
``build_dataset(..., pseudo_label_dir=DIR)`` and the self-training configs read back. A
pixel keeps its predicted class when its max-softmax confidence reaches ``--threshold``
or, with ``--class-percentile P``, its class's P-quantile of confidences over the whole
split, capped at ``--threshold``. With ``--average``, the class probabilities are the mean of
the checkpoints' softmax predictions (FDA's multi-band transfer). Prints and writes ``DIR/summary.json``: per class the
threshold, predicted and kept pixels.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError
from ._common import add_option_argument, dataset_for_model, in_process_group, parse_options, prepare_output_dir

__all__ = ["add_dataset_arguments", "add_parser", "parse_options", "run"]


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str = "train") -> None:
    """``--dataset``, ``--root``, ``--split`` and ``--option``."""
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. cityscapes or synthetic-target")
    parser.add_argument("--root", help="dataset root folder")
    parser.add_argument("--split", default=split, help=f"dataset split (default {split})")
    add_option_argument(parser)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pseudo-label``."""
    parser = subparsers.add_parser("pseudo-label", help="confidence-filtered pseudo labels of a target split",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("checkpoint", help="a .pth written by contraseg train (or an adaptation run)")
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, help="pseudo-label folder (must be empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, deleting its earlier PNGs and summary first")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="global confidence threshold, the cap of class-wise ones (default 0.9)")
    parser.add_argument("--class-percentile", type=float, metavar="P",
                        help="class-wise thresholds: the P-quantile of each class's confidences (e.g. 0.5)")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the checkpoint's)")
    parser.add_argument("--average", nargs="+", default=[], metavar="CHECKPOINT",
                        help="more checkpoints whose softmax predictions are averaged with CHECKPOINT's "
                             "(FDA multi-band transfer: the beta 0.01 / 0.05 / 0.09 models)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the checkpoint's eval one)")
    parser.add_argument("--num-workers", type=int, default=2, help="data loading workers (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be in [0, 1], got {value}")


def run(args: argparse.Namespace) -> int:
    """Label the split, write the PNGs and summary.json, print the per-class table."""
    from ..adapt.pseudo_labels import LabellingOptions, format_summary, generate_pseudo_labels
    from ..engine.config import DatasetConfig
    from ..engine.evaluate import inference_options
    from ..engine.restore import restore_model
    from ..engine.run_log import progress_reporter

    _check_fraction("--threshold", args.threshold)
    _check_fraction("--class-percentile", args.class_percentile)
    for name, value, minimum in (("--batch-size", args.batch_size, 1), ("--num-workers", args.num_workers, 0)):
        if value is not None and value < minimum:
            raise UserError(f"{name} must be >= {minimum}, got {value}")
    options = parse_options(args.options)

    def label(context: Any) -> dict[str, Any]:
        restored = restore_model(args.checkpoint, context.device)
        cfg = restored.config
        if args.mode is not None:
            cfg.eval.mode = args.mode
        ds_cfg = DatasetConfig(name=args.dataset, root=args.root, split=args.split, options=options)
        dataset = dataset_for_model(ds_cfg, cfg.eval.resize, len(restored.classes))
        prepare_output_dir(args.out, args.overwrite, (".png", ".json"), "pseudo-label", delete=context.is_main)
        from ..engine.process_group import barrier

        barrier()
        labelling = LabellingOptions(inference=inference_options(cfg).kwargs(),
                                     batch_size=args.batch_size or cfg.eval.batch_size, num_workers=args.num_workers)
        progress = (lambda name: progress_reporter(f"pseudo-label {name}")) if context.is_main else None
        model = restored.model
        if args.average:
            from ..adapt.fda import MultiBandEnsemble

            others = [restore_model(path, context.device) for path in args.average]
            for path, other in zip(args.average, others):
                if list(other.classes) != list(restored.classes):
                    raise UserError(f"--average {path}: its classes differ from {args.checkpoint}'s")
            model = MultiBandEnsemble([model, *(other.model for other in others)]).eval()
        return generate_pseudo_labels(model, dataset, args.out, threshold=args.threshold,
                                      class_percentile=args.class_percentile, options=labelling,
                                      device=context.device, progress=progress)

    context, summary = in_process_group(args.device, label)
    if context.is_main:
        print(format_summary(summary))
        print(json.dumps({"out": args.out, "images": summary["images"], "kept_fraction": summary["kept_fraction"]}))
    return 0
