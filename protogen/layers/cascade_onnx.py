"""ONNX lowerings of cascade R-CNN's BoxGroupOutput, DecodeBBox and ScaleRoute (standard
operators, opset 17), written from the same C++ as :mod:`protogen.layers.cascade_torch`
(zhaoweicai/cascade-rcnn src/caffe/layers/box_group_output_layer.cpp, decode_bbox_layer.cpp,
scale_route_layer.cpp, src/caffe/util/bbox_util.cpp), float32 operation by operation.

Greedy NMS (bbox_util.cpp ApplyNMS / JaccardOverlap) is lowered exactly rather than through
NonMaxSuppression, whose IoU has no +1 sizes, no ``iy1 >= iy2`` empty-intersection rule and
does not zero inverted boxes: the pairwise suppression matrix S[i, j] = (j > i and IoU > thr)
is computed for the K sorted boxes, and a ``Loop`` of K steps clears row i's suppressed boxes
when box i is still kept (the greedy rule).
"""
from __future__ import annotations

import numpy as np

from .detect_onnx import column, flat, scalar, sort_desc


def _f(ctx, hint, v):
    return ctx.const(hint, np.float32(v))


def _t(ctx, v):
    return ctx.op("Transpose", [v], perm=[1, 0])


def greedy_nms_exact(ctx, boxes: str, thr: float, mode: str, image: str | None = None) -> str:
    """Kept row indices [M] of ``boxes`` [K, 4] (already in score order) under ApplyNMS with
    JaccardOverlap(iou_mode=``mode``): box j is dropped when IoU(i, j) > thr for a kept i < j
    (of the same image when ``image`` [K] gives each row's image)."""
    from onnx import TensorProto, helper
    one, zero = _f(ctx, "one", 1), _f(ctx, "zero", 0)
    x1, y1, x2, y2 = (column(ctx, boxes, j, f"b{j}") for j in range(4))             # K, 1
    inv = ctx.op("Or", [ctx.op("Less", [x2, x1]), ctx.op("Less", [y2, y1])])
    ix1, iy1 = ctx.op("Max", [x1, _t(ctx, x1)]), ctx.op("Max", [y1, _t(ctx, y1)])    # K, K
    ix2, iy2 = ctx.op("Min", [x2, _t(ctx, x2)]), ctx.op("Min", [y2, _t(ctx, y2)])
    empty = ctx.op("Or", [ctx.op("Greater", [ix1, ix2]), ctx.op("GreaterOrEqual", [iy1, iy2])])
    inter = ctx.op("Mul", [ctx.op("Add", [ctx.op("Sub", [ix2, ix1]), one]),
                           ctx.op("Add", [ctx.op("Sub", [iy2, iy1]), one])])
    inter = ctx.op("Where", [empty, zero, inter])
    size = ctx.op("Mul", [ctx.op("Add", [ctx.op("Sub", [x2, x1]), one]),
                          ctx.op("Add", [ctx.op("Sub", [y2, y1]), one])])               # K, 1
    if mode == "IOMU":
        union = ctx.op("Min", [size, _t(ctx, size)])
    elif mode == "IOFU":
        union = size
    else:
        union = ctx.op("Sub", [ctx.op("Add", [size, _t(ctx, size)]), inter])
    bad = ctx.op("Or", [ctx.op("Or", [inv, _t(ctx, inv)]), ctx.op("LessOrEqual", [union, zero])])
    iou = ctx.op("Where", [bad, zero, ctx.op("Div", [inter, ctx.op("Where", [bad, one, union])])])
    k0 = ctx.op("Squeeze", [ctx.op("Shape", [boxes], start=0, end=1), ctx.ints("axis0", [0])])
    r = ctx.op("Range", [scalar(ctx, "zero_i", 0), k0, scalar(ctx, "one_i", 1)])
    later = ctx.op("Greater", [ctx.op("Unsqueeze", [r, ctx.ints("ax0", [0])]),
                               ctx.op("Unsqueeze", [r, ctx.ints("ax1", [1])])])        # [i, j]: j > i
    s = ctx.op("And", [ctx.op("Greater", [iou, _f(ctx, "thr", thr)]), later])
    if image is not None:
        s = ctx.op("And", [s, ctx.op("Equal", [ctx.op("Unsqueeze", [image, ctx.ints("ax1", [1])]),
                                               ctx.op("Unsqueeze", [image, ctx.ints("ax0", [0])])])])
    keep0 = ctx.op("GreaterOrEqual", [r, scalar(ctx, "zero_k", 0)])                   # all true
    cond = ctx.op("Equal", [scalar(ctx, "c0", 0), scalar(ctx, "c1", 0)])
    it, cin, kin = ctx.tmp("loop_i"), ctx.tmp("loop_cond"), ctx.tmp("loop_keep")
    row, ki, kill, alive, cout, kout = (ctx.tmp(f"loop_{n}") for n in ("row", "ki", "kill", "alive", "cond_out",
                                                                         "keep_out"))
    body = helper.make_graph(
        [helper.make_node("Gather", [s, it], [row], axis=0),           # S[i, :]
         helper.make_node("Gather", [kin, it], [ki], axis=0),          # box i still kept?
         helper.make_node("And", [row, ki], [kill]),
         helper.make_node("Not", [kill], [alive]),
         helper.make_node("And", [kin, alive], [kout]),
         helper.make_node("Identity", [cin], [cout])],
        ctx.tmp("nms_body").replace("/", "_"),
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(cin, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kin, TensorProto.BOOL, [None])],
        [helper.make_tensor_value_info(cout, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kout, TensorProto.BOOL, [None])])
    keep = ctx.op("Loop", [k0, cond, keep0], body=body)
    return flat(ctx, ctx.op("NonZero", [keep]))


