"""Structural comparison of two graphs: do they compute the same function (up to weights)?

``diff_graphs(a, b)`` walks net A layer by layer, in order, and finds each layer's
counterpart in net B **by dataflow**: the B layer that reads the corresponding inputs. Then
it compares:

* the layer type (a fork spelling that subclasses a type, e.g. ``ConvolutionDepthwise`` of
  ``Convolution``, counts as that type);
* the parameters, i.e. the layer's params dataclass as normalised by the layer type's
  ``canonical_params`` (``use_global_stats`` resolved by phase, a pooling window that covers
  the whole input = global pooling, ...). Floats are compared at float32 precision, since
  prototxt stores them as float32;
* which inputs it reads (wiring), the loss weight, and every output shape (batch 1).

Ignored, because they do not change what the net computes: layer and blob names (a pure
rename), in-place vs out-of-place tops, fillers, learning-rate/decay multipliers, Caffe's
own ``Split`` layers, the data source of ``Data``/``Input`` layers (only their output shapes,
batch excluded, are compared) and, on request, ``Dropout`` layers (identity at test time).
The bottoms of element-wise SUM/PROD/MAX are compared as a multiset (order is irrelevant),
those of Concat in order.

Dataflow alignment makes the comparison independent of how the two files order independent
branches (e.g. a residual shortcut listed before or after the residual branch). When two
sibling layers read the same input with identical parameters, the first in B's order is
taken.

The result is ``None`` (equal) or the FIRST :class:`Difference`, naming both layers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ProtogenError
from .ir import DEPLOY, TEST, TRAIN_VAL, Graph, Layer, Step

#: layer types that only copy their input (dropped from both nets before comparing)
ALWAYS_SKIPPED = ("Split",)


@dataclass
class Difference:
    """The first place where two nets differ."""
    what: str                   # type | params | inputs | shape | loss_weight | missing | extra | tops
    message: str
    a_layer: str | None = None
    b_layer: str | None = None
    a_index: int | None = None  # position among the compared layers of A
    b_index: int | None = None
    details: list = field(default_factory=list)   # (field, value in A, value in B)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"what": self.what, "message": self.message, "a_layer": self.a_layer,
                "b_layer": self.b_layer, "a_index": self.a_index, "b_index": self.b_index,
                "details": [{"field": f, "a": _jsonable(x), "b": _jsonable(y)} for f, x, y in self.details]}


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, frozenset):
        return sorted(v)
    return v


# ----------------------------------------------------------------------------- helpers
def _same_value(x, y) -> bool:
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_same_value(a, b) for a, b in zip(x, y))
    if isinstance(x, bool) or isinstance(y, bool):
        return x is y or x == y
    if isinstance(x, float) or isinstance(y, float):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return math.isclose(float(x), float(y), rel_tol=2e-7, abs_tol=1e-30)
    return x == y


def param_differences(pa, pb) -> list[tuple[str, object, object]]:
    """(field, value in a, value in b) for every field of two params dataclasses that differs."""
    if type(pa) is not type(pb):
        return [("params", type(pa).__name__, type(pb).__name__)]
    if not dataclasses.is_dataclass(pa):
        return [] if _same_value(pa, pb) else [("params", pa, pb)]
    out = []
    for f in dataclasses.fields(pa):
        x, y = getattr(pa, f.name), getattr(pb, f.name)
        if not _same_value(x, y):
            out.append((f.name, x, y))
    return out


def _same_kind(ta, tb) -> bool:
    return isinstance(ta, type(tb)) or isinstance(tb, type(ta))


def _loss_weights(layer: Layer) -> list[float]:
    n = len(layer.tops)
    default = 1.0 if layer.kind.is_loss else 0.0
    lw = list(layer.loss_weight)
    # Caffe: the first top of a loss layer gets weight 1 unless told otherwise; others 0
    return [lw[i] if i < len(lw) else (default if i == 0 else 0.0) for i in range(n)]


def _fmt_shape(s) -> str:
    return "x".join(str(d) for d in s) if s else "scalar"


def _describe(layer: Layer | None) -> str:
    return "(none)" if layer is None else f"'{layer.name}' ({layer.type})"


def _view(graph: Graph, net: str | None, phase: str | None) -> Graph:
    """The layers of ``graph`` active in ``net`` and ``phase`` (when they are marked)."""
    v = graph.select(net=net)
    if phase is not None and any(l.phases for l in v.layers):
        v = v.select(phase=phase)
    return v


def _batch_one(view: Graph) -> dict:
    from .stats import batch_one
    return batch_one(view)


def _order_free(layer: Layer) -> bool:
    """Bottoms whose order does not matter: element-wise SUM/PROD/MAX (an Eltwise)."""
    return getattr(layer.params, "operation", None) in ("SUM", "PROD", "MAX")


# ----------------------------------------------------------------------------- the walk
class _Side:
    def __init__(self, graph: Graph, net, phase, skip: tuple[str, ...], file: str | None):
        self.view = _view(graph, net, phase)
        steps = self.view.steps(_batch_one(self.view), file=file)
        self.alias: dict[str, str] = {}     # SSA value of a skipped layer -> its input value
        self.steps: list[Step] = []
        for st in steps:
            if st.layer.type in skip and st.inputs:
                for o in st.outputs:
                    self.alias[o] = self.resolve(st.inputs[0])
                continue
            self.steps.append(st)
        self.ids: dict[str, tuple] = {}     # SSA value -> canonical id (pair index, top index)
        self.matched: set[int] = set()

    def resolve(self, v: str) -> str:
        while v in self.alias:
            v = self.alias[v]
        return v

    def input_ids(self, st: Step) -> list:
        return [self.ids.get(self.resolve(v)) for v in st.inputs]


def _canon(st: Step, phase):
    return st.layer.kind.canonical_params(st.layer.params, st.in_shapes, phase)


def _key(ids: list, layer: Layer):
    """The inputs as compared: in order, or as a multiset of (input, coefficient)."""
    if not _order_free(layer):
        return ids
    coeff = tuple(getattr(layer.params, "coeff", ()) or (1.0,) * len(ids))
    return sorted(zip(map(repr, ids), (round(c, 6) for c in coeff)))


def diff_graphs(a: Graph, b: Graph, *, net: str | None = DEPLOY, phase: str | None = TEST,
                ignore_dropout: bool = False, file_a: str | None = None,
                file_b: str | None = None) -> Difference | None:
    """Compare the ``net`` view (deploy/train_val) of two graphs in ``phase``; see module doc."""
    skip = ALWAYS_SKIPPED + (("Dropout",) if ignore_dropout else ())
    A = _Side(a, net, phase, skip, file_a)
    B = _Side(b, net, phase, skip, file_b)
    pairs = 0
    for ia, sa in enumerate(A.steps):
        la = sa.layer
        ka = la.kind
        want = A.input_ids(sa)
        if ka.is_input:
            cands = [ib for ib, sb in enumerate(B.steps) if ib not in B.matched and sb.layer.kind.is_input]
        else:
            cands = [ib for ib, sb in enumerate(B.steps)
                     if ib not in B.matched and not sb.layer.kind.is_input
                     and len(sb.inputs) == len(sa.inputs)
                     and _key(B.input_ids(sb), sb.layer) == _key(want, la)]
        if not cands:
            nxt = next((ib for ib in range(len(B.steps)) if ib not in B.matched), None)
            lb = B.steps[nxt].layer if nxt is not None else None
            ins = ", ".join(f"'{v}'" for v in sa.layer.bottoms) or "nothing"
            if lb is None:
                msg = (f"layer #{ia} {_describe(la)} of A (reading {ins}) has no counterpart: "
                       f"B has no more layers")
            else:
                msg = (f"layer #{ia} {_describe(la)} of A (reading {ins}) has no counterpart in B "
                       f"reading the same inputs; B's next unmatched layer is #{nxt} {_describe(lb)}")
            return Difference("missing", msg, la.name, lb.name if lb else None, ia, nxt)
        pa = _canon(sa, phase)

        def score(ib):
            sb = B.steps[ib]
            same_kind = _same_kind(ka, sb.layer.kind)
            same_params = same_kind and not param_differences(pa, _canon(sb, phase))
            return (not same_kind, not same_params)
        ib = min(cands, key=lambda i: (score(i), i))
        sb = B.steps[ib]
        lb = sb.layer
        where = f"layer #{ia} {_describe(la)} of A vs #{ib} {_describe(lb)} of B"
        if ka.is_input:
            sha = [s[1:] for s in sa.out_shapes[:1]]
            shb = [s[1:] for s in sb.out_shapes[:1]]
            if sha != shb:
                return Difference("shape", f"{where}: input shape (batch excluded) "
                                  f"{_fmt_shape(sha[0])} vs {_fmt_shape(shb[0])}",
                                  la.name, lb.name, ia, ib, [("shape", sha[0], shb[0])])
        else:
            if not _same_kind(ka, lb.kind):
                return Difference("type", f"{where}: type {la.type} vs {lb.type}",
                                  la.name, lb.name, ia, ib, [("type", la.type, lb.type)])
            d = param_differences(pa, _canon(sb, phase))
            if d:
                txt = ", ".join(f"{f} {x!r} vs {y!r}" for f, x, y in d)
                return Difference("params", f"{where}: parameters differ: {txt}",
                                  la.name, lb.name, ia, ib, d)
            if len(sa.outputs) != len(sb.outputs):
                return Difference("tops", f"{where}: {len(sa.outputs)} vs {len(sb.outputs)} tops",
                                  la.name, lb.name, ia, ib)
            wa, wb = _loss_weights(la), _loss_weights(lb)
            if not _same_value(wa, wb):
                return Difference("loss_weight", f"{where}: loss_weight {wa} vs {wb}",
                                  la.name, lb.name, ia, ib, [("loss_weight", wa, wb)])
            for k, (s1, s2) in enumerate(zip(sa.out_shapes, sb.out_shapes)):
                if tuple(s1) != tuple(s2):
                    return Difference("shape", f"{where}: output shape {_fmt_shape(s1)} vs {_fmt_shape(s2)}"
                                      + (f" (top {k})" if len(sa.out_shapes) > 1 else ""),
                                      la.name, lb.name, ia, ib, [("shape", tuple(s1), tuple(s2))])
        B.matched.add(ib)
        for k, (va, vb) in enumerate(zip(sa.outputs, sb.outputs)):
            A.ids[va] = B.ids[vb] = (pairs, k)
        pairs += 1
    rest = [ib for ib in range(len(B.steps)) if ib not in B.matched]
    if rest:
        lb = B.steps[rest[0]].layer
        return Difference("extra", f"B has {len(rest)} layer(s) more than A, first #{rest[0]} "
                          f"{_describe(lb)} (reading {', '.join(repr(x) for x in lb.bottoms)})",
                          None, lb.name, None, rest[0])
    return None


def summary(graph: Graph, net: str | None = DEPLOY, phase: str | None = TEST,
            ignore_dropout: bool = False) -> dict:
    """Name and compared-layer count of one side (for reports)."""
    skip = ALWAYS_SKIPPED + (("Dropout",) if ignore_dropout else ())
    v = _view(graph, net, phase)
    return {"name": graph.name, "layers": sum(1 for l in v.layers if l.type not in skip)}


def check_nets(net: str | None) -> str | None:
    if net not in (None, DEPLOY, TRAIN_VAL):
        raise ProtogenError(f"unknown net '{net}' (deploy or train_val)")
    return net
