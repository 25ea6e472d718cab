"""SSD family (weiliu89/caffe fork): PriorBox and Normalize. DetectionOutput is in
:mod:`protogen.layers.ssd_detect`; Permute, Flatten, Concat are in :mod:`protogen.layers.tensor`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, layer_blobs, register


# ----------------------------------------------------------------------------- PriorBox
@dataclass(frozen=True)
class PriorBoxParams:
    min_size: tuple = ()
    max_size: tuple = ()
    aspect_ratio: tuple = ()
    flip: bool = True
    clip: bool = False
    variance: tuple = ()
    img_size: int | None = None
    img_h: int | None = None
    img_w: int | None = None
    step: float | None = None
    step_h: float | None = None
    step_w: float | None = None
    offset: float = 0.5
    #: OpenCV's clustered priors (opencv-caffe.proto PriorBoxParameter 16/17): one box per pair
    width: tuple = ()
    height: tuple = ()


def prior_aspect_ratios(p: PriorBoxParams) -> list[float]:
    """Caffe's list: 1 first, then each new ratio (within 1e-6 of none already listed) and,
    with flip, its inverse right after it."""
    ars = [1.0]
    for ar in p.aspect_ratio:
        ar = float(np.float32(ar))
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if p.flip:
            ars.append(float(np.float32(1.0 / ar)))
    return ars


def prior_box_sizes(p: PriorBoxParams) -> list[tuple[float, float]]:
    """(width, height) in pixels of the priors at one location, in Caffe's order: per
    min_size (truncated to int, as the C++ does: ``int min_size_ = min_sizes_[s]``), the
    square min box, the square sqrt(min*max) box, then min_size*sqrt(r) x min_size/sqrt(r)
    for the other aspect ratios r.

    (One revision stored in weiliu89/caffe's history scales the ratio boxes from
    sqrt(min*max) when max_size is given; the SSD releases, their forks and OpenCV's importer
    scale them from min_size, which is what trained SSD models expect: we follow that.)"""
    if p.width:         # clustered priors: the given sizes, as floats (OpenCV keeps floats)
        return [(float(np.float32(w)), float(np.float32(h))) for w, h in zip(p.width, p.height)]
    out = []
    ars = prior_aspect_ratios(p)
    for s, mn in enumerate(p.min_size):
        mn = int(mn)
        out.append((float(mn), float(mn)))
        if p.max_size:
            side = float(np.float32(math.sqrt(mn * int(p.max_size[s]))))
            out.append((side, side))
        for ar in ars:
            if abs(ar - 1.0) < 1e-6:
                continue
            out.append((float(np.float32(mn * math.sqrt(ar))), float(np.float32(mn / math.sqrt(ar)))))
    return out


def prior_geometry(p: PriorBoxParams, layer_hw, image_hw):
    """(img_h, img_w, step_h, step_w) as Caffe's Forward_cpu resolves them."""
    if p.img_h or p.img_w:
        img_h, img_w = int(p.img_h), int(p.img_w)
    elif p.img_size:
        img_h = img_w = int(p.img_size)
    else:
        if image_hw is None:
            raise ShapeError("PriorBox without img_size/img_h/img_w needs the image as its second bottom")
        img_h, img_w = int(image_hw[0]), int(image_hw[1])
    lh, lw = layer_hw
    if p.step_h or p.step_w:
        step_h, step_w = float(p.step_h), float(p.step_w)
    elif p.step:
        step_h = step_w = float(p.step)
    else:       # float32 division, as the C++ does
        step_h = float(np.float32(img_h) / np.float32(lh))
        step_w = float(np.float32(img_w) / np.float32(lw))
    return img_h, img_w, step_h, step_w


