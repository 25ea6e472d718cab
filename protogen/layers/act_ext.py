"""More element-wise maps, upstream and from forks: ELU, BNLL, Exp, Log, Threshold, Swish
(upstream Caffe), HSwish, HSigmoid, Mish (forks).

Every forward here follows the C++ source named next to the class; all are in-place capable
neuron layers with one bottom and one top.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError
from .base import Example, LayerType, register


class _Neuron(LayerType):
    inplace = True
    #: (shape,) cases for the registry-wide oracle tests
    examples = (Example(ins=[(2, 3, 5, 4)]), Example(ins=[(3, 7)]))


def _f(v: float) -> str:
    from ..torch_codegen import num
    return num(v)


@dataclass(frozen=True)
class ELUParams:
    alpha: float = 1.0


@register
class ELU(_Neuron):
    """y = x if x > 0 else alpha * (exp(x) - 1).
    semantics: BVLC/caffe src/caffe/layers/elu_layer.cpp"""
    type = "ELU"
    param_field = "elu_param"
    Params = ELUParams
    examples = (Example(ins=[(2, 3, 5, 4)]), Example(params=dict(alpha=0.3), ins=[(3, 7)]))

    def to_onnx(self, ctx, step):
        ctx.op("Elu", [ctx.name(step.inputs[0])], step.outputs[0], alpha=float(step.layer.params.alpha))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        return [torch.where(x > 0, x, p.alpha * (torch.exp(x) - 1))]

    def torch_source(self, p, src, step):
        src.assign(f"F.elu({src.x()}, alpha={_f(p.alpha)})")


@register
class BNLL(_Neuron):
    """Binomial normal log likelihood: y = x + log(1 + exp(-x)) if x > 0 else log(1 + exp(x)),
    i.e. softplus. semantics: BVLC/caffe src/caffe/layers/bnll_layer.cpp"""
    type = "BNLL"

    def to_onnx(self, ctx, step):
        ctx.op("Softplus", [ctx.name(step.inputs[0])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        return [torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))]

    def torch_source(self, p, src, step):
        src.assign(f"F.softplus({src.x()})")


@dataclass(frozen=True)
class ExpParams:
    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


def _log_base(base: float, what: str) -> float:
    """Caffe's base rule: -1 means e; otherwise the base must be positive."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise ProtogenError(f"{what} base must be positive (or -1 for e), got {base}")
    return math.log(base)