def _group(ctx, prob, deltas, fw, fh, stride, means, stds, bounds, fg_thr, min_size):
    """Candidates of every image of one bottom pair: x1, y1, x2, y2, objectness, kept mask,
    each [N, G * H * W] in (group, row, column) order per image (DecodeGroupBBoxes, ClipBBox,
    the fg_thr and min_size filters)."""
    g = len(fw)

    def sl(v, s, e, a):
        return ctx.op("Slice", [v, ctx.ints("s", s), ctx.ints("e", e), ctx.ints("a", a)])

    def by_image(v):       # (N * G, C, H, W) -> (N, G, C, H, W)
        shape = ctx.op("Concat", [ctx.ints("ng", [-1, g]), ctx.op("Shape", [v], start=1, end=4)], axis=0)
        return ctx.op("Reshape", [v, shape])
    one, zero = _f(ctx, "one", 1), _f(ctx, "zero", 0)
    fg = ctx.op("Sub", [one, sl(by_image(prob), [0], [1], [2])])                         # N, G, 1, H, W
    d = by_image(deltas)
    v = [ctx.op("Add", [ctx.op("Mul", [sl(d, [c], [c + 1], [2]), _f(ctx, "std", stds[c])]),
                        _f(ctx, "mean", means[c])]) for c in range(4)]
    lo_xy, hi_xy, lo_wh, hi_wh = (_f(ctx, "bound", b) for b in bounds)
    bx, by = (ctx.op("Min", [ctx.op("Max", [u, lo_xy]), hi_xy]) for u in v[:2])
    bw, bh = (ctx.op("Min", [ctx.op("Max", [u, lo_wh]), hi_wh]) for u in v[2:])
    fwc = ctx.const("field_w", np.asarray(fw, np.float32).reshape(1, -1, 1, 1, 1))
    fhc = ctx.const("field_h", np.asarray(fh, np.float32).reshape(1, -1, 1, 1, 1))
    st = _f(ctx, "stride", stride)
    hw = ctx.op("Shape", [deltas], start=2, end=4)

    def grid(axis, shape):
        n = ctx.op("Squeeze", [sl(hw, [axis], [axis + 1], [0]), ctx.ints("ax", [0])])
        r = ctx.op("Cast", [ctx.op("Range", [scalar(ctx, "zero_i", 0), n, scalar(ctx, "one_i", 1)])], to=1)
        return ctx.op("Reshape", [ctx.op("Mul", [ctx.op("Add", [r, _f(ctx, "half", 0.5)]), st]),
                                  ctx.ints("shape", shape)])
    bx = ctx.op("Add", [ctx.op("Mul", [bx, fwc]), grid(1, [1, 1, 1, 1, -1])])
    by = ctx.op("Add", [ctx.op("Mul", [by, fhc]), grid(0, [1, 1, 1, -1, 1])])
    bw = ctx.op("Mul", [fwc, ctx.op("Exp", [bw])])
    bh = ctx.op("Mul", [fhc, ctx.op("Exp", [bh])])
    two = _f(ctx, "two", 2)
    x1 = ctx.op("Sub", [bx, ctx.op("Div", [bw, two])])
    y1 = ctx.op("Sub", [by, ctx.op("Div", [bh, two])])
    x2 = ctx.op("Sub", [ctx.op("Add", [x1, bw]), one])
    y2 = ctx.op("Sub", [ctx.op("Add", [y1, bh]), one])
    size = ctx.op("Mul", [ctx.op("Cast", [hw], to=1), st])                                 # [H, W] * stride
    img_h, img_w = sl(size, [0], [1], [0]), sl(size, [1], [2], [0])
    x1, y1 = ctx.op("Max", [x1, zero]), ctx.op("Max", [y1, zero])
    x2, y2 = ctx.op("Min", [x2, img_w]), ctx.op("Min", [y2, img_h])
    ms = _f(ctx, "min_size", min_size)
    ok = ctx.op("And", [ctx.op("GreaterOrEqual", [fg, _f(ctx, "fg_thr", fg_thr)]),
                        ctx.op("And", [
                            ctx.op("GreaterOrEqual", [ctx.op("Add", [ctx.op("Sub", [x2, x1]), one]), ms]),
                            ctx.op("GreaterOrEqual", [ctx.op("Add", [ctx.op("Sub", [y2, y1]), one]), ms])])])
    return [ctx.op("Reshape", [u, ctx.ints("per_image", [0, -1])]) for u in (x1, y1, x2, y2, fg, ok)]


