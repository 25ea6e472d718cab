"""Conv / ConvTranspose -> Convolution / Deconvolution; Gemm, MatMul (+ Add) -> InnerProduct.

2-D and 3-D (5-D N,C,D,H,W input) convolutions: a 3-D one becomes upstream Caffe's N-D
Convolution / Deconvolution (BVLC/caffe src/caffe/layers/base_conv_layer.cpp: one value per
spatial axis for kernel_size/stride/pad/dilation; conv_layer.cpp / deconv_layer.cpp output
sizes), written with three values per field (layers/conv_nd.py). The weights keep ONNX's
layout, which is Caffe's: Conv (M, C/group, kD, kH, kW), ConvTranspose (C, M/group, k...).
"""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, onnx_op

_CONV_ATTRS = frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})


@onnx_op("Conv", transpose=False, folds_pad=True, attrs=_CONV_ATTRS)
@onnx_op("ConvTranspose", transpose=True,
         attrs=_CONV_ATTRS | {"output_padding", "output_shape"})
class Conv(OpConverter):
    """Caffe pads symmetrically: asymmetric ONNX pads are accepted only when the extra end
    padding is never reached (same windows); a preceding zero Pad is folded into the pad."""
    transpose = False

    def static_problems(self, ctx, i, n, a, const):
        bad = []
        ks = a.get("kernel_shape")
        if ks is not None and len(ks) not in (2, 3):
            bad.append(f"only 2-D and 3-D {self.op_type} are supported (kernel_shape {list(ks)})")
        if len(n.input) < 2 or n.input[1] not in const:
            bad.append("the weights must be constant (an initializer)")
        if self.transpose and any(a.get("output_padding", [])):
            bad.append("output_padding is not expressible in Caffe's Deconvolution")
        return bad

    def convert(self, ctx, i, n, a):
        from ..layers.conv import ConvParams
        x, q, _ = ctx.take_pad(n.input[0])
        shape = ctx.shape_of(x)
        if len(shape) == 5:
            return self._convert_3d(ctx, i, n, a, x, shape)
        if len(shape) != 4:
            raise Refuse(f"only 4-D (N,C,H,W) and 5-D (N,C,D,H,W) input are supported, got {shape}")
        w = ctx.const(n.input[1], "the weights")
        kh, kw = a.get("kernel_shape", w.shape[2:])
        sh, sw = a.get("strides", [1, 1])
        dh, dw = a.get("dilations", [1, 1])
        group = int(a.get("group", 1))
        qshape = (shape[0], shape[1], shape[2] + q[0] + q[2], shape[3] + q[1] + q[3])
        bh, bw, eh, ew = ctx.spatial_pads(a, qshape, (kh, kw), (sh, sw), (dh, dw), self.transpose)
        if self.transpose:
            pads = self._deconv_pads(a, q, (bh, bw, eh, ew))
            cout = w.shape[1] * group
        else:
            pads = self._conv_pads(shape, (kh, kw), (sh, sw), (dh, dw), (bh, bw), (eh, ew), q)
            cout = w.shape[0]
        bias = None
        if len(n.input) > 2 and n.input[2]:
            bias = ctx.const(n.input[2], "the bias").reshape(-1)
        p = ConvParams(num_output=int(cout), kernel_h=int(kh), kernel_w=int(kw), stride_h=int(sh),
                       stride_w=int(sw), pad_h=int(pads[0]), pad_w=int(pads[1]), dilation_h=int(dh),
                       dilation_w=int(dw), group=group, bias_term=bias is not None)
        blobs = [w] + ([bias] if bias is not None else [])
        ctx.emit(i, "Deconvolution" if self.transpose else "Convolution", p, blobs, x=x)

    def _convert_3d(self, ctx, i, n, a, x, shape):
        """A 3-D Conv / ConvTranspose: Caffe's N-D layer, one value per spatial axis."""
        from ..layers.conv import ConvParams
        w = ctx.const(n.input[1], "the weights")
        if w.ndim != 5:
            raise Refuse(f"3-D {self.op_type} needs 5-D weights, got shape {tuple(w.shape)}")
        kernel = tuple(int(k) for k in a.get("kernel_shape", w.shape[2:]))
        strides = tuple(int(v) for v in a.get("strides", [1, 1, 1]))
        dils = tuple(int(v) for v in a.get("dilations", [1, 1, 1]))
        group = int(a.get("group", 1))
        begins, ends = nd_pads(a, shape, kernel, strides, dils, self.transpose)
        if self.transpose:
            if "output_shape" in a:
                raise Refuse("output_shape is not supported; give symmetric pads")
            if begins != ends:
                raise Refuse(f"asymmetric pads (begin {list(begins)}, end {list(ends)}) are not "
                             "expressible in Caffe's Deconvolution")
            pads, cout = list(begins), w.shape[1] * group
        else:
            pads = self._conv_pads(shape, kernel, strides, dils, begins, ends, (0,) * 6)
            cout = w.shape[0]
        bias = None
        if len(n.input) > 2 and n.input[2]:
            bias = ctx.const(n.input[2], "the bias").reshape(-1)
        per_axis = {"kernel": kernel, "stride": strides, "pad": tuple(pads), "dilation": dils}
        kw = {f"{f}_{ax}": int(v[j]) for f, v in per_axis.items() for j, ax in enumerate("dhw")}
        if all(len(set(v)) == 1 for v in per_axis.values()):
            # one value for every axis (conv_nd.parse_nd reads three equal values so too);
            # written with three values per field for a 5-D input (conv_nd.explicit)
            kw.update(kernel_d=0, stride_d=1, pad_d=0, dilation_d=1)
        p = ConvParams(num_output=int(cout), group=group, bias_term=bias is not None, **kw)
        blobs = [w] + ([bias] if bias is not None else [])
        ctx.emit(i, "Deconvolution" if self.transpose else "Convolution", p, blobs, x=x)

    @staticmethod
    def _deconv_pads(a, q, pads):
        bh, bw, eh, ew = pads
        if q != (0, 0, 0, 0):
            raise Refuse("a Pad before ConvTranspose cannot be folded")
        if "output_shape" in a:
            raise Refuse("output_shape is not supported; give symmetric pads")
        if (bh, bw) != (eh, ew):
            raise Refuse(f"asymmetric pads ({bh},{bw},{eh},{ew}) are not expressible in "
                         "Caffe's Deconvolution")
        return [bh, bw]

    @staticmethod
    def _conv_pads(shape, kernel, strides, dilations, begins, ends, q):
        pads = []
        nsp = len(shape) - 2
        names = "hw" if nsp == 2 else "dhw"
        for ax, (size, k, s, d, b, e, qb, qe) in enumerate(zip(shape[2:], kernel, strides, dilations,
                                                               begins, ends, q[:nsp], q[nsp:])):
            b, e = b + qb, e + qe
            ek = d * (k - 1) + 1
            onnx_out = (size + b + e - ek) // s + 1
            caffe_out = (size + 2 * b - ek) // s + 1
            if b != e and onnx_out != caffe_out:
                raise Refuse(f"asymmetric padding ({b} before, {e} after) on axis {names[ax]} changes "
                             "the output size; Caffe's convolution pads symmetrically")
            pads.append(b)
        return pads