@register
class Exp(_Neuron):
    """y = base ^ (shift + scale * x) = outer * exp(inner * x) with inner = scale * ln(base),
    outer = base ^ shift (base -1 means e). semantics: BVLC/caffe src/caffe/layers/exp_layer.cpp"""
    type = "Exp"
    param_field = "exp_param"
    Params = ExpParams
    examples = (Example(ins=[(2, 3, 4, 4)]),
                Example(params=dict(base=2.0, scale=0.5, shift=1.0), ins=[(3, 6)]))

    def validate(self, p):
        _log_base(p.base, "Exp")

    @staticmethod
    def factors(p) -> tuple[float, float]:
        inner = _log_base(p.base, "Exp") * p.scale
        outer = 1.0 if p.shift == 0 else (math.exp(p.shift) if p.base == -1 else p.base ** p.shift)
        return inner, outer

    def to_onnx(self, ctx, step):
        inner, outer = self.factors(step.layer.params)
        v, out = ctx.name(step.inputs[0]), step.outputs[0]
        if inner != 1:
            v = ctx.op("Mul", [v, ctx.const("inner_scale", np.float32(inner))])
        v = ctx.op("Exp", [v], None if outer != 1 else out)
        if outer != 1:
            ctx.op("Mul", [v, ctx.const("outer_scale", np.float32(outer))], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        inner, outer = self.factors(p)
        y = torch.exp(xs[0] * inner if inner != 1 else xs[0])
        return [y * outer if outer != 1 else y]

    def torch_source(self, p, src, step):
        inner, outer = self.factors(p)
        e = f"torch.exp({_f(inner)} * {src.x()})" if inner != 1 else f"torch.exp({src.x()})"
        src.assign(f"{_f(outer)} * {e}" if outer != 1 else e)


@dataclass(frozen=True)
class LogParams:
    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


@register
class Log(_Neuron):
    """y = log_base(shift + scale * x) (base -1 means e).
    semantics: BVLC/caffe src/caffe/layers/log_layer.cpp"""
    type = "Log"
    param_field = "log_param"
    Params = LogParams

    @staticmethod
    def _positive(rng, shapes):
        return [rng.uniform(0.2, 3.0, s) for s in shapes]

    examples = (Example(ins=[(2, 3, 4, 4)], data=_positive),
                Example(params=dict(base=10.0, scale=2.0, shift=0.5), ins=[(3, 6)], data=_positive))

    def opencv_limit(self, p):
        """OpenCV's Log computes ln(x) whatever log_param says (measured, OpenCV 4.14)."""
        if (p.base, p.scale, p.shift) != (-1.0, 1.0, 0.0):
            return "ignores log_param (it computes ln(x))"
        return None

    def validate(self, p):
        if _log_base(p.base, "Log") == 0:
            raise ProtogenError("Log base 1 has no logarithm (Caffe would divide by log(1) = 0)")

    def to_onnx(self, ctx, step):
        p = step.layer.params
        base_scale = 1.0 / _log_base(p.base, "Log")
        v, out = ctx.name(step.inputs[0]), step.outputs[0]
        if p.scale != 1:
            v = ctx.op("Mul", [v, ctx.const("scale", np.float32(p.scale))])
        if p.shift != 0:
            v = ctx.op("Add", [v, ctx.const("shift", np.float32(p.shift))])
        v = ctx.op("Log", [v], out if base_scale == 1 else None)
        if base_scale != 1:
            ctx.op("Mul", [v, ctx.const("base_scale", np.float32(base_scale))], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        base_scale = 1.0 / _log_base(p.base, "Log")
        return [torch.log(p.shift + p.scale * xs[0]) * base_scale]

    def torch_source(self, p, src, step):
        base_scale = 1.0 / _log_base(p.base, "Log")
        e = src.x()
        if p.scale != 1:
            e = f"{_f(p.scale)} * {e}"
        if p.shift != 0:
            e = f"{_f(p.shift)} + {e}"
        e = f"torch.log({e})"
        src.assign(f"{_f(base_scale)} * {e}" if base_scale != 1 else e)


@dataclass(frozen=True)
class ThresholdParams:
    threshold: float = 0.0


@register
class Threshold(_Neuron):
    """y = 1 if x > threshold else 0. semantics: BVLC/caffe src/caffe/layers/threshold_layer.cpp"""
    type = "Threshold"
    param_field = "threshold_param"
    Params = ThresholdParams
    examples = (Example(ins=[(2, 3, 5, 4)]), Example(params=dict(threshold=0.4), ins=[(3, 7)]))

    def to_onnx(self, ctx, step):
        t = step.layer.params.threshold
        g = ctx.op("Greater", [ctx.name(step.inputs[0]), ctx.const("threshold", np.float32(t))])
        ctx.op("Cast", [g], step.outputs[0], to=1)        # 1 = FLOAT

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [(xs[0] > p.threshold).to(xs[0].dtype)]

    def torch_source(self, p, src, step):
        src.assign(f"({src.x()} > {_f(p.threshold)}).to({src.x()}.dtype)")


@dataclass(frozen=True)
class SwishParams:
    beta: float = 1.0


@register
class Swish(_Neuron):
    """y = x * sigmoid(beta * x). semantics: BVLC/caffe src/caffe/layers/swish_layer.cpp"""
    type = "Swish"
    param_field = "swish_param"
    Params = SwishParams
    examples = (Example(ins=[(2, 3, 5, 4)]), Example(params=dict(beta=1.7), ins=[(3, 7)]))

    def to_onnx(self, ctx, step):
        b = step.layer.params.beta
        x = ctx.name(step.inputs[0])
        bx = x if b == 1 else ctx.op("Mul", [x, ctx.const("beta", np.float32(b))])
        ctx.op("Mul", [x, ctx.op("Sigmoid", [bx])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [xs[0] * torch.sigmoid(p.beta * xs[0])]

    def torch_source(self, p, src, step):
        x = src.x()
        src.assign(f"F.silu({x})" if p.beta == 1 else f"{x} * torch.sigmoid({_f(p.beta)} * {x})")


@register
class HSwish(_Neuron):
    """y = x * min(max(x + 3, 0), 6) / 6. semantics: aovoc/caffe src/caffe/layers/hswish_layer.cpp"""
    type = "HSwish"
    schemas = ("mobilenet-v3",)

    def to_onnx(self, ctx, step):
        ctx.op("HardSwish", [ctx.name(step.inputs[0])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        return [x * (x + 3.0).clamp(0.0, 6.0) / 6.0]

    def torch_source(self, p, src, step):
        src.assign(f"F.hardswish({src.x()})")


@register
class HSigmoid(_Neuron):
    """y = min(max(x + 3, 0), 6) / 6. semantics: aovoc/caffe src/caffe/layers/hsigmoid_layer.cpp"""
    type = "HSigmoid"
    schemas = ("mobilenet-v3",)

    def to_onnx(self, ctx, step):
        ctx.op("HardSigmoid", [ctx.name(step.inputs[0])], step.outputs[0], alpha=1.0 / 6.0, beta=0.5)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [(xs[0] + 3.0).clamp(0.0, 6.0) / 6.0]

    def torch_source(self, p, src, step):
        src.assign(f"F.hardsigmoid({src.x()})")


@register
class Mish(_Neuron):
    """y = x * tanh(softplus(x)) (the fork switches softplus to x above 20 and to exp(x) below
    -20, equal in float32). semantics: troyliu0105/caffe src/caffe/layers/mish_layer.cpp"""
    type = "Mish"
    schemas = ("yolo",)

    def to_onnx(self, ctx, step):
        # ONNX Mish is opset 18; at opset 17: x * tanh(softplus(x))
        x = ctx.name(step.inputs[0])
        ctx.op("Mul", [x, ctx.op("Tanh", [ctx.op("Softplus", [x])])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        sp = torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))
        return [x * torch.tanh(sp)]

    def torch_source(self, p, src, step):
        src.assign(f"F.mish({src.x()})")
