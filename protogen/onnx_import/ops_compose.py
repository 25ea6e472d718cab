"""Activations with no layer every Caffe runtime shares, expressed exactly as short chains of
upstream layers (ReLU, Power, Sigmoid, TanH, BNLL, Eltwise): HardSigmoid, HardSwish,
Softplus, Mish, Gelu (tanh form); and Clip / ReLU6 for the ``portable`` dialect.

Bounds by ReLU and Power only (``Power``: ``(shift + scale * x) ^ power``)::

    max(x, lo)          = lo + ReLU(x - lo)
    min(t, hi)          = hi - ReLU(hi - t)

so ``clip(x, lo, hi)`` is Power(shift -lo) -> ReLU -> Power(scale -1, shift hi-lo) -> ReLU ->
Power(scale -1, shift hi), exact up to one float32 rounding of ``hi - t`` (|error| <=
ulp(hi)), which OpenCV, upstream Caffe and every fork compute alike.
"""
from __future__ import annotations

import math

from .registry import OpConverter, onnx_op

FLT_MAX = 3.4028234663852886e38


class Chain:
    """The layers of one node: intermediate blobs and layers named ``node/k``; the layer
    made with ``last=True`` takes the node's name and writes its first output."""

    def __init__(self, ctx, i):
        self.ctx, self.i, self.k = ctx, i, 0
        self.base = ctx.node_name(i)

    def add(self, type_, bottoms, params=None, blobs=None, last=False) -> str:
        ctx = self.ctx
        if last:
            top, name = ctx.out_blob(self.i), ctx.new_layer_name(self.base)
        else:
            top = ctx.new_blob(f"{self.base}/{self.k}")
            name = ctx.new_layer_name(f"{self.base}/{self.k}")
        self.k += 1
        ctx.add_layer(name, type_, list(bottoms), [top], params, blobs)
        if last:
            ctx.set_out(ctx.nodes[self.i].output[0], top)
        return top

    def power(self, x, scale=1.0, shift=0.0, power=1.0, last=False) -> str:
        from ..layers.act import PowerParams
        return self.add("Power", [x], PowerParams(power=float(power), scale=float(scale), shift=float(shift)),
                        last=last)

    def relu(self, x, last=False) -> str:
        from ..layers.act import ReLUParams
        return self.add("ReLU", [x], ReLUParams(), last=last)

    def clip(self, x, lo, hi, last=False) -> str:
        """min(max(x, lo), hi) from Power and ReLU layers only (the one recipe:
        :func:`protogen.layers.act.clip_chain`)."""
        from ..layers.act import clip_chain
        steps = clip_chain(lo, hi)
        for k, (type_, params) in enumerate(steps):
            x = self.add(type_, [x], params, last=last and k == len(steps) - 1)
        return x

    def product(self, a, b, last=False) -> str:
        from ..layers.tensor import EltwiseParams
        return self.add("Eltwise", [a, b], EltwiseParams(operation="PROD"), last=last)


@onnx_op("HardSigmoid", attrs=frozenset({"alpha", "beta"}))
@onnx_op("HardSwish", swish=True)
class HardSigmoid(OpConverter):
    """HardSigmoid = clip(alpha*x + beta, 0, 1); HardSwish = x * HardSigmoid(x; 1/6, 1/2)."""
    swish = False

    def convert(self, ctx, i, n, a):
        alpha = float(a.get("alpha", 0.2)) if not self.swish else 1.0 / 6.0
        beta = float(a.get("beta", 0.5))
        ch = Chain(ctx, i)
        x = ctx.bottom(n.input[0])
        t = ch.power(x, scale=alpha, shift=beta)
        hs = ch.clip(t, 0.0, 1.0, last=not self.swish)
        if self.swish:
            ch.product(x, hs, last=True)


@onnx_op("Softplus")
@onnx_op("Mish", mish=True)
class Softplus(OpConverter):
    """Softplus = BNLL (log(1 + e^x)); Mish = x * tanh(softplus(x))."""
    mish = False

    def convert(self, ctx, i, n, a):
        ch = Chain(ctx, i)
        x = ctx.bottom(n.input[0])
        sp = ch.add("BNLL", [x], None, last=not self.mish)
        if self.mish:
            ch.product(x, ch.add("TanH", [sp]), last=True)


@onnx_op("Gelu", attrs=frozenset({"approximate"}))
class Gelu(OpConverter):
    """Only the tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The exact form
    needs erf, which no Caffe layer computes."""

    def static_problems(self, ctx, i, n, a, const):
        mode = a.get("approximate", b"none")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "tanh":
            return ["Gelu with approximate='none' needs erf, which no Caffe layer computes "
                    "(export with approximate='tanh')"]
        return []

    def convert(self, ctx, i, n, a):
        from ..layers.tensor import EltwiseParams
        ch = Chain(ctx, i)
        x = ctx.bottom(n.input[0])
        cube = ch.power(x, scale=0.044715 ** (1.0 / 3.0), power=3.0)          # 0.044715 x^3
        inner = ch.add("Eltwise", [x, cube], EltwiseParams(operation="SUM"))
        th = ch.add("TanH", [ch.power(inner, scale=math.sqrt(2.0 / math.pi))])
        ch.product(x, ch.power(th, scale=0.5, shift=0.5), last=True)
