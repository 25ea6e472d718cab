"""The ONNX lowering of SSD's DetectionOutput (standard operators only, opset 17).

Caffe's per-class step (threshold, stable sort, top_k, greedy NMS) maps onto
TopK (ties: lower index first, as Caffe's stable_sort) + NonMaxSuppression with the image and
class folded into NMS's batch axis (each (image, class) pair has its own top_k candidates).
ONNX Runtime's NonMaxSuppression keeps a box whose IoU with a kept one is <= the threshold,
uses score > score_threshold and selects equal scores lower index first, as Caffe does; it
reads a box's corners as an unordered pair, where Caffe gives a box with xmax < xmin (or
ymax < ymin) size 0: such boxes are handed to NMS as a zero-area box, which overlaps nothing
in both. keep_top_k is a per-image rank: sort by score (stable), then stably by image, rank =
position - first position of the image, scattered back to the NMS order (which is already
image, label, score order). No detection gives one (i, -1, ...) row per image.
"""
from __future__ import annotations

import numpy as np


def _scalar(ctx, hint, v):
    """An int64 0-d value (initialisers of 0-d arrays are written 1-d: squeeze one)."""
    return ctx.op("Squeeze", [ctx.ints(hint, [v]), ctx.ints("ax0", [0])])


def _take(ctx, x, i, axis):
    """x[..., i, ...] along ``axis`` (the axis dropped)."""
    return ctx.op("Squeeze", [ctx.op("Gather", [x, ctx.ints("index", [i])], axis=axis),
                              ctx.ints("axis", [axis])])


def _split4(ctx, x, axis):
    return ctx.op("Split", [x], n_out=4, axis=axis)


def _decode(ctx, loc, pb, pv, p):
    """Boxes (N, P, L, 4) from loc (N, P, L, 4), prior boxes (P, 1, 4) or (N, P, 1, 4) and
    variances (P, 1, 4)."""
    l0, l1, l2, l3 = _split4(ctx, loc, 3)                       # (N, P, L, 1)
    b = _split4(ctx, pb, -1)                                    # (P, 1, 1) or (N, P, 1, 1)
    if p.variance_encoded_in_target:
        t = [l0, l1, l2, l3]
    else:
        v = _split4(ctx, pv, -1)
        t = [ctx.op("Mul", [vi, li]) for vi, li in zip(v, (l0, l1, l2, l3))]
    pw = ctx.op("Sub", [b[2], b[0]])
    ph = ctx.op("Sub", [b[3], b[1]])
    if p.code_type == "CORNER":
        out = [ctx.op("Add", [b[i], t[i]]) for i in range(4)]
    elif p.code_type == "CORNER_SIZE":
        out = [ctx.op("Add", [b[i], ctx.op("Mul", [t[i], pw if i % 2 == 0 else ph])]) for i in range(4)]
    else:
        two = ctx.const("two", np.float32(2.0))
        cx = ctx.op("Add", [ctx.op("Mul", [t[0], pw]), ctx.op("Div", [ctx.op("Add", [b[0], b[2]]), two])])
        cy = ctx.op("Add", [ctx.op("Mul", [t[1], ph]), ctx.op("Div", [ctx.op("Add", [b[1], b[3]]), two])])
        hw = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [t[2]]), pw]), two])
        hh = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [t[3]]), ph]), two])
        out = [ctx.op("Sub", [cx, hw]), ctx.op("Sub", [cy, hh]), ctx.op("Add", [cx, hw]), ctx.op("Add", [cy, hh])]
    return ctx.op("Concat", out, axis=3)


