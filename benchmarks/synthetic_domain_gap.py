"""How large is the domain gap of the synthetic benchmark?

Trains the same small segmentation network twice from scratch, once on
``synthetic-source`` and once on ``synthetic-target`` (same number of images,
iterations and seed), and evaluates both on ``synthetic-target`` val:

* source -> target: what a model learnt on the clean, game-like domain keeps;
* target -> target: the in-domain reference (the "oracle").

The benchmark is meant to satisfy: the oracle beats source -> target by at least 10
mIoU points and neither reaches 90 mIoU (the task is neither trivial nor saturated).
The script prints the per-class IoU of both models, the gap and whether the goal
holds (exit code 1 if not).

Usage (CPU; 1 to 6 minutes on 2 shared cores, depending on their load)::

    .venv/bin/python benchmarks/synthetic_domain_gap.py

Measured (defaults: 64 x 128, 1000 train images per domain, 100 target-val images,
1000 iterations at batch 8): source -> target 15.4 mIoU, target -> target 48.6, gap 33.2.

The default network is :class:`SmallSegNet`, a plain 0.16 M-parameter conv net
defined here (a ResNet-18 FCN from ``contraseg.models`` is ``--model resnet18``, far
too slow for a few CPU minutes). No colour augmentation is used on purpose: the
script measures the raw gap that adaptation methods are supposed to close.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.data.synthetic import SyntheticStreetDataset
from contraseg.engine.metrics import compute_metrics, confusion_matrix, format_metrics_table

GOAL_GAP = 10.0  # mIoU points the oracle must win by
GOAL_CEILING = 90.0  # mIoU neither model may reach


def conv_bn(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallSegNet(nn.Module):
    """A small encoder-decoder (~0.16 M parameters): stride-8 encoder with dilated context, one stride-4 skip.

    ``forward(images B x 3 x H x W) -> logits B x K x H/4 x W/4``; the receptive field
    (~250 px) covers whole objects, so shape and context can be learnt, not only colour.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, width, 2), conv_bn(width, 2 * width, 2))
        self.encoder = nn.Sequential(
            conv_bn(2 * width, 4 * width, 2),
            conv_bn(4 * width, 4 * width, dilation=2),
            conv_bn(4 * width, 4 * width, dilation=4),
            conv_bn(4 * width, 4 * width, dilation=8),
        )
        self.fuse = conv_bn(4 * width + 2 * width, 2 * width)
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, images: Tensor) -> Tensor:
        skip = self.stem(images)
        deep = self.encoder(skip)
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([deep, skip], 1)))


class ContraSegAdapter(nn.Module):
    """``contraseg.models.build_segmentor`` with its logits as the output."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from contraseg.models import build_segmentor

        self.model = build_segmentor(backbone="resnet18", head="fcn", num_classes=num_classes,
                                     embed_dim=32, output_stride=8)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)["logits"]


def render_split(domain: str, split: str, count: int, size: tuple[int, int], seed: int) -> tuple[Tensor, Tensor]:
    """``count`` samples of a synthetic split as (images N x 3 x H x W normalised, labels N x H x W)."""
    dataset = SyntheticStreetDataset(domain, split=split, length=count, size=size, seed=seed)
    samples = [dataset[i] for i in range(count)]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == "small":
        return SmallSegNet(num_classes)
    if name == "resnet18":
        return ContraSegAdapter(num_classes)
    raise ValueError(f"--model must be 'small' or 'resnet18', got {name!r}")


def train(model: nn.Module, images: Tensor, labels: Tensor, iters: int, batch: int, lr: float, seed: int,
          log_every: int = 100) -> float:
    """Adam (one-cycle schedule) on random batches with random horizontal flips.

    Prints progress every ``log_every`` iterations; returns the mean loss of the last 50.
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=iters, pct_start=0.1)
    model.train()
    losses = []
    for _ in range(iters):
        index = torch.randint(0, images.shape[0], (batch,), generator=generator)
        x, y = images[index], labels[index]
        flip = torch.rand(batch, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        y[flip] = y[flip].flip(-1)
        logits = model(x)
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (len(losses) % log_every == 0 or len(losses) == iters):
            print(f"  iter {len(losses):5d}/{iters}  loss {sum(losses[-log_every:]) / len(losses[-log_every:]):.3f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    tail = losses[-50:]
    return sum(tail) / len(tail)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, num_classes: int, batch: int = 16) -> Tensor:
    """K x K confusion matrix of the model on (images, labels)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for start in range(0, images.shape[0], batch):
        x, y = images[start:start + batch], labels[start:start + batch]
        logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        confusion += confusion_matrix(logits.argmax(1), y, num_classes)
    return confusion


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(64, 128), metavar=("H", "W"))
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--model", default="small", choices=("small", "resnet18"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[1])
    start = time.perf_counter()
    val_images, val_labels = render_split("target", "val", args.val_images, size, args.seed)
    classes = SyntheticStreetDataset("target", split="val", length=1).info.classes
    num_classes = len(classes)
    results = {}
    for domain in ("source", "target"):
        t0 = time.perf_counter()
        images, labels = render_split(domain, "train", args.train_images, size, args.seed)
        t1 = time.perf_counter()
        torch.manual_seed(args.seed)
        model = build_model(args.model, num_classes)
        loss = train(model, images, labels, args.iters, args.batch, args.lr, args.seed)
        t2 = time.perf_counter()
        results[domain] = compute_metrics(evaluate(model, val_images, val_labels, num_classes), classes)
        print(f"trained on {domain}: rendering {t1 - t0:.1f} s ({1000 * (t1 - t0) / args.train_images:.1f} ms/image), "
              f"training {t2 - t1:.1f} s, final loss {loss:.3f}, target-val mIoU {100 * results[domain]['mIoU']:.1f}",
              flush=True)
    columns = {"source->target": results["source"], "target->target": results["target"]}
    print()
    print(format_metrics_table(results["target"], columns))
    source_miou, target_miou = 100 * results["source"]["mIoU"], 100 * results["target"]["mIoU"]
    gap = target_miou - source_miou
    ok = gap >= GOAL_GAP and max(source_miou, target_miou) < GOAL_CEILING
    print(f"\nmIoU source->target {source_miou:.1f}, target->target {target_miou:.1f}, gap {gap:.1f} points "
          f"(goal: gap >= {GOAL_GAP:.0f}, both < {GOAL_CEILING:.0f}): {'met' if ok else 'NOT met'}; "
          f"total {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
