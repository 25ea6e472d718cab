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


def add_auto_tops(net) -> None:
    """Caffe's ``AutoTopBlobs``: a loss layer written without a top still gets one (an
    anonymous blob in Caffe); we name it ``<layer>_auto_top`` so the graph can hold it."""
    from ..layers.base import _REGISTRY
    used = {t for lp in net.layer for t in list(lp.top) + list(lp.bottom)}
    for lp in net.layer:
        kind = _REGISTRY.get(lp.type)
        if kind is not None and kind.is_loss and not lp.top:
            name = f"{lp.name}_auto_top"
            while name in used:
                name += "_"
            used.add(name)
            lp.top.append(name)


def load_prototxt(path, phase: str | None = None) -> Graph:
    """Read a prototxt as an IR graph (the ``phase`` view when given)."""
    msg = read_net(path)
    add_auto_tops(msg)
    g = graph_from_net_param(msg, file=str(path))
    return g.select(phase=phase) if phase else g
