"""Two-stage detector layers: ROIPooling (Fast/Faster R-CNN), PSROIPooling (R-FCN), the C++
Proposal layer (pva-faster-rcnn's proposal_param) and py-faster-rcnn's Python ProposalLayer.

Semantics from the C++/Python forward named on each class; the PyTorch reference and the
generated source share :mod:`protogen.layers.detect_torch`; the ONNX lowerings use standard
operators only. A proposal layer's row count R is data-dependent (NMS): its shape rule gives
the upper bound N * post_nms_topn (the C++ layer's own Reshape at setup), whose first axis
follows the batch and is therefore symbolic in ONNX, as are the ROI-pooled blobs after it.
Both proposal layers support one image per batch, as in Caffe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from ..seed_inputs import SeedsImInfo, SeedsROIs   # verify's seeded rois/im_info
from .base import Example, LayerType, _f32, register, require_rank
from .python_code import PythonCode, parse_param_str

_RCNN = ("py-faster-rcnn",)


def _roi_count(shape, what) -> int:
    if len(shape) not in (2, 4) or shape[1] != 5 or (len(shape) == 4 and shape[2:] != (1, 1)):
        raise ShapeError(f"{what}: ROIs must be (R, 5) or (R, 5, 1, 1) (batch, x1, y1, x2, y2), "
                         f"got {tuple(shape)}")
    return int(shape[0])


def _checked(fn, *args):
    """A reference helper whose input Caffe would refuse at run time (CHECK failures: an ROI
    batch index outside the batch, a batch of several images) raises ProtogenError."""
    try:
        return fn(*args)
    except ValueError as e:
        raise ProtogenError(str(e)) from None


def _batch_onehot(ctx, x: str, batch_col: str) -> str:
    """[R, N] float: 1 where ROI r's batch index (truncated like C's int cast) is image n."""
    from .detect_onnx import scalar
    n = ctx.op("Squeeze", [ctx.op("Shape", [x], start=0, end=1), ctx.ints("axis0", [0])])
    images = ctx.op("Range", [scalar(ctx, "zero", 0), n, scalar(ctx, "one", 1)])
    batch = ctx.op("Cast", [batch_col], to=7)                                            # R, 1
    return ctx.op("Cast", [ctx.op("Equal", [batch, images])], to=1)


def _rois_2d(ctx, v):
    return ctx.op("Reshape", [ctx.name(v), ctx.ints("rois2d", [-1, 5])])


def _roi_data(fmap_scale: float):
    """Data for ROI examples: a feature map plus ROIs in image coordinates (some outside the
    image, one of zero size, one inverted), batch indices within the batch."""
    def data(rng, shapes):
        import numpy as np
        x = rng.standard_normal(shapes[0]).astype(np.float32)
        n, _, h, w = shapes[0]
        r = shapes[1][0]
        W, H = w / fmap_scale, h / fmap_scale
        rois = np.zeros((r, 5), np.float32)
        rois[:, 0] = rng.integers(0, n, r)
        x1 = rng.uniform(-0.2 * W, 0.9 * W, r)
        y1 = rng.uniform(-0.2 * H, 0.9 * H, r)
        rois[:, 1], rois[:, 2] = x1, y1
        rois[:, 3] = x1 + rng.uniform(0, 0.8 * W, r)
        rois[:, 4] = y1 + rng.uniform(0, 0.8 * H, r)
        rois[0, 1:] = [0.4 * W, 0.4 * H, 0.4 * W, 0.4 * H]          # zero size
        if r > 2:
            rois[1, 1:] = [0.7 * W, 0.6 * H, 0.2 * W, 0.1 * H]      # x2 < x1
            rois[2, 1:] = [1.2 * W, 1.1 * H, 1.5 * W, 1.4 * H]      # outside the image
        return [x, rois.reshape(shapes[1])]
    return data


@dataclass(frozen=True)
class ROIPoolingParams:
    pooled_h: int = 0
    pooled_w: int = 0
    spatial_scale: float = 1.0
    pad_ratio: float = 0.0


@register
class ROIPooling(SeedsROIs, LayerType):
    """Max pooling of each ROI into pooled_h x pooled_w bins: rbgirshick/caffe-fast-rcnn
    src/caffe/layers/roi_pooling_layer.cpp (Forward_cpu; see
    :func:`protogen.layers.detect_torch.roi_pool`). ONNX MaxRoiPool has the same definition
    (C round of the scaled corners, roi size end - start + 1 at least 1, floor/ceil bin edges
    clipped to the map, empty bin 0) and is used directly; tests compare it with a numpy
    transcription of the C++ loop."""
    type = "ROIPooling"
    param_field = "roi_pooling_param"
    Params = ROIPoolingParams
    n_bottoms = (2, 2)
    schemas = _RCNN
    examples = (
        Example(params=dict(pooled_h=3, pooled_w=2, spatial_scale=0.25), ins=[(2, 4, 9, 11), (6, 5)],
                data=_roi_data(0.25)),
        Example(params=dict(pooled_h=7, pooled_w=7, spatial_scale=0.0625), ins=[(1, 3, 6, 8), (4, 5, 1, 1)],
                data=_roi_data(0.0625)),
    )

    def validate(self, p):
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise ProtogenError("ROIPooling needs pooled_h > 0 and pooled_w > 0")

    def unsupported(self, lp):
        bad = super().unsupported(lp)
        if lp.roi_pooling_param.pad_ratio:
            bad.append("roi_pooling_param.pad_ratio (a fork's ROI padding) is not supported")
        return bad

    def shapes(self, p, ins):
        require_rank(ins[:1], 4, "ROIPooling")
        r = _roi_count(ins[1], "ROIPooling")
        return [(r, ins[0][1], p.pooled_h, p.pooled_w)]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        ctx.op("MaxRoiPool", [ctx.name(step.inputs[0]), _rois_2d(ctx, step.inputs[1])], step.outputs[0],
               pooled_shape=[p.pooled_h, p.pooled_w], spatial_scale=float(p.spatial_scale))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import roi_pool
        return [_checked(roi_pool, xs[0], xs[1], p.pooled_h, p.pooled_w, p.spatial_scale)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "roi_pool")
        src.assign(f"{fn}({src.x(0)}, {src.x(1)}, {p.pooled_h}, {p.pooled_w}, {float(p.spatial_scale)!r})",
                   comment=True)


@dataclass(frozen=True)
class PSROIPoolingParams:
    spatial_scale: float = 0.0
    output_dim: int = 0
    group_size: int = 0


@register
class PSROIPooling(SeedsROIs, LayerType):
    """Position-sensitive average ROI pooling: daijifeng001/R-FCN (caffe)
    src/caffe/layers/psroi_pooling_layer.cu (PSROIPoolingForward; see
    :func:`protogen.layers.detect_torch.psroi_pool`). ONNX has no such operator: the lowering
    builds the bins as 0/1 masks over rows and columns (floor/ceil edges in float32, as Caffe)
    and sums with Einsum, one image selected per ROI by a one-hot batch mask."""
    type = "PSROIPooling"
    param_field = "psroi_pooling_param"
    Params = PSROIPoolingParams
    n_bottoms = (2, 2)
    schemas = ("r-fcn", "cascade-rcnn")
    examples = (
        Example(params=dict(spatial_scale=0.25, output_dim=2, group_size=3), ins=[(2, 18, 9, 11), (6, 5)],
                data=_roi_data(0.25)),
        Example(params=dict(spatial_scale=0.0625, output_dim=3, group_size=2), ins=[(1, 12, 7, 5), (4, 5)],
                data=_roi_data(0.0625)),
    )

    def validate(self, p):
        if p.output_dim <= 0 or p.group_size <= 0 or not p.spatial_scale > 0:
            raise ProtogenError("PSROIPooling needs output_dim > 0, group_size > 0 and spatial_scale > 0")

    def shapes(self, p, ins):
        require_rank(ins[:1], 4, "PSROIPooling")
        r = _roi_count(ins[1], "PSROIPooling")
        g = p.group_size
        if ins[0][1] != p.output_dim * g * g:
            raise ShapeError(f"PSROIPooling: {ins[0][1]} channels, expected output_dim x group_size^2 "
                             f"= {p.output_dim * g * g}")
        return [(r, p.output_dim, g, g)]

    def to_onnx(self, ctx, step):
        import numpy as np
        p = step.layer.params
        g, d = p.group_size, p.output_dim
        x = step.inputs[0]
        h, w = ctx.static(x, 2), ctx.static(x, 3)
        rois = _rois_2d(ctx, step.inputs[1])

        def col(j):
            return ctx.op("Slice", [rois, ctx.ints("s", [j]), ctx.ints("e", [j + 1]), ctx.ints("a", [1])])

        def c_round(v):   # C round(), exact: sign * (floor|v| + (|v| - floor|v| >= 0.5))
            a = ctx.op("Abs", [v])
            f = ctx.op("Floor", [a])
            up = ctx.op("Cast", [ctx.op("GreaterOrEqual", [ctx.op("Sub", [a, f]),
                                                           ctx.const("half", np.float32(0.5))])], to=1)
            return ctx.op("Mul", [ctx.op("Sign", [v]), ctx.op("Add", [f, up])])
        scale = ctx.const("scale", np.float32(p.spatial_scale))
        one = ctx.const("one", np.float32(1.0))
        x1 = ctx.op("Mul", [c_round(col(1)), scale])
        y1 = ctx.op("Mul", [c_round(col(2)), scale])
        x2 = ctx.op("Mul", [ctx.op("Add", [c_round(col(3)), one]), scale])
        y2 = ctx.op("Mul", [ctx.op("Add", [c_round(col(4)), one]), scale])
        tenth = ctx.const("min_size", np.float32(0.1))
        gs = ctx.const("group", np.float32(g))
        bin_w = ctx.op("Div", [ctx.op("Max", [ctx.op("Sub", [x2, x1]), tenth]), gs])     # R, 1
        bin_h = ctx.op("Div", [ctx.op("Max", [ctx.op("Sub", [y2, y1]), tenth]), gs])
        pv = ctx.const("bins", np.arange(g, dtype=np.float32).reshape(1, g))
        pv1 = ctx.const("bins1", np.arange(1, g + 1, dtype=np.float32).reshape(1, g))

        def edges(bin_size, start, size):
            lo = ctx.op("Floor", [ctx.op("Add", [ctx.op("Mul", [pv, bin_size]), start])])
            hi = ctx.op("Ceil", [ctx.op("Add", [ctx.op("Mul", [pv1, bin_size]), start])])
            zero, top = ctx.const("zero", np.float32(0)), ctx.const("size", np.float32(size))
            lo = ctx.op("Min", [ctx.op("Max", [lo, zero]), top])                      # R, G
            hi = ctx.op("Min", [ctx.op("Max", [hi, zero]), top])
            pos = ctx.const("pos", np.arange(size, dtype=np.float32).reshape(1, 1, size))
            lo3 = ctx.op("Unsqueeze", [lo, ctx.ints("ax", [2])])
            hi3 = ctx.op("Unsqueeze", [hi, ctx.ints("ax", [2])])
            inside = ctx.op("And", [ctx.op("GreaterOrEqual", [pos, lo3]), ctx.op("Less", [pos, hi3])])
            return ctx.op("Cast", [inside], to=1), ctx.op("Sub", [hi, lo])            # R,G,size; R,G
        mw, cw = edges(bin_w, x1, w)
        mh, ch = edges(bin_h, y1, h)
        onehot = _batch_onehot(ctx, ctx.name(x), col(0))
        xd = ctx.op("Reshape", [ctx.name(x), ctx.ints("as6", [0, d, g, g, h, w])])
        t1 = ctx.op("Einsum", [xd, mw], equation="ndijhw,rjw->rndijh")
        t2 = ctx.op("Einsum", [t1, mh], equation="rndijh,rih->rndij")
        sums = ctx.op("Einsum", [t2, onehot], equation="rndij,rn->rdij")
        # area (he - hs) * (we - ws); an empty bin (area <= 0) sums to 0 and gives 0
        area = ctx.op("Mul", [ctx.op("Unsqueeze", [ch, ctx.ints("ax", [2])]),
                              ctx.op("Unsqueeze", [cw, ctx.ints("ax", [1])])])           # R, G, G
        area = ctx.op("Max", [area, one])
        ctx.op("Div", [sums, ctx.op("Unsqueeze", [area, ctx.ints("ax", [1])])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import psroi_pool
        return [_checked(psroi_pool, xs[0], xs[1], p.output_dim, p.group_size, p.spatial_scale)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "psroi_pool")
        src.assign(f"{fn}({src.x(0)}, {src.x(1)}, {p.output_dim}, {p.group_size}, {float(p.spatial_scale)!r})",
                   comment=True)


@register
class ROIAlign(SeedsROIs, LayerType):
    """Cascade R-CNN's ROIAlign (configured through roi_pooling_param):
    zhaoweicai/cascade-rcnn src/caffe/layers/roi_align_layer.cpp (Forward_cpu; see
    :func:`protogen.layers.detect_torch.roi_align_grid`). It samples the (pooled_h + 1) x
    (pooled_w + 1) grid points of each ROI bilinearly — not ONNX RoiAlign's bin averages — so
    the lowering builds the two bilinear weight matrices (rows, columns) per ROI, zero outside
    the map or for a malformed ROI, and contracts them with Einsum."""
    type = "ROIAlign"
    param_field = "roi_pooling_param"
    Params = ROIPoolingParams
    n_bottoms = (2, 2)
    schemas = ("cascade-rcnn",)
    examples = (
        Example(params=dict(pooled_h=3, pooled_w=2, spatial_scale=0.25), ins=[(2, 4, 9, 11), (6, 5)],
                data=_roi_data(0.25)),
        Example(params=dict(pooled_h=2, pooled_w=4, spatial_scale=0.0625, pad_ratio=0.1),
                ins=[(1, 3, 6, 8), (4, 5)], data=_roi_data(0.0625)),
    )

    def validate(self, p):
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise ProtogenError("ROIAlign needs pooled_h > 0 and pooled_w > 0")

    def shapes(self, p, ins):
        require_rank(ins[:1], 4, "ROIAlign")
        r = _roi_count(ins[1], "ROIAlign")
        return [(r, ins[0][1], p.pooled_h + 1, p.pooled_w + 1)]

    def to_onnx(self, ctx, step):
        import numpy as np
        p = step.layer.params
        x = step.inputs[0]
        h, w = ctx.static(x, 2), ctx.static(x, 3)
        rois = _rois_2d(ctx, step.inputs[1])

        def col(j):
            return ctx.op("Slice", [rois, ctx.ints("s", [j]), ctx.ints("e", [j + 1]), ctx.ints("a", [1])])

        def c(hint, v):
            return ctx.const(hint, np.float32(v))
        one, half, scale, ratio = c("one", 1), c("half", 0.5), c("scale", p.spatial_scale), c("ratio", p.pad_ratio)

        def axis(lo_i, hi_i, pooled, size):
            lo, hi = col(lo_i), col(hi_i)                                              # R, 1
            pad = ctx.op("Mul", [ctx.op("Add", [ctx.op("Sub", [hi, lo]), one]), ratio])
            start = ctx.op("Sub", [ctx.op("Mul", [ctx.op("Sub", [lo, pad]), scale]), half])
            end = ctx.op("Sub", [ctx.op("Mul", [ctx.op("Add", [hi, pad]), scale]), half])
            length = ctx.op("Sub", [end, start])
            step_ = ctx.op("Div", [length, c("pooled", pooled)])
            k = ctx.const("points", np.arange(pooled + 1, dtype=np.float32).reshape(1, -1))
            f = ctx.op("Add", [start, ctx.op("Mul", [k, step_])])                        # R, P
            ok = ctx.op("And", [ctx.op("GreaterOrEqual", [f, c("lo", -0.5)]),
                                ctx.op("LessOrEqual", [f, c("hi", size - 0.5)])])
            f0 = ctx.op("Floor", [f])
            top = c("top", size - 1)
            zero = c("zero", 0)
            lo_n = ctx.op("Min", [ctx.op("Max", [f0, zero]), top])
            hi_n = ctx.op("Min", [ctx.op("Max", [ctx.op("Add", [f0, one]), zero]), top])
            fc = ctx.op("Min", [ctx.op("Max", [f, zero]), top])
            frac = ctx.op("Sub", [fc, lo_n])
            pos = ctx.const("pos", np.arange(size, dtype=np.float32).reshape(1, 1, size))

            def onehot(v):
                return ctx.op("Cast", [ctx.op("Equal", [pos, ctx.op("Unsqueeze", [v, ctx.ints("ax", [2])])])], to=1)

            def e(v):
                return ctx.op("Unsqueeze", [v, ctx.ints("ax", [2])])
            wts = ctx.op("Add", [ctx.op("Mul", [e(ctx.op("Sub", [one, frac])), onehot(lo_n)]),
                                 ctx.op("Mul", [e(frac), onehot(hi_n)])])                # R, P, size
            wts = ctx.op("Mul", [wts, e(ctx.op("Cast", [ok], to=1))])
            return wts, ctx.op("Greater", [length, zero])
        wx, okw = axis(1, 3, p.pooled_w, w)
        wy, okh = axis(2, 4, p.pooled_h, h)
        good = ctx.op("Cast", [ctx.op("And", [okw, okh])], to=1)                          # R, 1
        wx = ctx.op("Mul", [wx, ctx.op("Unsqueeze", [good, ctx.ints("ax", [2])])])
        onehot_b = _batch_onehot(ctx, ctx.name(x), col(0))
        t1 = ctx.op("Einsum", [ctx.name(x), wx], equation="nchw,rjw->rnchj")
        t2 = ctx.op("Einsum", [t1, wy], equation="rnchj,rih->rncij")
        ctx.op("Einsum", [t2, onehot_b], step.outputs[0], equation="rncij,rn->rcij")

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import roi_align_grid
        return [_checked(roi_align_grid, xs[0], xs[1], p.pooled_h, p.pooled_w, p.spatial_scale, p.pad_ratio)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "roi_align_grid")
        src.assign(f"{fn}({src.x(0)}, {src.x(1)}, {p.pooled_h}, {p.pooled_w}, {float(p.spatial_scale)!r}, "
                   f"{float(p.pad_ratio)!r})", comment=True)


# ------------------------------------------------------------------------------- proposals
def anchors_cpp(base_size: int, ratios, scales):
    """pva-faster-rcnn proposal_layer.cpp generate_anchors, in float32: ROUND(x) = (int)(x +
    0.5); w_r = ROUND(sqrt(base^2 / ratio)), h_r = ROUND(w_r * ratio); anchor = centre +-
    0.5 * (w_r * scale - 1), centre 0.5 * (base - 1); ratios outer, scales inner."""
    import numpy as np
    f = np.float32
    area = f(base_size * base_size)
    centre = f(0.5) * (f(base_size) - f(1))
    out = []
    for r in ratios:
        rw = f(math.floor(f(np.sqrt(area / f(r))) + f(0.5)))
        rh = f(math.floor(rw * f(r) + f(0.5)))
        for s in scales:
            sw = f(0.5) * (rw * f(s) - f(1))
            sh = f(0.5) * (rh * f(s) - f(1))
            out.append([centre - sw, centre - sh, centre + sw, centre + sh])
    return np.asarray(out, np.float32).reshape(-1, 4)


def anchors_py(base_size: int, ratios, scales):
    """py-faster-rcnn lib/rpn/generate_anchors.py generate_anchors (float64, numpy's
    half-to-even round): ratio anchors of base box [0, 0, base-1, base-1] (w = round(sqrt(
    size / ratio)), h = round(w * ratio)), each scaled by every scale; (x_ctr, y_ctr) +-
    0.5 * (w - 1)."""
    import numpy as np

    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mk(ws, hs, xc, yc):
        return [[xc - 0.5 * (wi - 1), yc - 0.5 * (hi - 1), xc + 0.5 * (wi - 1), yc + 0.5 * (hi - 1)]
                for wi, hi in zip(ws, hs)]
    base = np.array([1, 1, base_size, base_size], np.float64) - 1
    w, h, xc, yc = whctrs(base)
    ws = np.round(np.sqrt(w * h / np.asarray(ratios, np.float64)))
    hs = np.round(ws * np.asarray(ratios, np.float64))
    out = []
    for a in mk(ws, hs, xc, yc):
        w, h, xc, yc = whctrs(np.asarray(a))
        sc = np.asarray(scales, np.float64)
        out.extend(mk(w * sc, h * sc, xc, yc))
    return np.asarray(out, np.float64).astype(np.float32).reshape(-1, 4)


def _proposal_onnx(ctx, step, anchors, feat_stride, pre, post, thr, min_size, cpp: bool):
    """Shared ONNX lowering of the two proposal layers (see detect_torch.proposal_cpp/_py)."""
    import numpy as np
    from .detect_onnx import column, flat, greedy_nms, scalar, sort_desc
    s_in, d_in, i_in = (ctx.name(v) for v in step.inputs)
    a = anchors.shape[0]
    fg = ctx.op("Slice", [s_in, ctx.ints("s", [0, a]), ctx.ints("e", [1, 2 * a]), ctx.ints("a", [0, 1])])
    fg = flat(ctx, ctx.op("Transpose", [fg], perm=[0, 2, 3, 1]))
    d = ctx.op("Slice", [d_in, ctx.ints("s", [0]), ctx.ints("e", [1]), ctx.ints("a", [0])])
    d = ctx.op("Reshape", [ctx.op("Transpose", [d], perm=[0, 2, 3, 1]), ctx.ints("k4", [-1, 4])])
    # shifted anchors in (h, w, anchor) order, for any map size
    hw = ctx.op("Shape", [s_in], start=2, end=4)
    fs = ctx.const("feat_stride", np.float32(feat_stride))

    def grid(axis, shape):
        n = ctx.op("Squeeze", [ctx.op("Slice", [hw, ctx.ints("s", [axis]), ctx.ints("e", [axis + 1])]),
                               ctx.ints("ax", [0])])
        r = ctx.op("Range", [scalar(ctx, "zero", 0), n, scalar(ctx, "one", 1)])
        r = ctx.op("Mul", [ctx.op("Cast", [r], to=1), fs])
        return ctx.op("Expand", [ctx.op("Reshape", [r, ctx.ints("shape", shape)]), hw])
    sx, sy = grid(1, [1, -1]), grid(0, [-1, 1])
    parts = [ctx.op("Unsqueeze", [v, ctx.ints("ax", [2])]) for v in (sx, sy, sx, sy)]
    shift = ctx.op("Unsqueeze", [ctx.op("Concat", parts, axis=2), ctx.ints("ax", [2])])     # H, W, 1, 4
    anc = ctx.op("Reshape", [ctx.op("Add", [shift, ctx.const("anchors", anchors)]), ctx.ints("k4", [-1, 4])])
    ax1, ay1, ax2, ay2 = (column(ctx, anc, j, f"a{j}") for j in range(4))
    dx, dy, dw, dh = (column(ctx, d, j, f"d{j}") for j in range(4))
    one, half = ctx.const("one_f", np.float32(1.0)), ctx.const("half", np.float32(0.5))
    wid = ctx.op("Add", [ctx.op("Sub", [ax2, ax1]), one])
    hei = ctx.op("Add", [ctx.op("Sub", [ay2, ay1]), one])
    cx = ctx.op("Add", [ax1, ctx.op("Mul", [half, wid])])
    cy = ctx.op("Add", [ay1, ctx.op("Mul", [half, hei])])
    pcx = ctx.op("Add", [ctx.op("Mul", [dx, wid]), cx])
    pcy = ctx.op("Add", [ctx.op("Mul", [dy, hei]), cy])
    pw = ctx.op("Mul", [ctx.op("Exp", [dw]), wid])
    ph = ctx.op("Mul", [ctx.op("Exp", [dh]), hei])
    info = flat(ctx, i_in)

    def info_at(j):
        return ctx.op("Gather", [info, scalar(ctx, f"i{j}", j)], axis=0)
    zero = ctx.const("zero_f", np.float32(0.0))
    xmax = ctx.op("Sub", [info_at(1), one])
    ymax = ctx.op("Sub", [info_at(0), one])

    def clip(v, top):
        return ctx.op("Max", [ctx.op("Min", [v, top]), zero])
    x1 = clip(ctx.op("Sub", [pcx, ctx.op("Mul", [half, pw])]), xmax)
    y1 = clip(ctx.op("Sub", [pcy, ctx.op("Mul", [half, ph])]), ymax)
    x2 = clip(ctx.op("Add", [pcx, ctx.op("Mul", [half, pw])]), xmax)
    y2 = clip(ctx.op("Add", [pcy, ctx.op("Mul", [half, ph])]), ymax)
    boxes = ctx.op("Concat", [x1, y1, x2, y2], axis=1)
    bw = flat(ctx, ctx.op("Add", [ctx.op("Sub", [x2, x1]), one]))
    bh = flat(ctx, ctx.op("Add", [ctx.op("Sub", [y2, y1]), one]))
    ms = ctx.const("min_size", np.float32(min_size))
    if cpp:
        ok = ctx.op("And", [ctx.op("GreaterOrEqual", [bw, ctx.op("Mul", [ms, info_at(3)])]),
                            ctx.op("GreaterOrEqual", [bh, ctx.op("Mul", [ms, info_at(2)])])])
        fg = ctx.op("Mul", [fg, ctx.op("Cast", [ok], to=1)])
        order = sort_desc(ctx, fg, pre)
    else:
        m = ctx.op("Mul", [ms, info_at(2)])
        ok = ctx.op("And", [ctx.op("GreaterOrEqual", [bw, m]), ctx.op("GreaterOrEqual", [bh, m])])
        boxes = ctx.op("Compress", [boxes, ok], axis=0)
        fg = ctx.op("Compress", [fg, ok], axis=0)
        order = sort_desc(ctx, fg, pre if pre > 0 else None)
    boxes = ctx.op("Gather", [boxes, order], axis=0)
    fg = ctx.op("Gather", [fg, order], axis=0)
    # IoU with +1 widths == plain IoU of (x1, y1, x2 + 1, y2 + 1)
    plus = ctx.op("Add", [boxes, ctx.const("plus_one", np.asarray([0, 0, 1, 1], np.float32))])
    keep = greedy_nms(ctx, plus, float(thr), post if post > 0 else None)
    boxes = ctx.op("Gather", [boxes, keep], axis=0)
    fg = ctx.op("Gather", [fg, keep], axis=0)
    ids = ctx.op("Mul", [column(ctx, boxes, 0, "b0"), zero])
    ctx.op("Concat", [ids, boxes], step.outputs[0], axis=1)
    if len(step.outputs) > 1:
        ctx.op("Reshape", [fg, ctx.ints("shape", [-1] if cpp else [-1, 1])], step.outputs[1])


def _proposal_data(a: int):
    """RPN-like bottoms: softmax pairs (bg, fg), small deltas, im_info for the map size."""
    def data(rng, shapes):
        import numpy as np
        s, d, info = shapes
        logits = rng.standard_normal((s[0], 2, a, s[2], s[3])) * 2
        e = np.exp(logits)
        prob = (e / e.sum(1, keepdims=True)).reshape(s).astype(np.float32)
        deltas = (rng.standard_normal(d) * 0.3).astype(np.float32)
        im = np.zeros(info, np.float32).reshape(-1)
        im[:4] = [s[2] * 16, s[3] * 16 - 5, 1.0, 1.0][:im.size]
        return [prob, deltas, im.reshape(info)]
    return data


@dataclass(frozen=True)
class ProposalParams:
    feat_stride: int = 16
    base_size: int = 16
    min_size: int = 16
    ratio: tuple = ()
    scale: tuple = ()
    pre_nms_topn: int = 6000
    post_nms_topn: int = 300
    nms_thresh: float = _f32(0.7)     # the float32 value, as parse() reads it


class _ProposalBase(SeedsImInfo, LayerType):
    n_bottoms = (3, 3)
    n_tops = (1, 2)
    #: verify (protogen.verify_sets): rois/scores rows in score order, compared as sets; one
    #: image at a time (rois carry batch index 0; py-faster-rcnn's layer asserts one image)
    proposal_output, max_batch = True, 1

    def opencv_limit(self, p):
        """OpenCV's Proposal (modules/dnn/src/layers/proposal_layer.cpp, also for the Python
        ProposalLayer) is PriorBox + DetectionOutput: other decoding, no min_size filter, SSD
        NMS, always post_nms_topn rows (tests/layers/test_rcnn.py shows it)."""
        return ("implements Proposal as PriorBox + DetectionOutput (no +1 widths, no min_size "
                "filter, SSD NMS, post_nms_topn rows), not Caffe's proposal layer")

    def shapes(self, p, ins):
        s, d, info = ins
        require_rank([s, d], 4, self.type)
        a = self.anchors(p).shape[0]
        if s[1] != 2 * a or d[1] != 4 * a or s[2:] != d[2:] or s[0] != d[0]:
            raise ShapeError(f"{self.type}: scores {s} and deltas {d} do not fit {a} anchors "
                             f"(2 x {a} and 4 x {a} channels, one map size)")
        n_info = 1
        for v in info[1:]:
            n_info *= v
        if n_info < self.info_len:
            raise ShapeError(f"{self.type}: im_info needs {self.info_len} values per image, got {info}")
        r = s[0] * self.limits(p)[1]
        return [(r, 5), self.score_shape(r)]

    def output_shapes(self, p, ins, n_tops):
        return self.shapes(p, ins)[:n_tops]


@register
class Proposal(_ProposalBase):
    """The C++ Proposal layer: pva-faster-rcnn caffe-fast-rcnn src/caffe/layers/proposal_layer.cpp
    (Kye-Hyeon Kim; LayerSetUp/Forward_cpu, generate_anchors, enumerate_proposals_cpu,
    sort_box, nms_cpu in util/nms.cpp, retrieve_rois_cpu; see
    :func:`protogen.layers.detect_torch.proposal_cpp`). im_info holds (height, width,
    scale_h, scale_w). rois [R, 5], scores [R].

    The ONNX lowering's suppression (NonMaxSuppression on boxes (x1, y1, x2 + 1, y2 + 1))
    differs from nms_cpu in one corner: nms_cpu gives IoU 0 to boxes that do not touch
    (x1 > other x2), while the +1 widths give them a small overlap when they are less than
    one pixel apart; it changes a decision only for boxes under ~1.2 pixels wide (IoU > 0.7
    needs it), which keep score 0 here (below min_size)."""
    type = "Proposal"
    param_field = "proposal_param"
    Params = ProposalParams
    schemas = ("pva-faster-rcnn",)
    info_len = 4
    examples = (
        Example(params=dict(feat_stride=16, base_size=16, min_size=16, ratio=[0.5, 1, 2], scale=[2, 4],
                            pre_nms_topn=40, post_nms_topn=8, nms_thresh=0.7),
                ins=[(1, 12, 4, 5), (1, 24, 4, 5), (1, 4)], n_tops=2, data=_proposal_data(6)),
    )

    def validate(self, p):
        if not p.ratio or not p.scale:
            raise ProtogenError("Proposal needs ratio and scale values (the C++ layer makes "
                                "len(ratio) x len(scale) anchors)")
        if p.feat_stride <= 0:
            raise ProtogenError("Proposal needs feat_stride > 0")

    def anchors(self, p):
        return anchors_cpp(p.base_size, p.ratio, p.scale)

    def limits(self, p):
        return p.pre_nms_topn, p.post_nms_topn

    def score_shape(self, r):
        return (r,)

    def to_onnx(self, ctx, step):
        p = step.layer.params
        _proposal_onnx(ctx, step, self.anchors(p), p.feat_stride, p.pre_nms_topn, p.post_nms_topn,
                       p.nms_thresh, p.min_size, cpp=True)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        from .detect_torch import proposal_cpp
        out = _checked(proposal_cpp, xs[0], xs[1], xs[2], torch.from_numpy(self.anchors(p)), p.feat_stride,
                           p.pre_nms_topn, p.post_nms_topn, p.nms_thresh, p.min_size)
        return list(out[:n_tops])

    def torch_source(self, p, src, step):
        _proposal_source(self, p, src, step, "proposal_cpp", p.feat_stride, p.pre_nms_topn,
                         p.post_nms_topn, p.nms_thresh, p.min_size)


def _proposal_source(kind, p, src, step, fn_name, feat_stride, pre, post, thr, min_size):
    from .detect_torch import emit
    fn = emit(src, fn_name)
    rows = ", ".join("[" + ", ".join(repr(float(v)) for v in r) + "]" for r in kind.anchors(p))
    anc = src.constant("anchors", f"torch.tensor([{rows}])", "RPN anchors (x1, y1, x2, y2)")
    call = (f"{fn}({src.x(0)}, {src.x(1)}, {src.x(2)}, {anc}, {feat_stride}, {pre}, {post}, "
            f"{float(thr)!r}, {float(min_size)!r})")
    src.assign(call if len(step.outputs) > 1 else call + "[0]", comment=True)


# --------------------------------------------------------------------- Python ProposalLayer
#: py-faster-rcnn lib/fast_rcnn/config.py, __C.TEST: what the Python ProposalLayer reads
RPN_TEST_CFG = dict(pre_nms_topn=6000, post_nms_topn=300, nms_thresh=0.7, min_size=16)
_PY_KEYS = {"feat_stride", "scales", "ratios"}


@dataclass(frozen=True)
class PyProposalParams:
    module: str = "rpn.proposal_layer"
    layer: str = "ProposalLayer"
    param_str: str = ""


@register
class PyProposal(PythonCode, _ProposalBase):
    """py-faster-rcnn's Python ProposalLayer (``type: "Python"``, python_param module
    'rpn.proposal_layer', layer 'ProposalLayer'): rbgirshick/py-faster-rcnn
    lib/rpn/proposal_layer.py (forward), lib/rpn/generate_anchors.py,
    lib/fast_rcnn/bbox_transform.py, lib/nms/py_cpu_nms.py; see
    :func:`protogen.layers.detect_torch.proposal_py`. param_str gives feat_stride (and, in
    pva-faster-rcnn's copy, scales and ratios); the thresholds are lib/fast_rcnn/config.py's
    TEST defaults (RPN_PRE_NMS_TOP_N 6000, RPN_POST_NMS_TOP_N 300, RPN_NMS_THRESH 0.7,
    RPN_MIN_SIZE 16): a cfg file that overrides them is not part of the prototxt. im_info
    holds (height, width, scale). rois [R, 5], scores [R, 1].

    Read from a Caffe net through the ``Python`` type's :meth:`resolve`; written back as that
    Python layer."""
    type = "Python:rpn.proposal_layer.ProposalLayer"
    Params = PyProposalParams
    schemas = _RCNN
    info_len = 3
    param_keys, required_keys, code_name = frozenset(_PY_KEYS), ("feat_stride",), "ProposalLayer"
    examples = (
        Example(params=dict(module="rpn.proposal_layer", layer="ProposalLayer",
                            param_str="'feat_stride': 16, 'scales': [2, 4], 'ratios': [0.5, 1, 2]"),
                ins=[(1, 12, 6, 7), (1, 24, 6, 7), (1, 3)], n_tops=2, data=_proposal_data(6),
                skip=("shape",), why="the ROI count is data-dependent (300 at most, here fewer)"),
    )

    def config(self, p):
        d = parse_param_str(p.param_str)
        return (int(d["feat_stride"]), tuple(d.get("ratios", (0.5, 1, 2))),
                tuple(d.get("scales", (8, 16, 32))))

    def anchors(self, p):
        _, ratios, scales = self.config(p)
        return anchors_py(16, ratios, scales)

    def limits(self, p):
        return RPN_TEST_CFG["pre_nms_topn"], RPN_TEST_CFG["post_nms_topn"]

    def score_shape(self, r):
        return (r, 1)

    def _args(self, p):
        c = RPN_TEST_CFG
        return (self.config(p)[0], c["pre_nms_topn"], c["post_nms_topn"], _f32(c["nms_thresh"]),
                float(c["min_size"]))

    def to_onnx(self, ctx, step):
        p = step.layer.params
        fs, pre, post, thr, ms = self._args(p)
        _proposal_onnx(ctx, step, self.anchors(p), fs, pre, post, thr, ms, cpp=False)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        from .detect_torch import proposal_py
        out = _checked(proposal_py, xs[0], xs[1], xs[2], torch.from_numpy(self.anchors(p)), *self._args(p))
        return list(out[:n_tops])

    def torch_source(self, p, src, step):
        _proposal_source(self, p, src, step, "proposal_py", *self._args(p))
