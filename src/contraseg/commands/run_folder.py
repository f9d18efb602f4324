"""A run folder's life around ``fit`` for ``train`` and ``adapt``: one writer, no leftovers.

* :func:`held_run_folder` holds :class:`contraseg.engine.run_lock.RunLock` (rank 0) for the
  run's life: a second ``train``/``adapt`` into the same folder ends in one line, exit 2.
* A fresh start (no ``--resume``) that fails before writing a checkpoint removes what it
  wrote (``config.yaml``, ``adapt.yaml``, ``log.jsonl``, ...), so the corrected rerun is not
  refused as "not empty". A run that saved a checkpoint keeps its folder (resume it).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from ..errors import Interrupted, UserError


def _outputs(run_dir: Path) -> set[str]:
    try:
        return {p.name for p in run_dir.iterdir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


@contextlib.contextmanager
def held_run_folder(run_dir: Path, is_main: bool, fresh: bool) -> Iterator[None]:
    """Hold ``run_dir``'s lock (when ``is_main``) around the body; on a failed fresh start
    without a checkpoint, delete the files the body created."""
    from ..engine.run_lock import LOCK_NAME, RunFolderBusy, RunLock

    if not is_main:
        yield
        return
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunFolderBusy as err:
        raise UserError(str(err)) from None
    before = _outputs(run_dir)
    try:
        yield
    except BaseException as err:
        if fresh and not isinstance(err, Interrupted):
            created = _outputs(run_dir) - before - {LOCK_NAME}
            if not any(name.endswith(".pth") for name in created):
                for name in created:
                    path = run_dir / name
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        raise
    finally:
        lock.release()
