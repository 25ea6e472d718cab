"""Element-wise activations and other element-wise maps: ReLU, ReLU6, Clip, PReLU, Sigmoid,
TanH, Power, Dropout."""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, layer_blobs, register


class _Elementwise(LayerType):
    inplace = True


@dataclass(frozen=True)
class ReLUParams:
    negative_slope: float = 0.0


@register
class ReLU(_Elementwise):
    type = "ReLU"
    examples = (Example(), Example(params=dict(negative_slope=0.1)))
    param_field = "relu_param"
    Params = ReLUParams

    def to_onnx(self, ctx, step):
        s = step.layer.params.negative_slope
        x = ctx.name(step.inputs[0])
        if s == 0:
            ctx.op("Relu", [x], step.outputs[0])
        else:
            ctx.op("LeakyRelu", [x], step.outputs[0], alpha=float(s))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]   # Caffe: max(x, 0) + negative_slope * min(x, 0)
        # with slope 0 one clamp gives the same values unless some x is -inf (0 * -inf is NaN)
        # or NaN (then amin is NaN and we take the full formula too)
        if p.negative_slope == 0 and (x.numel() == 0 or float(x.amin()) > float("-inf")):
            return [torch.clamp(x, min=0)]
        return [torch.clamp(x, min=0) + p.negative_slope * torch.clamp(x, max=0)]

    def torch_source(self, p, src, step):
        from ..fmt import num
        x = src.x()
        src.assign(f"F.relu({x})" if p.negative_slope == 0 else f"F.leaky_relu({x}, {num(p.negative_slope)})")


@register
class ReLU6(_Elementwise):
    """min(max(x, 0), 6): not in upstream Caffe; the bvlc dialect writes it as Clip, the
    portable dialect as the ReLU/Power chain of :func:`clip_chain`."""
    type = "ReLU6"
    schemas = ("mobilenet-yolo", "opencv")   # not in BVLC Caffe (protogen layers)
    examples = (Example(data=lambda rng, s: [rng.standard_normal(s[0]) * 5]),)

    def to_onnx(self, ctx, step):
        ctx.op("Clip", [ctx.name(step.inputs[0]), ctx.const("min", np.float32(0)),
                        ctx.const("max", np.float32(6))], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0].clamp(0.0, 6.0)]

    def torch_source(self, p, src, step):
        src.assign(f"F.relu6({src.x()})")

    def caffe_layers(self, layer, dialect, shapes=None):
        if dialect.relu6 == "Clip" or dialect.portable:   # written by the Clip type (min 0, max 6)
            clip = layer.copy(type=Clip.type, params=ClipParams(0.0, 6.0))
            return Clip().caffe_layers(clip, dialect, shapes)
        return super().caffe_layers(layer, dialect, shapes)


@dataclass(frozen=True)
class ClipParams:
    min: float = 0.0
    max: float = 0.0


@register
class Clip(_Elementwise):
    type = "Clip"
    examples = (Example(params=dict(min=-0.5, max=0.7)),)
    param_field = "clip_param"
    Params = ClipParams

    def validate(self, p) -> None:
        if p.min > p.max:
            raise ProtogenError(f"Clip min {p.min} > max {p.max}")

    def to_onnx(self, ctx, step):
        p = step.layer.params
        ctx.op("Clip", [ctx.name(step.inputs[0]), ctx.const("min", np.float32(p.min)),
                        ctx.const("max", np.float32(p.max))], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0].clamp(float(p.min), float(p.max))]

    def torch_source(self, p, src, step):
        from ..fmt import num
        src.assign(f"{src.x()}.clamp({num(p.min)}, {num(p.max)})")

    def write(self, p, lp):
        lp.clip_param.min = p.min
        lp.clip_param.max = p.max

    def caffe_layers(self, layer, dialect, shapes=None):
        """One Clip layer, or (portable dialect: Clip is in upstream Caffe since 2019 only, not
        in OpenCV's importer nor older forks) the ReLU/Power chain of :func:`clip_chain`, each
        layer written by its own type; the last one writes the layer's top."""
        if not dialect.portable:
            return super().caffe_layers(layer, dialect, shapes)
        from ..ir import Layer
        from . import get_type
        p, x, lps = layer.params, layer.bottoms[0], []
        inplace = x == layer.tops[0]    # then every step in place (a runtime refuses a second,
        chain = clip_chain(p.min, p.max)   # not-in-place writer of the blob)
        for k, (type_, params) in enumerate(chain):
            last = k == len(chain) - 1
            name = layer.name if last else f"{layer.name}/{k}"
            top = layer.tops[0] if last or inplace else name
            lps += get_type(type_).caffe_layers(Layer(name, type_, [x], [top], params), dialect, shapes)
            x = top
        return lps


