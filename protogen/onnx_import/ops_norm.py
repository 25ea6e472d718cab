"""BatchNormalization -> BatchNorm + Scale; LRN; Softmax."""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, onnx_op


@onnx_op("BatchNormalization", attrs=frozenset({"epsilon", "momentum", "training_mode", "spatial"}))
class BatchNormalization(OpConverter):
    """BatchNorm (blobs mean, var, factor 1) + Scale (gamma, beta), in place when allowed."""

    def static_problems(self, ctx, i, n, a, const):
        bad = []
        if a.get("training_mode", 0):
            bad.append("training_mode=1 is not supported (inference only)")
        if any(t not in const for t in n.input[1:5]):
            bad.append("scale, bias, mean and variance must be constant")
        if any(o for o in n.output[1:]):
            bad.append("running mean/variance outputs are not supported")
        return bad

    def convert(self, ctx, i, n, a):
        from ..layers.norm import BatchNormParams, ScaleParams
        x = n.input[0]
        if len(ctx.shape_of(x)) < 2:
            raise Refuse("BatchNormalization needs a channel axis")
        gamma, beta, mean, var = (ctx.const(t, "BatchNormalization parameters").astype(np.float32).reshape(-1)
                                  for t in n.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        base = ctx.node_name(i)
        out_t = n.output[0]
        b = ctx.blob[x] if ctx.can_inplace(x, out_t) else ctx.new_blob(out_t)
        ctx.add_layer(ctx.new_layer_name(base), "BatchNorm", [ctx.bottom(x)], [b],
                      BatchNormParams(eps=eps), [mean, var, np.ones(1, np.float32)])
        ctx.add_layer(ctx.new_layer_name(f"{base}/scale"), "Scale", [b], [b],
                      ScaleParams(bias_term=True), [gamma, beta])
        ctx.set_out(out_t, b)


@onnx_op("LRN", attrs=frozenset({"alpha", "beta", "bias", "size"}))
class LRN(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        if int(a.get("size", 1)) % 2 == 0:
            return [f"even LRN size {a.get('size')} (Caffe needs an odd local_size)"]
        return []

    def convert(self, ctx, i, n, a):
        from ..layers.norm import LRNParams
        p = LRNParams(local_size=int(a["size"]), alpha=float(a.get("alpha", 1e-4)),
                      beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)))
        ctx.emit(i, "LRN", p)


@onnx_op("Softmax", attrs=frozenset({"axis"}))
class Softmax(OpConverter):
    """Caffe's Softmax works along one axis; before opset 13 ONNX's flattens ``axis..``."""

    def convert(self, ctx, i, n, a):
        from ..layers.tensor import SoftmaxParams
        shape = ctx.shape_of(n.input[0])
        axis = int(a.get("axis", -1 if ctx.opset >= 13 else 1)) % len(shape)
        if ctx.opset < 13 and any(d != 1 for d in shape[axis + 1:]):
            raise Refuse(f"opset {ctx.opset} Softmax flattens axes {axis}.. of {shape} into one; "
                         "Caffe's Softmax works along one axis")
        ctx.emit(i, "Softmax", SoftmaxParams(axis=axis))
