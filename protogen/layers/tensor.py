"""Layers that combine, split or rearrange blobs: Concat, Slice, Split, Eltwise, Reshape,
Flatten, Permute, ShuffleChannel, Softmax."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, numel, register


def _axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ShapeError(f"axis {axis} out of range for a {rank}-D blob")
    return a


@dataclass(frozen=True)
class ConcatParams:
    axis: int = 1


@register
class Concat(LayerType):
    type = "Concat"
    examples = (Example(ins=[(2, 3, 4, 4), (2, 5, 4, 4)]), Example(params=dict(axis=2), ins=[(2, 3, 2, 4), (2, 3, 5, 4)]))
    param_field = "concat_param"
    Params = ConcatParams
    n_bottoms = (1, None)
    #: legacy spelling of axis, read by parse()
    benign_param_fields = LayerType.benign_param_fields | {"concat_dim"}

    def parse(self, lp):
        c = lp.concat_param
        axis = c.axis if c.HasField("axis") or not c.HasField("concat_dim") else c.concat_dim
        return ConcatParams(axis=axis)

    def shapes(self, p, ins):
        a = _axis(p.axis, len(ins[0]))
        for s in ins[1:]:
            if len(s) != len(ins[0]) or any(x != y for i, (x, y) in enumerate(zip(s, ins[0])) if i != a):
                raise ShapeError(f"cannot concatenate shapes {ins} along axis {p.axis}")
        out = list(ins[0])
        out[a] = sum(s[a] for s in ins)
        return [tuple(out)]

    def to_onnx(self, ctx, step):
        if len(step.inputs) == 1:
            ctx.alias(step.outputs[0], step.inputs[0])
            return
        ctx.op("Concat", [ctx.name(v) for v in step.inputs], step.outputs[0], axis=int(step.layer.params.axis))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.cat(xs, dim=p.axis)]

    def torch_source(self, p, src, step):
        if len(step.inputs) == 1:
            src.alias("one bottom")
            return
        src.assign(f"torch.cat(({', '.join(src.xs())}), dim={p.axis})")


@dataclass(frozen=True)
class SliceParams:
    axis: int = 1
    slice_point: tuple = ()


@register
class Slice(LayerType):
    type = "Slice"
    examples = (Example(ins=[(2, 6, 4, 4)], n_tops=3),
                Example(params=dict(axis=2, slice_point=[1, 4]), ins=[(2, 3, 6, 4)], n_tops=3))
    param_field = "slice_param"
    Params = SliceParams
    n_tops = (1, None)
    #: legacy spelling of axis, read by parse()
    benign_param_fields = LayerType.benign_param_fields | {"slice_dim"}

    def parse(self, lp):
        c = lp.slice_param
        axis = c.axis if c.HasField("axis") or not c.HasField("slice_dim") else c.slice_dim
        return SliceParams(axis=axis, slice_point=tuple(c.slice_point))

    def sections(self, p, shape, n_tops: int) -> list[int]:
        a = _axis(p.axis, len(shape))
        total = shape[a]
        if p.slice_point:
            pts = list(p.slice_point)
            if len(pts) != n_tops - 1:
                raise ShapeError(f"{len(pts)} slice points for {n_tops} tops")
            if pts != sorted(pts) or pts[0] <= 0 or pts[-1] >= total:
                raise ShapeError(f"slice points {pts} are not increasing inside (0, {total})")
            edges = [0] + pts + [total]
            return [edges[i + 1] - edges[i] for i in range(n_tops)]
        if total % n_tops:
            raise ShapeError(f"axis size {total} does not split evenly into {n_tops} tops")
        return [total // n_tops] * n_tops

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x_ssa = step.inputs[0]
        if len(step.outputs) == 1:
            ctx.alias(step.outputs[0], x_ssa)
            return
        a = _axis(p.axis, len(step.in_shapes[0]))
        ctx.static(x_ssa, a)        # the piece sizes are baked
        sizes = [s[a] for s in step.out_shapes]
        ctx.op("Split", [ctx.name(x_ssa), ctx.ints("split", sizes)], outs=list(step.outputs), axis=a)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        a = _axis(p.axis, x.dim())
        if p.slice_point:
            edges = [0] + list(p.slice_point) + [int(x.shape[a])]
        else:
            step = int(x.shape[a]) // n_tops
            edges = [i * step for i in range(n_tops + 1)]
        return [x.narrow(a, edges[i], edges[i + 1] - edges[i]) for i in range(n_tops)]

    def torch_source(self, p, src, step):
        if len(step.outputs) == 1:
            src.alias("one top")
            return
        a = _axis(p.axis, len(step.in_shapes[0]))
        sizes = ", ".join(str(s[a]) for s in step.out_shapes)
        src.assign(f"torch.split({src.x()}, [{sizes}], dim={a})")

    def output_shapes(self, p, ins, n_tops):
        a = _axis(p.axis, len(ins[0]))
        outs = []
        for size in self.sections(p, ins[0], n_tops):
            s = list(ins[0])
            s[a] = size
            outs.append(tuple(s))
        return outs


@register
class Split(LayerType):
    """Copies its bottom to every top (Caffe inserts these itself for shared blobs)."""
    type = "Split"
    examples = (Example(n_tops=2),)
    n_tops = (1, None)
    is_view = True

    def output_shapes(self, p, ins, n_tops):
        return [ins[0]] * n_tops

    def to_onnx(self, ctx, step):
        for v in step.outputs:          # no node: every top is the input value
            ctx.alias(v, step.inputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0]] * n_tops

    def torch_source(self, p, src, step):
        src.alias()


@dataclass(frozen=True)
class EltwiseParams:
    operation: str = "SUM"      # PROD | SUM | MAX
    coeff: tuple = ()


@register
class Eltwise(LayerType):
    type = "Eltwise"
    examples = (Example(ins=[(2, 3, 4, 4)] * 2), Example(params=dict(operation="PROD"), ins=[(2, 3, 4, 4)] * 3),
                Example(params=dict(operation="MAX"), ins=[(2, 3, 4, 4)] * 2),
                Example(params=dict(coeff=[1.0, -0.5]), ins=[(2, 3, 4, 4)] * 2))
    param_field = "eltwise_param"
    Params = EltwiseParams
    joins_residual = True
    n_bottoms = (2, None)
    benign_param_fields = LayerType.benign_param_fields | {"stable_prod_grad"}

    def validate(self, p):
        if p.coeff and p.operation != "SUM":
            raise ProtogenError("Eltwise coeff is only valid for SUM")

    def shapes(self, p, ins):
        if p.coeff and len(p.coeff) != len(ins):
            raise ShapeError(f"{len(p.coeff)} coefficients for {len(ins)} bottoms")
        for s in ins[1:]:
            if tuple(s) != tuple(ins[0]):
                raise ShapeError(f"Eltwise needs equal shapes, got {ins}")
        return [ins[0]]

    def to_onnx(self, ctx, step):
        import numpy as np
        p = step.layer.params
        xs = [ctx.name(v) for v in step.inputs]
        out = step.outputs[0]
        if p.operation == "PROD":
            y = xs[0]
            for i, x in enumerate(xs[1:]):
                y = ctx.op("Mul", [y, x], out if i == len(xs) - 2 else None)
        elif p.operation == "MAX":
            ctx.op("Max", xs, out)
        else:
            coeff = list(p.coeff) or [1.0] * len(xs)
            if len(xs) == 2 and coeff[0] == 1 and coeff[1] == -1:
                ctx.op("Sub", xs, out)
                return
            terms = [x if c == 1 else ctx.op("Mul", [x, ctx.const(f"coeff{i}", np.float32(c))])
                     for i, (x, c) in enumerate(zip(xs, coeff))]
            ctx.op("Add" if len(terms) == 2 else "Sum", terms, out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        if p.operation == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return [y]
        if p.operation == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return [y]
        coeff = list(p.coeff) or [1.0] * len(xs)
        y = torch.zeros_like(xs[0])
        for c, x in zip(coeff, xs):     # Caffe: top = 0; top += coeff_i * bottom_i
            y = y + c * x
        return [y]

    def torch_source(self, p, src, step):
        from ..fmt import num
        xs = src.xs()
        if p.operation == "PROD":
            src.assign(" * ".join(xs))
        elif p.operation == "MAX":
            e = xs[0]
            for x in xs[1:]:
                e = f"torch.maximum({e}, {x})"
            src.assign(e)
        else:
            e = ""
            for c, x in zip(list(p.coeff) or [1.0] * len(xs), xs):
                term = x if abs(c) == 1 else f"{num(abs(c))} * {x}"
                e += ("-" if c < 0 else "") + term if not e else (" - " if c < 0 else " + ") + term
            src.assign(e)


@dataclass(frozen=True)
class ReshapeParams:
    shape: tuple = ()       # dims; 0 copies the input dim, -1 is inferred
    axis: int = 0
    num_axes: int = -1


def reshape_dims(p: ReshapeParams, shape) -> tuple[int, ...]:
    """Caffe ReshapeLayer: replace input axes [axis, axis+num_axes) by ``p.shape``."""
    rank = len(shape)
    start = p.axis + rank + 1 if p.axis < 0 else p.axis
    if not 0 <= start <= rank:
        raise ShapeError(f"reshape axis {p.axis} out of range for {shape}")
    end = rank if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > rank:
        raise ShapeError(f"reshape num_axes {p.num_axes} out of range for {shape}")
    new = []
    infer = None
    for i, d in enumerate(p.shape):
        if d == 0:
            if start + i >= rank:
                raise ShapeError(f"dim 0 at position {i} copies input axis {start + i}, which {shape} lacks")
            new.append(shape[start + i])
        elif d == -1:
            if infer is not None:
                raise ShapeError("at most one -1 in a reshape")
            infer = i
            new.append(1)
        elif d < -1:
            raise ShapeError(f"invalid reshape dim {d}")
        else:
            new.append(d)
    out = list(shape[:start]) + new + list(shape[end:])
    total = numel(shape)
    if infer is not None:
        known = numel(out)
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {shape} to {p.shape}")
        out[start + infer] = total // known
    if numel(out) != total:
        raise ShapeError(f"cannot reshape {tuple(shape)} ({total} elements) to {tuple(out)}")
    return tuple(out)


@register
class Reshape(LayerType):
    type = "Reshape"
    examples = (Example(params=dict(shape=dict(dim=[0, -1])), ins=[(2, 3, 4, 4)]),
                Example(params=dict(shape=dict(dim=[2, 2]), axis=1, num_axes=1), ins=[(2, 4, 3, 3)]))
    param_field = "reshape_param"
    Params = ReshapeParams
    is_view = True

    def parse(self, lp):
        c = lp.reshape_param
        return ReshapeParams(shape=tuple(c.shape.dim), axis=c.axis, num_axes=c.num_axes)

    def write(self, p, lp):
        c = lp.reshape_param
        c.shape.dim.extend(p.shape)
        if p.axis != 0:
            c.axis = p.axis
        if p.num_axes != -1:
            c.num_axes = p.num_axes

    def shapes(self, p, ins):
        return [reshape_dims(p, ins[0])]

    def to_onnx(self, ctx, step):
        """ONNX Reshape keeps Caffe's 0 (copy) and -1 (infer) where the positions agree:
        axes before ``axis`` copy (0), the new dims keep their 0/-1, axes after the
        replaced range copy if they keep their position, else are written out."""
        p = step.layer.params
        x_ssa, out = step.inputs[0], step.outputs[0]
        shape, oshape = step.in_shapes[0], step.out_shapes[0]
        rank = len(shape)
        start = p.axis + rank + 1 if p.axis < 0 else p.axis
        end = rank if p.num_axes == -1 else start + p.num_axes
        target = [0] * start + list(p.shape)
        shift = len(p.shape) - (end - start)
        for i in range(end, rank):
            if shift == 0:
                target.append(0)
            else:
                target.append(ctx.static(x_ssa, i))
        for i, d in enumerate(target):
            if d > 0 and ctx.varies(out, i):
                ctx.static(out, i)      # a literal size where the value is symbolic
        if len(oshape) == rank and all(d == 0 for d in target):
            ctx.alias(out, x_ssa)
            return
        ctx.op("Reshape", [ctx.name(x_ssa), ctx.ints("shape", target)], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0].reshape(reshape_dims(p, tuple(xs[0].shape)))]

    def torch_source(self, p, src, step):
        """x.reshape(...) with Caffe's copied axes (the ones before ``axis``, 0 dims, the ones
        after the replaced range) read from x, -1 kept and the other dims literal."""
        x = src.x()
        rank = len(step.in_shapes[0])
        start = p.axis + rank + 1 if p.axis < 0 else p.axis
        end = rank if p.num_axes == -1 else start + p.num_axes
        dims = []
        if start == 1:
            dims.append(f"{x}.shape[0]")
        elif start > 1:
            dims.append(f"*{x}.shape[:{start}]")
        for i, d in enumerate(p.shape):
            dims.append(f"{x}.shape[{start + i}]" if d == 0 else str(d))
        if end < rank:
            dims.append(f"*{x}.shape[{end}:]")
        src.assign(f"{x}.reshape({', '.join(dims)})")


@dataclass(frozen=True)
class FlattenParams:
    axis: int = 1
    end_axis: int = -1


@register
class Flatten(LayerType):
    type = "Flatten"
    examples = (Example(ins=[(2, 3, 4, 4)]), Example(params=dict(axis=2), ins=[(2, 3, 4, 4)]))
    param_field = "flatten_param"
    Params = FlattenParams
    is_view = True

    def shapes(self, p, ins):
        s = ins[0]
        a = _axis(p.axis, len(s))
        e = _axis(p.end_axis, len(s))
        if e < a:
            raise ShapeError(f"flatten end_axis {p.end_axis} before axis {p.axis}")
        return [tuple(s[:a]) + (numel(s[a:e + 1]),) + tuple(s[e + 1:])]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x_ssa, out = step.inputs[0], step.outputs[0]
        shape = step.in_shapes[0]
        rank = len(shape)
        a, e = _axis(p.axis, rank), _axis(p.end_axis, rank)
        x = ctx.name(x_ssa)
        if a == e:
            ctx.alias(out, x_ssa)
        elif a == 1 and e == rank - 1:
            ctx.op("Flatten", [x], out, axis=1)
        else:
            tail = [ctx.static(x_ssa, i) for i in range(e + 1, rank)]
            ctx.op("Reshape", [x, ctx.ints("shape", [0] * a + [-1] + tail)], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        a, e = _axis(p.axis, x.dim()), _axis(p.end_axis, x.dim())
        return [x.flatten(a, e)]

    def torch_source(self, p, src, step):
        rank = len(step.in_shapes[0])
        a, e = _axis(p.axis, rank), _axis(p.end_axis, rank)
        src.assign(f"{src.x()}.flatten({a})" if e == rank - 1 else f"{src.x()}.flatten({a}, {e})")


@dataclass(frozen=True)
class PermuteParams:
    order: tuple = ()


def full_order(order, rank: int) -> tuple[int, ...]:
    """The SSD fork's rule: listed axes first, then the unlisted ones in their order."""
    seen = []
    for o in order:
        if not 0 <= o < rank or o in seen:
            raise ShapeError(f"permute order {tuple(order)} is invalid for a {rank}-D blob")
        seen.append(o)
    return tuple(seen + [i for i in range(rank) if i not in seen])


