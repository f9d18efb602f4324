"""Random number generator states as checkpoint-safe tensors and lists.

``capture_rng_state`` reads the global Python, NumPy and torch (CPU and CUDA)
generators; ``restore_rng_state`` puts them back, so a resumed run draws the same
numbers as an uninterrupted one. Everything is stored as tensors, ints, floats and
lists, loadable with ``torch.load(..., weights_only=True)``.

``seeded_rng`` runs a block with all three generators seeded and restores them after;
the data pipeline uses it to make each sample's augmentation a function of its seed.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The global generator states: ``{"python", "numpy", "torch", "cuda"}``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global generators to a state from :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the block with Python, NumPy and torch CPU generators seeded with ``seed``;
    the previous states are restored afterwards."""
    py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(tch)


def gather_rng_states(distributed: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's RNG state (:func:`capture_rng_state`), in rank order; a collective
    ``all_gather_object`` under DDP (every rank must call it)."""
    mine = capture_rng_state()  # CPU tensors and plain values
    if not distributed:
        return [mine]
    import torch.distributed as dist

    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, mine)
    return everyone