def _keep_top_k(ctx, rows, img, score, n_scalar, keep_top_k):
    """Rows (S, 7) whose score ranks < keep_top_k within their image."""
    s_len = ctx.op("Shape", [score])
    _, perm1 = ctx.op("TopK", [score, s_len], n_out=2, axis=0, largest=1, sorted=1)
    neg_img = ctx.op("Neg", [ctx.op("Cast", [ctx.op("Gather", [img, perm1], axis=0)], to=1)])
    _, perm2 = ctx.op("TopK", [neg_img, s_len], n_out=2, axis=0, largest=1, sorted=1)
    order = ctx.op("Gather", [perm1, perm2], axis=0)
    zero, one = _scalar(ctx, "zero", 0), _scalar(ctx, "one", 1)
    images = ctx.op("Range", [zero, n_scalar, one])
    hit = ctx.op("Equal", [ctx.op("Unsqueeze", [img, ctx.ints("ax1", [1])]),
                           ctx.op("Unsqueeze", [images, ctx.ints("ax0", [0])])])
    counts = ctx.op("ReduceSum", [ctx.op("Cast", [hit], to=7), ctx.ints("ax0", [0])], keepdims=0)
    offsets = ctx.op("CumSum", [counts, zero], exclusive=1)
    first = ctx.op("Gather", [offsets, ctx.op("Gather", [img, order], axis=0)], axis=0)
    s_scalar = ctx.op("Squeeze", [s_len, ctx.ints("ax0", [0])])
    pos = ctx.op("Sub", [ctx.op("Range", [zero, s_scalar, one]), first])
    pos = ctx.op("ScatterElements", [pos, order, pos], axis=0)
    mask = ctx.op("Less", [pos, ctx.ints("keep_top_k", [keep_top_k])])
    return ctx.op("Compress", [rows, mask], axis=0)


