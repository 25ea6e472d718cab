"""What ``protogen verify`` compares as sets of rows, and the batch a layer fixes.

**Set values.** A proposal layer (a layer type with ``proposal_output``: the C++ Proposal,
py-faster-rcnn's and SSH's Python ProposalLayer) writes its rows in score order: top 0 rois
``[R, 5]`` (image, x1, y1, x2, y2), top 1 scores ``[R, 1]`` (``[R]`` for the C++ layer). Two
nearly equal scores come out in either order depending on float32 or float64 round-off, so
comparing such a blob element by element fails for no difference at all. A *set value* is a
proposal top, or a Concat along axis 0 (the row axis) of set values of one kind (SSH's
``ssh_boxes`` / ``ssh_cls_prob`` concatenate its three modules' proposals). They are compared
as sets (:func:`compare`): the rois and the scores of the same proposal layers are paired into
detection rows (image, 1, score, box) and compared with
:func:`protogen.detections.compare_detections` (same count, rows paired by score, boxes within
the tolerance times the coordinates' scale); rois without their scores are paired by box;
scores without their rois are compared sorted.

**Fixed batch.** A layer type with ``max_batch`` takes at most that many images (the proposal
layers assert one, as Caffe's do): :func:`fixed_batch` lowers verify's batch to it and says so.
Input sensitivity then comes from a second seeded input run through the reference
(:func:`other_input_outputs`), as it does for set values (their axis 0 is the row axis, not
the batch). Only numpy at import time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ir import DEPLOY, TEST

#: offset of the second seeded input's seed (the calibration batch uses seed + 1000)
OTHER_INPUT_SEED = 500
ROIS, SCORES = "rois", "scores"


@dataclass(frozen=True)
class SetValue:
    kind: str            # ROIS or SCORES
    sources: tuple       # indices of the proposal steps whose rows it holds, in row order


def set_values(resolved) -> dict[str, SetValue]:
    """Every set value of ``resolved`` (a :class:`protogen.ir.Resolved`), by SSA name."""
    out: dict[str, SetValue] = {}
    for st in resolved.steps:
        kind = st.layer.kind
        if getattr(kind, "proposal_output", False):
            for v, k in zip(st.outputs, (ROIS, SCORES)):
                out[v] = SetValue(k, (st.index,))
        elif _row_concat(st) and st.inputs and all(v in out for v in st.inputs):
            kinds = {out[v].kind for v in st.inputs}
            if len(kinds) == 1:
                out[st.outputs[0]] = SetValue(kinds.pop(), tuple(i for v in st.inputs for i in out[v].sources))
    return out


def _row_concat(st) -> bool:
    if st.layer.type != "Concat" or len(st.outputs) != 1:
        return False
    rank = len(st.out_shapes[0])
    return getattr(st.layer.params, "axis", None) in (0, -rank)


def partner(sets: dict, v: str) -> str | None:
    """The set value holding the other half (scores for rois, rois for scores) of ``v``'s rows."""
    s = sets[v]
    return next((w for w, t in sets.items() if w != v and t.kind != s.kind and t.sources == s.sources), None)


def rows(sets: dict, v: str, values: dict) -> tuple[np.ndarray, str | None]:
    """``v`` as detection rows (image, 1, score, x1, y1, x2, y2) with the partner it was paired
    with (None: scores 0 for rois alone); scores alone: one column, sorted descending."""
    w = partner(sets, v)
    a = np.asarray(values[v], np.float64)
    b = np.asarray(values[w], np.float64) if w is not None and w in values else None
    rois, scores = (a, b) if sets[v].kind == ROIS else (b, a)
    if rois is None:
        return -np.sort(-scores.reshape(-1)), None
    rois = rois.reshape(-1, 5)
    if scores is None or scores.size != len(rois):
        scores, w = np.zeros(len(rois)), None      # e.g. SSH's empty row [0, 0, 0, 16, 16] has no score
    return np.column_stack([rois[:, 0], np.ones(len(rois)), scores.reshape(-1), rois[:, 1:]]), w


