"""BatchNorm, Scale, Bias and LRN."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import LayerType, numel, register


@dataclass(frozen=True)
class BatchNormParams:
    use_global_stats: bool | None = None
    moving_average_fraction: float = 0.999
    eps: float = 1e-5


@register
class BatchNorm(LayerType):
    """Caffe BatchNorm: no affine part. Blobs: mean*s, var*s, s (the scale factor).

    Inference: f = 0 if s == 0 else 1/s; y = (x - f*b0) / sqrt(f*b1 + eps).
    """
    type = "BatchNorm"
    param_field = "batch_norm_param"
    Params = BatchNormParams
    inplace = True

    def weight_shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError("BatchNorm needs a channel axis")
        c = ins[0][1]
        return [(c,), (c,), (1,)]

    def learnable(self, p, ins):
        return [False, False, False]

    def canonical_params(self, p, ins, phase=None):
        # use_global_stats defaults to (phase == TEST); the moving-average fraction only
        # matters when statistics are updated (training without global stats)
        from dataclasses import replace
        if phase is None:
            return p
        use = (phase == "TEST") if p.use_global_stats is None else p.use_global_stats
        p = replace(p, use_global_stats=use)
        return replace(p, moving_average_fraction=0.999) if use else p

    def init_weights(self, p, ins, rng):
        c = ins[0][1]
        mean = (rng.standard_normal(c) * 0.5).astype(np.float32)
        var = rng.uniform(1.0, 2.0, c).astype(np.float32)
        return [mean, var, np.ones(1, np.float32)]

    @staticmethod
    def statistics(blobs) -> tuple[np.ndarray, np.ndarray]:
        """(mean, variance) from Caffe's three blobs, applying the scale factor."""
        s = float(np.asarray(blobs[2]).reshape(-1)[0]) if len(blobs) > 2 else 1.0
        f = 0.0 if s == 0 else 1.0 / s
        return (np.asarray(blobs[0], np.float32).reshape(-1) * np.float32(f),
                np.asarray(blobs[1], np.float32).reshape(-1) * np.float32(f))


def _affine_shape(axis: int, num_axes: int, shape) -> tuple[int, ...]:
    a = axis if axis >= 0 else axis + len(shape)
    if not 0 <= a < len(shape):
        raise ShapeError(f"axis {axis} out of range for shape {shape}")
    end = len(shape) if num_axes == -1 else a + num_axes
    if end > len(shape) or num_axes < -1:
        raise ShapeError(f"num_axes {num_axes} out of range for shape {shape}")
    return tuple(shape[a:end])


@dataclass(frozen=True)
class ScaleParams:
    axis: int = 1
    num_axes: int = 1
    bias_term: bool = False


@register
class Scale(LayerType):
    """y = x * gamma (+ beta), gamma broadcast along ``axis`` (a blob, or the 2nd bottom)."""
    type = "Scale"
    param_field = "scale_param"
    Params = ScaleParams
    n_bottoms = (1, 2)
    inplace = True

    def shapes(self, p, ins):
        if len(ins) == 2:
            a = p.axis if p.axis >= 0 else p.axis + len(ins[0])
            if tuple(ins[0][a:a + len(ins[1])]) != tuple(ins[1]):
                raise ShapeError(f"scale shape {ins[1]} does not match input {ins[0]} at axis {p.axis}")
        return [ins[0]]

    def weight_shapes(self, p, ins):
        if len(ins) == 2:
            return [tuple(ins[1])] if p.bias_term else []
        s = _affine_shape(p.axis, p.num_axes, ins[0])
        return [s, s] if p.bias_term else [s]

    def init_weights(self, p, ins, rng):
        shapes = self.weight_shapes(p, ins)
        ws = []
        if len(ins) == 1:
            ws.append(rng.uniform(0.8, 1.2, shapes[0]).astype(np.float32))
        if p.bias_term:
            ws.append((rng.standard_normal(shapes[-1]) * 0.1).astype(np.float32))
        return ws


@dataclass(frozen=True)
class BiasParams:
    axis: int = 1
    num_axes: int = 1


@register
class Bias(LayerType):
    type = "Bias"
    param_field = "bias_param"
    Params = BiasParams
    n_bottoms = (1, 2)
    inplace = True

    def weight_shapes(self, p, ins):
        if len(ins) == 2:
            return []
        return [_affine_shape(p.axis, p.num_axes, ins[0])]

    def init_weights(self, p, ins, rng):
        return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in self.weight_shapes(p, ins)]


@dataclass(frozen=True)
class LRNParams:
    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    norm_region: str = "ACROSS_CHANNELS"   # or WITHIN_CHANNEL
    k: float = 1.0


@register
class LRN(LayerType):
    """ACROSS_CHANNELS: y = x * (k + alpha/n * sum_{n neighbouring channels} x^2)^-beta.
    WITHIN_CHANNEL: y = x * (1 + alpha/n^2 * sum_{n x n window} x^2)^-beta (k ignored)."""
    type = "LRN"
    param_field = "lrn_param"
    Params = LRNParams

    def validate(self, p) -> None:
        if p.local_size % 2 == 0 or p.local_size <= 0:
            raise ProtogenError(f"LRN local_size must be odd and positive, got {p.local_size}")

    def shapes(self, p, ins):
        if len(ins[0]) != 4:
            raise ShapeError(f"LRN needs 4-D input, got {ins[0]}")
        return [ins[0]]