def detection_output_onnx(ctx, step, p) -> None:
    C = p.num_classes
    n_loc = 1 if p.share_location else C
    labels = [c for c in range(C) if c != p.background_label_id]
    cp = len(labels)
    loc_in, conf_in, prior_in = (ctx.name(v) for v in step.inputs[:3])
    # sizes from the values (the number of priors follows the input size when H/W are dynamic)
    loc = ctx.op("Reshape", [loc_in, ctx.ints("loc_shape", [0, -1, n_loc, 4])])
    conf = ctx.op("Reshape", [conf_in, ctx.ints("conf_shape", [0, -1, C])])
    prior = ctx.op("Reshape", [prior_in, ctx.ints("prior_shape", [0, 2, -1, 4])])
    prior = _take(ctx, prior, 0, 0)                             # (2, P, 4)
    ax1 = ctx.ints("ax1", [1])
    pb = ctx.op("Unsqueeze", [_take(ctx, prior, 0, 0), ax1])     # (P, 1, 4)
    pv = ctx.op("Unsqueeze", [_take(ctx, prior, 1, 0), ax1])
    if len(step.inputs) > 4:        # RefineDet: the ARM's offsets refine the priors first
        arm_loc = ctx.op("Reshape", [ctx.name(step.inputs[4]), ctx.ints("arm_loc_shape", [0, -1, n_loc, 4])])
        pb = _decode(ctx, arm_loc, pb, pv, p)                   # (N, P, 1, 4)
    boxes = _decode(ctx, loc, pb, pv, p)                         # (N, P, L, 4)
    label_ids = ctx.const("labels", np.asarray(labels, np.int64), np.int64)
    if len(step.inputs) > 3:        # RefineDet: anchors the ARM calls background
        arm = ctx.op("Reshape", [ctx.name(step.inputs[3]), ctx.ints("arm_conf_shape", [0, -1, 2])])
        drop = ctx.op("Less", [ctx.op("Slice", [arm, ctx.ints("o1", [1]), ctx.ints("o2", [2]), ctx.ints("ax2", [2])]),
                               ctx.const("objectness", np.asarray([p.objectness_score], np.float32))])
        bg = np.zeros(C, np.float32)
        if 0 <= p.background_label_id < C:
            bg[p.background_label_id] = 1.0
        conf = ctx.op("Where", [drop, ctx.const("background", bg), conf])

    scores = ctx.op("Transpose", [conf], perm=[0, 2, 1])        # (N, C, P)
    if cp != C:
        scores = ctx.op("Gather", [scores, label_ids], axis=1)   # (N, C', P)
    num_p = ctx.op("Slice", [ctx.op("Shape", [conf]), ctx.ints("p0", [1]), ctx.ints("p1", [2])])   # [P]
    k = num_p if p.top_k is None or p.top_k < 0 else ctx.op("Min", [num_p, ctx.ints("top_k", [p.top_k])])
    vals, idx = ctx.op("TopK", [scores, k], n_out=2, axis=2, largest=1, sorted=1)
    minus1, four = ctx.ints("m1", [-1]), ctx.ints("four", [4])
    if p.share_location:
        per_cls = ctx.op("Expand", [ctx.op("Unsqueeze", [ctx.op("Squeeze", [boxes, ctx.ints("ax2", [2])]), ax1]),
                                    ctx.ints("b_expand", [1, cp, 1, 1])])
    else:
        per_cls = ctx.op("Transpose", [boxes], perm=[0, 2, 1, 3])  # (N, C, P, 4)
        if cp != C:
            per_cls = ctx.op("Gather", [per_cls, label_ids], axis=1)
    idx4 = ctx.op("Expand", [ctx.op("Unsqueeze", [idx, ctx.ints("ax3", [3])]), ctx.ints("i_expand", [1, 1, 1, 4])])
    cand = ctx.op("GatherElements", [per_cls, idx4], axis=2)    # (N, C', k, 4)

    shape_k4 = ctx.op("Concat", [minus1, k, four], axis=0)      # (-1, k, 4)
    shape_k = ctx.op("Concat", [minus1, k], axis=0)             # (-1, k)
    if p.eta < 1:                   # adaptive threshold: a Loop (NonMaxSuppression's is fixed)
        sel = adaptive_nms(ctx, cand, vals, shape_k4, shape_k, p)
    else:
        x0, y0, x1, y1 = _split4(ctx, cand, 3)
        valid = ctx.op("And", [ctx.op("GreaterOrEqual", [x1, x0]), ctx.op("GreaterOrEqual", [y1, y0])])
        yx = ctx.op("Concat", [y0, x0, y1, x1], axis=3)
        nms_boxes = ctx.op("Where", [valid, yx, ctx.const("zero_box", np.zeros(4, np.float32))])
        nms_boxes = ctx.op("Reshape", [nms_boxes, shape_k4])
        nms_scores = ctx.op("Unsqueeze", [ctx.op("Reshape", [vals, shape_k]), ax1])
        nms_in = [nms_boxes, nms_scores, k,
                  ctx.const("iou", np.asarray([p.nms_threshold], np.float32))]
        if p.confidence_threshold is not None:
            nms_in.append(ctx.const("score_thr", np.asarray([p.confidence_threshold], np.float32)))
        sel = ctx.op("NonMaxSuppression", nms_in)              # (S, 3): (n*C' + c, 0, j)
    b_idx, j_idx = _take(ctx, sel, 0, 1), _take(ctx, sel, 2, 1)
    n_cls = ctx.ints("n_cls", [cp])
    img = ctx.op("Div", [b_idx, n_cls])
    label = ctx.op("Gather", [label_ids, ctx.op("Mod", [b_idx, n_cls])], axis=0)
    bj = ctx.op("Concat", [ctx.op("Unsqueeze", [b_idx, ctx.ints("ax1", [1])]),
                           ctx.op("Unsqueeze", [j_idx, ctx.ints("ax1", [1])])], axis=1)
    score = ctx.op("GatherND", [ctx.op("Reshape", [vals, shape_k]), bj])
    box = ctx.op("GatherND", [ctx.op("Reshape", [cand, shape_k4]), bj])

    def col(v, cast=False):
        v = ctx.op("Cast", [v], to=1) if cast else v
        return ctx.op("Unsqueeze", [v, ctx.ints("ax1", [1])])

    rows = ctx.op("Concat", [col(img, True), col(label, True), col(score), box], axis=1)   # (S, 7)
    n_scalar = _take(ctx, ctx.op("Shape", [conf]), 0, 0)
    if p.keep_top_k > -1:
        rows = _keep_top_k(ctx, rows, img, score, n_scalar, p.keep_top_k)

    # no detection in the batch: one (i, -1, -1, -1, -1, -1, -1) row per image
    zero, one = _scalar(ctx, "zero", 0), _scalar(ctx, "one", 1)
    images = ctx.op("Cast", [ctx.op("Range", [zero, n_scalar, one])], to=1)
    fallback = ctx.op("Add", [ctx.op("Mul", [col(images), ctx.const("e0", np.eye(7, dtype=np.float32)[:1])]),
                              ctx.const("minus", np.asarray([[0] + [-1] * 6], np.float32))])
    count = ctx.op("Slice", [ctx.op("Shape", [rows]), ctx.ints("s0", [0]), ctx.ints("s1", [1])])
    none = ctx.op("Cast", [ctx.op("Equal", [count, ctx.ints("z", [0])])], to=7)
    n_fb = ctx.op("Mul", [ctx.op("Unsqueeze", [n_scalar, ctx.ints("ax0", [0])]), none])
    fallback = ctx.op("Slice", [fallback, ctx.ints("f0", [0]), n_fb, ctx.ints("fa", [0])])
    out = ctx.op("Concat", [rows, fallback], axis=0)
    ctx.op("Reshape", [out, ctx.ints("out_shape", [1, 1, -1, 7])], step.outputs[0])