@register
class Permute(LayerType):
    """Transpose of axes (the weiliu89/caffe SSD extension, ``permute_param = 202``)."""
    type = "Permute"
    schemas = ("ssd",)   # not in BVLC Caffe (protogen layers)
    examples = (Example(params=dict(order=[0, 2, 3, 1]), ins=[(2, 3, 4, 5)]),)
    param_field = "permute_param"
    Params = PermuteParams

    def shapes(self, p, ins):
        o = full_order(p.order, len(ins[0]))
        return [tuple(ins[0][i] for i in o)]

    def to_onnx(self, ctx, step):
        o = full_order(step.layer.params.order, len(step.in_shapes[0]))
        if o == tuple(range(len(o))):
            ctx.alias(step.outputs[0], step.inputs[0])
            return
        ctx.op("Transpose", [ctx.name(step.inputs[0])], step.outputs[0], perm=list(o))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0].permute(*full_order(p.order, xs[0].dim()))]

    def torch_source(self, p, src, step):
        o = full_order(p.order, len(step.in_shapes[0]))
        if o == tuple(range(len(o))):
            src.alias("identity order")
            return
        src.assign(f"{src.x()}.permute({', '.join(str(i) for i in o)})")


@dataclass(frozen=True)
class ShuffleChannelParams:
    group: int = 1