def _rank_in_image(ctx, img, n):
    """Position of each row among the rows of its image ([K] int64), rows image-major."""
    imgs = ctx.op("Range", [scalar(ctx, "zero_i", 0), n, scalar(ctx, "one_i", 1)])
    onehot = ctx.op("Cast", [ctx.op("Equal", [ctx.op("Unsqueeze", [img, ctx.ints("ax1", [1])]),
                                              ctx.op("Unsqueeze", [imgs, ctx.ints("ax0", [0])])])], to=7)
    counts = ctx.op("ReduceSum", [onehot, ctx.ints("ax0", [0])], keepdims=0)              # N
    starts = ctx.op("CumSum", [counts, scalar(ctx, "axis", 0)], exclusive=1)
    k = ctx.op("Squeeze", [ctx.op("Shape", [img]), ctx.ints("ax0", [0])])
    pos = ctx.op("Range", [scalar(ctx, "zero_i", 0), k, scalar(ctx, "one_i", 1)])
    return ctx.op("Sub", [pos, ctx.op("Gather", [starts, img], axis=0)])


def _first_per_image(ctx, vals, img, n, limit):
    """Rows (image-major) whose rank in their image is < limit."""
    keep = ctx.op("Less", [_rank_in_image(ctx, img, n), ctx.ints("limit", [int(limit)])])
    return [ctx.op("Compress", [v, keep], axis=0) for v in vals]


