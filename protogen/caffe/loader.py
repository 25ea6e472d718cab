"""Caffe files -> IR: prototxt (any format version) and caffemodel weights."""
from __future__ import annotations

from ..errors import ProtogenError
from ..ir import Graph
from .prototxt import graph_from_net_param, read_prototxt
from .upgrade import upgrade_net


def read_net(path):
    """The canonical V2 NetParameter of a prototxt of any format version."""
    msg = read_prototxt(path)
    upgrade_net(msg, file=str(path))
    return msg


def load_prototxt(path, phase: str | None = None) -> Graph:
    """Read a prototxt as an IR graph (the ``phase`` view when given)."""
    msg = read_net(path)
    g = graph_from_net_param(msg, file=str(path))
    return g.select(phase=phase) if phase else g
