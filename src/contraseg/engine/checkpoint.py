"""Atomic, pickle-free training checkpoints.

A checkpoint is a dict of tensors and plain containers/scalars, so it loads with
``torch.load(path, weights_only=True)``: the config is stored as a YAML string, RNG
states as tensors and lists. Keys::

    format        "contraseg-checkpoint"        version   CHECKPOINT_VERSION
    iteration     completed training iterations
    config        the resolved config as YAML text
    model_config  build_segmentor keyword arguments (num_classes included)
    classes       class names; palette: K x 3 lists; ignore_index
    model         model state_dict (prototype bank buffers included)
    optimizer, scaler, regulariser   state_dicts
    scheduler     {"iteration": ...}; sampler {"seed", "position"}
    rng           python / numpy / torch / cuda generator states
    best          {"mIoU", "iteration"}

:func:`save_checkpoint` writes a temp file in the target directory, flushes and fsyncs
it, then ``os.replace`` s it over the target: a crash at any point leaves either the
old complete file or the new complete file, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write

CHECKPOINT_FORMAT = "contraseg-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "iteration", "config", "model_config", "model")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a contraseg checkpoint."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` through a same-directory temp file and ``os.replace``.

    An OSError (a full disk, no permission) is re-raised naming ``path``; the old file
    at ``path`` is untouched and the temp file removed. torch's zip writer reports a full
    disk as a RuntimeError without errno: :func:`contraseg.engine.disk_space.explain_write_failure`
    recovers the OSError behind it.
    """
    from .disk_space import explain_write_failure

    def write(handle: Any) -> None:
        try:
            torch.save(obj, handle)
        except RuntimeError as err:  # checked while the partial temp file still fills the disk
            real = explain_write_failure(err, path)
            if real is None:
                raise
            raise real from None

    try:
        atomic_write(path, write)
    except OSError as err:
        if err.filename is not None and str(err.filename) == str(path):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint dict atomically, adding the format and version keys."""
    missing = [k for k in REQUIRED_KEYS if k not in state and k not in ("format", "version")]
    if missing:
        raise ValueError(f"checkpoint state lacks keys {missing}")
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: one line naming the file when it is missing, corrupt, a
            pickle that needs code to load, or not a contraseg checkpoint.
    """
    from ..load_errors import describe_load_error, not_a_file_message

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(not_a_file_message(path, "checkpoint"))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({describe_load_error(err)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a contraseg checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r}, this contraseg reads {CHECKPOINT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks keys {', '.join(missing)}")
    return state
