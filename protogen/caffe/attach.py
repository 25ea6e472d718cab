"""Caffemodel blobs -> the graph's layers, as Caffe's ``Net::CopyTrainedLayersFrom`` does
(BVLC/caffe src/caffe/net.cpp):

* each caffemodel layer copies its blobs into the FIRST net layer of the same name (a net may
  repeat a name: later layers of that name keep their initial values); caffemodel layers the
  net lacks are ignored; a different blob count or shape is an error;
* a layer the caffemodel has no blobs for keeps what its LayerSetUp gave it: the prototxt's
  filler when it is deterministic, else the layer's default (:mod:`protogen.caffe.fill`), said
  in a note; random fillers cannot be reproduced, and every such layer is named at once;
* blobs shared through ``param { name: ... }`` are one blob in Caffe (Net::AppendParam makes
  each sharer's blob share the owner's data), so each copy from the caffemodel overwrites the
  same memory: the value is the LAST copy in caffemodel order among the sharing layers, and
  every sharer gets it.
"""
from __future__ import annotations

import os

from ..errors import ProtogenError, UnsupportedError
from ..ir import Graph
from . import fill

#: refuse nets whose weights would need more elements than this before allocating anything
MAX_WEIGHT_ELEMENTS = 2 ** 32


def fit_blob(arr, want: tuple, file, layer: str, i: int, legacy_rank: int = 4):
    """A caffemodel blob as the expected weight shape. Legacy 4-D (num, channels, height,
    width) blobs are aligned from the end (Caffe's Blob::ShapeEquals: an InnerProduct
    weight stored 1x1xMxN, a bias 1x1x1xN); ``legacy_rank`` 5: C3D's 5-D blobs (num,
    channels, length, height, width; caffemodel.py), a weight 1x1x1xMxN, a bias 1x1x1x1xN."""
    have = tuple(int(d) for d in arr.shape)
    if have == want:
        return arr
    r = legacy_rank
    if len(have) == r and len(want) <= r and have == (1,) * (r - len(want)) + want:
        return arr.reshape(want)
    raise ProtogenError(f"weight blob {i} has shape {have} in the caffemodel but the net needs "
                        f"{want}", file=file, layer=layer)


def _initial(l, want, fillers: dict):
    """(blobs, problem): Caffe's initial blobs of layer ``l`` (no caffemodel entry)."""
    specs = [fill.filler_spec(fillers, l.kind.param_field, i) for i in range(len(want))]
    if any(s is None for s in specs):
        return None, (f"the caffemodel has no weights for this {l.type} layer, and protogen "
                      "does not know how Caffe initialises its blobs")
    random = sorted({f"{s[0]} ({s[1]})" for s in specs if s[1] not in fill.DETERMINISTIC})
    if random:
        return None, (f"the caffemodel has no weights for this {l.type} layer and its "
                      f"{', '.join(random)} filler is random: Caffe's values cannot be reproduced")
    try:
        return [fill.initial_blob(s, shape) for s, shape in zip(specs, want)], None
    except ValueError as e:
        return None, f"the caffemodel has no weights for this {l.type} layer: {e}"


def attach_weights(graph: Graph, model, file: str | None = None, fillers: dict | None = None,
                   no_source=(), notes: list | None = None) -> Graph:
    """``model``: a :class:`CaffeModel`, a caffemodel path or None (only the size check).
    ``fillers``: FillerParameters per layer name (:func:`fill.fillers_of`); ``no_source``:
    layers that must not take caffemodel blobs (later layers of a repeated name, renamed).
    Notes about initial values are appended to ``notes``."""
    if isinstance(model, (str, os.PathLike)):
        from .caffemodel import read_caffemodel
        file = file or str(model)
        model = read_caffemodel(model)
    fillers = fillers or {}
    steps = graph.steps(file=file)
    total = 0
    problems, initial = [], []
    order = {name: i for i, name in enumerate(model.blobs)} if model is not None else {}
    copied: dict[str, int] = {}   # layer -> position of its source in the caffemodel
    for st in steps:
        l = st.layer
        want = [tuple(int(d) for d in s) for s in l.kind.weight_shapes(l.params, st.in_shapes)]
        for s in want:
            n = 1
            for d in s:
                n *= d
            total += n
        if total > MAX_WEIGHT_ELEMENTS:
            raise ProtogenError(f"absurd weight size: the net needs over {MAX_WEIGHT_ELEMENTS} "
                                "weight values", file=file, layer=l.name)
        if model is None:
            continue
        have = None if l.name in no_source else model.blobs.get(l.name)
        if not want:
            if have:
                l.blobs = None
            continue
        if not have:
            blobs, why = _initial(l, want, fillers.get(l.name, {}))
            if why:
                problems.append((l.name, l.type, why))
            else:
                l.blobs = blobs
                initial.append(l.name)
            continue
        if len(have) != len(want):
            raise ProtogenError(f"the caffemodel has {len(have)} weight blob(s) but the {l.type} "
                                f"layer needs {len(want)} (shapes {want})", file=file, layer=l.name)
        rank = getattr(model, "legacy_rank", 4)
        l.blobs = [fit_blob(a, s, file, l.name, i, rank) for i, (a, s) in enumerate(zip(have, want))]
        copied[l.name] = order[l.name]
    if problems:
        raise UnsupportedError(problems, file=file)
    if model is not None:
        _share_params(graph, copied, file)
        if initial and notes is not None:
            more = f" and {len(initial) - 5} more" if len(initial) > 5 else ""
            notes.append(f"the caffemodel has no weights for {len(initial)} layer(s) "
                         f"({', '.join(repr(n) for n in initial[:5])}{more}): they keep Caffe's "
                         "initial values (the prototxt's constant/bilinear fillers or the "
                         "layer's defaults, e.g. PReLU slope 0.25, zero biases)")
    return graph


def _share_params(graph: Graph, copied: dict, file) -> None:
    """Blobs named by ``param { name }``: one value for all sharers (see the module doc)."""
    groups: dict[str, list] = {}
    for l in graph.layers:
        for i, spec in enumerate(l.param_specs or ()):
            if spec.name and l.blobs is not None and i < len(l.blobs):
                groups.setdefault(spec.name, []).append((l, i))
    for name, members in groups.items():
        if len(members) < 2:
            continue
        shapes = {tuple(l.blobs[i].shape) for l, i in members}
        if len(shapes) > 1:
            raise ProtogenError(f"layers sharing the parameter '{name}' have blobs of different "
                                f"shapes {sorted(shapes)}", file=file, layer=members[-1][0].name)
        from_model = [(copied[l.name], l, i) for l, i in members if l.name in copied]
        if from_model:
            _, src, j = max(from_model, key=lambda t: t[0])
        else:
            src, j = members[0]            # the owner's initial value
        value = src.blobs[j]
        for l, i in members:
            blobs = list(l.blobs)
            blobs[i] = value
            l.blobs = blobs
