"""``python -m contraseg.bench gpu`` (``make gpu-check``): every CUDA path, checked on a GPU.

One script, at most ~8 minutes on one GPU, that writes ``docs/gpu.md`` (device, torch
version, every check with pass / fail and its numbers) and exits non-zero, with a
``GPU CHECK FAILED`` line per failure on stderr, on any mismatch:

=====================  ==================================================================
check                  what must hold
=====================  ==================================================================
losses-fp32            every loss (ProAC, ProAC pixel-anchor, pixel contrast, pixel
                       contrast + memory, ProtoSeg PPC + PPD, WDASS image-level and
                       prototype contrast) on CUDA in float32 equals the same loss on the
                       CPU in float64, forward and gradient (relative error <= 1e-4;
                       TF32 off)
losses-fp16 / bf16     under ``torch.autocast("cuda", fp16 / bf16)`` (a 1x1 conv before
                       the loss runs in half precision) the loss is within 1e-2 of float32
                       and the gradient's relative L2 error <= 3e-2
grad-scaler            fp16 + ``GradScaler``: scaled backward then ``unscale_`` gives the
                       float32 gradient (relative error <= 3e-2), no overflow step skipped;
                       an injected inf is caught and its step skipped
syncbn                 in a 1-process NCCL group, ``SyncBatchNorm``'s CUDA kernels (stats,
                       gather, backward reduce) give BatchNorm's output and gradients
train-amp-syncbn       50 iterations of HRNet-W18-Small + OCR with pixel contrast + memory,
                       BatchNorm -> SyncBatchNorm, DDP over the 1-process NCCL group, fp16
                       autocast + GradScaler: finite losses that go down
inference              the trained model: fp16 whole-image probabilities within 2e-2 of
                       float32 and the same class on >= 99.9 % of the pixels whose float32
                       winner leads by > 0.02; slide + flip + two scales and an odd
                       129 x 257 input run; evaluation mIoU within 1 point of float32
bench-losses           ``python -m contraseg.bench losses --device cuda`` runs (its table is
                       copied into the report)
bench-train-step       ``python -m contraseg.bench train-step --device cuda`` with fp16 and
                       bf16 runs (tables copied)
=====================  ==================================================================

On a machine without CUDA it says so and exits with status 2 without writing a report.
Needs only torch, torchvision, timm, numpy, pillow, pyyaml, opencv and cityscapesscripts:
``PYTHONPATH=src python -m contraseg.bench gpu`` runs from a checkout without installing.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPORT = Path("docs/gpu.md")
TIME_BUDGET_S = 480.0


@dataclass
class CheckResult:
    """One check: ``passed`` None means skipped (with the reason in ``summary``)."""

    name: str
    passed: bool | None
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""  # a benchmark's printed tables, copied into the report

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "skipped"}[self.passed]


# --------------------------------------------------------------------------- loss checks


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


@contextmanager
def no_tf32() -> Iterator[None]:
    """float32 means float32: TF32 off for matmuls and cuDNN convolutions."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_loss(make: Callable[[torch.device, torch.dtype], LossFn], inputs: LossInputs, device: torch.device,
             dtype: torch.dtype, autocast: torch.dtype | None = None) -> tuple[float, Tensor]:
    """Loss value and gradient w.r.t. the embeddings (before the conv), in float64 on the CPU."""
    emb = inputs.embeddings.to(device=device, dtype=dtype).requires_grad_(True)
    weight = inputs.conv_weight.to(device=device, dtype=dtype)
    loss_of = make(device, dtype)
    context = torch.autocast(device.type, dtype=autocast) if autocast is not None else _null()
    with context:
        loss = loss_of(F.conv2d(emb, weight))
    (grad,) = torch.autograd.grad(loss.float() if dtype != torch.float64 else loss, emb)
    return float(loss.detach()), grad.detach().to("cpu", torch.float64)


@contextmanager
def _null() -> Iterator[None]:
    yield


