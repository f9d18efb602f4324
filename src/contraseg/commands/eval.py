"""``contraseg eval CHECKPOINT [--dataset NAME --root R --split S --option KEY=VALUE ...]
[--mode whole|slide] [--scales S ...] [--flip] [--perturb SPEC [--perturb-seed N]] [--out JSON]``

Evaluates a checkpoint on its config's evaluation sets (or the one dataset given),
prints a per-class IoU table and writes the metrics, in percent, with the datasets and
inference settings evaluated, as JSON (default: ``<checkpoint>.eval.<dataset>-<split>.<hash>.json``
next to the checkpoint, e.g. ``last.pth.eval.cityscapes-val.1a2b3c4d.json``, the hash over
datasets and settings, so other settings never replace an earlier result; an existing
``--out`` of other settings is refused without ``--overwrite``). The output is checked
before the evaluation runs. Runs sharded under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ._common import add_option_argument, dataset_for_model, in_process_group, parse_options
from ._perturb import add_perturb_arguments, perturbation_of, perturbed, perturbed_name, perturbed_note
from .eval_output import check_previous, check_writable, default_name, settings_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``eval``."""
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (per-class IoU, mIoU)",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("checkpoint", help="a .pth written by contraseg train")
    parser.add_argument("--dataset", help="dataset name (default: the config's data.val sets)")
    parser.add_argument("--root", help="dataset root folder")
    parser.add_argument("--split", default="val", help="dataset split (default val)")
    add_option_argument(parser, "length=100")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the config's)")
    parser.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), help="slide window size")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide window step")
    parser.add_argument("--scales", type=float, nargs="+", help="test-time scales, e.g. 0.75 1.0 1.25")
    parser.add_argument("--flip", action="store_true", default=None, help="add horizontal-flip averaging")
    parser.add_argument("--out", help="JSON output file")
    add_perturb_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an --out JSON of other settings")
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
    from ..engine.build import dataset_label
    from ..engine.config import DatasetConfig
    from ..engine.evaluate import evaluate_dataset, inference_options
    from ..engine.metrics import format_metrics_table
    from ..engine.restore import restore_model
    from ..engine.run_log import json_safe, metrics_in_percent, progress_reporter

    options = parse_options(args.options)
    if options and args.dataset is None:
        raise UserError("--option needs --dataset (the config's evaluation sets keep their own options)")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")
    perturbation = perturbation_of(args)

    def evaluate(context: Any) -> tuple[Any, list[Any], dict[str, Any]]:
        restored = restore_model(args.checkpoint, context.device)
        cfg = restored.config
        _apply_cli(cfg, args)
        if args.dataset is not None:
            datasets = [DatasetConfig(name=args.dataset, root=args.root, split=args.split, options=options)]
        else:
            datasets = list(cfg.data.val)
        settings = settings_of(datasets, cfg)
        # the clean name (hash of datasets and inference) plus a readable suffix when perturbed
        clean_name = default_name(args.checkpoint, settings)
        settings["perturbation"] = perturbation.record() if perturbation else None
        out = Path(args.out) if args.out else perturbed_name(clean_name, perturbation)
        if context.is_main:  # before the work: a read-only folder or another evaluation's JSON
            check_previous(out, settings, args.overwrite)
            check_writable(out)
        results: dict[str, Any] = {}
        inference = inference_options(cfg)  # one config, the same for every dataset
        for ds_cfg in datasets:
            label = dataset_label(ds_cfg)
            dataset = perturbed(dataset_for_model(ds_cfg, cfg.eval.resize, len(restored.classes)), perturbation)
            progress = progress_reporter(f"eval {label}") if context.is_main else None
            metrics = evaluate_dataset(restored.model, dataset, inference, context.device,
                                       cfg.data.eval_classes or dataset.info.eval_classes,
                                       cfg.eval.batch_size, args.num_workers, progress=progress)
            results[label] = metrics
            if context.is_main:
                print(f"{label}: mIoU {100 * metrics['mIoU']:.2f}%  (checkpoint {args.checkpoint}, "
                      f"iteration {restored.iteration}, {inference.mode}, scales {list(inference.scales)}, "
                      f"flip {inference.flip}{perturbed_note(perturbation)})")
                print(format_metrics_table(metrics), flush=True)
        return restored, (out, settings), results

    context, (restored, (out, settings), results) = in_process_group(args.device, evaluate)
    if context.is_main:
        percent = {label: metrics_in_percent(m) for label, m in results.items()}
        out.write_text(json.dumps(json_safe({"checkpoint": str(args.checkpoint), "iteration": restored.iteration,
                                             **settings, "unit": "%", "results": percent}), indent=1))
        print(f"metrics written to {out}")
    return 0
