"""The loss checks of ``python -m contraseg.bench gpu`` (:mod:`.gpu`): ``losses-fp32``
(every loss on the device in float32 against the CPU in float64), ``losses-fp16`` /
``losses-bf16`` (under autocast against float32) and ``grad-scaler`` (fp16 + GradScaler).

Every loss reads the same seeded inputs (:func:`make_loss_inputs`) through a fixed 1x1
conv, the "model" that autocast runs in half precision; :func:`build_loss_cases` makes
every random choice once on the CPU, so the devices and precisions see the same loss.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gpu_common import CheckResult, no_tf32, relative_error


@dataclass
class LossInputs:
    """Seeded CPU float64 inputs shared by every device / precision: embeddings
    ``B x D x h x w``, labels and predictions ``B x 2h x 2w`` (5 % ignored), a fixed 1x1
    conv (the "model" that autocast runs in half precision) and the losses' buffers."""

    embeddings: Tensor
    labels: Tensor
    predictions: Tensor
    conv_weight: Tensor
    num_classes: int


def make_loss_inputs(batch: int = 2, dim: int = 32, height: int = 17, width: int = 33, num_classes: int = 7,
                     seed: int = 0) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (batch, 1, max(2, height // 4), max(2, width // 4)), generator=g).float()
    labels = F.interpolate(coarse, size=(2 * height, 2 * width), mode="nearest")[:, 0].long()
    wrong = torch.randint(0, num_classes, labels.shape, generator=g)
    predictions = torch.where(torch.rand(labels.shape, generator=g) < 0.7, labels, wrong)
    labels[torch.rand(labels.shape, generator=g) < 0.05] = 255
    embeddings = torch.randn(batch, dim, height, width, generator=g, dtype=torch.float64)
    conv_weight = torch.randn(dim, dim, 1, 1, generator=g, dtype=torch.float64) / dim**0.5
    return LossInputs(embeddings, labels, predictions, conv_weight, num_classes)


LossFn = Callable[[Tensor], Tensor]  # features B x D x h x w (after the conv) -> scalar


def build_loss_cases(inputs: LossInputs) -> dict[str, Callable[[torch.device, torch.dtype], LossFn]]:
    """Each case: ``(device, dtype) -> loss of features``; every random choice (prototypes,
    anchor samples, memory contents, prototype targets) is made once here on the CPU."""
    from ..losses import ImageLevelLoss, PixelContrastLoss, PPCLoss, PPDLoss, PrototypeContrastLoss, ProACLoss
    from ..prototypes import NearestPrototypeHead, hyperspherical_prototypes
    from ..sampling import PixelMemoryBank

    k, d = inputs.num_classes, inputs.embeddings.shape[1]
    b, _, h, w = inputs.embeddings.shape
    labels, preds = inputs.labels, inputs.predictions
    g = torch.Generator().manual_seed(1)
    protos = hyperspherical_prototypes(k, d)
    small_labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    small_preds = F.interpolate(preds[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    contrast = PixelContrastLoss(temperature=0.1, base_temperature=0.07, max_samples=256, max_views=16)
    samples = contrast.sampler(small_labels, small_preds, generator=torch.Generator().manual_seed(2))
    bank = PixelMemoryBank(k, d, pixel_size=40, segment_size=10, pixels_per_image=5).double()
    for _ in range(3):
        bank.enqueue(torch.randn(b, d, h, w, generator=g, dtype=torch.float64), labels, generator=g)
    head = NearestPrototypeHead(k, 3, d).double()
    targets = torch.where(small_labels == 255, torch.full_like(small_labels, 255),
                          small_labels * 3 + torch.randint(0, 3, small_labels.shape, generator=g))
    presence = torch.zeros(b, k)
    for i in range(b):
        present = labels[i][labels[i] != 255].unique()
        presence[i, present] = 1.0
    class_weight = torch.randn(k, d, 1, 1, generator=g, dtype=torch.float64) / d**0.5
    wdass_protos = torch.randn(k, d, generator=g, dtype=torch.float64)

    def on(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

    def proac(anchor: str):
        def make(device, dtype):
            loss = ProACLoss(protos, temperature=0.1, anchor=anchor).to(device)
            return lambda f: loss(f, labels.to(device))
        return make

    def pixel_contrast(memory: bool):
        def make(device, dtype):
            mem = copy.deepcopy(bank).to(device=device, dtype=dtype) if memory else None
            loss = PixelContrastLoss(temperature=0.1, base_temperature=0.07, memory=mem).to(device)
            on_device = type(samples)(index=samples.index.to(device), labels=samples.labels.to(device),
                                      image=samples.image.to(device))
            return lambda f: loss(f, labels.to(device), preds.to(device), samples=on_device)
        return make

    def protoseg(device, dtype):
        proto_head = copy.deepcopy(head).to(device=device, dtype=dtype)
        ppc, ppd = PPCLoss(), PPDLoss()
        flat_targets = targets.to(device).flatten()

        def run(f: Tensor) -> Tensor:
            logits = proto_head(f)["prototype_logits"]
            flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
            return ppc(flat, flat_targets) + ppd(flat, flat_targets)
        return run

    def image_level(device, dtype):
        weight = on(class_weight, device, dtype)
        loss = ImageLevelLoss()
        return lambda f: loss(F.conv2d(f, weight.to(f.dtype)), presence.to(device))

    def prototype_contrast(device, dtype):
        loss = PrototypeContrastLoss(temperature=0.1)
        p = on(wdass_protos, device, dtype)
        return lambda f: loss(f, labels.to(device), p)

    return {
        "proac": proac("prototype"),
        "proac-pixel-anchor": proac("pixel"),
        "pixel-contrast": pixel_contrast(False),
        "pixel-contrast-memory": pixel_contrast(True),
        "protoseg-ppc-ppd": protoseg,
        "wdass-image-level": image_level,
        "wdass-prototype-contrast": prototype_contrast,
    }


def run_loss(make: Callable[[torch.device, torch.dtype], LossFn], inputs: LossInputs, device: torch.device,
             dtype: torch.dtype, autocast: torch.dtype | None = None) -> tuple[float, Tensor]:
    """Loss value and gradient w.r.t. the embeddings (before the conv), in float64 on the CPU."""
    emb = inputs.embeddings.to(device=device, dtype=dtype).requires_grad_(True)
    weight = inputs.conv_weight.to(device=device, dtype=dtype)
    loss_of = make(device, dtype)
    context = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    with context:
        loss = loss_of(F.conv2d(emb, weight))
    (grad,) = torch.autograd.grad(loss.float() if dtype != torch.float64 else loss, emb)
    return float(loss.detach()), grad.detach().to("cpu", torch.float64)


def check_losses(device: torch.device, inputs: LossInputs | None = None,
                 half_dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16),
                 cases: dict[str, Callable] | None = None) -> list[CheckResult]:
    """``losses-fp32`` and ``losses-<half>`` results (see the module docstring)."""
    inputs = inputs or make_loss_inputs()
    cases = cases if cases is not None else build_loss_cases(inputs)
    results = []
    start = time.perf_counter()
    fp32: dict[str, tuple[float, Tensor]] = {}
    rows, failed = {}, []
    with no_tf32():
        for name, make in cases.items():
            ref_loss, ref_grad = run_loss(make, inputs, torch.device("cpu"), torch.float64)
            loss, grad = run_loss(make, inputs, device, torch.float32)
            fp32[name] = (loss, grad)
            loss_err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-6)
            grad_err = relative_error(grad, ref_grad)
            rows[name] = {"loss_fp64": round(ref_loss, 6), "loss_rel_err": f"{loss_err:.1e}", "grad_rel_err": f"{grad_err:.1e}"}
            if not (loss_err <= 1e-4 and grad_err <= 1e-4):
                failed.append(f"{name} (loss {loss_err:.1e}, grad {grad_err:.1e})")
    results.append(CheckResult(
        "losses-fp32", not failed,
        f"{device.type} float32 vs CPU float64, {len(cases)} losses" + (f"; mismatch: {', '.join(failed)}" if failed else ""),
        rows, time.perf_counter() - start))
    for half in half_dtypes:
        start = time.perf_counter()
        tag = {torch.float16: "fp16", torch.bfloat16: "bf16"}[half]
        rows, failed = {}, []
        for name, make in cases.items():
            loss, grad = run_loss(make, inputs, device, torch.float32, autocast=half)
            ref_loss, ref_grad = fp32[name]
            loss_err = abs(loss - ref_loss)
            grad_err = relative_error(grad, ref_grad)
            rows[name] = {"loss_abs_err": f"{loss_err:.1e}", "grad_rel_err": f"{grad_err:.1e}"}
            if not (loss_err <= 1e-2 * max(1.0, abs(ref_loss)) and grad_err <= 3e-2 and torch.isfinite(grad).all()):
                failed.append(f"{name} (loss {loss_err:.1e}, grad {grad_err:.1e})")
        results.append(CheckResult(
            f"losses-{tag}", not failed,
            f"autocast {tag} vs float32 on {device.type}" + (f"; mismatch: {', '.join(failed)}" if failed else ""),
            rows, time.perf_counter() - start))
    return results


def check_grad_scaler(device: torch.device, inputs: LossInputs | None = None) -> CheckResult:
    """fp16 autocast + GradScaler on ProAC: unscaled gradients equal float32's; an inf
    gradient is detected and its optimiser step skipped."""
    start = time.perf_counter()
    inputs = inputs or make_loss_inputs()
    make = build_loss_cases(inputs)["proac"]
    _, ref_grad = run_loss(make, inputs, device, torch.float32)
    emb = nn.Parameter(inputs.embeddings.to(device=device, dtype=torch.float32))
    weight = inputs.conv_weight.to(device=device, dtype=torch.float32)
    optimizer = torch.optim.SGD([emb], lr=0.0)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**14)
    loss_of = make(device, torch.float32)
    with torch.autocast(device.type, dtype=torch.float16):
        loss = loss_of(F.conv2d(emb, weight))
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_err = relative_error(emb.grad.detach().to("cpu", torch.float64), ref_grad)
    scaler.step(optimizer)
    scaler.update()
    kept_scale = scaler.get_scale()
    emb.grad = torch.full_like(emb, float("inf"))  # an overflowing step
    before = emb.detach().clone()
    optimizer.param_groups[0]["lr"] = 1.0
    scaler.step(optimizer)
    scaler.update()
    skipped = bool(torch.equal(emb.detach(), before)) and scaler.get_scale() < kept_scale
    passed = grad_err <= 3e-2 and kept_scale == 2.0**14 and skipped
    numbers = {"grad_rel_err": f"{grad_err:.1e}", "scale_after_good_step": kept_scale,
               "inf_step_skipped": skipped, "scale_after_inf": scaler.get_scale()}
    return CheckResult("grad-scaler", passed, "fp16 + GradScaler: unscaled gradient vs float32; inf step skipped",
                       numbers, time.perf_counter() - start)


def check_memory_sampling(device: torch.device, num_anchors: int = 200, dim: int = 32, num_classes: int = 7,
                          block_size: int = 64) -> CheckResult:
    """``memory-sampling``: the memory bank's per-anchor example sampling (random, hardest,
    semi-hard; :mod:`contraseg.losses.memory_sampling`) on the device against the CPU, value
    and gradient, the bank walked in several blocks.

    float64 on both sides for every strategy (the draws come from the CPU generator, so the
    kept sets must agree: relative error <= 1e-9), and the device in float32 for random and
    hardest (<= 1e-4). Semi-hard is not compared across precisions: an entry whose cosine
    sits on a histogram bin edge may fall in the other bin in float32, which changes a
    top-x set's size and so every draw of that anchor (a different sample, not an error).
    """
    from ..losses.memory_sampling import sampled_memory_contrast

    start = time.perf_counter()
    g = torch.Generator().manual_seed(5)
    queues = [F.normalize(torch.randn(num_classes, size, dim, generator=g, dtype=torch.float64), dim=-1)
              for size in (60, 20)]
    counts = [torch.randint(size // 2, size + 1, (num_classes,), generator=g) for size in (60, 20)]
    anchors = F.normalize(torch.randn(num_anchors, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, num_classes, (num_anchors,), generator=g)

    def run(strategy: str, on: torch.device, dtype: torch.dtype) -> tuple[float, Tensor]:
        x = anchors.to(device=on, dtype=dtype).requires_grad_(True)
        loss = sampled_memory_contrast(x, labels.to(on), [q.to(on, dtype) for q in queues], [c.to(on) for c in counts],
                                       0.1, 0.07, strategy, 16, 64, seed=11, semi_hard_fraction=0.25,
                                       block_size=block_size)
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad.detach().to("cpu", torch.float64)

    rows, failed = {}, []
    with no_tf32():
        for strategy in ("random", "hardest", "semi_hard"):
            ref_loss, ref_grad = run(strategy, torch.device("cpu"), torch.float64)
            row = {"loss_fp64": round(ref_loss, 6)}
            for dtype, tag, tolerance in ((torch.float64, "fp64", 1e-9), (torch.float32, "fp32", 1e-4)):
                if dtype == torch.float32 and strategy == "semi_hard":
                    continue
                loss, grad = run(strategy, device, dtype)
                loss_err = abs(loss - ref_loss) / max(abs(ref_loss), 1e-6)
                grad_err = relative_error(grad, ref_grad)
                row[f"{tag}_loss_rel_err"], row[f"{tag}_grad_rel_err"] = f"{loss_err:.1e}", f"{grad_err:.1e}"
                if not (loss_err <= tolerance and grad_err <= tolerance):
                    failed.append(f"{strategy} {tag} (loss {loss_err:.1e}, grad {grad_err:.1e})")
            rows[strategy] = row
    summary = (f"{device.type} vs CPU float64, {num_anchors} anchors, {sum(int(c.sum()) for c in counts)} bank entries "
               f"in blocks of {block_size}" + (f"; mismatch: {', '.join(failed)}" if failed else ""))
    return CheckResult("memory-sampling", not failed, summary, rows, time.perf_counter() - start)
