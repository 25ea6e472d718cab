"""facebookarchive/C3D's layer types: the V1 enum types CONVOLUTION3D, POOLING3D, VIDEO_DATA.

C3D is a V1-format fork whose blobs are 5-D (num, channels, length, height, width). Its
fields sit in ``convolution_param`` / ``pooling_param`` / ``image_data_param`` beside the 2-D
ones (proto/caffe.proto: kernel_depth, temporal_stride, temporal_pad, filter_group,
new_length; C3D's own field numbers collide with upstream's, so they are read by name).

* Convolution3D. semantics: facebookarchive/C3D src/caffe/layers/convolution3d_layer.cpp
  (SetUp, Forward_cpu) and src/caffe/util/vol2col.cpp: a cube kernel ``kernel_depth x
  kernel_size x kernel_size`` with ``temporal_pad``/``pad`` and ``temporal_stride``/``stride``;
  output per axis ``(in + 2 pad - k) / stride + 1`` (floor). That is upstream's N-D
  Convolution (group 1), which it becomes: written as ``Convolution`` with one value per
  spatial axis, lowered like it. C3D reads neither ``group`` nor ``dilation``; its
  ``filter_group`` splits the filters into groups that each see every input channel (a memory
  saving, the same result), so neither changes the function.
* Pooling3D. semantics: facebookarchive/C3D src/caffe/layers/pool3d_layer.cpp (SetUp,
  Forward_cpu): output per axis ``ceil((in + 2 pad - k) / stride) + 1`` spatially and
  ``ceil((L - kernel_depth) / temporal_stride) + 1`` in time (no temporal padding), without
  upstream's "last window starts inside the padding" correction. MAX: windows start at
  ``i * stride`` (C3D allows pad only for AVE), clipped to the input, initial -FLT_MAX. AVE:
  windows start at ``i * stride - pad``, the divisor counts the window clipped at ``H + pad``
  (and at ``L`` in time), the sum only the input.
* C3DVideoData (VIDEO_DATA). semantics: facebookarchive/C3D src/caffe/layers/
  video_data_layer.cpp SetUp: data ``(batch_size, 3, new_length, crop_size, crop_size)``
  (``new_height x new_width`` without crop_size; frames are read as colour:
  util/image_io.cpp ReadImageSequenceToVolumeDatum sets 3 channels), label ``(batch_size, 1,
  1, 1, 1)``. The inference view turns it into an Input, like every data layer.

C3D's caffemodels store blobs in C3D's own BlobProto (a ``length`` field at number 3, data at
6); protogen/caffe/caffemodel.py reads that form (5-D blobs, aligned over five axes).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, register, require_rank
from .conv import ConvParams, Convolution
from .data import _NO_SIZE, _Source
from .pool import FLT_MAX


# ----------------------------------------------------------------------------- Convolution3D
@register
class Convolution3D(Convolution):
    type = "Convolution3D"
    aliases = ("CONVOLUTION3D",)
    schemas = ("c3d",)
    benign_param_fields = Convolution.benign_param_fields | {"filter_group", "group"}
    _WHY = "written as upstream's N-D Convolution (C3D reads V1 files only): tests/layers/test_conv3d.py"
    examples = (Example(params=dict(num_output=4, kernel_size=3, kernel_depth=2, pad=1, temporal_pad=1,
                                    stride=2, temporal_stride=1), ins=[(2, 3, 4, 7, 6)],
                        skip=("roundtrip",), why=_WHY),
                Example(params=dict(num_output=3, kernel_size=3, kernel_depth=3, pad=1, temporal_pad=1,
                                    filter_group=3, bias_term=False), ins=[(1, 2, 3, 5, 5)],
                        skip=("roundtrip",), why=_WHY))

    def parse(self, lp) -> ConvParams:
        c = lp.convolution_param

        def one(field, dflt):
            v = tuple(getattr(c, field))
            if len(v) > 1:
                raise ProtogenError(f"C3D's convolution_param.{field} is one value, got {len(v)}")
            return int(v[0]) if v else dflt
        k, s, pad = one("kernel_size", 0), one("stride", 1), one("pad", 0)
        if not k or not c.kernel_depth:
            raise ProtogenError("CONVOLUTION3D needs kernel_size and kernel_depth")
        p = ConvParams(num_output=c.num_output, kernel_h=k, kernel_w=k, stride_h=s, stride_w=s,
                       pad_h=pad, pad_w=pad, bias_term=c.bias_term, kernel_d=c.kernel_depth,
                       stride_d=c.temporal_stride, pad_d=c.temporal_pad)
        if c.filter_group <= 0 or p.num_output % c.filter_group:
            raise ProtogenError(f"num_output {p.num_output} is not divisible by filter_group {c.filter_group}")
        self.validate(p)
        return p

    def unsupported(self, lp) -> list[str]:
        c = lp.convolution_param
        return [f"convolution_param.{f} is not read by C3D's CONVOLUTION3D"
                for f in ("dilation", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w",
                          "axis", "force_nd_im2col")
                if (len(getattr(c, f)) if f == "dilation" else c.HasField(f))]

    def caffe_type(self, layer, dialect) -> str:
        return "Convolution"

    def shapes(self, p, ins):
        require_rank(ins, 5, "Convolution3D")
        return super().shapes(p, ins)


# ----------------------------------------------------------------------------- Pooling3D
@dataclass(frozen=True)
class Pool3DParams:
    pool: str = "MAX"          # MAX | AVE (C3D: STOCHASTIC not implemented)
    kernel_size: int = 0
    kernel_depth: int = 0
    stride: int = 1
    temporal_stride: int = 1
    pad: int = 0


def pool3d_geometry(p: Pool3DParams, shape):
    """(kernel, stride, pad, out) per spatial axis (length, height, width): C3D's SetUp."""
    _, _, L, H, W = shape
    k, s = (p.kernel_depth, p.kernel_size, p.kernel_size), (p.temporal_stride, p.stride, p.stride)
    pad = (0, p.pad, p.pad)
    out = tuple(-(-(n + 2 * q - kk) // ss) + 1 for n, kk, ss, q in zip((L, H, W), k, s, pad))
    return k, s, pad, out


def pool3d_divisor(p: Pool3DParams, shape):
    """Per axis, the window sizes C3D's AVE divides by (clipped at size + pad)."""
    k, s, pad, out = pool3d_geometry(p, shape)
    return [[min(i * ss - q + kk, n + q) - (i * ss - q) for i in range(o)]
            for n, kk, ss, q, o in zip(shape[2:], k, s, pad, out)]


def pool3d_pads(p: Pool3DParams, shape):
    """(begin, end) padding per axis that puts every window inside the padded tensor."""
    k, s, pad, out = pool3d_geometry(p, shape)
    return [(q, max(0, (o - 1) * ss + kk - (n + q))) for n, kk, ss, q, o in zip(shape[2:], k, s, pad, out)]


@register
class Pooling3D(LayerType):
    type = "Pooling3D"
    aliases = ("POOLING3D",)
    schemas = ("c3d",)
    param_field = "pooling_param"
    Params = Pool3DParams
    examples = (Example(params=dict(pool="MAX", kernel_size=2, kernel_depth=2, stride=2, temporal_stride=2),
                        ins=[(2, 3, 5, 7, 6)]),
                Example(params=dict(pool="MAX", kernel_size=3, kernel_depth=1, stride=2, temporal_stride=1),
                        ins=[(1, 2, 3, 8, 9)]),
                Example(params=dict(pool="AVE", kernel_size=3, kernel_depth=2, stride=2, temporal_stride=2, pad=1),
                        ins=[(2, 2, 5, 6, 7)]))

    def validate(self, p: Pool3DParams) -> None:
        if p.pool not in ("MAX", "AVE"):
            raise ProtogenError(f"C3D's Pooling3D does not implement {p.pool} pooling")
        if p.kernel_size <= 0 or p.kernel_depth <= 0:
            raise ProtogenError("POOLING3D needs kernel_size and kernel_depth")
        if p.stride <= 0 or p.temporal_stride <= 0:
            raise ProtogenError("pooling strides must be positive")
        if p.pad and p.pool != "AVE":
            raise ProtogenError("C3D implements pad for AVE pooling only")

    def shapes(self, p: Pool3DParams, ins):
        require_rank(ins, 5, "Pooling3D")
        k, s, pad, out = pool3d_geometry(p, ins[0])
        for name, n, kk, ss, q, o in zip(("length", "height", "width"), ins[0][2:], k, s, pad, out):
            if n + 2 * q < kk:
                raise ShapeError(f"input {name} {n} is smaller than the kernel {kk} (pad {q})")
            if (o - 1) * ss - q >= n + q:
                # C3D: an empty last window (stride > kernel) gives -FLT_MAX or divides by <= 0
                raise ShapeError(f"the last {name} window starts past the input (stride {ss} > "
                                 f"kernel {kk}): C3D's output there is undefined")
        return [tuple(ins[0][:2]) + out]

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        import torch.nn.functional as F
        x = xs[0]
        shape = tuple(x.shape)
        k, s, _, out = pool3d_geometry(p, shape)
        pads = [v for b, e in reversed(pool3d_pads(p, shape)) for v in (b, e)]
        if p.pool == "MAX":
            y = F.max_pool3d(F.pad(x, pads, value=-FLT_MAX), k, s)
            return [y[:, :, :out[0], :out[1], :out[2]]]
        y = F.avg_pool3d(F.pad(x, pads), k, s, divisor_override=1)[:, :, :out[0], :out[1], :out[2]]
        dl, dh, dw = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in pool3d_divisor(p, shape))
        return [y / (dl[:, None, None] * dh[None, :, None] * dw[None, None, :])]

    def to_onnx(self, ctx, step):
        import numpy as np
        p = step.layer.params
        x_ssa, y = step.inputs[0], step.outputs[0]
        shape = step.in_shapes[0]
        for axis in (2, 3, 4):                     # the pads and divisors depend on the size
            ctx.static(x_ssa, axis)
        k, s, _, out = pool3d_geometry(p, shape)
        pads = pool3d_pads(p, shape)
        x = ctx.name(x_ssa)
        if any(b or e for b, e in pads):
            x = ctx.op("Pad", [x, ctx.ints("pads", [0, 0] + [b for b, _ in pads] + [0, 0] + [e for _, e in pads]),
                               ctx.const("pad_value", np.float32(-FLT_MAX if p.pool == "MAX" else 0.0))],
                       mode="constant")
        if p.pool == "MAX":
            ctx.op("MaxPool", [x], y, kernel_shape=list(k), strides=list(s))
            return
        dl, dh, dw = (np.asarray(v, np.float64) for v in pool3d_divisor(p, shape))
        corr = (np.float64(k[0] * k[1] * k[2]) / (dl[:, None, None] * dh[None, :, None] * dw[None, None, :]))
        if np.all(corr == 1):
            ctx.op("AveragePool", [x], y, kernel_shape=list(k), strides=list(s))
            return
        a = ctx.op("AveragePool", [x], kernel_shape=list(k), strides=list(s))
        ctx.op("Mul", [a, ctx.const("divisor_correction", corr.astype(np.float32).reshape((1, 1) + out))], y)

    def torch_source(self, p, src, step):
        shape = step.in_shapes[0]
        k, s, _, _ = pool3d_geometry(p, shape)
        pads = tuple(v for b, e in reversed(pool3d_pads(p, shape)) for v in (b, e))
        ks, ss = f"({k[0]}, {k[1]}, {k[2]})", f"({s[0]}, {s[1]}, {s[2]})"
        x = src.x()
        if p.pool == "MAX":
            src.uses.add("FLT_MAX")
            xp = f"F.pad({x}, {pads}, value=-FLT_MAX)" if any(pads) else x
            src.assign(f"F.max_pool3d({xp}, {ks}, {ss})")
            return
        xp = f"F.pad({x}, {pads})" if any(pads) else x
        dl, dh, dw = pool3d_divisor(p, shape)

        def lit(v):
            return "torch.tensor([" + ", ".join(f"{float(a)}" for a in v) + "])"
        div = src.constant("divisor", f"{lit(dl)}[:, None, None] * {lit(dh)}[None, :, None] * {lit(dw)}[None, None, :]",
                           "C3D's pool sizes (clipped at size + pad)")
        src.assign(f"F.avg_pool3d({xp}, {ks}, {ss}, divisor_override=1) / {div}")


# ----------------------------------------------------------------------------- C3DVideoData
@dataclass(frozen=True)
class VideoDataParams:
    source: str = ""
    batch_size: int = 1
    new_length: int = 0
    new_height: int = 0
    new_width: int = 0
    crop_size: int = 0


@register
class C3DVideoData(_Source):
    """C3D's clip list (VIDEO_DATA): tops data (N, 3, new_length, crop, crop) and label."""
    type = "C3DVideoData"
    aliases = ("VIDEO_DATA",)
    schemas = ("c3d",)
    param_field = "image_data_param"
    Params = VideoDataParams
    n_tops = (1, 2)

    def parse(self, lp):
        d = lp.image_data_param
        return VideoDataParams(source=d.source, batch_size=d.batch_size or 1, new_length=d.new_length,
                               new_height=d.new_height, new_width=d.new_width, crop_size=d.crop_size)

    def write(self, p, lp):
        d = lp.image_data_param
        d.source, d.batch_size, d.new_length = p.source, p.batch_size, p.new_length
        if p.new_height:
            d.new_height, d.new_width = p.new_height, p.new_width
        if p.crop_size:
            d.crop_size = p.crop_size

    def output_shapes(self, p, ins, n_tops):
        if p.new_length <= 0:
            raise ShapeError("C3D's VIDEO_DATA needs a positive new_length (frames per clip)")
        h, w = (p.crop_size, p.crop_size) if p.crop_size else (p.new_height, p.new_width)
        if not (h and w):
            raise ShapeError(_NO_SIZE)
        return [(p.batch_size, 3, p.new_length, h, w), (p.batch_size, 1, 1, 1, 1)][:n_tops]
