"""``contraseg demo [--out runs/demo] [--iters N]``

Trains the same small segmentor twice on the synthetic benchmark (labelled
``synthetic-source`` street scenes), once with cross-entropy alone and once with
cross-entropy + ProAC, evaluates both on ``synthetic-target`` val (the other domain)
and on ``synthetic-source`` val, prints a per-class IoU table comparing them on the
target domain, and writes prediction overlays (PNG) and a summary JSON under --out.

Settings (the same as ``configs/synthetic_source_only.yaml`` / ``synthetic_proac.yaml``):
MobileNetV3-Large + a 1x1 (MLP) head at output stride 8, 64-d conv-MLP projection,
64 x 128 images, batch 8, AdamW (lr 2e-3, poly, 20 warm-up iterations), no pretrained
weights; one compute thread and one data-loading worker. ProAC weight 0.1 and
temperature 0.1, the paper's values for domain adaptation. Sized to finish in under 10
minutes on 2 CPU cores (measured: 6.6 minutes in all, 500 iterations per run, on 2
cores shared with other work).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ..cli import UserError

DEMO_ITERS = 500
IMAGE_SIZE = [64, 128]
OVERLAY_IMAGES = 4
COMPARE_ZOOM = 2  # the side-by-side PNG is upscaled (nearest) for viewing
RUNS = (("ce", "CE", "none"), ("proac", "CE+ProAC", "proac"))


def demo_config(regulariser: str, iters: int = DEMO_ITERS, seed: int = 0) -> Any:
    """The demo's training config for ``regulariser`` ("none" or "proac")."""
    from ..engine.config import config_from_dict

    def synthetic(name: str, split: str, length: int) -> dict[str, Any]:
        return {"name": name, "split": split, "options": {"size": IMAGE_SIZE, "length": length}}

    return config_from_dict({
        "name": f"synthetic_{'proac' if regulariser == 'proac' else 'source_only'}",
        "model": {"backbone": "mobilenet_v3", "head": "mlp", "embed_dim": 64, "projection": "convmlp",
                  "output_stride": 8, "pretrained": None},
        "data": {
            "train": synthetic("synthetic-source", "train", 2000),
            "val": [synthetic("synthetic-target", "val", 100), synthetic("synthetic-source", "val", 100)],
            "crop_size": IMAGE_SIZE, "scale_range": [0.75, 1.5], "batch_size": 8, "num_workers": 1,
        },
        "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001},
        "schedule": {"max_iters": iters, "warmup_iters": min(20, iters)},
        "regulariser": {"name": regulariser, "weight": 0.1 if regulariser == "proac" else None,
                        "temperature": 0.1},
        "train": {"seed": seed, "amp": "off", "log_interval": 25, "eval_interval": iters,
                  "checkpoint_interval": iters, "tensorboard": False},
        "eval": {"mode": "whole"},
    })


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    parser = subparsers.add_parser("demo", help="CE vs CE+ProAC on the synthetic benchmark (CPU, minutes)",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--iters", type=int, default=DEMO_ITERS, help=f"iterations per run (default {DEMO_ITERS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: with the one data worker this fills 2 cores "
                             "and stays fast when other work shares them)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def comparison_table(results: dict[str, dict[str, Any]], target: str, source: str) -> str:
    """Per-class IoU (%) on ``target`` for each run, the difference, and mIoU rows."""
    titles = [title for _, title, _ in RUNS]
    first = results[titles[0]][target]
    names = first["classes"]

    def pct(value: float | None) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"

    def delta(a: float | None, b: float | None) -> str:
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            return "-"
        return f"{100 * (b - a):+.1f}"

    width = max(len(n) for n in names + [f"mIoU {source}"]) + 2
    header = f"{'IoU % on ' + target:<{width}}" + "".join(f"{t:>10}" for t in titles) + f"{'delta':>8}"
    lines = [header, "-" * len(header)]
    for i, name in enumerate(names):
        values = [results[t][target]["IoU"][i] for t in titles]
        if all(v is None for v in values):
            continue  # class absent from the ground truth and the predictions of both runs
        lines.append(f"{name:<{width}}" + "".join(f"{pct(v):>10}" for v in values) + f"{delta(*values):>8}")
    lines.append("-" * len(header))
    for label, key in ((f"mIoU {target}", target), (f"mIoU {source}", source)):
        values = [results[t][key]["mIoU"] for t in titles]
        lines.append(f"{label:<{width}}" + "".join(f"{pct(v):>10}" for v in values) + f"{delta(*values):>8}")
    return "\n".join(lines)


def write_overlays(trainers: dict[str, Any], out: Path, count: int) -> list[Path]:
    """For the first ``count`` target-val images: each run's prediction and overlay, the
    ground truth, and one side-by-side ``compare_<name>.png`` (input | GT | runs..., zoomed x2)."""
    import numpy as np
    import torch
    from PIL import Image

    from ..data.palettes import colorize
    from ..data.transforms import denormalize
    from ..engine.inference import predict_labels
    from ..engine.prediction_images import save_prediction_images

    first = next(iter(trainers.values()))
    dataset = first.val_sets[0][1]
    palette = first.info.palette
    written: list[Path] = []
    folder = out / "overlays"
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image = denormalize(sample["image"]).permute(1, 2, 0).numpy()
        label = sample["label"].numpy()
        panels = [image, colorize(label, palette)]  # ignored pixels (255) are black
        for tag, trainer in trainers.items():
            model = trainer.model.eval()
            with torch.no_grad():
                pred = predict_labels(model, sample["image"][None].to(trainer.device))[0].cpu().numpy()
            written.extend(save_prediction_images(image, pred, palette, folder, f"{sample['name']}_{tag}"))
            panels.append(colorize(pred, palette))
        gt_path = folder / f"{sample['name']}_gt.png"
        Image.fromarray(panels[1]).save(gt_path)
        compare = folder / f"compare_{sample['name']}.png"
        strip = np.concatenate(panels, axis=1).repeat(COMPARE_ZOOM, axis=0).repeat(COMPARE_ZOOM, axis=1)
        Image.fromarray(strip).save(compare)
        written.extend([gt_path, compare])
    return written


def run(args: argparse.Namespace) -> int:
    """Train both runs, compare, write overlays and summary.json (with ``--threads`` CPU threads)."""
    if args.iters < 1:
        raise UserError(f"--iters must be >= 1, got {args.iters}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> int:
    """The demo proper: two trainings, the comparison table, overlays, summary.json."""
    from ..engine.build import dataset_label
    from ..engine.process_group import init_process_group_from_env
    from ..engine.run_log import json_safe
    from ..engine.trainer import Trainer

    out = Path(args.out)
    context = init_process_group_from_env(args.device)
    if context.distributed:
        raise UserError("the demo runs in one process; start it without torchrun")
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, Any] = {}
    timings: dict[str, float] = {}
    target = source = ""
    for tag, title, regulariser in RUNS:
        cfg = demo_config(regulariser, args.iters, args.seed)
        target, source = (dataset_label(v) for v in cfg.data.val)
        print(f"== {title}: {args.iters} iterations on synthetic-source ({cfg.model.backbone} + "
              f"{cfg.model.head}, {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, batch {cfg.data.batch_size})", flush=True)
        tick = time.perf_counter()
        trainer = Trainer(cfg, out / tag, context=context)
        summary = trainer.fit()
        timings[tag] = time.perf_counter() - tick
        results[title] = summary["last_eval"]
        trainers[tag] = trainer
        print(f"== {title}: {timings[tag]:.0f} s", flush=True)
    print()
    print(comparison_table(results, target, source))
    written = write_overlays(trainers, out, OVERLAY_IMAGES)
    total = time.perf_counter() - start
    summary_path = out / "summary.json"
    compact = {title: {label: {k: m[k] for k in ("mIoU", "mAcc", "aAcc", "classes", "IoU")}
                       for label, m in per_set.items()} for title, per_set in results.items()}
    summary_path.write_text(json.dumps(json_safe({"iters": args.iters, "seconds": timings, "total_seconds": total,
                                                  "results": compact}), indent=1))
    print(f"\n{len(written)} overlay PNGs in {out / 'overlays'}; summary in {summary_path}; "
          f"total {total:.0f} s")
    return 0
