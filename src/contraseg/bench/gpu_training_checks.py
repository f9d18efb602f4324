"""The model checks of ``python -m contraseg.bench gpu`` (:mod:`.gpu`) on one GPU:
``syncbn`` (SyncBatchNorm's kernels in a 1-process NCCL group against BatchNorm),
``train-amp-syncbn`` (HRNet-W18-Small + OCR trained with fp16 autocast, GradScaler,
SyncBatchNorm and DDP) and ``inference`` (the trained model in fp16 against float32).
"""

from __future__ import annotations

import copy
import os
import socket
import time

import torch
from torch import nn

from .gpu_common import CheckResult, no_tf32, relative_error


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
