"""Activations (in place where Caffe allows it): Relu, LeakyRelu, Elu, PRelu, Sigmoid, Tanh,
Clip; Identity and Dropout (inference) are dropped."""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, attr_values, onnx_op

FLT_MAX = 3.4028234663852886e38


@onnx_op("Relu", layer="ReLU", positive=True, with_params=True)
@onnx_op("Sigmoid", layer="Sigmoid", positive=True)
@onnx_op("Tanh", layer="TanH")
class Plain(OpConverter):
    """One parameterless Caffe activation (ReLU gets its default parameters)."""
    layer = ""
    positive = False
    with_params = False

    def nonneg(self, ctx, n) -> bool:
        return self.positive

    def convert(self, ctx, i, n, a):
        from ..layers import get_type
        ctx.emit(i, self.layer, get_type(self.layer).default_params() if self.with_params else None,
                 inplace_ok=True)


@onnx_op("LeakyRelu", attrs=frozenset({"alpha"}))
class LeakyRelu(OpConverter):
    def convert(self, ctx, i, n, a):
        from ..layers.act import ReLUParams
        ctx.emit(i, "ReLU", ReLUParams(negative_slope=float(a.get("alpha", 0.01))), inplace_ok=True)


@onnx_op("Elu", attrs=frozenset({"alpha"}))
class Elu(OpConverter):
    """ELU (upstream Caffe since 2015, OpenCV): y = x if x > 0 else alpha * (e^x - 1), the
    same function as ONNX's Elu (semantics: BVLC/caffe src/caffe/layers/elu_layer.cpp)."""

    def convert(self, ctx, i, n, a):
        from ..layers.act_ext import ELUParams
        ctx.emit(i, "ELU", ELUParams(alpha=float(a.get("alpha", 1.0))), inplace_ok=True)


@onnx_op("PRelu")
class PRelu(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        return [] if n.input[1] in const else ["the slope must be constant"]

    def convert(self, ctx, i, n, a):
        from ..layers.act import PReLUParams
        slope = ctx.const(n.input[1], "the slope").astype(np.float32)
        shape = ctx.shape_of(n.input[0])
        if slope.size == 1:
            ctx.emit(i, "PReLU", PReLUParams(channel_shared=True), [slope.reshape(1)], inplace_ok=True)
            return
        c = shape[1] if len(shape) > 1 else -1
        dims = list(slope.shape)
        # slope broadcasts from the right: (C,1,1) for N,C,H,W (or (C,) for N,C)
        ok = slope.size == c and len(dims) <= len(shape) - 1 and dims[0] == c and all(
            d == 1 for d in dims[1:]) and len(dims) == len(shape) - 1
        if not ok:
            raise Refuse(f"slope shape {slope.shape} is not per-channel for input {shape}")
        ctx.emit(i, "PReLU", PReLUParams(), [slope.reshape(-1)], inplace_ok=True)


def clip_bounds(ctx, n, a) -> tuple[float, float]:
    """(min, max) of a Clip node (attributes before opset 11, constant inputs after)."""
    lo, hi = a.get("min"), a.get("max")
    if len(n.input) > 1 and n.input[1]:
        lo = float(np.asarray(ctx.const(n.input[1], "min")).reshape(-1)[0])
    if len(n.input) > 2 and n.input[2]:
        hi = float(np.asarray(ctx.const(n.input[2], "max")).reshape(-1)[0])
    lo = -FLT_MAX if lo is None else float(lo)
    hi = FLT_MAX if hi is None else float(hi)
    return lo, hi


@onnx_op("Clip", attrs=frozenset({"min", "max"}))
class Clip(OpConverter):
    """(0, 6) -> ReLU6; (0, +inf) -> ReLU; else Clip."""

    def static_problems(self, ctx, i, n, a, const):
        if any(t and t not in const for t in n.input[1:]):
            return ["min/max must be constant"]
        return []

    def nonneg(self, ctx, n) -> bool:
        lo = attr_values(n).get("min")
        if lo is None and len(n.input) > 1 and n.input[1] in ctx.consts:
            lo = float(np.asarray(ctx.consts[n.input[1]]).reshape(-1)[0])
        return lo is not None and lo >= 0

    def convert(self, ctx, i, n, a):
        from ..layers.act import ClipParams, ReLUParams
        lo, hi = clip_bounds(ctx, n, a)
        if ctx.dialect.portable and not (lo == 0.0 and hi >= 3.4e38):
            # neither ReLU6 nor Clip exists in every runtime: ReLU/Power chain (ops_compose)
            from .ops_compose import Chain
            Chain(ctx, i).clip(ctx.bottom(n.input[0]), lo, hi, last=True)
        elif lo == 0.0 and hi == 6.0:
            ctx.emit(i, "ReLU6", None, inplace_ok=True)
        elif lo == 0.0 and hi >= 3.4e38:
            ctx.emit(i, "ReLU", ReLUParams(), inplace_ok=True)
        else:
            ctx.emit(i, "Clip", ClipParams(min=lo, max=hi), inplace_ok=True)


@onnx_op("Identity", foldable=True)
@onnx_op("Dropout", attrs=frozenset({"ratio", "seed"}))
class PassThrough(OpConverter):
    """No layer: the output is the input (Dropout at inference)."""

    def static_problems(self, ctx, i, n, a, const):
        if len(n.input) > 2 and n.input[2]:
            t = n.input[2]
            if t not in const or bool(np.asarray(ctx.consts.get(t, False)).reshape(-1)[0]):
                return ["training_mode must be a constant false"]
        return []

    def fold(self, ctx, n, a, ins):
        return [ins[0]]

    def nonneg(self, ctx, n) -> bool:
        return ctx.nonneg(n.input[0])

    def convert(self, ctx, i, n, a):
        ctx.set_out(n.output[0], ctx.bottom(n.input[0]))
