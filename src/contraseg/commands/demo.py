"""``contraseg demo [--out runs/demo] [--iters N]``

Trains the same small segmentor twice on the synthetic benchmark (labelled
``synthetic-source`` street scenes), once with cross-entropy alone and once with
cross-entropy + ProAC, evaluates both on ``synthetic-source`` val (the training domain)
and ``synthetic-target`` val (the other domain), prints a per-class IoU table of both
runs with their paired differences, and writes prediction overlays, a t-SNE picture of
both models' pixel embeddings and ``summary.json`` under --out (replacing an earlier
demo's files there).

Settings (the same as ``configs/synthetic_source_only.yaml`` / ``synthetic_proac.yaml``):
MobileNetV3-Large with FPN's top-down pathway over all five of its levels (strides 2 to
32, 64 channels, read at the finest: the logits and the 64-d conv-MLP embedding are at
stride 2; see docs/demo_regime.md for why), 64 x 128
images, batch 8, horizontal flips, 640 iterations of AdamW (lr 3e-3, poly, 32 warm-up), no
pretrained weights; two compute threads and no loader worker: the 1000 training scenes
are drawn once and kept in memory for both runs. ProAC weight 0.1 and temperature 0.1,
the paper's values. Sized to finish in under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

DEMO_ITERS = 640
IMAGE_SIZE = [64, 128]
TRAIN_SCENES = 1000
VAL_SCENES = 100
OVERLAY_IMAGES = 4
COMPARE_ZOOM = 2  # the side-by-side PNG is upscaled (nearest) for viewing
RUNS = (("ce", "CE", "none"), ("proac", "CE+ProAC", "proac"))
EMBED_PICTURE = "embed_ce_vs_proac.png"


def demo_config(regulariser: str, iters: int = DEMO_ITERS, seed: int = 0) -> Any:
    """The demo's training config for ``regulariser`` ("none" or "proac")."""
    from ..engine.config import config_from_dict

    def synthetic(name: str, split: str, length: int) -> dict[str, Any]:
        return {"name": name, "split": split, "options": {"size": IMAGE_SIZE, "length": length, "cache": True}}

    return config_from_dict({
        "name": f"synthetic_{'proac' if regulariser == 'proac' else 'source_only'}",
        "model": {"backbone": "mobilenet_v3_pyramid", "head": "fpn_topdown", "head_channels": 64, "embed_dim": 64,
                  "projection": "convmlp", "output_stride": 32, "pretrained": None},
        "data": {
            "train": synthetic("synthetic-source", "train", TRAIN_SCENES),
            "val": [synthetic("synthetic-target", "val", VAL_SCENES),
                    synthetic("synthetic-source", "val", VAL_SCENES)],
            "crop_size": IMAGE_SIZE, "scale_range": [1.0, 1.0], "jitter": 0.0, "batch_size": 8, "num_workers": 0,
        },
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "schedule": {"max_iters": iters, "warmup_iters": min(32, iters)},
        "regulariser": {"name": regulariser, "weight": 0.1 if regulariser == "proac" else None,
                        "temperature": 0.1},
        "train": {"seed": seed, "amp": "off", "log_interval": 50, "eval_interval": iters,
                  "checkpoint_interval": iters, "tensorboard": False},
        "eval": {"mode": "whole", "batch_size": 20},
    })


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    parser = subparsers.add_parser("demo", help="CE vs CE+ProAC on the synthetic benchmark (CPU, minutes)",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo; an earlier demo's "
                                                           "files there are replaced)")
    parser.add_argument("--iters", type=int, default=DEMO_ITERS, help=f"iterations per run (default {DEMO_ITERS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-embed", action="store_true", help="skip the t-SNE picture (needs contraseg[viz])")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{100 * (b - a):+.1f}"


def comparison_table(results: dict[str, dict[str, Any]], datasets: list[str]) -> str:
    """Per-class IoU (%) of each run on each of ``datasets``, with the paired difference
    (second run minus first), and the mIoU row. ``results[run title][dataset label]`` is
    ``compute_metrics``' dict (fractions). A class absent from the labels and the
    predictions of every run and dataset is left out."""
    titles = [title for _, title, _ in RUNS]
    names = results[titles[0]][datasets[0]]["classes"]
    width = max(len(n) for n in names + ["mIoU"]) + 2
    column = max(10, max(len(t) for t in titles) + 2)
    group = column * len(titles) + 8
    top = " " * width + "".join(f"{label:>{group}}" for label in datasets)
    header = f"{'IoU %':<{width}}" + "".join("".join(f"{t:>{column}}" for t in titles) + f"{'delta':>8}"
                                              for _ in datasets)
    lines = [top, header, "-" * len(header)]

    def row(name: str, values_of: Any) -> str | None:
        cells = []
        for label in datasets:
            values = [values_of(results[t][label]) for t in titles]
            cells.append((values, "".join(f"{_pct(v):>{column}}" for v in values) + f"{_delta(*values):>8}"))
        if all(v is None for values, _ in cells for v in values):
            return None
        return f"{name:<{width}}" + "".join(text for _, text in cells)

    for i, name in enumerate(names):
        line = row(name, lambda m, i=i: m["IoU"][i])
        if line is not None:
            lines.append(line)
    lines.append("-" * len(header))
    lines.append(row("mIoU", lambda m: m["mIoU"]) or "")
    return "\n".join(lines)


