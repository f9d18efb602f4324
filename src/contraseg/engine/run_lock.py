"""One writer per run folder: a lock held for a training run's life.

``train`` and ``adapt`` hold :class:`RunLock` on ``RUN_DIR/.contraseg.lock`` from before the
run-folder check until the process ends (rank 0 only under torchrun). A second run into the
same folder is refused at once with one line naming the holder (pid, host, start time).

Mechanism: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file (Linux, macOS). The kernel
releases a flock when its process dies, however it dies (SIGKILL included), so a lock file
left by a dead process is stale by construction: the next run takes it and rewrites it.
Where flock is unavailable (no ``fcntl``, or a filesystem that answers ENOLCK/EOPNOTSUPP)
the file's recorded pid and host decide: a lock of this host whose pid is no longer alive
is stale and replaced; a lock of another host is trusted (its liveness cannot be checked).
On release the file is deleted, so a finished run folder holds no lock file.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".contraseg.lock"

try:  # pragma: no cover - platform dependent
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunFolderBusy(Exception):
    """The run folder is held by another live run; ``holder`` is its lock record (or {})."""

    def __init__(self, run_dir: Path, holder: dict[str, Any]) -> None:
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
               if holder else "another process")
        super().__init__(f"run folder {run_dir} is in use by another run ({who}): wait for it to finish, "
                         f"or choose another --run-dir")
        self.holder = holder


def read_holder(path: Path) -> dict[str, Any]:
    """The lock record ``{"pid", "host", "started"}`` of ``path`` ({} if absent or unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict[str, Any]) -> bool:
    """A record left by a dead process of this host (no record at all counts as stale)."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        return not pid_alive(int(holder.get("pid", -1)))
    except (TypeError, ValueError):
        return True


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder's lock (creating the folder).

    Raises:
        RunFolderBusy: another live process holds it.
        OSError: the folder or lock file cannot be created (e.g. a file in the way).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the file may be deleted by its releasing holder meanwhile: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._flock(fd):
                    holder = read_holder(self.path)
                    if not is_stale(holder):
                        raise RunFolderBusy(self.run_dir, holder)
                if self._same_file(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        else:
            raise RunFolderBusy(self.run_dir, read_holder(self.path))
        try:
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _flock(self, fd: int) -> bool:
        """True when flock decided (taken, or raised RunFolderBusy); False to fall back to the record."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            raise RunFolderBusy(self.run_dir, read_holder(self.path)) from None
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return False
            raise

    def release(self) -> None:
        """Delete the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if self.created:  # a folder this lock created and nothing else used goes too
            try:
                self.run_dir.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
