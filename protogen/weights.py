"""Seeded weights that keep activations healthy through deep nets.

Convolutions and fully-connected layers get He-normal weights (std sqrt(2/fan_in); fan_in
only for the last classifier), biases are small; BatchNorm statistics are drawn around what
He-initialised convolutions produce (mean ~ N(0, 0.5^2), variance ~ U(1, 2)), with the scale
factor blob 1; Scale gammas ~ U(0.8, 1.2). Each layer draws from its own generator seeded
by (seed, layer name), so the same layer gets the same weights in every net and format.
"""
from __future__ import annotations

import zlib

import numpy as np

from .ir import DEPLOY, Graph


def layer_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def init_weights(graph: Graph, seed: int = 0, net: str = DEPLOY) -> Graph:
    """Fill ``layer.blobs`` of every layer of ``net`` that has weights (in place); returns graph."""
    view = graph.select(net=net)
    phases = {p for l in view.layers if l.phases for p in l.phases}
    done = set()
    for ph in (sorted(phases) or [None]):
        for st in view.select(phase=ph).steps():
            l = st.layer
            if l.name in done:
                continue
            done.add(l.name)
            kind = l.kind
            if kind.weight_shapes(l.params, st.in_shapes):
                l.blobs = kind.init_weights(l.params, st.in_shapes, layer_rng(seed, l.name))
    return graph


def seeded_input(shape, seed: int = 0) -> np.ndarray:
    """The verification input: standard normal, seeded."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 7]).standard_normal(shape).astype(np.float32)
