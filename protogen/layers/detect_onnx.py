"""ONNX building blocks shared by the two-stage and YOLO detection lowerings (standard
operators only, opset 17): sorting with Caffe's order, greedy NMS through NonMaxSuppression,
and the YOLO detection rows.

Sorting is TopK (largest, sorted), whose order of equal values is the lower index first — the
same rule as the PyTorch reference (:mod:`protogen.layers.detect_torch`). NonMaxSuppression
sorts its candidates again; it is given strictly decreasing stand-in scores (K, K-1, ..., 1)
for boxes already in Caffe's order, so its greedy pass visits them in that order. It drops a
box when IoU > threshold; a Caffe rule "IoU >= t" becomes "IoU > t'" with t' the float32 just
below t (IoU is a float32 in both).
"""
from __future__ import annotations

import numpy as np

#: NonMaxSuppression's max_output_boxes_per_class when Caffe sets no limit
NO_LIMIT = 2**31 - 1


def below(thr: float) -> float:
    """The largest float32 strictly below float32(thr): "iou >= thr" as "iou > below(thr)"."""
    t = np.float32(thr)
    return float(np.nextafter(t, np.float32(-np.inf), dtype=np.float32))


def scalar(ctx, hint: str, value, dtype=np.int64) -> str:
    """A 0-d value (Range's bounds, a Gather index): a 1-element constant squeezed in the
    graph (the in-memory exporter stores 0-d initializers as shape [1])."""
    c = ctx.const(hint, np.asarray([value], dtype), dtype)
    return ctx.op("Squeeze", [c, ctx.ints("axis0", [0])])


def column(ctx, m: str, j: int, hint: str) -> str:
    """Column ``j`` of a [K, C] value as [K, 1]."""
    return ctx.op("Slice", [m, ctx.ints(f"{hint}_s", [j]), ctx.ints(f"{hint}_e", [j + 1]),
                            ctx.ints(f"{hint}_a", [1])])


def flat(ctx, v: str) -> str:
    return ctx.op("Reshape", [v, ctx.ints("flat", [-1])])


def sort_desc(ctx, scores: str, limit: int | None = None) -> str:
    """Indices of the 1-D ``scores`` by descending value, lower index first among equals; at
    most ``limit`` of them (None: all)."""
    k = ctx.op("Shape", [scores])
    if limit is not None:
        k = ctx.op("Min", [k, ctx.ints("limit", [int(limit)])])
    _, idx = ctx.op("TopK", [scores, k], n_out=2, axis=0, largest=1, sorted=1)
    return idx


def greedy_nms(ctx, boxes: str, thr: float, max_out: int | None = None) -> str:
    """Greedy suppression over ``boxes`` [K, 4] (x1, y1, x2, y2) taken in their given order;
    returns the kept row indices [M] in that order. A box is dropped when its IoU (ONNX's,
    plain areas) with a kept box is > ``thr``; at most ``max_out`` kept."""
    k = ctx.op("Shape", [boxes], start=0, end=1)
    k0 = ctx.op("Squeeze", [k, ctx.ints("axis0", [0])])
    stand_in = ctx.op("Range", [k0, scalar(ctx, "zero", 0), scalar(ctx, "minus_one", -1)])
    stand_in = ctx.op("Cast", [stand_in], to=1)
    stand_in = ctx.op("Reshape", [stand_in, ctx.ints("s113", [1, 1, -1])])
    b3 = ctx.op("Unsqueeze", [boxes, ctx.ints("axis0", [0])])
    sel = ctx.op("NonMaxSuppression", [b3, stand_in,
                                       ctx.ints("max_out", [NO_LIMIT if not max_out or max_out <= 0
                                                            else int(max_out)]),
                                       ctx.const("iou", np.asarray([thr], np.float32))],
                 center_point_box=0)
    idx = ctx.op("Slice", [sel, ctx.ints("c2s", [2]), ctx.ints("c2e", [3]), ctx.ints("c2a", [1])])
    return flat(ctx, idx)


def yolo_rows(ctx, cands: str, first_input: str, nms_thr: float, out: str) -> None:
    """The eric612 YOLO detection rows from candidates [K, 6] (class, confidence, x, y, w, h):
    sort by confidence, class-agnostic NMS with IoU >= nms_thr, rows [1, 1, M, 7] (0, class
    + 1, confidence, x - w/2, y - h/2, x + w/2, y + h/2); with no row left, N rows [i, -1 x 6]
    (N = batch of ``first_input``)."""
    conf = flat(ctx, column(ctx, cands, 1, "conf"))
    order = sort_desc(ctx, conf)
    s = ctx.op("Gather", [cands, order], axis=0)
    cls, cf, x, y, w, h = (column(ctx, s, j, n) for j, n in enumerate("cls conf x y w h".split()))
    two = ctx.const("two", np.float32(2.0))
    hw, hh = ctx.op("Div", [w, two]), ctx.op("Div", [h, two])
    corners = [ctx.op("Sub", [x, hw]), ctx.op("Sub", [y, hh]), ctx.op("Add", [x, hw]), ctx.op("Add", [y, hh])]
    boxes = ctx.op("Concat", corners, axis=1)
    keep = greedy_nms(ctx, boxes, below(nms_thr))
    label = ctx.op("Add", [cls, ctx.const("one", np.float32(1.0))])
    zero = ctx.op("Mul", [cf, ctx.const("zero_f", np.float32(0.0))])
    rows = ctx.op("Concat", [zero, label, cf] + corners, axis=1)
    rows = ctx.op("Gather", [rows, keep], axis=0)
    # no detection: one row [i, -1, ..., -1] per image
    n = ctx.op("Shape", [first_input], start=0, end=1)
    n0 = ctx.op("Squeeze", [n, ctx.ints("axis0", [0])])
    ids = ctx.op("Range", [scalar(ctx, "zero_i", 0), n0, scalar(ctx, "one_i", 1)])
    ids = ctx.op("Unsqueeze", [ctx.op("Cast", [ids], to=1), ctx.ints("axis1", [1])])
    neg = ctx.op("Expand", [ctx.const("minus_ones", np.full((1, 6), -1, np.float32)),
                            ctx.op("Concat", [n, ctx.ints("six", [6])], axis=0)])
    fake = ctx.op("Concat", [ids, neg], axis=1)
    both = ctx.op("Concat", [rows, fake], axis=0)
    m = ctx.op("Shape", [rows], start=0, end=1)
    empty = ctx.op("Cast", [ctx.op("Equal", [m, ctx.ints("zero_v", [0])])], to=7)
    length = ctx.op("Add", [m, ctx.op("Mul", [empty, n])])
    sel = ctx.op("Slice", [both, ctx.ints("start0", [0]), length, ctx.ints("axis0s", [0])])
    ctx.op("Reshape", [sel, ctx.ints("shape117", [1, 1, -1, 7])], out)
