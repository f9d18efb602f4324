"""``python -m contraseg.bench losses``: forward+backward time and peak memory of every loss.

For B=4, D=256, K=19 and h x w = 65 x 129 and 129 x 257 (the 1/8 grids of 513 x 1025
and 1025 x 2049 Cityscapes crops), each loss is timed (median after warm-up) and its
peak memory measured, and both are divided by the floor: one matmul of the same
N x D x K shape, forward and backward (N = B*h*w). A second table compares the
vectorised anchor sampler of pixel contrast with the per-class-loop reference.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F

from .timing import cpu_peak_bytes, cuda_peak_bytes, fmt_bytes, interleaved_median_times, median_time

SIZES = ((65, 129), (129, 257))
CASES = (
    "matmul-floor",
    "proac",
    "proac-pixel-anchor",
    "pixel-contrast",
    "pixel-contrast-memory",
    "protoseg-ppc-ppd",
    "wdass-prototype-contrast",
)
SLOW_CASES = ("pixel-contrast-memory",)


def make_inputs(b: int, d: int, h: int, w: int, k: int, device: torch.device, seed: int = 0):
    """Embeddings B x D x h x w, street-like blob labels B x 8h x 8w and predictions.

    Labels are a coarse random class map upsampled (so classes form regions of very
    different sizes, as in real scenes) with 5 % ignored; predictions agree with the
    labels except on 30 % of the coarse cells.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (b, 1, max(2, h // 8), max(2, w // 8)), generator=g).float()
    labels = F.interpolate(coarse, size=(8 * h, 8 * w), mode="nearest")[:, 0].long()
    wrong = torch.rand(coarse.shape, generator=g) < 0.3
    pred_coarse = torch.where(wrong, torch.randint(0, k, coarse.shape, generator=g).float(), coarse)
    predictions = F.interpolate(pred_coarse, size=(h, w), mode="nearest")[:, 0].long()
    labels[torch.rand(labels.shape, generator=g) < 0.05] = 255
    embeddings = torch.randn(b, d, h, w, generator=g)
    return embeddings.to(device), labels.to(device), predictions.to(device)


def build_case(name: str, d: int, k: int, device: torch.device, inputs) -> Callable[[], None]:
    """A closure running one forward+backward of ``name`` on fresh-gradient inputs."""
    from contraseg.losses import PixelContrastLoss, PPCLoss, PPDLoss, PrototypeContrastLoss, ProACLoss
    from contraseg.prototypes import NearestPrototypeHead, hyperspherical_prototypes
    from contraseg.sampling import PixelMemoryBank

    emb, labels, preds = inputs
    b, _, h, w = emb.shape
    protos = hyperspherical_prototypes(k, d).to(device)

    def leaf():
        return emb.detach().requires_grad_(True)

    if name == "matmul-floor":
        weight = protos.T.contiguous()
        flat = emb.permute(0, 2, 3, 1).reshape(-1, d).contiguous()

        def run():
            x = flat.detach().requires_grad_(True)
            (x @ weight).sum().backward()

        return run
    if name in ("proac", "proac-pixel-anchor"):
        loss_fn = ProACLoss(protos, anchor="pixel" if name.endswith("anchor") else "prototype").to(device)
        return lambda: loss_fn(leaf(), labels).backward()
    if name == "pixel-contrast":
        loss_fn = PixelContrastLoss().to(device)
        return lambda: loss_fn(leaf(), labels, preds).backward()
    if name == "pixel-contrast-memory":
        bank = PixelMemoryBank(k, d).to(device)
        gen = torch.Generator().manual_seed(1)
        for queue, count in ((bank.pixel_queue, bank.pixel_count), (bank.segment_queue, bank.segment_count)):
            queue.copy_(F.normalize(torch.randn(queue.shape, generator=gen), dim=-1).to(device))
            count.fill_(queue.shape[1])
        loss_fn = PixelContrastLoss(memory=bank).to(device)
        return lambda: loss_fn(leaf(), labels, preds).backward()
    if name == "protoseg-ppc-ppd":
        head = NearestPrototypeHead(k, 10, d).to(device)
        ppc, ppd = PPCLoss(), PPDLoss()

        def run():
            out = head(leaf())
            targets = head.assign(emb, labels, out["logits"], prototype_logits=out["prototype_logits"])
            (ppc(out["prototype_logits"], targets) + ppd(out["prototype_logits"], targets)).backward()

        return run
    if name == "wdass-prototype-contrast":
        loss_fn = PrototypeContrastLoss()
        return lambda: loss_fn(leaf(), labels, protos).backward()
    raise ValueError(f"unknown case {name!r}; known: {', '.join(CASES)}")


def sampler_times(inputs, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median times of the vectorised and the per-class-loop sampler, interleaved."""
    from contraseg.losses._pixels import resize_labels
    from contraseg.sampling import HardAnchorSampler, LoopAnchorSampler

    emb, labels, preds = inputs
    small = resize_labels(labels, tuple(emb.shape[-2:]))
    fast, loop = HardAnchorSampler(), LoopAnchorSampler()
    gen = torch.Generator(device=device).manual_seed(0)
    times = interleaved_median_times(
        {"fast": lambda: fast(small, preds, generator=gen), "loop": lambda: loop(small, preds, generator=gen)},
        device, repeats,
    )
    return times["fast"], times["loop"]


def _peak(run: Callable[[], None], device: torch.device) -> int:
    run()  # warm-up: lazy one-time allocations are not the loss's
    return cuda_peak_bytes(run, device) if device.type == "cuda" else cpu_peak_bytes(run)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    parser = argparse.ArgumentParser(prog="python -m contraseg.bench losses", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES), help="e.g. 65x129,129x257")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 gives ratios that a busy machine disturbs least)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases: unknown case {c!r}; known: {', '.join(CASES)}")
    if "matmul-floor" not in cases:
        cases.insert(0, "matmul-floor")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; B={args.batch} D={args.dim} K={args.classes}; "
          f"median of {args.repeats} interleaved rounds (memory bank: 3)")
    print()
    print("| loss | h x w | N | fwd+bwd ms | / floor | peak memory | / floor |")
    print("|---|---|---|---|---|---|---|")
    sampler_rows = []
    for h, w in sizes:
        inputs = make_inputs(args.batch, args.dim, h, w, args.classes, device)
        n = args.batch * h * w
        runs = {case: build_case(case, args.dim, args.classes, device, inputs) for case in cases}
        # The slow memory-bank case would dominate the rounds: it gets its own, fewer.
        slow = {c: runs.pop(c) for c in list(runs) if c in SLOW_CASES}
        times = interleaved_median_times(runs, device, args.repeats)
        for case, run in slow.items():
            times[case] = median_time(run, device, repeats=3, warmup=1)
        for case in cases:
            t = times[case]
            m = None if args.no_memory else _peak(runs.get(case) or slow[case], device)
            if case == "matmul-floor":
                floor_t, floor_m = t, m
            mem = "-" if m is None else fmt_bytes(m)
            mem_ratio = "-" if m is None or not floor_m else f"{m / floor_m:.1f}x"
            print(f"| {case} | {h} x {w} | {n} | {t * 1e3:.1f} | {t / floor_t:.2f}x | {mem} | {mem_ratio} |", flush=True)
        t_fast, t_loop = sampler_times(inputs, device, args.repeats)
        sampler_rows.append((h, w, t_fast, t_loop))
    print()
    print("| anchor sampler | h x w | vectorised ms | per-class loop ms | speed-up |")
    print("|---|---|---|---|---|")
    for h, w, t_fast, t_loop in sampler_rows:
        print(f"| HardAnchorSampler vs LoopAnchorSampler | {h} x {w} | {t_fast * 1e3:.2f} | {t_loop * 1e3:.2f} | {t_loop / t_fast:.1f}x |")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
