"""Caffe files -> IR: prototxt (any format version) and caffemodel weights."""
from __future__ import annotations

from ..errors import ProtogenError
from ..ir import Graph
from .prototxt import graph_from_net_param, read_prototxt


def load_prototxt(path, phase: str | None = None) -> Graph:
    """Read a prototxt as an IR graph (the ``phase`` view when given)."""
    msg = read_prototxt(path)
    if msg.layers:
        raise ProtogenError("legacy V0/V1 'layers' nets are not supported yet", file=str(path))
    g = graph_from_net_param(msg, file=str(path))
    return g.select(phase=phase) if phase else g
