"""Seeded head weights a layer type asks for: the part of :func:`protogen.weights.seeded_weights`
that scales the layers feeding a detector's decoding layer.

A layer type with ``seeded_bottom_scales`` (``{bottom index: factor}``, e.g. SSH's
ProposalLayer: scores 0.4, deltas 0.12) gets, for each such bottom, the first layer with
weights upstream of it (through weightless layers such as Softmax and Reshape) scaled by the
factor: all its blobs (weights and bias), so that its output is scaled by the factor. Only a
layer whose output is linear in its blobs qualifies (a convolution, an inner product, a Scale),
never a BatchNorm-like layer (``calibrates``); a layer feeding two such bottoms is scaled once.
Only numpy.
"""
from __future__ import annotations

import numpy as np

from .ir import DEPLOY, TEST, Graph


def head_layers(resolved) -> list[tuple[object, float]]:
    """``(layer, factor)`` for every head layer to scale in ``resolved`` (a Resolved view)."""
    out, seen = [], set()
    for st in resolved.steps:
        scales = getattr(st.layer.kind, "seeded_bottom_scales", None)
        for i, factor in (scales or {}).items():
            layer = _weighted_producer(resolved, st.inputs[i]) if i < len(st.inputs) else None
            if layer is not None and id(layer) not in seen:
                seen.add(id(layer))
                out.append((layer, float(factor)))
    return out


def _weighted_producer(resolved, v: str):
    st = resolved.producer.get(v)
    while st is not None and not st.layer.blobs and not st.layer.kind.is_input and st.inputs:
        st = resolved.producer.get(st.inputs[0])
    if st is None or not st.layer.blobs or st.layer.kind.calibrates or len(st.layer.blobs) > 2:
        return None
    return st.layer


def scale_seeded_heads(graph: Graph, net: str = DEPLOY) -> Graph:
    """Scale the head layers of ``graph``'s ``net``/TEST view in place (see the module doc)."""
    for layer, factor in head_layers(graph.select(net=net, phase=TEST).resolve()):
        layer.blobs = [(np.asarray(b, np.float32) * np.float32(factor)).astype(np.float32)
                       for b in layer.blobs]
    return graph