def box_group_output(ctx, step, fields, strides, means, stds, xyr, whr, fg_thr, iou_thr,
                     nms_type, max_nms, max_post, min_size):
    """BoxGroupOutputLayer::Forward_cpu for all images at once: candidates flattened
    image-major, sorted by score then (stably) by image, limited per image, NMS only between
    boxes of one image."""
    ins = [ctx.name(v) for v in step.inputs]
    f = np.float32
    bounds = (f(-1) / f(xyr), f(1) / f(xyr), np.log(f(1) / f(whr)), np.log(f(whr)))
    parts = [_group(ctx, p, d, fw, fh, s, means, stds, bounds, fg_thr, min_size)
             for p, d, (fw, fh), s in zip(ins[0::2], ins[1::2], fields, strides)]
    cols = [parts[0][c] if len(parts) == 1 else ctx.op("Concat", [q[c] for q in parts], axis=1)
            for c in range(6)]                                                             # N, M each
    n = ctx.op("Squeeze", [ctx.op("Shape", [cols[4]], start=0, end=1), ctx.ints("ax0", [0])])
    img = ctx.op("Range", [scalar(ctx, "zero_i", 0), n, scalar(ctx, "one_i", 1)])
    img = ctx.op("Expand", [ctx.op("Unsqueeze", [img, ctx.ints("ax1", [1])]), ctx.op("Shape", [cols[4]])])
    ok = flat(ctx, cols[5])
    boxes = ctx.op("Concat", [ctx.op("Reshape", [c, ctx.ints("col", [-1, 1])]) for c in cols[:4]], axis=1)
    boxes = ctx.op("Compress", [boxes, ok], axis=0)
    fg = ctx.op("Compress", [flat(ctx, cols[4]), ok], axis=0)
    img = ctx.op("Compress", [flat(ctx, img), ok], axis=0)
    for key in ("score", "image"):         # by score, then stably by image: image-major
        if key == "score":
            order = sort_desc(ctx, fg)
        else:
            order = sort_desc(ctx, ctx.op("Neg", [ctx.op("Cast", [img], to=1)]))
        boxes, fg, img = (ctx.op("Gather", [v, order], axis=0) for v in (boxes, fg, img))
    if max_nms > 0:
        boxes, fg, img = _first_per_image(ctx, [boxes, fg, img], img, n, max_nms)
    keep = greedy_nms_exact(ctx, boxes, iou_thr, nms_type, img)
    boxes, fg, img = (ctx.op("Gather", [v, keep], axis=0) for v in (boxes, fg, img))
    if max_post > 0:
        boxes, fg, img = _first_per_image(ctx, [boxes, fg, img], img, n, max_post)
    score = ctx.op("Unsqueeze", [fg, ctx.ints("ax1", [1])])
    image = ctx.op("Unsqueeze", [ctx.op("Cast", [img], to=1), ctx.ints("ax1", [1])])
    rows = ctx.op("Concat", [image, boxes, score], axis=1)
    # no box in the whole batch: the fixed row [0, 1, 1, 10, 10] (and a zero row of 6)
    m = ctx.op("Shape", [rows], start=0, end=1)
    length = ctx.op("Add", [m, ctx.op("Cast", [ctx.op("Equal", [m, ctx.ints("zero_v", [0])])], to=7)])

    def top(value, fallback, shape, out):
        both = ctx.op("Concat", [value, ctx.const("fallback", np.asarray([fallback], np.float32))], axis=0)
        sel = ctx.op("Slice", [both, ctx.ints("s", [0]), length, ctx.ints("a", [0])])
        ctx.op("Reshape", [sel, ctx.ints("shape", shape)], out)
    five = ctx.op("Slice", [rows, ctx.ints("s", [0]), ctx.ints("e", [5]), ctx.ints("a", [1])])
    top(five, [0, 1, 1, 10, 10], [-1, 5, 1, 1], step.outputs[0])
    if len(step.outputs) > 1:
        top(rows, [0, 0, 0, 0, 0, 0], [-1, 6, 1, 1], step.outputs[1])


