"""Resizing and cropping layers of the forks: Interp (DeepLab / PSPNet bilinear), Upsample
(SegNet max-unpooling with a mask bottom, or the YOLO forks' nearest-neighbour ``scale``),
CropCenter (waifu2x)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, register, require_rank


def _write_present(p, msg) -> None:
    """Write every field that is not None: these forks test presence (has_x()), not values."""
    for f in fields(p):
        v = getattr(p, f.name)
        if v is not None and f.name in msg.DESCRIPTOR.fields_by_name:
            setattr(msg, f.name, v)


# --------------------------------------------------------------------------- Interp
@dataclass(frozen=True)
class InterpParams:
    height: int | None = None
    width: int | None = None
    zoom_factor: int | None = None
    shrink_factor: int | None = None
    pad_beg: int = 0
    pad_end: int = 0


@register
class Interp(LayerType):
    """Align-corners bilinear resize of the input cropped by the non-positive pads
    (rows/columns [-pad_beg, H + pad_end)). Output size, first rule that applies: shrink
    only: (H_eff - 1) / s + 1; zoom only: H_eff + (H_eff - 1)(z - 1); height and width;
    shrink then zoom; a second bottom's H, W. Sample positions are computed in float32 as the
    C++ does: r = (H_eff - 1) / (H_out - 1), h1 = int(r * h), lambda = r * h - h1.
    semantics: maweifei/deeplab-ver2 src/caffe/layers/interp_layer.cpp and
    src/caffe/util/interp.cpp (George Papandreou's DeepLab code, also in hszhao/PSPNet)"""
    type = "Interp"
    param_field = "interp_param"
    Params = InterpParams
    n_bottoms = (1, 2)
    schemas = ("deeplab", "pspnet")
    examples = (
        Example(params=dict(zoom_factor=2), ins=[(2, 3, 5, 4)]),
        Example(params=dict(shrink_factor=2), ins=[(2, 3, 9, 7)]),
        Example(params=dict(height=7, width=10), ins=[(2, 3, 4, 5)]),
        Example(params=dict(shrink_factor=2, zoom_factor=3, pad_beg=-1, pad_end=-2), ins=[(2, 2, 11, 10)]),
        Example(ins=[(2, 3, 4, 6), (1, 1, 9, 5)]),
        Example(params=dict(height=3, width=1), ins=[(1, 2, 6, 5)]),
    )

    def validate(self, p):
        if p.pad_beg > 0 or p.pad_end > 0:
            raise ProtogenError(f"Interp pads must be <= 0 (cropping), got pad_beg {p.pad_beg}, "
                                f"pad_end {p.pad_end}")
        for name in ("zoom_factor", "shrink_factor"):
            v = getattr(p, name)
            if v is not None and v < 1:
                raise ProtogenError(f"Interp {name} must be >= 1, got {v}")

    def write(self, p, lp):
        _write_present(p, lp.interp_param)

    def opencv_limit(self, p):
        """Why OpenCV's Caffe importer cannot check this layer (None: it can). Measured with
        OpenCV 4.14 (tests/layers/test_fork_layers.py): shrink_factor alone gives an empty
        output, with zoom_factor it is ignored; pad_beg/pad_end are not read."""
        if p.shrink_factor is not None or p.pad_beg or p.pad_end:
            return "sizes Interp's shrink_factor and pads otherwise than Caffe"
        return None

    def out_size(self, p, ins) -> tuple[int, int, int, int]:
        """(H_eff, W_eff, H_out, W_out) by the C++ rules."""
        require_rank(ins[:1], 4, "Interp")
        h_eff = ins[0][2] + p.pad_beg + p.pad_end
        w_eff = ins[0][3] + p.pad_beg + p.pad_end
        s, z = p.shrink_factor, p.zoom_factor
        if s is not None and z is None:
            ho, wo = (h_eff - 1) // s + 1, (w_eff - 1) // s + 1
        elif z is not None and s is None:
            ho, wo = h_eff + (h_eff - 1) * (z - 1), w_eff + (w_eff - 1) * (z - 1)
        elif p.height is not None and p.width is not None:
            ho, wo = p.height, p.width
        elif s is not None and z is not None:
            ho, wo = (h_eff - 1) // s + 1, (w_eff - 1) // s + 1
            ho, wo = ho + (ho - 1) * (z - 1), wo + (wo - 1) * (z - 1)
        elif len(ins) == 2:
            ho, wo = ins[1][2], ins[1][3]
        else:
            raise ShapeError("Interp needs zoom_factor, shrink_factor, height and width, or a second bottom")
        if h_eff <= 0 or w_eff <= 0 or ho <= 0 or wo <= 0:
            raise ShapeError(f"Interp sizes must be positive: input {h_eff}x{w_eff} after pads, "
                             f"output {ho}x{wo}")
        return h_eff, w_eff, ho, wo

    def shapes(self, p, ins):
        _, _, ho, wo = self.out_size(p, ins)
        return [(ins[0][0], ins[0][1], ho, wo)]

    def _from_bottom(self, p, n_in):
        return (n_in == 2 and p.shrink_factor is None and p.zoom_factor is None
                and (p.height is None or p.width is None))

    def to_onnx(self, ctx, step):
        """Slice (the pads' crop), then the C++ interpolation itself: Gather of the source
        rows/columns and their weights, computed in float32 as interp.cpp does (ONNX Resize
        computes its positions otherwise: up to ~1e-5 relative apart on large resizes)."""
        p = step.layer.params
        h_eff, w_eff, ho, wo = self.out_size(p, step.in_shapes)
        for v in step.inputs:                       # indices and weights are baked per size
            ctx.static(v, 2)
            ctx.static(v, 3)
        x = ctx.name(step.inputs[0])
        out = step.outputs[0]
        if p.pad_beg or p.pad_end:
            b = -p.pad_beg
            x = ctx.op("Slice", [x, ctx.ints("starts", [b, b]), ctx.ints("ends", [b + h_eff, b + w_eff]),
                                 ctx.ints("axes", [2, 3])], out if (h_eff, w_eff) == (ho, wo) else None)
        if (h_eff, w_eff) == (ho, wo):              # interp.cpp: same size, a copy
            if not (p.pad_beg or p.pad_end):
                ctx.alias(out, step.inputs[0])
            return
        h0, h1, lh = self._taps(h_eff, ho)
        w0, w1, lw = self._taps(w_eff, wo)

        def cols(rows, tag):
            a = ctx.op("Gather", [rows, ctx.ints("w0", w0)], axis=3)
            b = ctx.op("Gather", [rows, ctx.ints("w1", w1)], axis=3)
            return ctx.op("Add", [ctx.op("Mul", [a, ctx.const(f"{tag}_w0lambda", 1 - lw)]),
                                  ctx.op("Mul", [b, ctx.const(f"{tag}_w1lambda", lw)])])
        top = cols(ctx.op("Gather", [x, ctx.ints("h0", h0)], axis=2), "top")
        bot = cols(ctx.op("Gather", [x, ctx.ints("h1", h1)], axis=2), "bottom")
        ctx.op("Add", [ctx.op("Mul", [top, ctx.const("h0lambda", (1 - lh).reshape(-1, 1))]),
                       ctx.op("Mul", [bot, ctx.const("h1lambda", lh.reshape(-1, 1))])], out)

    @staticmethod
    def _taps(n_in: int, n_out: int):
        """Caffe's float32 source rows: (index, next-index step, lambda) per output row."""
        r = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        pos = (r * np.arange(n_out, dtype=np.float32)).astype(np.float32)
        i0 = pos.astype(np.int64)
        lam = (pos - i0.astype(np.float32)).astype(np.float32)
        i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
        return i0, i1, lam

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        shapes = [tuple(t.shape) for t in xs]
        h_eff, w_eff, ho, wo = self.out_size(p, shapes)
        b = -p.pad_beg
        x = x[:, :, b:b + h_eff, b:b + w_eff]
        if (h_eff, w_eff) == (ho, wo):
            return [x.clone()]
        h0, h1, lh = (torch.as_tensor(a) for a in self._taps(h_eff, ho))
        w0, w1, lw = (torch.as_tensor(a) for a in self._taps(w_eff, wo))
        lh = lh.to(x.dtype).reshape(-1, 1)
        lw = lw.to(x.dtype)
        rows0, rows1 = x[:, :, h0, :], x[:, :, h1, :]
        top = (1 - lw) * rows0[..., w0] + lw * rows0[..., w1]
        bot = (1 - lw) * rows1[..., w0] + lw * rows1[..., w1]
        return [(1 - lh) * top + lh * bot]

    def torch_source(self, p, src, step):
        """Caffe's float32 sample positions as buffers (F.interpolate's align_corners places
        them in the tensor's own precision), then the two-tap blend along H and W."""
        from ..torch_codegen import num
        h_eff, w_eff, ho, wo = self.out_size(p, step.in_shapes)
        x = src.x()
        if p.pad_beg or p.pad_end:
            b = -p.pad_beg
            x = f"{x}[:, :, {b}:{b + h_eff}, {b}:{b + w_eff}]"
        if (h_eff, w_eff) == (ho, wo):
            src.assign(x)
            return
        pos = {}
        for axis, n_in, n_out in (("h", h_eff, ho), ("w", w_eff, wo)):
            r = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
            pos[axis] = src.constant(f"pos_{axis}", f"torch.arange({n_out}, dtype=torch.float32) * {num(r)}",
                                     "Caffe's float32 source positions" if axis == "h" else "")
        src.line(f"_h0, _w0 = {pos['h']}.long(), {pos['w']}.long()", True)
        src.line(f"_h1, _w1 = (_h0 + 1).clamp(max={h_eff - 1}), (_w0 + 1).clamp(max={w_eff - 1})")
        src.line(f"_lh, _lw = ({pos['h']} - _h0)[:, None], {pos['w']} - _w0")
        src.line(f"_t, _b = {x}[:, :, _h0], {x}[:, :, _h1]")
        src.assign("(1 - _lh) * ((1 - _lw) * _t[..., _w0] + _lw * _t[..., _w1]) "
                   "+ _lh * ((1 - _lw) * _b[..., _w0] + _lw * _b[..., _w1])")


# --------------------------------------------------------------------------- Upsample
@dataclass(frozen=True)
class UpsampleParams:
    scale: int | None = None
    scale_h: int | None = None
    scale_w: int | None = None
    pad_out_h: bool | None = None
    pad_out_w: bool | None = None
    upsample_h: int | None = None
    upsample_w: int | None = None


@register
class Upsample(LayerType):
    """Two forks share the name; the bottoms tell them apart.

    Two bottoms (data, mask): SegNet's max-unpooling (alexgkendall/caffe-segnet
    src/caffe/layers/upsample_layer.cpp): the output (upsample_h x upsample_w, else H*scale_h -
    pad_out_h by W*scale_w - pad_out_w; scale defaults to 2) is zero except top[mask[i]] =
    x[i] in each (n, c) plane; the mask holds the flat h*W+w indices a MAX Pooling's second top
    gives. Where two inputs carry the same index, Caffe keeps the later one (overlapping pool
    windows); ONNX ScatterElements leaves such duplicates unspecified.

    One bottom: the YOLO forks' nearest-neighbour upsampling by the integer ``scale``
    (eric612/MobileNet-YOLO src/caffe/layers/upsample_layer.cpp): top[h, w] = x[h / s, w / s].
    """
    type = "Upsample"
    param_field = "upsample_param"
    Params = UpsampleParams
    n_bottoms = (1, 2)
    schemas = ("segnet", "yolo")

    @staticmethod
    def _mask(rng, shapes):
        """A SegNet mask: each value of a 2x2-pooled plane at a random spot of its window."""
        (n, c, h, w), _ = shapes
        dh, dw = rng.integers(0, 2, (n, c, h, w)), rng.integers(0, 2, (n, c, h, w))
        hh = 2 * np.arange(h).reshape(1, 1, -1, 1) + dh
        ww = 2 * np.arange(w).reshape(1, 1, 1, -1) + dw
        out_w = 2 * w - 1                      # the example's output width (pad_out_w)
        ww = np.minimum(ww, out_w - 1)
        return [rng.standard_normal((n, c, h, w)), (hh * out_w + ww).astype(np.float32)]

    examples = (
        Example(params=dict(scale=2), ins=[(2, 3, 4, 5)]),
        Example(params=dict(scale=3), ins=[(1, 2, 3, 2)]),
        Example(params=dict(scale=2, pad_out_w=True), ins=[(2, 3, 3, 4), (2, 3, 3, 4)], data=_mask),
        Example(params=dict(upsample_h=6, upsample_w=7), ins=[(2, 2, 3, 4), (2, 2, 3, 4)], data=_mask),
    )

    def validate(self, p):
        for name in ("scale", "scale_h", "scale_w", "upsample_h", "upsample_w"):
            v = getattr(p, name)
            if v is not None and v < 1:
                raise ProtogenError(f"Upsample {name} must be positive, got {v}")

    def write(self, p, lp):
        _write_present(p, lp.upsample_param)

    def _scales(self, p):
        if p.scale_h is not None or p.scale_w is not None:
            if p.scale is not None or p.scale_h is None or p.scale_w is None:
                raise ProtogenError("Upsample: give scale, or scale_h and scale_w")
            return p.scale_h, p.scale_w
        s = 2 if p.scale is None else p.scale
        return s, s

    def shapes(self, p, ins):
        require_rank(ins, 4, "Upsample")
        n, c, h, w = ins[0]
        if len(ins) == 1:
            if any(getattr(p, f) is not None for f in ("scale_h", "scale_w", "upsample_h", "upsample_w",
                                                       "pad_out_h", "pad_out_w")):
                raise ProtogenError("Upsample with one bottom (the YOLO forks' nearest upsampling) "
                                    "takes only `scale`")
            s = self._scales(p)[0]
            return [(n, c, h * s, w * s)]
        if tuple(ins[1]) != tuple(ins[0]):
            raise ShapeError(f"Upsample mask {tuple(ins[1])} differs from its data {tuple(ins[0])}")
        if p.upsample_h is not None and p.upsample_w is not None:
            return [(n, c, p.upsample_h, p.upsample_w)]
        sh, sw = self._scales(p)
        return [(n, c, h * sh - int(bool(p.pad_out_h)), w * sw - int(bool(p.pad_out_w)))]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x, out = ctx.name(step.inputs[0]), step.outputs[0]
        if len(step.inputs) == 1:
            s = float(self._scales(p)[0])
            ctx.op("Resize", [x, "", ctx.const("scales", np.array([1, 1, s, s], np.float32))], out,
                   mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            return
        _, _, oh, ow = step.out_shapes[0]
        if p.upsample_h is None or p.upsample_w is None:
            ctx.static(step.inputs[0], 2)       # the size follows the input's
            ctx.static(step.inputs[0], 3)
        flat = ctx.ints("flat", [0, 0, -1])
        xf = ctx.op("Reshape", [x, flat])
        idx = ctx.op("Cast", [ctx.op("Reshape", [ctx.name(step.inputs[1]), flat])], to=7)   # INT64
        nc = ctx.op("Shape", [x], start=0, end=2)
        zshape = ctx.op("Concat", [nc, ctx.ints("plane", [oh * ow])], axis=0)
        zeros = ctx.op("ConstantOfShape", [zshape])
        y = ctx.op("ScatterElements", [zeros, idx, xf], axis=2)
        ctx.op("Reshape", [y, ctx.ints("shape", [0, 0, oh, ow])], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        if len(xs) == 1:
            s = self._scales(p)[0]
            return [x.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)]
        _, _, oh, ow = self.shapes(p, [tuple(t.shape) for t in xs])[0]
        n, c = x.shape[:2]
        idx = xs[1].reshape(n, c, -1).to(torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= oh * ow):
            raise ShapeError(f"Upsample mask index out of range for a {oh}x{ow} output")
        y = torch.zeros((n, c, oh * ow), dtype=x.dtype)
        return [y.scatter(2, idx, x.reshape(n, c, -1)).reshape(n, c, oh, ow)]

    def torch_source(self, p, src, step):
        x = src.x()
        if len(step.inputs) == 1:
            s = self._scales(p)[0]
            src.assign(f"F.interpolate({x}, scale_factor={s}, mode='nearest')")
            return
        _, _, oh, ow = step.out_shapes[0]
        m = src.x(1)
        src.assign(f"torch.zeros({x}.shape[0], {x}.shape[1], {oh * ow}, dtype={x}.dtype, device={x}.device).scatter("
                   f"2, {m}.flatten(2).long(), {x}.flatten(2)).reshape({x}.shape[0], {x}.shape[1], {oh}, {ow})")


# --------------------------------------------------------------------------- CropCenter
@dataclass(frozen=True)
class CropCenterParams:
    crop_size: tuple = ()


@register
class CropCenter(LayerType):
    """Removes ``crop_size[i]`` elements from both ends of every axis i (one value per axis).
    semantics: lltcggie/caffe src/caffe/layers/crop_center_layer.cpp (waifu2x-caffe)"""
    type = "CropCenter"
    param_field = "crop_center_param"
    Params = CropCenterParams
    schemas = ("waifu2x",)
    examples = (
        Example(params=dict(crop_size=[0, 0, 2, 2]), ins=[(2, 3, 8, 7)]),
        Example(params=dict(crop_size=[0, 1, 1, 3]), ins=[(2, 5, 4, 9)]),
    )

    def shapes(self, p, ins):
        s = ins[0]
        if len(p.crop_size) != len(s):
            raise ShapeError(f"CropCenter needs one crop_size per axis: {len(p.crop_size)} for shape {tuple(s)}")
        for d, c in zip(s, p.crop_size):
            if 2 * c + 1 > d:
                raise ShapeError(f"CropCenter crop {c} from both ends of an axis of size {d}")
        return [tuple(d - 2 * c for d, c in zip(s, p.crop_size))]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        axes = [i for i, c in enumerate(p.crop_size) if c]
        if not axes:
            ctx.alias(step.outputs[0], step.inputs[0])
            return
        c = [int(p.crop_size[i]) for i in axes]
        ctx.op("Slice", [ctx.name(step.inputs[0]), ctx.ints("starts", c), ctx.ints("ends", [-v for v in c]),
                         ctx.ints("axes", axes)], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        for i, c in enumerate(p.crop_size):
            if c:
                x = x.narrow(i, int(c), int(x.shape[i]) - 2 * int(c))
        return [x]

    def torch_source(self, p, src, step):
        if not any(p.crop_size):
            src.alias("crop_size all 0")
            return
        idx = [f"{c}:-{c}" if c else ":" for c in p.crop_size]
        src.assign(f"{src.x()}[{', '.join(idx)}]")
