"""``python -m contraseg.bench train-step``: the cost of each regulariser in a training step.

Times one whole optimisation step (forward, cross-entropy + regulariser, backward,
SGD step, memory enqueue) of the same segmentor with cross-entropy alone and with each
regulariser, as the median of ``--repeats`` steps after ``--warmup`` steps, all in one
process with the repeats interleaved (case 1, 2, ..., 1, 2, ...), and prints a markdown table of the step times and their ratio to the CE-only
step. Inputs are rendered ``synthetic-source`` street scenes (so labels form realistic
regions). The pixel memory bank is filled before timing (a full bank is the steady
state); a regulariser that needs another classifier (ProtoSeg: the prototype classifier)
gets it, so its row also includes that change. The rows are those of the regulariser
table (:data:`contraseg.engine.regularisers.REGULARISERS`).

The memory-bank row also gets its own floor, timed in the same rounds: the three
matmuls of the step's A sampled anchors x D x M bank entries (forward, and the two of
backward), so its overhead over the CE step reads as "x its matmul floor".
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..engine.regularisers import REGULARISERS, RegulariserConfig, build_regulariser
from .timing import median_time


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The benchmark's options (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m contraseg.bench train-step", description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--head", default="deeplabv2")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"), help="image size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--memory-size", type=int, default=5000, help="pixel and segment entries per class")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--only", nargs="+", choices=list(REGULARISERS), help="time only these regularisers")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or min(args.size) < 8:
        parser.error("--batch and --repeats must be >= 1, --warmup >= 0 and --size at least 8 x 8")
    return args


def make_batch(batch: int, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``batch`` rendered synthetic-source scenes: images B x 3 x H x W, labels B x H x W, info."""
    from ..data import build_dataset

    dataset = build_dataset("synthetic-source", split="train", size=tuple(size), length=batch)
    samples = [dataset[i] for i in range(batch)]
    images = torch.stack([s["image"] for s in samples]).to(device)
    labels = torch.stack([s["label"] for s in samples]).to(device)
    return images, labels, dataset.info


def fill_memory(regulariser: Any) -> None:
    """Fill a pixel memory bank's queues with random unit vectors (its steady state)."""
    bank = getattr(getattr(regulariser, "loss", None), "memory", None)
    if bank is None:
        return
    with torch.no_grad():
        for queue, count in ((bank.pixel_queue, bank.pixel_count), (bank.segment_queue, bank.segment_count)):
            queue.copy_(F.normalize(torch.randn_like(queue), dim=-1))
            count.fill_(queue.shape[1])


def build_step(name: str, args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor,
               num_classes: int, ignore_index: int) -> Callable[[], object]:
    """A closure running one training step with regulariser ``name`` (same seed, same model)."""
    from ..engine.config import OptimConfig
    from ..engine.optim import build_optimizer, split_parameters
    from ..engine.precision import resolve_precision
    from ..engine.step import StepParts, training_step
    from ..models import build_segmentor

    device = images.device
    torch.manual_seed(0)
    model = build_segmentor(args.backbone, args.head, num_classes=num_classes, embed_dim=args.embed_dim,
                            classifier=REGULARISERS[name].classifier or "linear").to(device).train()
    reg_cfg = RegulariserConfig(name=name, memory_pixel_size=args.memory_size, memory_segment_size=args.memory_size)
    regulariser = build_regulariser(reg_cfg, num_classes, args.embed_dim, ignore_index).to(device).train()
    fill_memory(regulariser)
    optimizer = build_optimizer(split_parameters(model), OptimConfig(name="sgd", lr=1e-4))
    parts = StepParts(model, model, regulariser, optimizer, resolve_precision(args.amp, device), ignore_index)
    counter = iter(range(10**9))
    return lambda: training_step(parts, images, labels, next(counter))


def memory_bank_floor(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      ignore_index: int) -> tuple[Callable[[], object], int, int]:
    """The 3-matmul floor of the memory-bank step: ``(closure, A anchors, M entries)``.

    A is what the regulariser's sampler picks on the model's first forward of this batch
    (same seed as the timed step), M the filled entries of the full bank.
    """
    from .._labels import resize_labels
    from ..models import build_segmentor
    from .losses import memory_floor

    torch.manual_seed(0)
    model = build_segmentor(args.backbone, args.head, num_classes=num_classes, embed_dim=args.embed_dim).to(images.device)
    reg_cfg = RegulariserConfig(name="pixel_contrast_memory", memory_pixel_size=args.memory_size,
                                memory_segment_size=args.memory_size)
    loss = build_regulariser(reg_cfg, num_classes, args.embed_dim, ignore_index).loss
    with torch.no_grad():
        out = model.train()(images)
    grid = tuple(out["embed"].shape[-2:])
    samples = loss.sampler(resize_labels(labels, grid), resize_labels(out["logits"].argmax(1), grid))
    anchors, entries = samples.index.numel(), num_classes * 2 * args.memory_size
    return memory_floor(anchors, entries, args.embed_dim, images.device), anchors, entries


def interleaved_medians(steps: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                        warmup: int) -> dict[str, float]:
    """Median seconds per step of each closure; the repeats go round-robin over the
    closures, so a slow spell of the machine hits every case alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(median_time(step, device, repeats=1, warmup=0))
    return {name: statistics.median(values) for name, values in times.items()}


def format_table(times: dict[str, float]) -> str:
    """Markdown table of step times (ms) and ratios to the CE-only step."""
    base = times.get("none")
    lines = ["| regulariser | step (ms) | vs CE only |", "|---|---:|---:|"]
    for name, seconds in times.items():
        ratio = f"{seconds / base:.2f}x" if base else "-"
        label = "none (CE only)" if name == "none" else name
        lines.append(f"| {label} | {1000 * seconds:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark and print the table; returns the exit code."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images, labels, info = make_batch(args.batch, tuple(args.size), device)
    names = [n for n in REGULARISERS if args.only is None or n in args.only]  # every row of the table
    if args.only is not None and "none" not in names:
        names.insert(0, "none")  # ratios need the CE-only step
    print(f"train-step: {args.backbone} + {args.head}, batch {args.batch} x {args.size[0]}x{args.size[1]}, "
          f"D={args.embed_dim}, K={len(info.classes)}, memory {args.memory_size}/class, {device}, amp {args.amp}, "
          f"median of {args.repeats} after {args.warmup} warm-up steps, threads {torch.get_num_threads()}")
    start = time.perf_counter()
    steps = {name: build_step(name, args, images, labels, len(info.classes), info.ignore_index) for name in names}
    floor = None
    if "pixel_contrast_memory" in steps:
        floor_step, anchors, entries = memory_bank_floor(args, images, labels, len(info.classes), info.ignore_index)
        floor = "memory-bank matmul floor"
        steps[floor] = floor_step
    times = interleaved_medians(steps, device, args.repeats, args.warmup)
    floor_time = times.pop(floor) if floor else None
    print(format_table(times))
    if floor_time is not None:
        extra = times["pixel_contrast_memory"] - times["none"]
        print(f"pixel_contrast_memory: {1000 * extra:.1f} ms over the CE step = {extra / floor_time:.2f}x its "
              f"matmul floor ({1000 * floor_time:.1f} ms: 3 matmuls of {anchors} anchors x D={args.embed_dim} x "
              f"{entries} bank entries, same rounds)")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0
