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


def greedy_nms_exact(ctx, boxes: str, thr: float, mode: str) -> str:
    """Kept row indices [M] of ``boxes`` [K, 4] (already in score order) under ApplyNMS with
    JaccardOverlap(iou_mode=``mode``): box j is dropped when IoU(i, j) > thr for a kept i < j."""
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


def _group(ctx, prob, deltas, i, fw, fh, stride, means, stds, bounds, fg_thr, min_size):
    """Candidates of image ``i`` of one bottom pair: boxes [M, 4] (clipped), objectness [M],
    kept mask [M], in (group, row, column) order (DecodeGroupBBoxes, ClipBBox, the filters)."""
    g = len(fw)

    def sl(v, s, e, a):
        return ctx.op("Slice", [v, ctx.ints("s", s), ctx.ints("e", e), ctx.ints("a", a)])
    one, zero = _f(ctx, "one", 1), _f(ctx, "zero", 0)
    fg = ctx.op("Sub", [one, sl(prob, [i * g, 0], [(i + 1) * g, 1], [0, 1])])           # G, 1, H, W
    d = sl(deltas, [i * g], [(i + 1) * g], [0])
    v = [ctx.op("Add", [ctx.op("Mul", [sl(d, [c], [c + 1], [1]), _f(ctx, "std", stds[c])]),
                        _f(ctx, "mean", means[c])]) for c in range(4)]
    lo_xy, hi_xy, lo_wh, hi_wh = (_f(ctx, "bound", b) for b in bounds)
    bx, by = (ctx.op("Min", [ctx.op("Max", [u, lo_xy]), hi_xy]) for u in v[:2])
    bw, bh = (ctx.op("Min", [ctx.op("Max", [u, lo_wh]), hi_wh]) for u in v[2:])
    fwc = ctx.const("field_w", np.asarray(fw, np.float32).reshape(-1, 1, 1, 1))
    fhc = ctx.const("field_h", np.asarray(fh, np.float32).reshape(-1, 1, 1, 1))
    st = _f(ctx, "stride", stride)
    hw = ctx.op("Shape", [deltas], start=2, end=4)

    def grid(axis, shape):
        n = ctx.op("Squeeze", [sl(hw, [axis], [axis + 1], [0]), ctx.ints("ax", [0])])
        r = ctx.op("Cast", [ctx.op("Range", [scalar(ctx, "zero_i", 0), n, scalar(ctx, "one_i", 1)])], to=1)
        return ctx.op("Reshape", [ctx.op("Mul", [ctx.op("Add", [r, _f(ctx, "half", 0.5)]), st]),
                                  ctx.ints("shape", shape)])
    bx = ctx.op("Add", [ctx.op("Mul", [bx, fwc]), grid(1, [1, 1, 1, -1])])
    by = ctx.op("Add", [ctx.op("Mul", [by, fhc]), grid(0, [1, 1, -1, 1])])
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
    cols = [ctx.op("Reshape", [u, ctx.ints("col", [-1, 1])]) for u in (x1, y1, x2, y2)]
    return ctx.op("Concat", cols, axis=1), flat(ctx, fg), flat(ctx, ok)


def box_group_output(ctx, step, fields, strides, means, stds, xyr, whr, fg_thr, iou_thr,
                     nms_type, max_nms, max_post, min_size):
    """BoxGroupOutputLayer::Forward_cpu, one unrolled branch per image (the batch is baked in)."""
    ins = [ctx.name(v) for v in step.inputs]
    num = ctx.static(step.inputs[0], 0) // len(fields[0][0])
    f = np.float32
    bounds = (f(-1) / f(xyr), f(1) / f(xyr), np.log(f(1) / f(whr)), np.log(f(whr)))
    per_image = []
    for i in range(num):
        parts = [_group(ctx, p, d, i, fw, fh, s, means, stds, bounds, fg_thr, min_size)
                 for p, d, (fw, fh), s in zip(ins[0::2], ins[1::2], fields, strides)]
        boxes = ctx.op("Concat", [b for b, _, _ in parts], axis=0)
        fg = ctx.op("Concat", [s for _, s, _ in parts], axis=0)
        ok = ctx.op("Concat", [k for _, _, k in parts], axis=0)
        boxes = ctx.op("Compress", [boxes, ok], axis=0)
        fg = ctx.op("Compress", [fg, ok], axis=0)
        order = sort_desc(ctx, fg, max_nms if max_nms > 0 else None)
        boxes = ctx.op("Gather", [boxes, order], axis=0)
        fg = ctx.op("Gather", [fg, order], axis=0)
        keep = greedy_nms_exact(ctx, boxes, iou_thr, nms_type)
        if max_post > 0:
            keep = ctx.op("Slice", [keep, ctx.ints("s", [0]), ctx.ints("e", [max_post]), ctx.ints("a", [0])])
        boxes = ctx.op("Gather", [boxes, keep], axis=0)
        score = ctx.op("Unsqueeze", [ctx.op("Gather", [fg, keep], axis=0), ctx.ints("ax1", [1])])
        image = ctx.op("Add", [ctx.op("Mul", [score, _f(ctx, "zero", 0)]), _f(ctx, "image", i)])
        per_image.append(ctx.op("Concat", [image, boxes, score], axis=1))
    rows = per_image[0] if num == 1 else ctx.op("Concat", per_image, axis=0)
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
    ctx.op("Reshape", [out, ctx.op("Shape", [r_in])], step.outputs[0])


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
