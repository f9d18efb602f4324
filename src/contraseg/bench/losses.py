"""``python -m contraseg.bench losses``: forward+backward time and peak memory of every loss.

For B=4, D=256, K=19 and h x w = 65 x 129 and 129 x 257 (the 1/8 grids of 513 x 1025
and 1025 x 2049 Cityscapes crops), each loss is timed (median after warm-up) and its
peak memory measured, and both are divided by the floor: one matmul of the same
N x D x K shape, forward and backward (N = B*h*w). A second table compares the
vectorised anchor sampler of pixel contrast with the per-class-loop reference.

A third table puts pixel contrast against a full memory bank (``--memory-size`` pixel +
segment entries per class, the paper's 5000 + 5000 by default) beside its own floor,
the three matmuls of A anchors x D x M bank entries (forward, and the two of
backward), and beside the dense implementation it replaced (``memory_impl="dense"``),
all timed in the same interleaved rounds; the streaming loss's peak memory is also
measured with a bank a quarter the size. The per-anchor example sampling strategies
(``--memory-sampling``: random, hardest, semi_hard; issue 23) are rows of the same table,
against the same floor. ``--busy`` adds a table of ProAC under load:
its ratio to the floor with and without another process spinning on one core, for
several chunk sizes of :func:`contraseg.losses.similarity.chunk_rows` and thread counts.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F

from .timing import cpu_peak_bytes, cuda_peak_bytes, fmt_bytes, interleaved_median_times

SIZES = ((65, 129), (129, 257))
CASES = (
    "matmul-floor",
    "proac",
    "proac-pixel-anchor",
    "pixel-contrast",
    "protoseg-ppc-ppd",
    "wdass-prototype-contrast",
)
# The memory-bank cases have their own table and floor (see memory_bank_rows).
MEMORY_CASES = ("memory-floor", "pixel-contrast-memory", "pixel-contrast-memory-dense")
# Per-anchor example sampling over the bank (losses/memory_sampling.py): one case per strategy.
SAMPLING_CASES = tuple(f"pixel-contrast-memory-{s}" for s in ("random", "hardest", "semi_hard"))


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


def full_bank(k: int, d: int, size: int, device: torch.device, seed: int = 1):
    """A ``PixelMemoryBank`` with ``size`` pixel and ``size`` segment entries in every class
    (random unit vectors: a full bank is the steady state of training)."""
    from contraseg.sampling import PixelMemoryBank

    bank = PixelMemoryBank(k, d, pixel_size=size, segment_size=size).to(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for queue, count in ((bank.pixel_queue, bank.pixel_count), (bank.segment_queue, bank.segment_count)):
            queue.copy_(F.normalize(torch.randn(queue.shape, generator=gen), dim=-1).to(device))
            count.fill_(queue.shape[1])
    return bank


def memory_floor(num_anchors: int, bank_entries: int, d: int, device: torch.device) -> Callable[[], None]:
    """The three matmuls of A x D anchors against M x D entries: forward, and the two of backward."""
    gen = torch.Generator().manual_seed(2)
    anchors = torch.randn(num_anchors, d, generator=gen).to(device)
    entries = torch.randn(bank_entries, d, generator=gen).to(device)
    grad = torch.randn(num_anchors, bank_entries, generator=gen).to(device)

    def run():
        a, e = anchors.detach().requires_grad_(True), entries.detach().requires_grad_(True)
        (a @ e.T).backward(grad)

    return run


def build_case(name: str, d: int, k: int, device: torch.device, inputs, memory_size: int = 5000,
               max_samples: int = 1024, max_views: int = 100) -> Callable[[], None]:
    """A closure running one forward+backward of ``name`` on fresh-gradient inputs.

    ``memory_size``, ``max_samples`` and ``max_views`` are used by the memory-bank cases
    (bank entries per class and kind; the anchor sampler's caps).
    """
    from contraseg.losses import PixelContrastLoss, PPCLoss, PPDLoss, PrototypeContrastLoss, ProACLoss
    from contraseg.prototypes import NearestPrototypeHead, hyperspherical_prototypes

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
    if name in ("pixel-contrast-memory", "pixel-contrast-memory-dense") + SAMPLING_CASES:
        bank = full_bank(k, d, memory_size, device)
        impl = "dense" if name.endswith("dense") else "streaming"
        sampling = name[len("pixel-contrast-memory-"):] if name in SAMPLING_CASES else "all"
        loss_fn = PixelContrastLoss(memory=bank, memory_impl=impl, max_samples=max_samples,
                                    max_views=max_views, memory_sampling=sampling).to(device)
        gen = torch.Generator(device=device)
        return lambda: loss_fn(leaf(), labels, preds, generator=gen.manual_seed(0)).backward()
    if name == "memory-floor":
        return memory_floor(count_anchors(inputs, max_samples, max_views), k * 2 * memory_size, d, device)
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
    raise ValueError(f"unknown case {name!r}; known: {', '.join(CASES + MEMORY_CASES)}")


def count_anchors(inputs, max_samples: int, max_views: int) -> int:
    """How many anchors the pixel-contrast sampler picks on these inputs (A of the floor)."""
    from contraseg._labels import resize_labels
    from contraseg.sampling import HardAnchorSampler

    emb, labels, preds = inputs
    small = resize_labels(labels, tuple(emb.shape[-2:]))
    gen = torch.Generator(device=emb.device).manual_seed(0)
    return HardAnchorSampler(max_samples, max_views)(small, preds, generator=gen).index.numel()


def sampler_times(inputs, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median times of the vectorised and the per-class-loop sampler, interleaved."""
    from contraseg._labels import resize_labels
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


def memory_bank_rows(args, device: torch.device, size: tuple[int, int]) -> list[str]:
    """The memory-bank table: streaming loss, dense loss and their 3-matmul floor, one run."""
    inputs = make_inputs(args.batch, args.dim, *size, args.classes, device)
    anchors = count_anchors(inputs, args.memory_anchors, args.memory_views)
    entries = args.classes * 2 * args.memory_size
    kw = dict(memory_size=args.memory_size, max_samples=args.memory_anchors, max_views=args.memory_views)
    names = ["memory-floor", "pixel-contrast-memory"] + ([] if args.no_dense else ["pixel-contrast-memory-dense"])
    names += [f"pixel-contrast-memory-{s}" for s in args.memory_sampling.split(",") if s]
    runs = {n: build_case(n, args.dim, args.classes, device, inputs, **kw) for n in names}
    times = interleaved_median_times(runs, device, args.memory_repeats, warmup=1)
    rows = []
    for n in names:
        t = times[n]
        m = None if args.no_memory else _peak(runs[n], device)
        dense = times.get("pixel-contrast-memory-dense")
        vs_dense = "-" if dense is None or n == "memory-floor" else f"{t / dense:.2f}x"
        mem = "-" if m is None else fmt_bytes(m)
        rows.append(f"| {n} | {anchors} | {entries} | {t * 1e3:.0f} | {t / times['memory-floor']:.2f}x | "
                    f"{vs_dense} | {mem} |")
    for n in names[1:] if not args.no_memory else ():  # the streaming losses' memory does not depend on the bank
        if n.endswith("dense"):
            continue
        quarter = max(1, args.memory_size // 4)
        run = build_case(n, args.dim, args.classes, device, inputs, **{**kw, "memory_size": quarter})
        rows.append(f"| {n} (bank / 4) | {anchors} | {args.classes * 2 * quarter} | - | - | - | "
                    f"{fmt_bytes(_peak(run, device))} |")
    return rows


class _Spinner:
    """Another process keeping one core busy (``while True: pass``) while in the ``with`` block."""

    def __enter__(self):
        import subprocess
        import sys

        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def busy_rows(args, device: torch.device, size: tuple[int, int]) -> list[str]:
    """ProAC's ratio to the floor, quiet and with one core loaded, per thread count and chunk size."""
    from contraseg.losses import similarity

    inputs = make_inputs(args.batch, args.dim, *size, args.classes, device)
    chunks = [int(c) for c in args.busy_chunks.split(",")]
    threads = [int(t) for t in args.busy_threads.split(",")]
    default_chunk, default_threads = similarity.CHUNK_ROWS, torch.get_num_threads()
    ratios: dict[tuple[int, int, bool], float] = {}
    millis: dict[tuple[int, int, bool], float] = {}
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for loaded in (False, True):
                runs = {"matmul-floor": build_case("matmul-floor", args.dim, args.classes, device, inputs)}
                proac = build_case("proac", args.dim, args.classes, device, inputs)
                for chunk in chunks:
                    def run(chunk=chunk):
                        with similarity.chunk_rows(chunk):
                            proac()
                    runs[f"proac-{chunk}"] = run
                if loaded:
                    with _Spinner():
                        times = interleaved_median_times(runs, device, args.repeats)
                else:
                    times = interleaved_median_times(runs, device, args.repeats)
                for chunk in chunks:
                    ratios[n_threads, chunk, loaded] = times[f"proac-{chunk}"] / times["matmul-floor"]
                    millis[n_threads, chunk, loaded] = times[f"proac-{chunk}"] * 1e3
    finally:
        torch.set_num_threads(default_threads)
    rows = []
    for n_threads in threads:
        for chunk in chunks:
            quiet, busy = ratios[n_threads, chunk, False], ratios[n_threads, chunk, True]
            mark = " (default)" if chunk == default_chunk else ""
            rows.append(f"| {n_threads} | {chunk}{mark} | {millis[n_threads, chunk, False]:.1f} | {quiet:.2f}x | "
                        f"{millis[n_threads, chunk, True]:.1f} | {busy:.2f}x | {busy / quiet:.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    parser = argparse.ArgumentParser(prog="python -m contraseg.bench losses", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES), help="e.g. 65x129,129x257")
    parser.add_argument("--cases", default=",".join(CASES), help="cases of the main table ('' for none)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 gives ratios that a busy machine disturbs least)")
    memory = parser.add_argument_group("memory bank table (on the first of --sizes)")
    memory.add_argument("--memory-size", type=int, default=5000,
                        help="pixel and segment entries per class (0: skip the table)")
    memory.add_argument("--memory-anchors", type=int, default=1024, help="the sampler's max_samples")
    memory.add_argument("--memory-views", type=int, default=100, help="the sampler's max_views")
    memory.add_argument("--memory-repeats", type=int, default=3, help="interleaved rounds")
    memory.add_argument("--no-dense", action="store_true", help="skip the dense implementation")
    memory.add_argument("--memory-sampling", default="random,hardest,semi_hard",
                        help="per-anchor example sampling strategies to add ('' for none)")
    busy = parser.add_argument_group("ProAC under load (on the first of --sizes)")
    busy.add_argument("--busy", action="store_true", help="add the table")
    busy.add_argument("--busy-chunks", default="16,64,256", help="chunk sizes of losses.similarity to try")
    busy.add_argument("--busy-threads", default="1,2", help="thread counts to try")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases: unknown case {c!r}; known: {', '.join(CASES)}")
    if cases and "matmul-floor" not in cases:
        cases.insert(0, "matmul-floor")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; B={args.batch} D={args.dim} K={args.classes}; "
          f"median of {args.repeats} interleaved rounds (memory bank: {args.memory_repeats})")
    sampler_rows = []
    if cases:
        print()
        print("| loss | h x w | N | fwd+bwd ms | / floor | peak memory | / floor |")
        print("|---|---|---|---|---|---|---|")
    for h, w in sizes if cases else ():
        inputs = make_inputs(args.batch, args.dim, h, w, args.classes, device)
        n = args.batch * h * w
        runs = {case: build_case(case, args.dim, args.classes, device, inputs) for case in cases}
        times = interleaved_median_times(runs, device, args.repeats)
        for case in cases:
            t = times[case]
            m = None if args.no_memory else _peak(runs[case], device)
            if case == "matmul-floor":
                floor_t, floor_m = t, m
            mem = "-" if m is None else fmt_bytes(m)
            mem_ratio = "-" if m is None or not floor_m else f"{m / floor_m:.1f}x"
            print(f"| {case} | {h} x {w} | {n} | {t * 1e3:.1f} | {t / floor_t:.2f}x | {mem} | {mem_ratio} |", flush=True)
        t_fast, t_loop = sampler_times(inputs, device, args.repeats)
        sampler_rows.append((h, w, t_fast, t_loop))
    if sampler_rows:
        print()
        print("| anchor sampler | h x w | vectorised ms | per-class loop ms | speed-up |")
        print("|---|---|---|---|---|")
    for h, w, t_fast, t_loop in sampler_rows:
        print(f"| HardAnchorSampler vs LoopAnchorSampler | {h} x {w} | {t_fast * 1e3:.2f} | {t_loop * 1e3:.2f} | {t_loop / t_fast:.1f}x |")
    if args.memory_size > 0:
        print()
        print(f"memory bank: {args.memory_size} pixel + {args.memory_size} segment entries per class, "
              f"max_samples={args.memory_anchors}, max_views={args.memory_views}, {sizes[0][0]} x {sizes[0][1]}; "
              f"floor = 3 matmuls of anchors x D x entries")
        print()
        print("| memory bank | anchors | entries | fwd+bwd ms | / floor | / dense | peak memory |")
        print("|---|---|---|---|---|---|---|")
        for row in memory_bank_rows(args, device, sizes[0]):
            print(row, flush=True)
    if args.busy:
        print()
        print(f"ProAC / matmul floor at {sizes[0][0]} x {sizes[0][1]}, without and with another process "
              f"spinning on one core (same run)")
        print()
        print("| threads | similarity chunk | ProAC ms | / floor | ProAC ms, one core loaded | / floor | "
              "loaded / quiet ratio |")
        print("|---|---|---|---|---|---|---|")
        for row in busy_rows(args, device, sizes[0]):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