def relative_error(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / max(||b||, 1e-12)`` (L2 over all entries)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


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


# --------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_single_process_group(backend: str = "nccl") -> None:
    """A 1-process group (rank 0 of 1) on localhost, as torchrun would give one GPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)


def check_syncbn(device: torch.device) -> CheckResult:
    """SyncBatchNorm's kernels (via torch's autograd function, world size 1) vs BatchNorm."""
    import torch.distributed as dist

    start = time.perf_counter()
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 16, 9, 13, generator=g) * 3 + 1).to(device)
    upstream = torch.randn(6, 16, 9, 13, generator=g).to(device)
    bn = nn.BatchNorm2d(16).to(device).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ref_in = x.clone().requires_grad_(True)
    ref_out = bn(ref_in)
    ref_out.backward(upstream)
    try:
        from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction
    except ImportError as err:  # an internal module: absent in some torch versions
        return CheckResult("syncbn", None, f"torch's SyncBatchNorm function is not importable ({err})",
                           seconds=time.perf_counter() - start)
    weight = bn.weight.detach().clone().requires_grad_(True)
    bias = bn.bias.detach().clone().requires_grad_(True)
    mean, var = torch.zeros(16, device=device), torch.ones(16, device=device)
    sync_in = x.clone().requires_grad_(True)
    sync_out = SyncBatchNormFunction.apply(sync_in, weight, bias, mean, var, bn.eps, bn.momentum,
                                           dist.group.WORLD, 1)
    sync_out.backward(upstream)
    errors = {
        "output": relative_error(sync_out.detach().double().cpu(), ref_out.detach().double().cpu()),
        "grad_input": relative_error(sync_in.grad.double().cpu(), ref_in.grad.double().cpu()),
        "grad_weight": relative_error(weight.grad.double().cpu(), bn.weight.grad.double().cpu()),
        "running_mean": relative_error(mean.double().cpu(), bn.running_mean.double().cpu()),
    }
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(copy.deepcopy(bn)))
    passed = max(errors.values()) <= 1e-4 and isinstance(converted[0], nn.SyncBatchNorm)
    return CheckResult("syncbn", passed, "SyncBatchNorm kernels in a 1-process NCCL group vs BatchNorm (train mode)",
                       {k: f"{v:.1e}" for k, v in errors.items()}, time.perf_counter() - start)


# --------------------------------------------------------------------------- training + inference


def check_training(device: torch.device, iterations: int = 50, size: tuple[int, int] = (256, 512),
                   batch: int = 8) -> tuple[CheckResult, nn.Module | None]:
    """50 iterations with AMP (fp16 + GradScaler), SyncBatchNorm and DDP (1 process)."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    from ..data import build_dataset
    from ..engine.config import OptimConfig, RegulariserConfig
    from ..engine.optim import build_optimizer, split_parameters
    from ..engine.precision import resolve_precision
    from ..engine.regularisers import build_regulariser
    from ..engine.step import StepParts, training_step
    from ..models import build_segmentor

    start = time.perf_counter()
    torch.manual_seed(0)
    dataset = build_dataset("synthetic-source", split="train", size=size, length=iterations * batch)
    num_classes = len(dataset.info.classes)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=4, drop_last=True, pin_memory=True,
                        generator=torch.Generator().manual_seed(0))
    model = build_segmentor("hrnet_w18_small", "ocr", num_classes=num_classes, embed_dim=128, head_channels=256)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
    sync_layers = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    ddp = DistributedDataParallel(model, device_ids=[device.index or 0])
    regulariser = build_regulariser(RegulariserConfig(name="pixel_contrast_memory", memory_pixel_size=500,
                                                      memory_segment_size=100), num_classes, 128,
                                    dataset.info.ignore_index).to(device)
    optimizer = build_optimizer(split_parameters(model), OptimConfig(name="sgd", lr=0.01))
    precision = resolve_precision("fp16", device)
    parts = StepParts(ddp, model, regulariser, optimizer, precision, dataset.info.ignore_index, None)
    ddp.train()
    losses, terms_seen = [], set()
    step_start = None
    for iteration, sample in enumerate(loader):
        if iteration == 5:
            torch.cuda.synchronize(device)
            step_start = time.perf_counter()
        images = sample["image"].to(device, non_blocking=True)
        labels = sample["label"].to(device, non_blocking=True)
        terms = training_step(parts, images, labels, iteration)
        terms_seen.update(terms)
        losses.append(float(terms["loss"]))
    torch.cuda.synchronize(device)
    per_step = (time.perf_counter() - step_start) / max(1, len(losses) - 5) if step_start else float("nan")
    finite = all(torch.isfinite(torch.tensor(losses)).tolist())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    passed = (len(losses) == iterations and finite and last < first and sync_layers > 0
              and {"aux_ce", "loss"} <= terms_seen and precision.scaler.get_scale() > 0)
    numbers = {"iterations": len(losses), "batch": f"{batch} x {size[0]} x {size[1]}", "sync_bn_layers": sync_layers,
               "loss_first10": round(first, 4), "loss_last10": round(last, 4), "terms": ", ".join(sorted(terms_seen)),
               "grad_scale": precision.scaler.get_scale(), "ms_per_step": round(1000 * per_step, 1)}
    summary = ("HRNet-W18-Small + OCR, pixel contrast + memory, fp16 autocast + GradScaler, SyncBatchNorm, "
               "DDP (1-process NCCL group)")
    return CheckResult("train-amp-syncbn", passed, summary, numbers, time.perf_counter() - start), model