#: the largest float32 (an unbounded Clip side)
FLT_MAX = 3.4028234663852886e38


def clip_chain(lo: float, hi: float) -> list[tuple[str, object]]:
    """min(max(x, lo), hi) as layers every Caffe runtime shares (upstream BVLC Caffe, OpenCV's
    importer, pre-2018 forks): [(type, params)], ReLU and Power only (Power: (shift + scale *
    x) ^ power), from::

        max(x, lo) = lo + ReLU(x - lo)          min(t, hi) = hi - ReLU(hi - t)

    i.e. Power(shift -lo) -> ReLU -> Power(scale -1, shift hi - lo) -> ReLU -> Power(scale -1,
    shift hi) (Power(shift -lo) left out for lo = 0). The bounds are exact: x <= lo gives lo,
    x >= hi gives hi; between them the result differs from x by one float32 rounding of
    ``hi - t`` at most (|error| <= ulp(hi) / 2; exact for t >= hi / 2 by Sterbenz's lemma),
    computed alike by every runtime. The one recipe for ReLU6 and Clip in the portable
    dialect and for ONNX Clip/HardSigmoid on import (protogen.onnx_import.ops_compose)."""
    relu, power = ("ReLU", ReLUParams()), (lambda **kw: ("Power", PowerParams(**kw)))
    steps, off = [], 0.0
    if lo > -FLT_MAX:
        if lo != 0.0:
            steps.append(power(shift=-float(lo)))
        steps.append(relu)
        off = float(lo)
    if hi < FLT_MAX:
        steps += [power(scale=-1.0, shift=float(hi) - off), relu, power(scale=-1.0, shift=float(hi))]
    elif off != 0.0:
        steps.append(power(shift=off))
    return steps or [power()]


@dataclass(frozen=True)
class PReLUParams:
    channel_shared: bool = False


