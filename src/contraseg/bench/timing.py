"""Timing and peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_times(
    fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 9, warmup: int = 2
) -> dict[str, float]:
    """Median wall time of each ``fn`` in seconds, timed in interleaved rounds.

    Each round runs every function once, so slow drift of a shared machine (other
    processes, frequency changes) hits all of them alike and their ratios stay stable.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronise(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory allocated by ``fn()`` above what was allocated before it."""
    synchronise(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronise(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak CPU memory allocated by ``fn()`` above what was allocated before it.

    torch keeps no allocator statistics on CPU, so the allocations and frees recorded
    by ``torch.profiler`` (``profile_memory=True``) are replayed in time order and the
    highest running total is returned: exact for tensors torch allocates.

    The replay reads the profiler's raw ``[memory]`` records (one per allocation or
    free, with its own time stamp). Summing each operator's net ``self`` memory at the
    operator's start instead misses buffers freed outside an operator, e.g. inside a
    custom ``autograd.Function``, whose frees are booked at the enclosing event's start.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        cpu = torch.device("cpu").type
        changes = sorted(
            (event.start_ns(), event.nbytes())
            for event in prof.profiler.kineto_results.events()
            if event.name() == "[memory]" and str(event.device_type()).lower().endswith(cpu)
        )
    except AttributeError:  # a torch without the raw records: per-operator replay
        changes = sorted(
            (event.time_range.start, event.self_cpu_memory_usage)
            for event in prof.events()
            if event.self_cpu_memory_usage
        )
    current = peak = 0
    for _, delta in changes:
        current += delta
        peak = max(peak, current)
    return peak


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
