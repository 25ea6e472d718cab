"""Element-wise activations and other element-wise maps: ReLU, ReLU6, Clip, PReLU, Sigmoid,
TanH, Power, Dropout."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import LayerType, register


class _Elementwise(LayerType):
    inplace = True


@dataclass(frozen=True)
class ReLUParams:
    negative_slope: float = 0.0


@register
class ReLU(_Elementwise):
    type = "ReLU"
    param_field = "relu_param"
    Params = ReLUParams


@register
class ReLU6(_Elementwise):
    """min(max(x, 0), 6): not in upstream Caffe; the bvlc dialect writes it as Clip."""
    type = "ReLU6"

    def caffe_layers(self, layer, dialect, shapes=None):
        lps = super().caffe_layers(layer, dialect, shapes)
        if dialect.relu6 == "Clip":
            lps[0].type = "Clip"
            lps[0].clip_param.min = 0.0
            lps[0].clip_param.max = 6.0
        return lps


@dataclass(frozen=True)
class ClipParams:
    min: float = 0.0
    max: float = 0.0


@register
class Clip(_Elementwise):
    type = "Clip"
    param_field = "clip_param"
    Params = ClipParams

    def validate(self, p) -> None:
        if p.min > p.max:
            raise ProtogenError(f"Clip min {p.min} > max {p.max}")

    def write(self, p, lp):
        lp.clip_param.min = p.min
        lp.clip_param.max = p.max


@dataclass(frozen=True)
class PReLUParams:
    channel_shared: bool = False


@register
class PReLU(_Elementwise):
    type = "PReLU"
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


@register
class Sigmoid(_Elementwise):
    type = "Sigmoid"
    benign_fields = frozenset({"sigmoid_param"})


@register
class TanH(_Elementwise):
    type = "TanH"
    benign_fields = frozenset({"tanh_param"})


@register
class AbsVal(_Elementwise):
    type = "AbsVal"


@dataclass(frozen=True)
class PowerParams:
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@register
class Power(_Elementwise):
    """y = (shift + scale * x) ^ power"""
    type = "Power"
    param_field = "power_param"
    Params = PowerParams


@dataclass(frozen=True)
class DropoutParams:
    dropout_ratio: float = 0.5


@register
class Dropout(_Elementwise):
    """Identity at test time (Caffe scales at training time)."""
    type = "Dropout"
    param_field = "dropout_param"
    Params = DropoutParams
    benign_param_fields = LayerType.benign_param_fields | {"scale_train"}
    is_view = True

    def validate(self, p) -> None:
        if not 0.0 <= p.dropout_ratio < 1.0:
            raise ProtogenError(f"dropout_ratio must be in [0, 1), got {p.dropout_ratio}")