def summary_record(results: dict[str, dict[str, Any]], timings: dict[str, float], iters: int,
                   total: float) -> dict[str, Any]:
    """``summary.json``: ``{"total_seconds", "iters", "unit": "%", "runs": {tag: {dataset label:
    {"miou": %, "per_class_iou": {class: % or null}}}}, "seconds": {tag: s}}`` (a stable shape
    for scripts; a class absent from labels and predictions has IoU null)."""
    from ..engine.run_log import json_safe

    def percent(value: float | None) -> float | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return round(100.0 * value, 2)

    runs = {tag: {label: {"miou": percent(m["mIoU"]),
                          "per_class_iou": {c: percent(v) for c, v in zip(m["classes"], m["IoU"])}}
                  for label, m in results[title].items()}
            for tag, title, _ in RUNS}
    return json_safe({"total_seconds": round(total, 1), "iters": iters, "unit": "%", "runs": runs,
                      "seconds": {tag: round(t, 1) for tag, t in timings.items()}})


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


def _clear_previous_demo(out: Path) -> None:
    """Remove what an earlier demo wrote under ``out`` (its two run folders, overlays,
    picture and summary); other files are kept."""
    from ._common import prepare_run_dir

    for tag, _, _ in RUNS:
        prepare_run_dir(out / tag, resume=None, overwrite=True)
    for png in sorted((out / "overlays").glob("*.png")):
        png.unlink()
    for name in (EMBED_PICTURE, EMBED_PICTURE.replace(".png", ".json"), "summary.json"):
        (out / name).unlink(missing_ok=True)


def write_embedding_picture(out: Path, seed: int) -> Path | None:
    """t-SNE of both checkpoints' pixel embeddings on the same synthetic-source val pixels
    (``contraseg viz embed ... --compare``); None when matplotlib / scikit-learn are missing."""
    from ..errors import report_errors
    from . import viz

    parser = argparse.ArgumentParser(prog="contraseg")
    viz.add_parser(parser.add_subparsers(dest="command"))
    picture = out / EMBED_PICTURE
    args = parser.parse_args([
        "viz", "embed", str(out / "ce" / "last.pth"), "--compare", str(out / "proac" / "last.pth"),
        "--dataset", "synthetic-source", "--split", "val", "--option", f"size=[{IMAGE_SIZE[0]},{IMAGE_SIZE[1]}]",
        "--option", f"length={VAL_SCENES}", "--images", "20", "--pixels", "3000", "--seed", str(seed),
        "--out", str(picture)])
    code = report_errors("viz", lambda: args.func(args))
    return picture if code == 0 else None


def _run(args: argparse.Namespace) -> int:
    """The demo proper: two trainings, the comparison table, overlays, picture, summary.json."""
    from .._io import atomic_write
    from ..engine.build import dataset_label
    from ..engine.process_group import init_process_group_from_env
    from ..engine.trainer import Trainer

    out = Path(args.out)
    context = init_process_group_from_env(args.device)
    if context.distributed:
        raise UserError("the demo runs in one process; start it without torchrun")
    _clear_previous_demo(out)
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, Any] = {}
    timings: dict[str, float] = {}
    labels: list[str] = []
    for tag, title, regulariser in RUNS:
        cfg = demo_config(regulariser, args.iters, args.seed)
        labels = sorted(dataset_label(v) for v in cfg.data.val)  # synthetic-source/val first
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
    print(comparison_table(results, labels))
    written = write_overlays(trainers, out, OVERLAY_IMAGES)
    picture = None
    if not args.no_embed:
        print(f"\n== embedding pictures: t-SNE of both models on {labels[0]}", flush=True)
        picture = write_embedding_picture(out, args.seed)
        if picture is None:
            print("(no embedding picture: see the message above)")
    total = time.perf_counter() - start
    summary_path = out / "summary.json"
    text = json.dumps(summary_record(results, timings, args.iters, total), indent=1)
    atomic_write(summary_path, lambda handle: handle.write(text.encode()))
    print(f"\n{len(written)} overlay PNGs in {out / 'overlays'}; "
          + (f"embedding picture {picture}; " if picture else "")
          + f"summary in {summary_path}; total {total:.0f} s")
    return 0
