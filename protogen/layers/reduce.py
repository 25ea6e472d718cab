"""Reductions and per-sample statistics: Reduction, ArgMax, MVN (upstream Caffe)."""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, numel, register


def _canon(axis: int, rank: int, what: str) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ShapeError(f"{what} axis {axis} out of range for a {rank}-D blob")
    return a


@dataclass(frozen=True)
class ReductionParams:
    operation: str = "SUM"      # SUM | ASUM | SUMSQ | MEAN
    axis: int = 0
    coeff: float = 1.0


@register
class Reduction(LayerType):
    """Reduces every axis from ``axis`` on (top shape = bottom shape[:axis]) by SUM, ASUM
    (sum of |x|), SUMSQ (sum of x^2) or MEAN, then multiplies by ``coeff``.
    semantics: BVLC/caffe src/caffe/layers/reduction_layer.cpp"""
    type = "Reduction"
    param_field = "reduction_param"
    Params = ReductionParams
    examples = (
        Example(params=dict(axis=2, operation="MEAN"), ins=[(2, 3, 5, 4)]),
        Example(params=dict(axis=1, operation="ASUM", coeff=0.5), ins=[(2, 3, 5, 4)]),
        Example(params=dict(axis=-1, operation="SUMSQ"), ins=[(2, 3, 6)]),
        Example(params=dict(axis=1, operation="SUM", coeff=-2.0), ins=[(3, 4, 5)]),
    )

    def shapes(self, p, ins):
        a = _canon(p.axis, len(ins[0]), "Reduction")
        return [tuple(ins[0][:a])]

    def _axes(self, p, rank):
        return list(range(_canon(p.axis, rank, "Reduction"), rank))

    def to_onnx(self, ctx, step):
        p = step.layer.params
        axes = self._axes(p, len(step.in_shapes[0]))
        x, out = ctx.name(step.inputs[0]), step.outputs[0]
        last = p.coeff == 1
        if p.operation == "SUM":        # opset 13+: ReduceSum takes the axes as an input
            y = ctx.op("ReduceSum", [x, ctx.ints("axes", axes)], out if last else None, keepdims=0)
        else:
            op = {"ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}[p.operation]
            y = ctx.op(op, [x], out if last else None, axes=axes, keepdims=0)
        if not last:
            scalar = not step.out_shapes[0]     # constants are stored 1-D: reshape back to 0-D
            y = ctx.op("Mul", [y, ctx.const("coeff", np.float32(p.coeff))], None if scalar else out)
            if scalar:
                ctx.op("Reshape", [y, ctx.ints("shape", [])], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        axes = self._axes(p, x.dim())
        if p.operation == "ASUM":
            x = x.abs()
        elif p.operation == "SUMSQ":
            x = x * x
        n = numel(x.shape[axes[0]:]) if axes else 1
        y = x.sum(dim=axes) if axes else x
        coeff = p.coeff / n if p.operation == "MEAN" else p.coeff     # Caffe: coeff /= dim
        return [y * coeff if coeff != 1 else y]

    def torch_source(self, p, src, step):
        from ..torch_codegen import num
        axes = tuple(self._axes(p, len(step.in_shapes[0])))
        x = src.x()
        base = {"SUM": x, "ASUM": f"{x}.abs()", "SUMSQ": f"({x} * {x})", "MEAN": x}[p.operation]
        e = f"{base}.{'mean' if p.operation == 'MEAN' else 'sum'}(dim={axes})"
        src.assign(f"{num(p.coeff)} * {e}" if p.coeff != 1 else e)


@dataclass(frozen=True)
class ArgMaxParams:
    out_max_val: bool = False
    top_k: int = 1
    axis: int | None = None


@register
class ArgMax(LayerType):
    """The top_k largest values' indices (as floats), or with ``out_max_val`` their values.
    With ``axis``: along that axis (out_max_val gives the values only). Without: over each
    sample's flattened values, top (N, 1 or 2, top_k, 1...) (rank >= 3): indices, then values.
    Caffe sorts (value, index) pairs descending, so of equal values the larger index wins
    first; ONNX TopK and torch.topk take the smaller one (only ties differ).
    semantics: BVLC/caffe src/caffe/layers/argmax_layer.cpp"""
    type = "ArgMax"
    param_field = "argmax_param"
    Params = ArgMaxParams
    examples = (
        Example(ins=[(2, 3, 4, 5)]),
        Example(params=dict(top_k=3, out_max_val=True), ins=[(2, 3, 4, 5)]),
        Example(params=dict(axis=1), ins=[(2, 6, 4, 5)]),
        Example(params=dict(axis=2, top_k=2, out_max_val=True), ins=[(2, 3, 5, 4)]),
        Example(params=dict(top_k=2), ins=[(3, 7)]),
    )

    def validate(self, p):
        if p.top_k < 1:
            raise ProtogenError(f"ArgMax top_k must be >= 1, got {p.top_k}")

    def shapes(self, p, ins):
        s = ins[0]
        if p.axis is not None:
            a = _canon(p.axis, len(s), "ArgMax")
            if p.top_k > s[a]:
                raise ShapeError(f"top_k {p.top_k} > axis size {s[a]}")
            out = list(s)
            out[a] = p.top_k
            return [tuple(out)]
        if p.top_k > numel(s[1:]):
            raise ShapeError(f"top_k {p.top_k} > {numel(s[1:])} values per sample")
        out = [1] * max(3, len(s))
        out[0], out[1], out[2] = s[0], 2 if p.out_max_val else 1, p.top_k
        return [tuple(out)]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x, out = ctx.name(step.inputs[0]), step.outputs[0]
        k = ctx.ints("k", [p.top_k])
        if p.axis is not None:
            a = _canon(p.axis, len(step.in_shapes[0]), "ArgMax")
            if p.out_max_val:
                ctx.op("TopK", [x, k], outs=[out, ctx.tmp("indices")], axis=a)
            else:
                _, idx = ctx.op("TopK", [x, k], outs=[ctx.tmp("values"), ctx.tmp("indices")], axis=a)
                ctx.op("Cast", [idx], out, to=1)
            return
        flat = ctx.op("Flatten", [x], axis=1)
        vals, idx = ctx.op("TopK", [flat, k], outs=[ctx.tmp("values"), ctx.tmp("indices")], axis=1)
        y = ctx.op("Cast", [idx], to=1)
        if p.out_max_val:
            y = ctx.op("Concat", [y, vals], axis=1)             # (N, 2k): indices, then values
        shape = [0] + list(step.out_shapes[0][1:])
        ctx.op("Reshape", [y, ctx.ints("shape", shape)], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        if p.axis is not None:
            a = _canon(p.axis, x.dim(), "ArgMax")
            v, i = torch.topk(x, p.top_k, dim=a, largest=True, sorted=True)
            return [v if p.out_max_val else i.to(x.dtype)]
        v, i = torch.topk(x.reshape(x.shape[0], -1), p.top_k, dim=1, largest=True, sorted=True)
        y = torch.cat([i.to(x.dtype), v], 1) if p.out_max_val else i.to(x.dtype)
        shape = [x.shape[0], 2 if p.out_max_val else 1, p.top_k] + [1] * (x.dim() - 3)
        return [y.reshape(shape)]

    def torch_source(self, p, src, step):
        x = src.x()
        if p.axis is not None:
            a = _canon(p.axis, len(step.in_shapes[0]), "ArgMax")
            e = f"torch.topk({x}, {p.top_k}, dim={a})"
            src.assign(f"{e}[0]" if p.out_max_val else f"{e}[1].to({x}.dtype)")
            return
        shape = ", ".join(str(d) for d in step.out_shapes[0][1:])
        src.line(f"_v, _i = torch.topk({x}.flatten(1), {p.top_k}, dim=1)", True)
        y = f"torch.cat([_i.to({x}.dtype), _v], 1)" if p.out_max_val else f"_i.to({x}.dtype)"
        src.assign(f"{y}.reshape({x}.shape[0], {shape})")


@dataclass(frozen=True)
class MVNParams:
    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = 1e-9


@register
class MVN(LayerType):
    """Per sample (and per channel unless ``across_channels``): y = x - mean, and with
    ``normalize_variance`` y / (sqrt(E[(x - mean)^2]) + eps) (eps added to the standard
    deviation, not the variance). semantics: BVLC/caffe src/caffe/layers/mvn_layer.cpp"""
    type = "MVN"
    param_field = "mvn_param"
    Params = MVNParams
    inplace = True
    examples = (
        Example(ins=[(2, 3, 5, 4)]),
        Example(params=dict(across_channels=True), ins=[(2, 3, 5, 4)]),
        Example(params=dict(normalize_variance=False), ins=[(2, 3, 4, 4)]),
        Example(params=dict(across_channels=True, normalize_variance=False, eps=1e-3), ins=[(2, 4, 3, 3)]),
    )

    def shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError(f"MVN needs at least 2-D input, got {ins[0]}")
        return [ins[0]]

    def opencv_limit(self, p):
        """OpenCV adds eps under the square root; Caffe adds it to the standard deviation."""
        if p.normalize_variance and p.eps > 1e-6:
            return "adds MVN's eps to the variance, Caffe to the standard deviation"
        return None

    @staticmethod
    def _axes(p, rank):
        return list(range(1 if p.across_channels else 2, rank))

    def to_onnx(self, ctx, step):
        p = step.layer.params
        axes = self._axes(p, len(step.in_shapes[0]))
        x, out = ctx.name(step.inputs[0]), step.outputs[0]
        if not axes:                      # every sample has one value: x - x = 0
            ctx.op("Sub", [x, x], out)
            return
        mean = ctx.op("ReduceMean", [x], axes=axes, keepdims=1)
        d = ctx.op("Sub", [x, mean], None if p.normalize_variance else out)
        if not p.normalize_variance:
            return
        var = ctx.op("ReduceMean", [ctx.op("Mul", [d, d])], axes=axes, keepdims=1)
        std = ctx.op("Add", [ctx.op("Sqrt", [var]), ctx.const("eps", np.float32(p.eps))])
        ctx.op("Div", [d, std], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        axes = self._axes(p, x.dim())
        if not axes:
            return [x - x]
        d = x - x.mean(dim=axes, keepdim=True)
        if not p.normalize_variance:
            return [d]
        return [d / (torch.sqrt((d * d).mean(dim=axes, keepdim=True)) + p.eps)]

    def torch_source(self, p, src, step):
        from ..torch_codegen import num
        axes = tuple(self._axes(p, len(step.in_shapes[0])))
        x = src.x()
        if not axes:
            src.assign(f"{x} - {x}")
            return
        d = f"({x} - {x}.mean(dim={axes}, keepdim=True))"
        if not p.normalize_variance:
            src.assign(d)
            return
        src.line(f"_d = {d}", True)
        src.assign(f"_d / ((_d * _d).mean(dim={axes}, keepdim=True).sqrt() + {num(p.eps)})")
