"""Which small model learns the synthetic benchmark within the demo's CPU budget?

Trains one candidate segmentation network from scratch on pre-drawn synthetic scenes
and prints one JSON line: seconds per iteration, source-val and target-val mIoU and the
per-class source-val IoU. This is how the demo's model was chosen (docs/demo_regime.md);
the demo itself trains through the engine (``contraseg demo``).

Candidates (``--model``):

* ``lraspp``: torchvision's LR-ASPP MobileNetV3-Large (logits at stride 8).
* ``fpn:TIMM_NAME``: a light FPN on a timm ``features_only`` model over its levels at
  strides 4-32 (1x1 laterals summed top-down, one 3x3 conv-BN-ReLU, 1x1 classifier; 64
  channels), logits at stride 4.
* ``fpn0:TIMM_NAME``: the same over all five levels, strides 2-32 (logits at stride 2).

Training: AdamW (``--lr``, weight decay 1e-4) with a one-cycle schedule (5 % warm-up),
batch 8, random horizontal flips, cross-entropy; ``--train source`` (1000 scenes of
synthetic-source train) or ``--train target`` (the target-supervised reference).
Evaluation: 100 scenes each of synthetic-source val and synthetic-target val, whole image.
The drawn scenes are cached under ``--cache`` (``runs/demo_model_search``) as tensors.

Usage::

    .venv/bin/python benchmarks/demo_model_search.py --model fpn0:mobilenetv3_large_100 --iters 800
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.data.synthetic import SyntheticStreetDataset
from contraseg.engine.metrics import compute_metrics, confusion_matrix

NUM_CLASSES = 19


def drawn_split(cache: Path, domain: str, split: str, count: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``count`` scenes as (normalised images N x 3 x H x W, labels N x H x W), cached on disk."""
    path = cache / f"{domain}_{split}_{count}_{size[0]}x{size[1]}.pt"
    if path.is_file():
        return torch.load(path)
    dataset = SyntheticStreetDataset(domain, split=split, length=count, size=size, seed=0)
    samples = [dataset[i] for i in range(count)]
    drawn = (torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples]))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(drawn, path)
    return drawn


class LightFPN(nn.Module):
    """1x1 laterals summed top-down from the coarsest level, one 3x3 conv-BN-ReLU on the
    finest sum, a 1x1 classifier: ``B x 3 x H x W -> B x K x H/s x W/s`` (s: finest stride)."""

    def __init__(self, timm_name: str, levels: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=tuple(levels))
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.body.feature_info.channels())
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(channels, NUM_CLASSES, 1)

    def forward(self, images: Tensor) -> Tensor:
        features = self.body(images)
        top = self.laterals[-1](features[-1])
        for feature, lateral in zip(features[-2::-1], list(self.laterals)[-2::-1]):
            top = F.interpolate(top, size=feature.shape[-2:], mode="bilinear", align_corners=False) + lateral(feature)
        return self.classifier(self.fuse(top))


def build(name: str) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """``(module, images -> logits)`` of a ``--model`` name."""
    if name == "lraspp":
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
        return model, lambda images: model(images)["out"]
    for prefix, levels in (("fpn0:", (0, 1, 2, 3, 4)), ("fpn:", (1, 2, 3, 4))):
        if name.startswith(prefix):
            model = LightFPN(name[len(prefix):], levels)
            return model, model
    raise SystemExit(f"--model must be lraspp, fpn:TIMM_NAME or fpn0:TIMM_NAME, got {name!r}")


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], model: nn.Module, images: Tensor, labels: Tensor,
             classes: Sequence[str]) -> dict:
    model.eval()
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    for start in range(0, images.shape[0], 20):
        logits = forward(images[start:start + 20])
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        confusion += confusion_matrix(logits.argmax(1), labels[start:start + 20], NUM_CLASSES)
    return compute_metrics(confusion, classes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fpn0:mobilenetv3_large_100")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 128), metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=800)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train", choices=("source", "target"), default="source")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path("runs/demo_model_search"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[1])
    classes = SyntheticStreetDataset("source", split="val", length=1).info.classes
    images, labels = drawn_split(args.cache, args.train, "train", 1000, size)
    source_val = drawn_split(args.cache, "source", "val", 100, size)
    target_val = drawn_split(args.cache, "target", "val", 100, size)
    torch.manual_seed(0)
    model, forward = build(args.model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=args.iters, pct_start=0.05)
    generator = torch.Generator().manual_seed(0)
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for it in range(args.iters):
        index = torch.randint(0, images.shape[0], (args.batch,), generator=generator)
        x, y = images[index].clone(), labels[index].clone()
        flip = torch.rand(args.batch, generator=generator) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        logits = F.interpolate(forward(x), size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if (it + 1) % 100 == 0:
            print(f"it {it + 1} loss {sum(losses[-100:]) / 100:.3f} {time.perf_counter() - start:.0f}s", flush=True)
    seconds = time.perf_counter() - start
    source, target = (evaluate(forward, model, *split, classes) for split in (source_val, target_val))
    print(json.dumps({
        "model": args.model, "size": list(size), "iters": args.iters, "train": args.train, "lr": args.lr,
        "seconds": round(seconds), "seconds_per_iter": round(seconds / args.iters, 3),
        "source_val_miou": round(100 * source["mIoU"], 1), "target_val_miou": round(100 * target["mIoU"], 1),
        "source_val_iou": {c: None if v is None else round(100 * v, 1) for c, v in zip(classes, source["IoU"])},
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