@register
class ShuffleChannel(LayerType):
    """ShuffleNet's channel shuffle: out[j*g + i] = in[i*n + j], C = g*n.

    Written per dialect: one ShuffleChannel layer, Reshape -> Permute -> Reshape, or (strict
    BVLC) Slice -> Reshape each -> Concat -> Reshape.
    """
    type = "ShuffleChannel"
    schemas = ("shufflenet",)   # not in BVLC Caffe (protogen layers)
    examples = (Example(params=dict(group=2), ins=[(2, 6, 3, 3)]),)
    param_field = "shuffle_channel_param"
    Params = ShuffleChannelParams

    def validate(self, p):
        if p.group <= 0:
            raise ProtogenError(f"shuffle group must be positive, got {p.group}")

    def shapes(self, p, ins):
        if len(ins[0]) < 2 or ins[0][1] % p.group:
            raise ShapeError(f"channels of {ins[0]} are not divisible by shuffle group {p.group}")
        return [ins[0]]

    def to_onnx(self, ctx, step):
        """Reshape (N, g, C/g, rest) -> Transpose (0, 2, 1, 3) -> Reshape back."""
        g = step.layer.params.group
        x_ssa, out = step.inputs[0], step.outputs[0]
        shape = step.in_shapes[0]
        rank = len(shape)
        if g == 1:
            ctx.alias(out, x_ssa)
            return
        c = shape[1]
        x = ctx.name(x_ssa)
        rest = rank > 2
        r = ctx.op("Reshape", [x, ctx.ints("shape_split", [0, g, c // g] + ([-1] if rest else []))])
        t = ctx.op("Transpose", [r], perm=[0, 2, 1, 3] if rest else [0, 2, 1])
        if any(ctx.varies(x_ssa, i) for i in range(2, rank)):
            back = ctx.op("Shape", [x])         # symbolic H/W: take them from the input
        else:
            back = ctx.ints("shape_merge", [0, c] + list(shape[2:]))
        ctx.op("Reshape", [t, back], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        """out[j*g + i] = in[i*n + j] (C = g*n), by gathering channels."""
        import torch
        x = xs[0]
        g = p.group
        c = int(x.shape[1])
        n = c // g
        src = torch.tensor([(o % g) * n + o // g for o in range(c)], dtype=torch.long, device=x.device)
        return [x.index_select(1, src)]

    def torch_source(self, p, src, step):
        """(N, g, C/g, ...) -> swap the group axes -> (N, C, ...)."""
        g = p.group
        if g == 1:
            src.alias("one group")
            return
        n = step.in_shapes[0][1] // g
        src.assign(f"{src.x()}.unflatten(1, ({g}, {n})).transpose(1, 2).flatten(1, 2)")

    def caffe_layers(self, layer, dialect, shapes=None):
        """One ShuffleChannel layer, or (dialects without it) the layers of the types it
        expands into, each written by its own type: Reshape -> Permute -> Reshape, or (bvlc)
        Slice -> Reshape each -> Concat -> Reshape."""
        from ..ir import Layer
        g = layer.params.group
        name, x, y = layer.name, layer.bottoms[0], layer.tops[0]
        if dialect.shuffle == "shufflechannel":
            return super().caffe_layers(layer, dialect, shapes)

        def emit(type_, n, bottoms, tops, params):
            from . import get_type
            return get_type(type_).caffe_layers(Layer(n, type_, list(bottoms), list(tops), params), dialect)

        def reshape(n, b, t, dims, axis=0, num_axes=-1):
            return emit("Reshape", n, [b], [t], ReshapeParams(tuple(dims), axis, num_axes))

        if dialect.shuffle == "permute":
            return (reshape(f"{name}/reshape", x, f"{name}/reshape", [g, -1], axis=1, num_axes=1)
                    + emit("Permute", f"{name}/permute", [f"{name}/reshape"], [f"{name}/permute"],
                           PermuteParams((0, 2, 1, 3, 4)))
                    + reshape(name, f"{name}/permute", y, [-1], axis=1, num_axes=2))
        # strict BVLC: Slice into g pieces, make each (N, C/g, 1, H*W), stack along axis 2
        if shapes is None:
            raise ProtogenError("the slice form of channel shuffle needs known input shapes")
        _, c, h, w = shapes[0]
        pieces = [f"{name}/slice{i}" for i in range(g)]
        lps = emit("Slice", f"{name}/slice", [x], pieces, SliceParams(axis=1))
        flat = []
        for i, piece in enumerate(pieces):
            lps += reshape(f"{name}/reshape{i}", piece, f"{name}/flat{i}", [1, -1], axis=2, num_axes=2)
            flat.append(f"{name}/flat{i}")
        lps += emit("Concat", f"{name}/concat", flat, [f"{name}/concat"], ConcatParams(axis=2))
        lps += reshape(name, f"{name}/concat", y, [0, c, h, w])
        return lps


@dataclass(frozen=True)
class SoftmaxParams:
    axis: int = 1


@register
class Softmax(LayerType):
    type = "Softmax"
    examples = (Example(ins=[(2, 5, 3, 3)]), Example(params=dict(axis=2), ins=[(2, 3, 4, 2)]))
    param_field = "softmax_param"
    Params = SoftmaxParams

    def shapes(self, p, ins):
        _axis(p.axis, len(ins[0]))
        return [ins[0]]

    def to_onnx(self, ctx, step):
        ctx.op("Softmax", [ctx.name(step.inputs[0])], step.outputs[0], axis=int(step.layer.params.axis))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        return [torch.softmax(xs[0], dim=p.axis)]

    def torch_source(self, p, src, step):
        src.assign(f"F.softmax({src.x()}, dim={p.axis})")
