"""Small shared helpers: atomic file output, unique names."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import ProtogenError


class OutputError(ProtogenError, OSError):
    """An output file cannot be written: one CLI line (exit 2), still an OSError for callers."""


def _output_error(message: str, file: str) -> OutputError:
    return OutputError(message, file=file)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On any error the temporary file is removed, so no half-written output is ever left.
    """
    shown = str(path)
    if shown.endswith(("/", os.sep)) or Path(path).is_dir():
        raise _output_error("cannot write: is a directory (name an output file)", shown)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _output_error(f"cannot write: {e.strerror or e}", shown) from None
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _output_error(f"cannot write: {e.strerror or e}", shown) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def unique_name(base: str, used: set) -> str:
    """``base``, else ``base_2``, ``base_3``... : the first not in ``used`` (which gets it)."""
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name