def nd_pads(a, shape, kernel, strides, dilations, transpose=False):
    """(begins, ends) per spatial axis of any rank from ``pads`` / ``auto_pad`` (ONNX Conv:
    SAME_UPPER puts the odd extra padding at the end, SAME_LOWER at the beginning)."""
    nsp = len(shape) - 2
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = [int(v) for v in a.get("pads", [0] * (2 * nsp))]
        if len(pads) != 2 * nsp:
            raise Refuse(f"pads {pads} do not give a begin and an end for {nsp} spatial axes")
        return tuple(pads[:nsp]), tuple(pads[nsp:])
    if auto == "VALID":
        return (0,) * nsp, (0,) * nsp
    if transpose:
        raise Refuse(f"auto_pad {auto} is not supported for ConvTranspose")
    begins, ends = [], []
    for size, k, s, d in zip(shape[2:], kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
        small, big = total // 2, total - total // 2
        b, e = (small, big) if auto == "SAME_UPPER" else (big, small)
        begins.append(b)
        ends.append(e)
    return tuple(begins), tuple(ends)


def inner_product(ctx, i, x, w_nk, bias, out_tensor, axis):
    """One InnerProduct layer (weights ``[N_out, K]``) for node ``i`` writing ``out_tensor``."""
    from ..layers.conv import InnerProductParams
    p = InnerProductParams(num_output=int(w_nk.shape[0]), bias_term=bias is not None, axis=axis)
    blobs = [w_nk] + ([bias] if bias is not None else [])
    out = ctx.new_blob(out_tensor)
    ctx.add_layer(ctx.new_layer_name(ctx.node_name(i)), "InnerProduct", [ctx.bottom(x)], [out], p, blobs)
    ctx.set_out(out_tensor, out)


@onnx_op("Gemm", absorbs_flatten=True, attrs=frozenset({"alpha", "beta", "transA", "transB"}))
class Gemm(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        bad = []
        if a.get("transA", 0):
            bad.append("transA=1 is not supported")
        if len(n.input) < 2 or n.input[1] not in const:
            bad.append("the B input must be constant (an initializer)")
        if len(n.input) > 2 and n.input[2] and n.input[2] not in const:
            bad.append("the C input must be constant")
        return bad

    def convert(self, ctx, i, n, a):
        x = ctx.flattened.get(n.input[0], n.input[0])
        if len(ctx.shape_of(n.input[0])) != 2:
            raise Refuse(f"Gemm input must be 2-D, got {ctx.shape_of(x)}")
        w = ctx.const(n.input[1], "B").astype(np.float32)
        w = w if a.get("transB", 0) else w.T
        w = w * np.float32(a.get("alpha", 1.0))
        bias = None
        if len(n.input) > 2 and n.input[2]:
            c = ctx.const(n.input[2], "C").astype(np.float32) * np.float32(a.get("beta", 1.0))
            if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
                raise Refuse(f"C of shape {c.shape} is not a per-output bias")
            bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
        inner_product(ctx, i, x, w, bias, n.output[0], 1)


@onnx_op("MatMul")
class MatMul(OpConverter):
    """activation[..., K] x constant[K, N] -> InnerProduct(axis = rank-1); a following
    Add of a constant [N] read only by it becomes the bias."""

    def static_problems(self, ctx, i, n, a, const):
        if n.input[1] not in const:
            return ["MatMul of two activations has no Caffe layer (B must be constant)"]
        return []

    def convert(self, ctx, i, n, a):
        x = n.input[0]
        shape = ctx.shape_of(x)
        w = ctx.const(n.input[1], "B").astype(np.float32)
        if w.ndim != 2 or len(shape) < 2:
            raise Refuse(f"only activation[..., K] x constant[K, N] is supported (B shape {w.shape})")
        out_tensor, bias = n.output[0], None
        user = ctx.sole_user(out_tensor)
        if user is not None:
            j, u = user
            other = [t for t in u.input if t != out_tensor]
            if (ctx.role(u, "adds") and len(u.input) == 2 and len(other) == 1 and ctx.is_const(other[0])
                    and ctx.consts[other[0]].size == w.shape[1]):
                bias = ctx.consts[other[0]].astype(np.float32).reshape(-1)
                ctx.skip.add(j)
                out_tensor = u.output[0]
        inner_product(ctx, i, x, np.ascontiguousarray(w.T), bias, out_tensor, len(shape) - 1)