@register
class PReLU(_Elementwise):
    type = "PReLU"
    examples = (Example(ins=[(2, 4, 3, 3)]), Example(params=dict(channel_shared=True)))
    param_field = "prelu_param"
    Params = PReLUParams

    def weight_shapes(self, p, ins):
        if p.channel_shared:
            return [(1,)]
        if len(ins[0]) < 2:
            raise ShapeError("PReLU needs a channel axis")
        return [(ins[0][1],)]

    def init_weights(self, p, ins, rng):
        return [rng.uniform(0.1, 0.3, self.weight_shapes(p, ins)[0]).astype(np.float32)]

    def to_onnx(self, ctx, step):
        a = layer_blobs(step)[0]
        rank = len(step.in_shapes[0])
        if not step.layer.params.channel_shared:
            a = a.reshape(a.shape + (1,) * (rank - 2))
        ctx.op("PRelu", [ctx.name(step.inputs[0]), ctx.const("slope", a)], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        a = blobs[0].reshape(-1)
        a = a.reshape((1, -1) + (1,) * (x.dim() - 2)) if not p.channel_shared else a.reshape(())
        return [torch.clamp(x, min=0) + a * torch.clamp(x, max=0)]

    def torch_source(self, p, src, step):
        a = layer_blobs(step)[0].reshape(-1)
        m = src.module(f"nn.PReLU({a.shape[0]})", {"weight": a},
                       ": one slope shared by all channels" if p.channel_shared else "")
        src.assign(f"{m}({src.x()})")


@register
class Sigmoid(_Elementwise):
    type = "Sigmoid"
    examples = (Example(),)

    def to_onnx(self, ctx, step):
        ctx.op("Sigmoid", [ctx.name(step.inputs[0])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.sigmoid(xs[0])]

    def torch_source(self, p, src, step):
        src.assign(f"torch.sigmoid({src.x()})")
    benign_fields = frozenset({"sigmoid_param"})


@register
class TanH(_Elementwise):
    type = "TanH"
    examples = (Example(),)

    def to_onnx(self, ctx, step):
        ctx.op("Tanh", [ctx.name(step.inputs[0])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.tanh(xs[0])]

    def torch_source(self, p, src, step):
        src.assign(f"torch.tanh({src.x()})")
    benign_fields = frozenset({"tanh_param"})


@register
class AbsVal(_Elementwise):
    type = "AbsVal"
    examples = (Example(),)

    def to_onnx(self, ctx, step):
        ctx.op("Abs", [ctx.name(step.inputs[0])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.abs(xs[0])]

    def torch_source(self, p, src, step):
        src.assign(f"torch.abs({src.x()})")


@dataclass(frozen=True)
class PowerParams:
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@register
class Power(_Elementwise):
    """y = (shift + scale * x) ^ power"""
    type = "Power"
    examples = (Example(params=dict(power=2.0, scale=0.5, shift=1.0)),
                Example(params=dict(power=0.5, scale=2.0),
                        data=lambda rng, s: [rng.uniform(0.1, 2.0, s[0])]),
                Example(params=dict(scale=-1.5, shift=0.25)))
    param_field = "power_param"
    Params = PowerParams

    def to_onnx(self, ctx, step):
        p = step.layer.params
        v, out = ctx.name(step.inputs[0]), step.outputs[0]
        parts = [("Mul", "scale", p.scale, p.scale != 1), ("Add", "shift", p.shift, p.shift != 0),
                 ("Pow", "power", p.power, p.power != 1)]
        parts = [q for q in parts if q[3]]
        if not parts:               # y = x
            ctx.alias(out, step.inputs[0])
            return
        for i, (op, hint, val, _) in enumerate(parts):
            v = ctx.op(op, [v, ctx.const(hint, np.float32(val))], out if i == len(parts) - 1 else None)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.pow(p.shift + p.scale * xs[0], p.power)]

    def torch_source(self, p, src, step):
        """(shift + scale * x) ** power, leaving out the parts that are identities."""
        from ..fmt import num
        e = src.x()
        if p.scale != 1:
            e = f"{num(p.scale)} * {e}"
        if p.shift != 0:
            e = f"{num(p.shift)} + {e}"
        if p.power != 1:
            e = f"torch.pow({e}, {num(p.power)})"
        if e == src.x():
            src.alias("power 1, scale 1, shift 0: identity")
        else:
            src.assign(e)


@dataclass(frozen=True)
class DropoutParams:
    dropout_ratio: float = 0.5


@register
class Dropout(_Elementwise):
    """Identity at test time (Caffe scales at training time)."""
    type = "Dropout"
    examples = (Example(params=dict(dropout_ratio=0.3)),)
    param_field = "dropout_param"
    Params = DropoutParams
    benign_param_fields = LayerType.benign_param_fields | {"scale_train"}
    is_view = True

    def validate(self, p) -> None:
        if not 0.0 <= p.dropout_ratio < 1.0:
            raise ProtogenError(f"dropout_ratio must be in [0, 1), got {p.dropout_ratio}")

    def to_onnx(self, ctx, step):
        ctx.alias(step.outputs[0], step.inputs[0])    # no node: identity at inference

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0]]

    def torch_source(self, p, src, step):
        src.alias("identity at inference")
