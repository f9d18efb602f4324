"""Deterministic, resumable, sharded sample order for iteration-based training.

The training stream is the concatenation of epoch permutations: epoch e is
``randperm(N)`` drawn from a generator seeded with ``(seed, e)``. Global position g
of the stream is sample ``perm_e[g mod N]`` with ``e = g // N``, and carries the
sample seed ``sample_seed(seed, g)`` that seeds its augmentation. Rank r of W
processes takes the positions ``g = start + r, start + r + W, ...``, so the ranks
see disjoint samples and together the same stream as one process.

Because the order and the augmentation depend only on (seed, g), resuming at
``start = iteration * batch_size * world_size`` reproduces the uninterrupted run.
:func:`stream_loader` is that stream as a DataLoader (the trainers' source and target
streams).
"""

from __future__ import annotations

import signal
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .rng import seeded_rng

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, position: int) -> int:
    """A 32-bit seed for global stream position ``position`` (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch``: ``randperm(size)`` seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(sample_seed(seed, -1 - epoch))
    return torch.randperm(size, generator=generator)


class InfiniteShardedSampler(Sampler[tuple[int, int]]):
    """Endless ``(dataset index, sample seed)`` pairs for one rank, from global position ``start``.

    Args:
        size: dataset length N.
        seed: run seed.
        rank, world_size: this process and the number of processes.
        start: global stream position to begin at (samples consumed by all ranks).
        shuffle: permute each epoch (else the identity order).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
                 shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1 (an empty training set?), got {size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.start, self.shuffle = start, shuffle

    def _order(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            return epoch_permutation(self.size, self.seed, epoch)
        return torch.arange(self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            if position // self.size != epoch:
                epoch = position // self.size
                order = self._order(epoch)
            yield int(order[position % self.size]), sample_seed(self.seed, position)
            position += self.world_size


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs ``dataset[index]`` with the
    Python/NumPy/torch generators seeded by ``seed``: random augmentation becomes a
    function of the sample seed, whatever worker or process loads it."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_rng(seed):
            return self.dataset[index]


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: workers leave Ctrl-C to the main process, which finishes its step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stream_loader(dataset: Any, batch_size: int, seed: int, rank: int, world_size: int, start: int,
                  num_workers: int, pin_memory: bool) -> DataLoader:
    """Rank ``rank``'s endless batches of ``batch_size`` from the stream of ``dataset``
    (:class:`InfiniteShardedSampler` from global position ``start``, each sample augmented
    under its sample seed). Incomplete batches are dropped; workers persist and ignore
    SIGINT; the loader's own generator is seeded with ``seed``, so the global RNG stays
    untouched."""
    sampler = InfiniteShardedSampler(len(dataset), seed, rank, world_size, start=start)
    return DataLoader(
        SeededDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
        pin_memory=pin_memory, persistent_workers=num_workers > 0,
        worker_init_fn=ignore_sigint if num_workers > 0 else None, generator=torch.Generator().manual_seed(seed),
    )


def shard_indices(size: int, rank: int, world_size: int) -> list[int]:
    """Evaluation shard of rank r: ``r, r + W, r + 2W, ...`` (disjoint, no padding, so
    every sample is counted exactly once over all ranks)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return list(range(rank, size, world_size))
