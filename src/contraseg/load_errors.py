"""One clean clause for why ``torch.load`` could not read a file.

torch's messages run to several sentences (the zip reader's "... If you are seeing this
error, there is a high likelihood that your checkpoint file is corrupted. This can happen
if ...") and the ``weights_only`` failure repeats its own advice twice. Cutting them at a
fixed length cut sentences in half. :func:`describe_load_error` names the failure in our
words (truncated zip, a pickle that needs code, not a torch file) and otherwise keeps the
first whole sentence; callers add their own advice, once.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_REASON = 200


def describe_load_error(err: BaseException) -> str:
    """A short reason for ``err`` raised by ``torch.load`` (no advice, no trailing period)."""
    text = " ".join(str(err).split())
    if "failed finding central directory" in text or "PytorchStreamReader failed" in text:
        return "truncated or corrupt (not a complete zip archive)"
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            return f"holds pickled Python objects ({found.group(1)}) that loading without running code refuses"
        detail = re.search(r"WeightsUnpickler error: ([^.]*?)(?:\s+Check the|\.|$)", text)
        return "not a torch-saved file, or a corrupt one" + (f" (unpickler: {detail.group(1).strip()})"
                                                              if detail and detail.group(1).strip() else "")
    if "invalid load key" in text or isinstance(err, EOFError) or "Ran out of input" in text:
        return "not a torch-saved file (or an empty / truncated one)"
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".") if text else type(err).__name__
    if len(first) > MAX_REASON:
        first = first[:MAX_REASON].rsplit(" ", 1)[0] + " ..."
    return f"{type(err).__name__}: {first}"


def not_a_file_message(path: str | Path, what: str) -> str:
    """``path`` is missing or a folder: the one line that says which."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pth"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        return f"{path} is a folder, not a {what} file{hint}"
    return f"{what} not found: {path}"