def check_inference(device: torch.device, model: nn.Module, size: tuple[int, int] = (256, 512)) -> CheckResult:
    """fp16 vs float32 predictions, slide + flip + scales, an odd size, and evaluation."""
    from ..data import build_dataset
    from ..engine.evaluate import InferenceOptions, evaluate_dataset
    from ..engine.inference import predict_logits

    start = time.perf_counter()
    model.eval()
    dataset = build_dataset("synthetic-source", split="val", size=size, length=8)
    images = torch.stack([dataset[i]["image"] for i in range(4)]).to(device)
    with no_tf32(), torch.no_grad():
        ref = predict_logits(model, images)
        with torch.autocast("cuda", dtype=torch.float16):
            half = predict_logits(model, images)
            slide = predict_logits(model, images, mode="slide", crop_size=(128, 256), stride=(85, 170),
                                   scales=(0.75, 1.25), flip=True)
            odd = predict_logits(model, images[:, :, :129, :257])
    same = ref.argmax(1) == half.argmax(1)
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.02  # pixels whose float32 winner leads by > 2 points
    agreement = float(same.float().mean())
    clear_agreement = float(same[clear].float().mean()) if bool(clear.any()) else 1.0
    prob_err = float((ref - half.float()).abs().max())
    options = InferenceOptions()
    miou32 = evaluate_dataset(model, dataset, options, device)["mIoU"]
    miou16 = evaluate_dataset(model, dataset, options, device, autocast_dtype=torch.float16)["mIoU"]
    shapes_ok = slide.shape == ref.shape and odd.shape[-2:] == (129, 257)
    finite = bool(torch.isfinite(slide).all() and torch.isfinite(odd).all())
    passed = clear_agreement >= 0.999 and prob_err <= 2e-2 and shapes_ok and finite and abs(miou32 - miou16) <= 0.01
    numbers = {"fp16_vs_fp32_pixel_agreement": f"{100 * agreement:.2f} %",
               "agreement_where_fp32_margin_over_0.02": f"{100 * clear_agreement:.3f} % of {int(clear.sum())} px",
               "max_prob_diff": f"{prob_err:.1e}",
               "mIoU_fp32": f"{100 * miou32:.2f}", "mIoU_fp16": f"{100 * miou16:.2f}",
               "slide_flip_scales_shape": tuple(slide.shape), "odd_input_shape": tuple(odd.shape)}
    return CheckResult("inference", passed, "whole / slide / flip / scales / odd size; fp16 vs float32",
                       numbers, time.perf_counter() - start)


# --------------------------------------------------------------------------- benchmarks


