"""Conv / ConvTranspose -> Convolution / Deconvolution; Gemm, MatMul (+ Add) -> InnerProduct."""
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
        if ks is not None and len(ks) != 2:
            bad.append(f"only 2-D {self.op_type} is supported (kernel_shape {list(ks)})")
        if len(n.input) < 2 or n.input[1] not in const:
            bad.append("the weights must be constant (an initializer)")
        if self.transpose and any(a.get("output_padding", [])):
            bad.append("output_padding is not expressible in Caffe's Deconvolution")
        return bad

    def convert(self, ctx, i, n, a):
        from ..layers.conv import ConvParams
        x, q, _ = ctx.take_pad(n.input[0])
        shape = ctx.shape_of(x)
        if len(shape) != 4:
            raise Refuse(f"only 4-D (N,C,H,W) input is supported, got {shape}")
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
        for ax, (size, k, s, d, b, e, qb, qe) in enumerate(zip(shape[2:], kernel, strides, dilations,
                                                               begins, ends, q[:2], q[2:])):
            b, e = b + qb, e + qe
            ek = d * (k - 1) + 1
            onnx_out = (size + b + e - ek) // s + 1
            caffe_out = (size + 2 * b - ek) // s + 1
            if b != e and onnx_out != caffe_out:
                raise Refuse(f"asymmetric padding ({b} before, {e} after) on axis {'hw'[ax]} changes "
                             "the output size; Caffe's convolution pads symmetrically")
            pads.append(b)
        return pads


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