def adaptive_nms(ctx, cand, vals, shape_k4, shape_k, p) -> str:
    """Caffe's ApplyNMSFast with eta < 1 (weiliu89/caffe src/caffe/util/bbox_util.cpp): the
    threshold starts at nms_threshold and, after each kept box while it is > 0.5, becomes
    float32(threshold * eta). NonMaxSuppression has a fixed threshold, so this is an ONNX
    ``Loop`` over the candidate rank a (all (image, class) rows at once): candidate a is kept
    when it passes confidence_threshold and its JaccardOverlap with every kept box of its row
    is <= the row's current threshold. JaccardOverlap as Caffe's NormalizedBBox form: 0 for
    disjoint boxes or an empty intersection, else inter / (size_a + size_k - inter), sizes 0
    for inverted boxes; all in float32. The trip count is the longest run of candidates above
    the confidence threshold (they lead each sorted row). Returns NonMaxSuppression's
    selection layout (S, 3): (row, 0, rank), rows ascending, ranks ascending (= score order)."""
    from onnx import TensorProto, helper
    boxes = ctx.op("Reshape", [cand, shape_k4])                          # (B, k, 4)
    scores = ctx.op("Reshape", [vals, shape_k])                          # (B, k)
    ax2 = ctx.ints("ax2", [2])
    x0, y0, x1, y1 = (ctx.op("Squeeze", [c, ax2]) for c in _split4(ctx, boxes, 2))
    zero_f = ctx.const("zero", np.zeros(1, np.float32))
    inverted = ctx.op("Or", [ctx.op("Less", [x1, x0]), ctx.op("Less", [y1, y0])])
    size = ctx.op("Where", [inverted, zero_f, ctx.op("Mul", [ctx.op("Sub", [x1, x0]), ctx.op("Sub", [y1, y0])])])
    thr = -3.4028234663852886e38 if p.confidence_threshold is None else p.confidence_threshold
    valid = ctx.op("Greater", [scores, ctx.const("score_thr", np.asarray([thr], np.float32))])
    count = ctx.op("ReduceSum", [ctx.op("Cast", [valid], to=TensorProto.INT64), ctx.ints("ax1", [1])], keepdims=0)
    trips = ctx.op("ReduceMax", [count], keepdims=0)                    # a 0-d int64
    keep0 = ctx.op("ConstantOfShape", [ctx.op("Shape", [scores])],
                   value=helper.make_tensor("v", TensorProto.BOOL, [1], [False]))
    thr0 = ctx.op("Expand", [ctx.const("nms_thr", np.asarray([p.nms_threshold], np.float32)),
                             ctx.op("Shape", [count])])                  # (B,)
    n_k = ctx.op("Squeeze", [ctx.op("Slice", [ctx.op("Shape", [scores]), ctx.ints("k0", [1]), ctx.ints("k1", [2])]),
                             ctx.ints("ax0", [0])])
    ranks = ctx.op("Range", [ctx.op("Squeeze", [ctx.ints("r0", [0]), ctx.ints("ax0", [0])]), n_k,
                             ctx.op("Squeeze", [ctx.ints("r1", [1]), ctx.ints("ax0", [0])])])
    c_ax0, c_ax1 = ctx.ints("ax0", [0]), ctx.ints("ax1", [1])
    c_half = ctx.const("half", np.asarray([0.5], np.float32))
    c_eta = ctx.const("eta", np.asarray([p.eta], np.float32))

    # the loop body (outer-scope values read by name: boxes, sizes, validity, ranks, constants)
    body_nodes = []

    def b(op, inputs, **attrs):
        out = ctx.tmp(f"nms_loop/{op.lower()}")
        body_nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out
    it, cond_in, keep_in, thr_in = (ctx.tmp(f"nms_loop/{n}") for n in ("iter", "cond_in", "keep_in", "thr_in"))
    i1 = b("Unsqueeze", [it, c_ax0])                                     # [1]
    ax0_, ay0, ax1_, ay1, asz = (b("Gather", [v, i1], axis=1) for v in (x0, y0, x1, y1, size))   # (B, 1)
    va = b("Gather", [valid, i1], axis=1)
    disjoint = b("Or", [b("Or", [b("Greater", [x0, ax1_]), b("Less", [x1, ax0_])]),
                        b("Or", [b("Greater", [y0, ay1]), b("Less", [y1, ay0])])])
    iw = b("Sub", [b("Min", [x1, ax1_]), b("Max", [x0, ax0_])])
    ih = b("Sub", [b("Min", [y1, ay1]), b("Max", [y0, ay0])])
    inter = b("Mul", [iw, ih])
    iou = b("Div", [inter, b("Sub", [b("Add", [asz, size]), inter])])
    none = b("Or", [disjoint, b("Or", [b("LessOrEqual", [iw, zero_f]), b("LessOrEqual", [ih, zero_f])])])
    ov = b("Where", [none, zero_f, iou])                                 # (B, k)
    thr_u = b("Unsqueeze", [thr_in, c_ax1])                              # (B, 1)
    hit = b("Cast", [b("And", [keep_in, b("Greater", [ov, thr_u])])], to=TensorProto.FLOAT)
    sup = b("Cast", [b("ReduceMax", [hit], axes=[1], keepdims=1)], to=TensorProto.BOOL)
    keep_a = b("And", [va, b("Not", [sup])])                             # (B, 1)
    keep_out = b("Or", [keep_in, b("And", [b("Equal", [ranks, it]), keep_a])])
    shrink = b("And", [keep_a, b("Greater", [thr_u, c_half])])
    thr_out = b("Squeeze", [b("Where", [shrink, b("Mul", [thr_u, c_eta]), thr_u]), c_ax1])
    cond_out = b("Identity", [cond_in])
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        body_nodes, ctx.tmp("nms_loop"),
        [vi(it, TensorProto.INT64, []), vi(cond_in, TensorProto.BOOL, []),
         vi(keep_in, TensorProto.BOOL, None), vi(thr_in, TensorProto.FLOAT, None)],
        [vi(cond_out, TensorProto.BOOL, []), vi(keep_out, TensorProto.BOOL, None),
         vi(thr_out, TensorProto.FLOAT, None)])
    keep, _ = ctx.op("Loop", [trips, "", keep0, thr0], n_out=2, body=body)
    nz = ctx.op("NonZero", [keep])                                       # (2, S): row, rank
    row, rank = _take(ctx, nz, 0, 0), _take(ctx, nz, 1, 0)
    zeros = ctx.op("Mul", [row, ctx.ints("zero_i", [0])])
    cols = [ctx.op("Unsqueeze", [v, ctx.ints("ax1", [1])]) for v in (row, zeros, rank)]
    return ctx.op("Concat", cols, axis=1)