@register
class PriorBox(LayerType):
    """Prior (default) boxes of one SSD feature map: output (1, 2, H*W*num_priors*4), channel 0
    the boxes (xmin, ymin, xmax, ymax normalised by the image size; per location, per prior),
    channel 1 the variances.

    semantics: weiliu89/caffe src/caffe/layers/prior_box_layer.cpp (min_size/max_size are
    truncated to int there; OpenCV's importer keeps them as floats).

    Clustered priors (OpenVINO's PriorBoxClustered): ``width``/``height`` lists, OpenCV's own
    caffe.proto fields (opencv modules/dnn/src/caffe/opencv-caffe.proto; semantics: its
    modules/dnn/src/layers/prior_box_layer.cpp): one box of the given pixel size per pair at
    every location, in list order, the centres, step, offset, clip and variances as above;
    exclusive with min_size/max_size/aspect_ratio (OpenCV asserts so)."""
    type = "PriorBox"
    schemas = ("ssd",)
    param_field = "prior_box_param"
    Params = PriorBoxParams
    n_bottoms = (1, 2)
    examples = (
        Example(params=dict(min_size=[30.0], max_size=[60.0], aspect_ratio=[2.0, 3.0], flip=True,
                            clip=False, variance=[0.1, 0.1, 0.2, 0.2], step=8, offset=0.5),
                ins=[(2, 3, 4, 5), (2, 3, 32, 40)]),
        Example(params=dict(min_size=[20.0, 45.0], aspect_ratio=[2.0, 2.0, 0.5], flip=True, clip=True,
                            variance=[0.1]), ins=[(1, 2, 3, 3), (1, 3, 24, 24)]),
        Example(params=dict(min_size=[16.0], img_h=50, img_w=40, step_h=9.0, step_w=7.5, offset=0.0),
                ins=[(1, 2, 6, 5)]),
        Example(params=dict(width=[5.5, 12.0, 30.0], height=[7.0, 3.25, 30.0], clip=True,
                            variance=[0.1, 0.1, 0.2, 0.2], step=8),
                ins=[(1, 2, 3, 4), (1, 3, 24, 32)]),
    )

    def validate(self, p):
        if p.width or p.height:
            if len(p.width) != len(p.height):
                raise ProtogenError("PriorBox needs as many width as height values")
            if p.min_size or p.max_size or p.aspect_ratio:
                raise ProtogenError("PriorBox width/height (clustered priors) exclude "
                                    "min_size, max_size and aspect_ratio")
            if any(v <= 0 for v in p.width + p.height):
                raise ProtogenError("PriorBox width/height must be positive")
        elif not p.min_size:
            raise ProtogenError("PriorBox needs min_size")
        if any(m <= 0 for m in p.min_size):
            raise ProtogenError("PriorBox min_size must be positive")
        if p.max_size:
            if len(p.max_size) != len(p.min_size):
                raise ProtogenError("PriorBox needs as many max_size as min_size values")
            if any(mx <= mn for mn, mx in zip(p.min_size, p.max_size)):
                raise ProtogenError("PriorBox max_size must be greater than min_size")
        if len(p.variance) not in (0, 1, 4) or any(v <= 0 for v in p.variance):
            raise ProtogenError("PriorBox variance takes 1 or 4 positive values")
        if (p.img_h or p.img_w) and p.img_size:
            raise ProtogenError("PriorBox: give either img_size or img_h/img_w, not both")
        if (p.img_h is not None or p.img_w is not None) and not (p.img_h and p.img_w):
            raise ProtogenError("PriorBox img_h and img_w must both be positive")
        if (p.step_h or p.step_w) and p.step:
            raise ProtogenError("PriorBox: give either step or step_h/step_w, not both")
        if (p.step_h is not None or p.step_w is not None) and not (p.step_h and p.step_w):
            raise ProtogenError("PriorBox step_h and step_w must both be positive")

    def write(self, p, lp) -> None:
        """As the base class, plus flip and clip always written: OpenCV's importer defaults
        clip to true (Caffe: false), so an omitted default would change OpenCV's priors."""
        super().write(p, lp)
        lp.prior_box_param.flip = p.flip
        lp.prior_box_param.clip = p.clip

    def num_priors(self, p) -> int:
        return len(prior_box_sizes(p))

    def shapes(self, p, ins):
        if len(ins[0]) != 4 or (len(ins) > 1 and len(ins[1]) != 4):
            raise ShapeError(f"PriorBox needs 4-D bottoms, got {ins}")
        if not (p.img_size or p.img_h) and len(ins) < 2:
            raise ShapeError("PriorBox without img_size/img_h/img_w needs the image as its second bottom")
        return [(1, 2, ins[0][2] * ins[0][3] * self.num_priors(p) * 4)]

    def priors(self, p, in_shapes) -> np.ndarray:
        """The output (1, 2, H*W*num_priors*4) as float32, for bottoms of shapes ``in_shapes``."""
        lh, lw = in_shapes[0][2], in_shapes[0][3]
        image_hw = tuple(in_shapes[1][2:4]) if len(in_shapes) > 1 else None
        img_h, img_w, step_h, step_w = prior_geometry(p, (lh, lw), image_hw)
        sizes = np.array(prior_box_sizes(p), np.float64)                 # (np, 2)
        off = np.float32(p.offset)
        cx = ((np.arange(lw, dtype=np.float32) + off) * np.float32(step_w)).astype(np.float64)
        cy = ((np.arange(lh, dtype=np.float32) + off) * np.float32(step_h)).astype(np.float64)
        cx = np.broadcast_to(cx[None, :, None], (lh, lw, len(sizes)))
        cy = np.broadcast_to(cy[:, None, None], (lh, lw, len(sizes)))
        bw, bh = sizes[:, 0], sizes[:, 1]
        boxes = np.stack([(cx - bw / 2.0) / img_w, (cy - bh / 2.0) / img_h,
                          (cx + bw / 2.0) / img_w, (cy + bh / 2.0) / img_h], -1).astype(np.float32)
        boxes = boxes.reshape(-1)
        if p.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        var = np.asarray(p.variance or (0.1,), np.float32)
        variances = np.broadcast_to(var if var.size == 4 else var[:1], (boxes.size // 4, 4)).reshape(-1)
        return np.stack([boxes, variances])[None].astype(np.float32)

    def to_onnx(self, ctx, step):
        """The priors depend only on the sizes: a constant for a fixed input size, computed in
        the graph from the bottoms' shapes when H/W are dynamic."""
        p = step.layer.params
        used = [(step.inputs[0], 2), (step.inputs[0], 3)]
        if not (p.img_size or p.img_h):
            used += [(step.inputs[1], 2), (step.inputs[1], 3)]
        if any(ctx.varies(v, a) for v, a in used):
            _priors_in_graph(ctx, step, p, self.num_priors(p))
            return
        shapes = [(1, 1, ctx.static(v, 2), ctx.static(v, 3)) for v in step.inputs]
        ctx.op("Identity", [ctx.const("priors", self.priors(p, shapes))], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        """Computed on tensors from the bottoms' sizes (the C++ loop, vectorised)."""
        import torch
        x = xs[0]
        lh, lw = int(x.shape[2]), int(x.shape[3])
        image_hw = (int(xs[1].shape[2]), int(xs[1].shape[3])) if len(xs) > 1 else None
        img_h, img_w, step_h, step_w = prior_geometry(p, (lh, lw), image_hw)
        f32 = dict(dtype=torch.float32, device=x.device)
        cx = ((torch.arange(lw, **f32) + p.offset) * step_w).to(torch.float64)
        cy = ((torch.arange(lh, **f32) + p.offset) * step_h).to(torch.float64)
        wh = torch.tensor(prior_box_sizes(p), dtype=torch.float64, device=x.device)
        cx = cx[None, :, None].expand(lh, lw, wh.shape[0])
        cy = cy[:, None, None].expand(lh, lw, wh.shape[0])
        bw, bh = wh[:, 0], wh[:, 1]
        boxes = torch.stack([(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                             (cx + bw / 2) / img_w, (cy + bh / 2) / img_h], -1)
        boxes = boxes.to(torch.float32).reshape(-1)
        if p.clip:
            boxes = boxes.clamp(0.0, 1.0)
        var = torch.tensor(list(p.variance or (0.1,)), dtype=torch.float32, device=x.device)
        var = var.repeat(boxes.numel() // 4) if var.numel() == 4 else var.expand(boxes.numel())
        return [torch.stack([boxes, var])[None].to(x.dtype)]

    def torch_source(self, p, src, step):
        b = src.parameter("priors", self.priors(p, step.in_shapes), buffer=True)
        src.assign(b)


def _priors_in_graph(ctx, step, p, n_priors) -> None:
    """PriorBox's output from the runtime sizes: centres in float32 as the C++ computes them
    ((w + offset) * step), corners in double ((centre - size / 2.) / img), stored as float."""
    f32, f64 = 1, 11
    ax0 = ctx.ints("ax0", [0])

    def dim(v, a):                                          # 1-D [size] int64
        return ctx.op("Slice", [ctx.op("Shape", [ctx.name(v)]), ctx.ints(f"d{a}", [a]), ctx.ints(f"e{a}", [a + 1])])

    lh, lw = dim(step.inputs[0], 2), dim(step.inputs[0], 3)
    if p.img_h or p.img_w:
        img_h, img_w = ctx.ints("img_h", [p.img_h]), ctx.ints("img_w", [p.img_w])
    elif p.img_size:
        img_h = img_w = ctx.ints("img_size", [p.img_size])
    else:
        img_h, img_w = dim(step.inputs[1], 2), dim(step.inputs[1], 3)

    def step_of(given, img, layer, hint):
        if given:
            return ctx.const(hint, np.asarray([given], np.float32))
        return ctx.op("Div", [ctx.op("Cast", [img], to=f32), ctx.op("Cast", [layer], to=f32)])

    sh = step_of(p.step_h or p.step, img_h, lh, "step_h")
    sw = step_of(p.step_w or p.step, img_w, lw, "step_w")
    zero, one = ctx.ints("zero", [0]), ctx.ints("one", [1])
    off = ctx.const("offset", np.asarray([p.offset], np.float32))

    def centres(n, stp, shape):
        r = ctx.op("Range", [ctx.op("Squeeze", [zero, ax0]), ctx.op("Squeeze", [n, ax0]),
                             ctx.op("Squeeze", [one, ax0])])
        c = ctx.op("Mul", [ctx.op("Add", [ctx.op("Cast", [r], to=f32), off]), stp])
        return ctx.op("Reshape", [ctx.op("Cast", [c], to=f64), ctx.ints("c_shape", shape)])

    cx, cy = centres(lw, sw, [1, -1, 1]), centres(lh, sh, [-1, 1, 1])          # (1, W, 1), (H, 1, 1)
    half = np.asarray(prior_box_sizes(p), np.float64) / 2.0                   # (np, 2)
    hw, hh = ctx.const("half_w", half[:, 0], np.float64), ctx.const("half_h", half[:, 1], np.float64)
    iw, ih = ctx.op("Cast", [img_w], to=f64), ctx.op("Cast", [img_h], to=f64)
    full = ctx.op("Concat", [lh, lw, ctx.ints("n_priors", [n_priors])], axis=0)
    corners = [ctx.op("Div", [ctx.op(op, [c, h]), i]) for op, c, h, i in
               (("Sub", cx, hw, iw), ("Sub", cy, hh, ih), ("Add", cx, hw, iw), ("Add", cy, hh, ih))]
    corners = [ctx.op("Unsqueeze", [ctx.op("Expand", [c, full]), ctx.ints("ax3", [3])]) for c in corners]
    boxes = ctx.op("Reshape", [ctx.op("Cast", [ctx.op("Concat", corners, axis=3)], to=f32), ctx.ints("flat", [1, -1])])
    if p.clip:
        boxes = ctx.op("Min", [ctx.op("Max", [boxes, ctx.const("lo", np.zeros(1, np.float32))]),
                               ctx.const("hi", np.ones(1, np.float32))])
    var = np.asarray(p.variance or (0.1,), np.float32)
    var = np.broadcast_to(var if var.size == 4 else var[:1], (4,)).astype(np.float32)
    var = ctx.op("Expand", [ctx.const("variance", var), ctx.op("Concat", [full, ctx.ints("four", [4])], axis=0)])
    var = ctx.op("Reshape", [var, ctx.ints("flat", [1, -1])])
    both = ctx.op("Concat", [boxes, var], axis=0)                              # (2, L)
    ctx.op("Unsqueeze", [both, ax0], step.outputs[0])


# ----------------------------------------------------------------------------- Normalize
@dataclass(frozen=True)
class NormalizeParams:
    across_spatial: bool = True
    channel_shared: bool = True
    eps: float = 1e-10


@register
class Normalize(LayerType):
    """L2 normalisation with a learned scale (SSD's conv4_3_norm).

    across_spatial: y = x / sqrt(sum over C,H,W of x^2 + eps) per image; else
    y = x / sqrt(sum over C of x^2 + eps) per location. Then y *= scale (one value, or one per
    channel). semantics: weiliu89/caffe src/caffe/layers/normalize_layer.cpp."""
    type = "Normalize"
    schemas = ("ssd",)
    param_field = "norm_param"
    Params = NormalizeParams
    benign_param_fields = LayerType.benign_param_fields | {"scale_filler"}
    examples = (
        Example(params=dict(across_spatial=False, channel_shared=False), ins=[(2, 4, 5, 6)]),
        Example(params=dict(across_spatial=True, channel_shared=True, eps=1e-6), ins=[(2, 3, 4, 4)]),
        Example(params=dict(across_spatial=False, channel_shared=True), ins=[(2, 5, 3, 2)]),
    )

    def shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError("Normalize needs at least 2 axes")
        return [ins[0]]

    def weight_shapes(self, p, ins):
        return [()] if p.channel_shared else [(ins[0][1],)]

    def init_weights(self, p, ins, rng):
        shape = self.weight_shapes(p, ins)[0]
        return [rng.uniform(5.0, 20.0, shape).astype(np.float32)]

    def _axes(self, p, rank):
        return list(range(1, rank)) if p.across_spatial else [1]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        rank = len(step.in_shapes[0])
        (scale,) = layer_blobs(step)
        x = ctx.name(step.inputs[0])
        ss = ctx.op("ReduceSumSquare", [x], keepdims=1, axes=self._axes(p, rank))
        norm = ctx.op("Sqrt", [ctx.op("Add", [ss, ctx.const("eps", np.float32(p.eps))])])
        y = ctx.op("Div", [x, norm])
        shape = (1,) * rank if p.channel_shared else (1, scale.size) + (1,) * (rank - 2)
        ctx.op("Mul", [y, ctx.const("scale", scale.reshape(shape))], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        norm = (x.pow(2).sum(dim=self._axes(p, x.dim()), keepdim=True) + p.eps).sqrt()
        s = blobs[0].reshape(-1)
        s = s.reshape((1,) * x.dim()) if p.channel_shared else s.reshape((1, -1) + (1,) * (x.dim() - 2))
        return [x / norm * s]

    def torch_source(self, p, src, step):
        from ..torch_codegen import num
        rank = len(step.in_shapes[0])
        (scale,) = layer_blobs(step)
        shape = (1,) * rank if p.channel_shared else (1, scale.size) + (1,) * (rank - 2)
        w = src.parameter("scale", scale.reshape(shape))
        axes = self._axes(p, rank)
        dims = str(axes[0]) if len(axes) == 1 else "(" + ", ".join(str(a) for a in axes) + ")"
        x = src.x()
        src.assign(f"{x} / ({x}.pow(2).sum(dim={dims}, keepdim=True) + {num(p.eps)}).sqrt() * {w}")