def compare(sets: dict, v: str, ref: dict, got: dict, tolerance: float) -> tuple[float, float, bool, str]:
    """``(max abs err, max rel err, ok, note)`` of the set value ``v`` (see the module doc): the
    errors are the largest score/box difference of paired rows, relative to the coordinates'
    scale (at least 1); NaN when the counts differ."""
    from .detections import compare_detections
    want, w_ref = rows(sets, v, ref)
    have, w_got = rows(sets, v, got)
    if w_ref != w_got:          # pair both sides alike
        want, _ = rows(sets, v, {k: x for k, x in ref.items() if k != w_ref})
        have, _ = rows(sets, v, {k: x for k, x in got.items() if k != w_got})
        w_ref = None
    if want.ndim == 1:          # scores alone: sorted values
        if want.shape != have.shape or not np.isfinite(have).all():
            return math.nan, math.nan, False, f"scores differ as a set: {have.size} vs {want.size} values"
        err = float(np.abs(want - have).max()) if want.size else 0.0
        scale = float(np.abs(want).max()) if want.size else 1.0
        rel = err / scale if scale else (0.0 if err == 0 else math.inf)
        ok = rel <= tolerance
        return err, rel, ok, f"{want.size} scores compared sorted" + ("" if ok else f": max rel err {rel:.3g}")
    d = compare_detections(have, want, tol=tolerance)
    scale = max(1.0, float(np.abs(want[:, 3:]).max()) if len(want) else 1.0)
    err = max(d.max_score_err, d.max_box_err)
    how = f"with '{w_ref}'" if w_ref else "by box alone"
    if d.ok:
        return err, err / scale, True, f"{len(want)} proposal rows match as a set (paired {how})"
    if d.count_got != d.count_want:
        return math.nan, math.nan, False, f"proposal rows differ as a set: {d.summary()}"
    return err, err / scale, False, f"proposal rows differ as a set (paired {how}): {d.summary()}"


def fixed_batch(graph, batch: int) -> tuple[int, str]:
    """``(batch, note)``: ``batch`` lowered to the smallest ``max_batch`` of the deploy/TEST
    view's layer types, with a note naming the layer ('' when unchanged)."""
    view = graph.select(net=DEPLOY, phase=TEST)
    limits = [(l.kind.max_batch, l) for l in view.layers if getattr(l.kind, "max_batch", None)]
    if not limits:
        return batch, ""
    m, l = min(limits, key=lambda t: t[0])
    if batch <= m:
        return batch, ""
    return m, (f"batch {m}, not {batch}: layer '{l.name}' ({l.type}) takes {m} image(s) at a time; "
               f"input sensitivity from a second seeded input (seed + {OTHER_INPUT_SEED})")


def needs_other_input(s) -> bool:
    """Whether verify judges input sensitivity on a second input (``s``: a verify Session)."""
    return bool(getattr(s, "batch_note", "")) or any(o in s.sets for o in s.outputs)


def other_input_outputs(s) -> dict[str, np.ndarray]:
    """The net outputs of the float64 reference on a second seeded input (seed + OTHER_INPUT_SEED)."""
    from . import verify_runtimes as R
    from .seed_inputs import seeded_feeds
    from .weights import seeded_input
    seed = s.seed + OTHER_INPUT_SEED
    feeds = seeded_feeds(s.resolved, lambda shape, k: seeded_input(shape, seed + k), seed)
    got = R.run_torch(s.g, feeds, False, double=True)
    return {o: got[o] for o in s.outputs if o in got}


def sensitivity(a: np.ndarray, other: np.ndarray, scale: float) -> float:
    """How much an output changes from one input to another, relative to ``scale``
    (infinite when its shape changes: the row count depends on the input)."""
    other = np.asarray(other, np.float64)
    if other.shape != a.shape:
        return math.inf
    return float(np.max(np.abs(a - other))) / scale
