"""Cascade R-CNN's own layers (zhaoweicai/cascade-rcnn): BoxGroupOutput (the RPN proposals of
one or more anchor groups), DecodeBBox (a cascade stage's box regression applied to its ROIs)
and ScaleRoute (FPN level assignment of ROIs by their size).

Semantics from the fork's C++ (named on each class; float32 as Caffe); the PyTorch reference
and the generated source share :mod:`protogen.layers.cascade_torch`; the ONNX lowerings use
standard operators only. Row counts are data-dependent: the shape rules give upper bounds
(BoxGroupOutput: N x its limits; ScaleRoute: all ROIs), symbolic in ONNX. BoxGroupOutput's
greedy NMS is lowered exactly (bbox_util.cpp JaccardOverlap with its +1 sizes and its
``iy1 >= iy2`` test, which ONNX NonMaxSuppression's plain IoU does not reproduce): a K x K
suppression matrix and an ONNX ``Loop`` over the K sorted boxes. OpenCV's dnn implements none
of the three types.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, _f32, register, require_rank

_SCHEMAS = ("cascade-rcnn",)
_NO_OPENCV = "has no {} layer (a cascade-rcnn fork type)"
FLT_MAX = 3.4028234663852886e38


def _means_stds(means, stds):
    """The normalisation a layer uses (LayerSetUp): both lists given -> them (4 each, std >
    0), else 0 and 1."""
    if means and stds:
        if len(means) != 4 or len(stds) != 4:
            raise ProtogenError("bbox_reg_param needs 4 bbox_mean and 4 bbox_std values")
        if min(stds) <= 0:
            raise ProtogenError("bbox_reg_param.bbox_std values must be > 0")
        return tuple(means), tuple(stds)
    return (0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0)


def _write_reg(means, stds, lp):
    if means:
        lp.bbox_reg_param.bbox_mean.extend(means)
    if stds:
        lp.bbox_reg_param.bbox_std.extend(stds)


# ----------------------------------------------------------------------------- BoxGroupOutput
@dataclass(frozen=True)
class BoxGroupOutputParams:
    fg_thr: float = 0.0
    iou_thr: float = _f32(0.5)
    nms_type: str = "IOU"
    #: per bottom pair: (field_w tuple, field_h tuple, stride)
    box_group_param: tuple = ()
    field_whr: float = 2.0
    field_xyr: float = 2.0
    max_nms_num: int = 0
    max_post_nms_num: int = 0
    min_size: float = 15.0
    #: bbox_reg_param of the same layer (LayerSetUp reads it)
    bbox_mean: tuple = ()
    bbox_std: tuple = ()


def _bgo_data(groups: int):
    """Softmax pairs (bg, fg) per anchor group, small deltas (some large, bounded by field_xyr /
    field_whr), a few objectness scores tied."""
    def data(rng, shapes):
        import numpy as np
        out = []
        for s, d in zip(shapes[0::2], shapes[1::2]):
            logits = rng.standard_normal(s) * 2
            e = np.exp(logits - logits.max(1, keepdims=True))
            prob = (e / e.sum(1, keepdims=True)).astype(np.float32)
            prob.reshape(s[0], s[1], -1)[:, :, 1] = prob.reshape(s[0], s[1], -1)[:, :, 0]  # ties
            deltas = (rng.standard_normal(d) * 0.5).astype(np.float32)
            deltas.reshape(-1)[:3] = [4.0, -5.0, 3.0]
            out += [prob, deltas]
        return out
    return data


@register
class BoxGroupOutput(LayerType):
    """RPN proposals of cascade R-CNN: zhaoweicai/cascade-rcnn
    src/caffe/layers/box_group_output_layer.cpp (LayerSetUp, Forward_cpu) with
    src/caffe/util/bbox_util.cpp (DecodeGroupBBoxes, ClipBBox, SortBBoxDescend, ApplyNMS,
    JaccardOverlap); see :func:`protogen.layers.cascade_torch.box_group_output`. Bottoms in
    pairs (objectness probabilities (N * G, C, H, W) with the background in channel 0, deltas
    (N * G, 4, H, W)), one box_group_param (G receptive fields, a stride) per pair; the layer's
    bbox_reg_param (mean/std) applies to the deltas. Tops: rois (R, 5, 1, 1) [image, x1, y1,
    x2, y2] and, optionally, the same with the score (R, 6, 1, 1).

    Caffe keeps the best max_nms_num with std::partial_sort, whose order of equal scores is
    unspecified; here (reference, ONNX TopK, generated source) the lower candidate index comes
    first. The ONNX form bakes the batch size in (one unrolled branch per image)."""
    type = "BoxGroupOutput"
    param_field = "box_group_output_param"
    Params = BoxGroupOutputParams
    n_bottoms = (2, None)
    n_tops = (1, 2)
    schemas = _SCHEMAS
    benign_fields = frozenset({"bbox_reg_param"})
    examples = (
        Example(params=dict(fg_thr=0.3, iou_thr=0.5, min_size=4, max_nms_num=40,
                            box_group_param=[dict(field_w=[16, 32, 24], field_h=[32, 16, 24], stride=8)],
                            field_whr=4, field_xyr=2),
                ins=[(3, 2, 5, 6), (3, 4, 5, 6)], n_tops=2, data=_bgo_data(1),
                skip=("shape",), why="the box count is data-dependent (the shape rule is its bound)"),
        Example(params=dict(fg_thr=0.2, iou_thr=0.6, nms_type="IOMU", max_post_nms_num=7,
                            box_group_param=[dict(field_w=[20, 40], field_h=[40, 20], stride=4),
                                             dict(field_w=[64], field_h=[64], stride=8)],
                            field_whr=8, field_xyr=1, min_size=2),
                ins=[(4, 2, 6, 5), (4, 4, 6, 5), (2, 2, 3, 3), (2, 4, 3, 3)], data=_bgo_data(2),
                skip=("shape",), why="the box count is data-dependent (the shape rule is its bound)"),
    )

    def parse(self, lp):
        m = lp.box_group_output_param
        groups = tuple((tuple(int(v) for v in g.field_w), tuple(int(v) for v in g.field_h), int(g.stride))
                       for g in m.box_group_param)
        p = BoxGroupOutputParams(
            fg_thr=m.fg_thr, iou_thr=m.iou_thr, nms_type=m.nms_type, box_group_param=groups,
            field_whr=m.field_whr, field_xyr=m.field_xyr, max_nms_num=int(m.max_nms_num),
            max_post_nms_num=int(m.max_post_nms_num), min_size=m.min_size,
            bbox_mean=tuple(lp.bbox_reg_param.bbox_mean), bbox_std=tuple(lp.bbox_reg_param.bbox_std))
        self.validate(p)
        return p

    def write(self, p, lp):
        m = lp.box_group_output_param
        dflt = BoxGroupOutputParams()
        for f in ("fg_thr", "iou_thr", "nms_type", "field_whr", "field_xyr", "max_nms_num",
                  "max_post_nms_num", "min_size"):
            if getattr(p, f) != getattr(dflt, f):
                setattr(m, f, getattr(p, f))
        for fw, fh, stride in p.box_group_param:
            g = m.box_group_param.add()
            g.field_w.extend(fw)
            g.field_h.extend(fh)
            g.stride = stride
        _write_reg(p.bbox_mean, p.bbox_std, lp)

    def validate(self, p):
        if not p.box_group_param:
            raise ProtogenError("BoxGroupOutput needs box_group_param (one per bottom pair)")
        for fw, fh, _ in p.box_group_param:
            if len(fw) != len(fh) or not fw:
                raise ProtogenError("BoxGroupOutput: each box_group_param needs as many field_w as "
                                    "field_h values (at least one)")
        if not p.field_whr or not p.field_xyr:
            raise ProtogenError("BoxGroupOutput needs field_whr and field_xyr != 0")
        _means_stds(p.bbox_mean, p.bbox_std)

    def opencv_limit(self, p):
        return _NO_OPENCV.format("BoxGroupOutput")

    def shapes(self, p, ins):
        require_rank(ins, 4, "BoxGroupOutput")
        if len(ins) % 2 or len(ins) // 2 != len(p.box_group_param):
            raise ShapeError(f"BoxGroupOutput: {len(ins)} bottoms for {len(p.box_group_param)} "
                             "box_group_param (two bottoms, probabilities and deltas, per group)")
        g0 = len(p.box_group_param[0][0])
        num, cls = ins[0][0] // g0, ins[0][1]
        total = 0
        for (s, d), (fw, _, _) in zip(zip(ins[0::2], ins[1::2]), p.box_group_param):
            if s[0] // len(fw) != num or s[1] != cls or d[1] != 4 or s[0] != d[0] or s[2:] != d[2:]:
                raise ShapeError(f"BoxGroupOutput: probabilities {s} and deltas {d} do not fit "
                                 f"{len(fw)} groups x {num} images (4 delta channels, one map size)")
            total += len(fw) * s[2] * s[3]
        per = total
        for lim in (p.max_nms_num, p.max_post_nms_num):
            if lim > 0:
                per = min(per, lim)
        r = max(num * per, 1)
        return [(r, 5, 1, 1), (r, 6, 1, 1)]

    def output_shapes(self, p, ins, n_tops):
        return self.shapes(p, ins)[:n_tops]

    def _args(self, p):
        means, stds = _means_stds(p.bbox_mean, p.bbox_std)
        fields = tuple((fw, fh) for fw, fh, _ in p.box_group_param)
        strides = tuple(s for _, _, s in p.box_group_param)
        return (fields, strides, means, stds, float(p.field_xyr), float(p.field_whr), _f32(p.fg_thr),
                _f32(p.iou_thr), p.nms_type, p.max_nms_num, p.max_post_nms_num, _f32(p.min_size))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .cascade_torch import box_group_output
        out = box_group_output(xs[0::2], xs[1::2], *self._args(p))
        return list(out[:n_tops])

    def torch_source(self, p, src, step):
        from .cascade_torch import emit
        fn = emit(src, "box_group_output")
        xs = src.xs()
        args = ", ".join(repr(a) for a in self._args(p))
        call = f"{fn}([{', '.join(xs[0::2])}], [{', '.join(xs[1::2])}], {args})"
        src.assign(call if len(step.outputs) > 1 else call + "[0]", comment=True)

    def to_onnx(self, ctx, step):
        from .cascade_onnx import box_group_output
        box_group_output(ctx, step, *self._args(step.layer.params))


# ----------------------------------------------------------------------------- DecodeBBox
@dataclass(frozen=True)
class BBoxRegParams:
    bbox_mean: tuple = ()
    bbox_std: tuple = ()
    cls_aware: bool = True


def _decode_data(rng, shapes):
    import numpy as np
    d, r = shapes
    deltas = (rng.standard_normal(d) * 2).astype(np.float32)
    n = r[0]
    rois = np.zeros((n, 5), np.float32)
    rois[:, 0] = rng.integers(0, 2, n)
    rois[:, 1:3] = rng.uniform(-20, 60, (n, 2))
    rois[:, 3:5] = rois[:, 1:3] + rng.uniform(-2, 50, (n, 2))      # some inverted
    rois[0, 3:5] = rois[0, 1:3] - 1                                  # zero size (w = h = 0)
    return [deltas, rois.reshape(r)]


@register
class DecodeBBox(LayerType):
    """A cascade stage's class-agnostic box regression applied to its ROIs: zhaoweicai/cascade-rcnn
    src/caffe/layers/decode_bbox_layer.cpp (LayerSetUp, Forward_cpu at TEST) with
    src/caffe/util/bbox_util.cpp DecodeBBoxesWithPrior; see
    :func:`protogen.layers.cascade_torch.decode_bbox`. Bottoms: deltas (R, 8, ...) (the
    foreground's 4 are channels 4..7) and ROIs (R, 5, ...); top: the decoded ROIs, the ROIs'
    shape, no clipping (the malformed-box screening and a third bottom are TRAIN only)."""
    type = "DecodeBBox"
    param_field = "bbox_reg_param"
    Params = BBoxRegParams
    n_bottoms = (2, 2)
    schemas = _SCHEMAS
    benign_fields = frozenset({"decode_bbox_param"})    # gt_iou_thr: TRAIN only
    benign_param_fields = LayerType.benign_param_fields | {"cls_aware"}
    examples = (
        Example(params=dict(bbox_mean=[0, 0, 0, 0], bbox_std=[0.1, 0.1, 0.2, 0.2]),
                ins=[(7, 8), (7, 5, 1, 1)], data=_decode_data),
        Example(params=dict(bbox_mean=[0.01, -0.02, 0.03, 0], bbox_std=[0.033, 0.05, 0.067, 0.1]),
                ins=[(5, 8, 1, 1), (5, 5)], data=_decode_data),
        Example(params=dict(), ins=[(4, 8), (4, 5)], data=_decode_data),
    )

    def validate(self, p):
        _means_stds(p.bbox_mean, p.bbox_std)

    def opencv_limit(self, p):
        return _NO_OPENCV.format("DecodeBBox")

    def shapes(self, p, ins):
        d, r = ins
        if d[0] != r[0] or len(d) < 2 or d[1] != 8 or len(r) < 2 or r[1] != 5:
            raise ShapeError(f"DecodeBBox: deltas {d} and ROIs {r}: Caffe needs 8 delta channels "
                             "(class-agnostic), 5 ROI channels and one row count")
        if any(v != 1 for v in d[2:]) or any(v != 1 for v in r[2:]):
            raise ShapeError(f"DecodeBBox: deltas {d} and ROIs {r} must be (R, C) or (R, C, 1, 1)")
        return [tuple(r)]

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .cascade_torch import decode_bbox
        return [decode_bbox(xs[0], xs[1], *_means_stds(p.bbox_mean, p.bbox_std))]

    def torch_source(self, p, src, step):
        from .cascade_torch import emit
        fn = emit(src, "decode_bbox")
        m, s = _means_stds(p.bbox_mean, p.bbox_std)
        src.assign(f"{fn}({src.x(0)}, {src.x(1)}, {m!r}, {s!r})", comment=True)

    def to_onnx(self, ctx, step):
        from .cascade_onnx import decode_bbox
        decode_bbox(ctx, step, *_means_stds(step.layer.params.bbox_mean, step.layer.params.bbox_std))


# ----------------------------------------------------------------------------- ScaleRoute
@dataclass(frozen=True)
class ScaleRouteParams:
    low_scale: float | None = None
    high_scale: float | None = None


def _route_data(rng, shapes):
    import numpy as np
    n = shapes[0][0]
    rois = np.zeros((n, 5), np.float32)
    rois[:, 1:3] = rng.uniform(0, 100, (n, 2))
    side = np.exp(rng.uniform(np.log(4), np.log(400), (n, 2)))
    rois[:, 3:5] = rois[:, 1:3] + side - 1
    rois[0, 3:5] = rois[0, 1:3] - 3                                 # inverted: size 0
    out = [rois.reshape(shapes[0])]
    return out + [rng.standard_normal(s).astype(np.float32) for s in shapes[1:]]


@register
class ScaleRoute(LayerType):
    """FPN level assignment: zhaoweicai/cascade-rcnn src/caffe/layers/scale_route_layer.cpp
    (Forward_cpu; BBoxSize in src/caffe/util/bbox_util.cpp); see
    :func:`protogen.layers.cascade_torch.scale_route`. Keeps the rows (of every bottom, the
    first being ROIs) whose scale sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) is in [low_scale,
    high_scale) — an absent bound is 0 / FLT_MAX — or, when no row is, the one row closest in
    log2 to mid = sqrt(low * high) (low or high alone when one is absent, 256 with neither).
    The ONNX form: NonZero of the mask, else ArgMin of |log(scale / mid) / log 2|."""
    type = "ScaleRoute"
    param_field = "scale_route_param"
    Params = ScaleRouteParams
    n_bottoms = (1, None)
    n_tops = (1, None)
    schemas = _SCHEMAS
    examples = (
        Example(params=dict(low_scale=32, high_scale=128), ins=[(12, 5, 1, 1)], data=_route_data,
                skip=("shape",), why="the routed row count is data-dependent"),
        Example(params=dict(high_scale=2), ins=[(6, 5), (6, 3, 2, 2)], n_tops=2, data=_route_data,
                skip=("shape",), why="no ROI is routed: the single closest one is"),
        Example(params=dict(low_scale=1), ins=[(5, 5, 1, 1)], data=_route_data,
                skip=("shape",), why="the routed row count is data-dependent"),
    )

    def validate(self, p):
        if p.low_scale is not None and not p.low_scale > 0:
            raise ProtogenError("ScaleRoute: low_scale must be > 0 (Caffe's CHECK_GT)")
        if p.high_scale is not None and not p.high_scale < FLT_MAX:
            raise ProtogenError("ScaleRoute: high_scale must be < FLT_MAX")
        lo, hi = self.bounds(p)[:2]
        if hi < lo:
            raise ProtogenError("ScaleRoute: high_scale must be >= low_scale")

    def bounds(self, p):
        """(low, high, mid) as float32 values, as Forward_cpu derives them."""
        import numpy as np
        f = np.float32
        lo = f(p.low_scale) if p.low_scale is not None else f(0)
        hi = f(p.high_scale) if p.high_scale is not None else f(FLT_MAX)
        if p.low_scale is not None and p.high_scale is not None:
            mid = np.sqrt(lo * hi, dtype=f)
        elif p.low_scale is not None:
            mid = lo
        elif p.high_scale is not None:
            mid = hi
        else:
            mid = f(256)
        return float(lo), float(hi), float(mid)

    def opencv_limit(self, p):
        return _NO_OPENCV.format("ScaleRoute")

    def output_shapes(self, p, ins, n_tops):
        r = ins[0]
        if len(r) < 2 or r[1] != 5:
            raise ShapeError(f"ScaleRoute: the first bottom must be ROIs (R, 5, ...), got {r}")
        if n_tops != len(ins) or any(s[0] != r[0] for s in ins):
            raise ShapeError(f"ScaleRoute: {len(ins)} bottoms of {[s[0] for s in ins]} rows for "
                             f"{n_tops} tops (one top per bottom, one row count)")
        return [tuple(s) for s in ins]

    def shapes(self, p, ins):
        return self.output_shapes(p, ins, len(ins))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .rcnn import _checked
        from .cascade_torch import scale_route
        return _checked(scale_route, list(xs), *self.bounds(p))

    def torch_source(self, p, src, step):
        from .cascade_torch import emit
        fn = emit(src, "scale_route")
        call = f"{fn}([{', '.join(src.xs())}], {', '.join(repr(v) for v in self.bounds(p))})"
        src.assign(call if len(step.outputs) > 1 else call + "[0]", comment=True)

    def to_onnx(self, ctx, step):
        from .cascade_onnx import scale_route
        scale_route(ctx, step, *self.bounds(step.layer.params))
