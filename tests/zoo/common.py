"""Helpers shared by the zoo tests: memoised stats of a zoo net, a layer by name, the MSRA files."""
from __future__ import annotations

from protogen import zoo
from protogen.stats import compute

from tests.helpers import CORPUS

MSRA = CORPUS / "kaiminghe_deep-residual-networks"

_STATS: dict = {}


def stats(name, **opts):
    """protogen.stats.compute of zoo net ``name`` built with ``opts`` (computed once per run)."""
    key = (name, tuple(sorted(opts.items())))
    if key not in _STATS:
        _STATS[key] = compute(zoo.build(name, **opts).graph)
    return _STATS[key]


def layer(net, name):
    return net.graph.layer(name)
