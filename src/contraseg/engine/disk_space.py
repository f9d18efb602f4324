"""What a failed checkpoint write really was: torch's zip writer hides ENOSPC.

``torch.save`` writes through PyTorch's C++ ``PyTorchStreamWriter``; when ``write(2)``
comes up short on a full disk it raises ``RuntimeError: [enforce fail at
inline_container.cc:NNN] . unexpected pos X vs Y`` with no errno (seen with torch 2.14 on a
2 MB tmpfs), sometimes while handling the OSError of the failed write (then that OSError is
the cause). :func:`explain_write_failure` re-checks the folder after such an error, while the
partial temp file still takes its room: if
``os.statvfs`` reports too little room for the bytes torch tried to write, or a probe
write of :data:`PROBE_BYTES` fails with an OSError, that OSError (ENOSPC, EDQUOT, EROFS,
...) is the real cause and is returned naming the target file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

PROBE_BYTES = 1 << 16  # 64 KiB: less than any checkpoint, more than the filesystem's slack


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use in ``folder`` (None when unknown)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def probe_write(folder: str | os.PathLike, size: int = PROBE_BYTES) -> OSError | None:
    """Write and delete ``size`` bytes in ``folder``; the OSError it raised, or None."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".space-probe.", suffix=".tmp")
    except OSError as err:
        return err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        return err
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass
    return None


def explain_write_failure(err: BaseException, path: str | os.PathLike, attempted: int | None = None) -> OSError | None:
    """The OSError behind ``err`` (torch's writer RuntimeError) when writing ``path``, or None.

    ``attempted``: how many bytes the write needed, if known (the temp file's size at the
    failure is a lower bound). The returned OSError names ``path``.
    """
    if not isinstance(err, RuntimeError) or "inline_container" not in str(err) and "unexpected pos" not in str(err):
        return None
    cause = err.__cause__ or err.__context__  # the writer sometimes fails while handling the OSError
    if isinstance(cause, OSError) and cause.errno is not None:
        return OSError(cause.errno, cause.strerror or str(cause), str(path))
    folder = Path(path).parent
    room = free_bytes(folder)
    if room is not None and room < max(PROBE_BYTES, attempted or 0):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    probed = probe_write(folder)
    if probed is not None:
        return OSError(probed.errno, probed.strerror or str(probed), str(path))
    return None
