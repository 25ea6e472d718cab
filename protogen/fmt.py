"""Literal formatters for generated source (a leaf module: layer types' ``torch_source`` and
:mod:`protogen.torch_codegen` import it; it imports nothing of protogen)."""
from __future__ import annotations

from ._lazy import numpy as np


def num(v) -> str:
    """A float literal for a float32 parameter: the shortest text that reads back as the same
    float32 value (``1e-05``, not ``9.999999747378752e-06``)."""
    f = np.float32(v)
    if not np.isfinite(f):
        return f"float('{f}')"
    s = str(f)
    return s if any(c in s for c in ".en") else s + ".0"


def pair(a: int, b: int) -> str:
    """``3`` for equal values, else ``(3, 5)`` (PyTorch's int-or-tuple arguments)."""
    return str(a) if a == b else f"({a}, {b})"


def printable(text: str) -> str:
    """``text`` safe inside a ``#`` comment or a docstring of generated source: backslashes,
    quotes and every non-printable character (line breaks, U+2028, controls) escaped; other
    Unicode kept as it is."""
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
