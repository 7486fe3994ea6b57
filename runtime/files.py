"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer goes through a hidden temporary file in the destination's folder (same filesystem,
so ``os.replace`` is atomic) named ``.<name>.<random>.tmp``; on success it is renamed into place,
on failure it is removed and the old file is left untouched. A replaced file keeps its permission
bits; a new one gets the usual ``0666`` minus the umask (``mkstemp`` alone would make it 0600).
A destination that exists and is a device or pipe (``/dev/stdout``) is written in place: it cannot
be replaced by a rename.

``atomic_path`` serves writers that want a path (torch.save, safetensors, PIL, onnx.save);
``write_text_atomic``, ``write_bytes_atomic`` and ``write_json_atomic`` serve the rest.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMPORARY_SUFFIX = ".tmp"


def is_temporary_file(path: Path) -> bool:
    """True for a name this module gives its temporary files (a leftover of a killed process)."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def temporary_path(final: str | os.PathLike) -> Path:
    """A fresh, empty hidden file next to ``final`` (its folder is created). The caller writes it and
    then calls :func:`publish`, or removes it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMPORARY_SUFFIX, dir=final.parent)
    os.close(handle)
    return Path(name)


def publish(temporary: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Rename a finished temporary file over ``final``, with ``final``'s permission bits if it exists."""
    final = Path(final)
    try:
        mode = stat.S_IMODE(os.stat(final).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    os.chmod(temporary, mode)
    os.replace(temporary, final)
    return final


@contextmanager
def atomic_path(final: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final``, on failure it is removed.

    ``durable`` flushes the file to the disk before the rename (for files that must survive a power
    cut, such as training checkpoints). A device or pipe is yielded itself, to be written in place.
    """
    final = Path(final)
    if _is_device_or_pipe(final):
        yield final
        return
    temporary = temporary_path(final)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
        publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        stream.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, errors: str = "strict") -> Path:
    """UTF-8, newlines as given (no platform translation). ``errors="surrogateescape"`` writes
    file names that are not valid UTF-8 back as their original bytes."""
    return write_bytes_atomic(path, text.encode("utf-8", errors))


def write_json_atomic(path: str | os.PathLike, data, sort_keys: bool = True) -> Path:
    """Indented JSON; NaN and infinities (not valid JSON) are written as null."""
    return write_text_atomic(path, json.dumps(json_safe(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")


def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _is_device_or_pipe(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return mask