def run_benchmark(name: str, args: list[str], timeout: float) -> CheckResult:
    """Run ``python -m contraseg.bench ARGS`` in a subprocess and keep its output."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "contraseg.bench", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired as err:
        out = err.stdout if isinstance(err.stdout, str) else (err.stdout or b"").decode(errors="replace")
        return CheckResult(name, False, f"timed out after {timeout:.0f} s: {' '.join(args)}",
                           seconds=time.perf_counter() - start, output=out)
    output = done.stdout + (f"\n[stderr]\n{done.stderr[-3000:]}" if done.returncode else "")
    return CheckResult(name, done.returncode == 0, f"python -m contraseg.bench {' '.join(args)} (exit {done.returncode})",
                       {"exit_code": done.returncode}, time.perf_counter() - start, output.strip())


# --------------------------------------------------------------------------- report


def environment() -> dict[str, str]:
    """Device and library versions for the report header."""
    import importlib

    env = {"date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "python": platform.python_version(), "torch": torch.__version__,
           "CUDA (torch build)": str(torch.version.cuda)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
        env["cuDNN"] = str(torch.backends.cudnn.version())
        env["NCCL"] = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "?"
    for module in ("torchvision", "timm", "numpy"):
        try:
            env[module] = importlib.import_module(module).__version__
        except Exception as err:  # the report says what is missing rather than failing
            env[module] = f"unavailable ({type(err).__name__})"
    return env


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def format_report(results: list[CheckResult], env: dict[str, str], command: str, total_s: float) -> str:
    """The markdown of docs/gpu.md."""
    failed = [r for r in results if r.passed is False]
    verdict = "ALL CHECKS PASSED" if not failed else f"FAILED: {', '.join(r.name for r in failed)}"
    lines = ["# GPU check", "", f"`{command}` ({total_s:.0f} s). **{verdict}.**", "",
             "| environment | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    lines += ["", "| check | result | seconds | what |", "|---|---|---:|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.summary} |" for r in results]
    for r in results:
        if not r.numbers and not r.output:
            continue
        lines += ["", f"## {r.name}: {r.status}", ""]
        if r.numbers:
            nested = all(isinstance(v, dict) for v in r.numbers.values())
            if nested:
                columns = list(next(iter(r.numbers.values())))
                lines += ["| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
                lines += [f"| {case} | " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |"
                          for case, row in r.numbers.items()]
            else:
                lines += [f"- {key}: {_fmt(value)}" for key, value in r.numbers.items()]
        if r.output:
            lines += ["", r.output]
    return "\n".join(lines) + "\n"


def write_report(results: list[CheckResult], env: dict[str, str], path: Path, command: str, total_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_report(results, env, command, total_s))


# --------------------------------------------------------------------------- main


def no_cuda_message() -> str:
    return (f"GPU CHECK FAILED: no CUDA device (torch.cuda.is_available() is False; torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}). Run this on a machine with an NVIDIA GPU; "
            f"nothing was checked and no report was written.")


def _guard(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check; an exception is a failed check (with the error), never a crash."""
    start = time.perf_counter()
    try:
        return fn()
    except Exception as err:  # every failure goes into the report and the exit status
        line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return CheckResult(name, False, f"raised {type(err).__name__}: {line}", seconds=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contraseg.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORT, help="report path (default docs/gpu.md)")
    parser.add_argument("--skip-bench", action="store_true", help="skip the two benchmarks")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations")
    args = parser.parse_args(list(argv or []))
    if not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    start = time.perf_counter()
    results: list[CheckResult] = []

    def record(found: Any) -> None:
        for result in found if isinstance(found, list) else [found]:
            results.append(result)
            print(f"[{result.status:>7}] {result.name} ({result.seconds:.1f} s): {result.summary}", flush=True)

    inputs = make_loss_inputs(batch=2, dim=64, height=33, width=65, num_classes=19)
    record(_guard("losses", lambda: check_losses(device, inputs)))
    record(_guard("grad-scaler", lambda: check_grad_scaler(device, inputs)))
    record(_guard("process-group", lambda: init_single_process_group("nccl")
                  or CheckResult("process-group", True, "1-process NCCL group initialised")))
    record(_guard("syncbn", lambda: check_syncbn(device)))
    trained: dict[str, Any] = {}

    def train() -> CheckResult:
        result, trained["model"] = check_training(device, iterations=args.iterations)
        return result

    record(_guard("train-amp-syncbn", train))
    if trained.get("model") is not None:
        record(_guard("inference", lambda: check_inference(device, trained["model"])))
    if not args.skip_bench:
        left = TIME_BUDGET_S - (time.perf_counter() - start)
        record(run_benchmark("bench-losses", ["losses", "--device", "cuda", "--repeats", "7",
                                              "--memory-repeats", "2"], timeout=max(60.0, 0.55 * left)))
        left = TIME_BUDGET_S - (time.perf_counter() - start)
        for amp in ("fp16", "bf16"):
            record(run_benchmark(f"bench-train-step-{amp}", ["train-step", "--device", "cuda", "--amp", amp,
                                                             "--size", "256", "512", "--batch", "4", "--repeats", "5"],
                                 timeout=max(45.0, 0.45 * left)))
    total = time.perf_counter() - start
    command = "PYTHONPATH=src python -m contraseg.bench gpu" + (f" {' '.join(argv)}" if argv else "")
    write_report(results, environment(), args.out, command, total)
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # leaving the group is best effort at exit
        pass
    failed = [r for r in results if r.passed is False]
    for r in failed:
        print(f"GPU CHECK FAILED: {r.name}: {r.summary}", file=sys.stderr)
    print(f"report written to {args.out} ({total:.0f} s); "
          f"{'ALL CHECKS PASSED' if not failed else f'{len(failed)} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
