"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every file that fedx writes and later trusts (result.json, checkpoints, models, keys) goes through
here. The bytes go to a temporary file beside the target (same folder, so the rename is atomic),
with its permission bits set before any byte lands, and are flushed to disk before the rename. A
failed write leaves the old file as it was and no temporary file behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["atomic_file", "json_default", "write_atomic"]


@contextmanager
def atomic_file(path: str | Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` when the block ends without error.

    Parameters
    ----------
    path : str or Path
        The file to write; its folder must exist.
    mode : int
        Permission bits of the new file (``0o600`` for secrets), set exactly, whatever the umask.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may only have narrowed it; make it exact
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str, *, mode: int = 0o644) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; see :func:`atomic_file`."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)`` for checkpoints: numpy scalars and arrays as Python values."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")