def decode_bbox(ctx, step, means, stds):
    """DecodeBBoxLayer::Forward_cpu at TEST (DecodeBBoxesWithPrior on deltas 4..7)."""
    d_in, r_in = (ctx.name(v) for v in step.inputs)
    d = ctx.op("Reshape", [d_in, ctx.ints("k8", [-1, 8])])
    r = ctx.op("Reshape", [r_in, ctx.ints("k5", [-1, 5])])
    one = _f(ctx, "one", 1)
    b, x1, y1, x2, y2 = (column(ctx, r, j, f"r{j}") for j in range(5))
    v = [ctx.op("Add", [ctx.op("Mul", [column(ctx, d, 4 + c, f"d{c}"), _f(ctx, "std", stds[c])]),
                        _f(ctx, "mean", means[c])]) for c in range(4)]
    pw = ctx.op("Add", [ctx.op("Sub", [x2, x1]), one])
    ph = ctx.op("Add", [ctx.op("Sub", [y2, y1]), one])
    half, two = _f(ctx, "half", 0.5), _f(ctx, "two", 2)
    cx = ctx.op("Mul", [ctx.op("Add", [x2, x1]), half])
    cy = ctx.op("Mul", [ctx.op("Add", [y2, y1]), half])
    tx = ctx.op("Add", [ctx.op("Mul", [v[0], pw]), cx])
    ty = ctx.op("Add", [ctx.op("Mul", [v[1], ph]), cy])
    tw = ctx.op("Mul", [pw, ctx.op("Exp", [v[2]])])
    th = ctx.op("Mul", [ph, ctx.op("Exp", [v[3]])])
    tx = ctx.op("Sub", [tx, ctx.op("Div", [ctx.op("Sub", [tw, one]), two])])
    ty = ctx.op("Sub", [ty, ctx.op("Div", [ctx.op("Sub", [th, one]), two])])
    x2n = ctx.op("Sub", [ctx.op("Add", [tx, tw]), one])
    y2n = ctx.op("Sub", [ctx.op("Add", [ty, th]), one])
    out = ctx.op("Concat", [b, tx, ty, x2n, y2n], axis=1)
    rest = list(ctx.shapes[step.inputs[1]][1:])                                         # 5 (, 1, 1)
    ctx.op("Reshape", [out, ctx.ints("shape", [-1] + rest)], step.outputs[0])


def scale_route(ctx, step, low, high, mid):
    """ScaleRouteLayer::Forward_cpu: the rows with low <= scale < high, else the one closest
    to mid in |log2|; every bottom gathered with the same rows."""
    ins = [ctx.name(v) for v in step.inputs]
    r = ctx.op("Reshape", [ins[0], ctx.ints("k5", [-1, 5])])
    one, zero = _f(ctx, "one", 1), _f(ctx, "zero", 0)
    x1, y1, x2, y2 = (column(ctx, r, j, f"r{j}") for j in range(1, 5))
    inv = ctx.op("Or", [ctx.op("Less", [x2, x1]), ctx.op("Less", [y2, y1])])
    size = ctx.op("Mul", [ctx.op("Add", [ctx.op("Sub", [x2, x1]), one]),
                          ctx.op("Add", [ctx.op("Sub", [y2, y1]), one])])
    scale = flat(ctx, ctx.op("Sqrt", [ctx.op("Where", [inv, zero, size])]))
    sel = ctx.op("And", [ctx.op("GreaterOrEqual", [scale, _f(ctx, "low", low)]),
                         ctx.op("Less", [scale, _f(ctx, "high", high)])])
    idx = flat(ctx, ctx.op("NonZero", [sel]))
    dist = ctx.op("Abs", [ctx.op("Div", [ctx.op("Log", [ctx.op("Div", [scale, _f(ctx, "mid", mid)])]),
                                         _f(ctx, "ln2", np.log(2.0))])])
    closest = ctx.op("ArgMin", [dist], axis=0, keepdims=1, select_last_index=0)
    n = ctx.op("Shape", [idx])
    length = ctx.op("Add", [n, ctx.op("Cast", [ctx.op("Equal", [n, ctx.ints("zero_v", [0])])], to=7)])
    rows = ctx.op("Slice", [ctx.op("Concat", [idx, closest], axis=0), ctx.ints("s", [0]), length,
                            ctx.ints("a", [0])])
    for x, out in zip(ins, step.outputs):
        ctx.op("Gather", [x, rows], out, axis=0)
