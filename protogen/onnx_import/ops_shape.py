"""Tensor-shape ops: Concat, Split, Slice -> Concat / Slice; Reshape, Flatten, Squeeze,
Unsqueeze -> Reshape / Flatten; Transpose -> Permute; Reshape -> Transpose(0,2,1,...) ->
Reshape -> ShuffleChannel. With constant inputs they are folded with numpy."""
from __future__ import annotations

import os

import numpy as np

from .registry import OpConverter, Refuse, attr_values, onnx_op


def swap12(rank: int) -> list[int]:
    return [0, 2, 1] + list(range(3, rank))


def onnx_reshape(shape, target, allowzero=0) -> tuple:
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    out = []
    for k, d in enumerate(dims):
        if d == 0 and not allowzero:
            out.append(int(shape[k]))
        else:
            out.append(d)
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shape)) // max(known, 1)
    return tuple(out)


def reshape_to(ctx, i, n, x, new_shape):
    """Node ``i`` as Flatten (to N x K) or Reshape (batch written as 0 = copy)."""
    from ..layers.tensor import FlattenParams, ReshapeParams
    shape = ctx.shape_of(x)
    new_shape = tuple(int(d) for d in new_shape)
    if len(shape) >= 2 and len(new_shape) == 2 and new_shape[0] == shape[0] and len(shape) > 2:
        ctx.emit(i, "Flatten", FlattenParams(axis=1), x=x)
        return
    dims = list(new_shape)
    if dims and shape and dims[0] == shape[0]:
        dims[0] = 0    # keep the batch dimension as Caffe's "copy" (batch-agnostic)
    ctx.emit(i, "Reshape", ReshapeParams(shape=tuple(dims)), x=x)


@onnx_op("Concat", foldable=True, attrs=frozenset({"axis"}))
class Concat(OpConverter):
    def fold(self, ctx, n, a, ins):
        return [np.concatenate([np.atleast_1d(x) for x in ins], axis=a.get("axis", 0))]

    def convert(self, ctx, i, n, a):
        from ..layers.tensor import ConcatParams
        ins = [t for t in n.input if t]
        rank = len(ctx.shape_of(ins[0]))
        out = ctx.out_blob(i)
        ctx.add_layer(ctx.new_layer_name(ctx.node_name(i)), "Concat", [ctx.bottom(t) for t in ins], [out],
                      ConcatParams(axis=int(a.get("axis", 1)) % rank))
        ctx.set_out(n.output[0], out)


@onnx_op("Split", attrs=frozenset({"axis", "split", "num_outputs"}))
class Split(OpConverter):
    def convert(self, ctx, i, n, a):
        from ..layers.tensor import SliceParams
        shape = ctx.shape_of(n.input[0])
        axis = int(a.get("axis", 0)) % len(shape)
        if "split" in a:
            sizes = list(a["split"])
        elif len(n.input) > 1 and n.input[1]:
            sizes = ctx.const(n.input[1], "split").astype(int).tolist()
        else:
            k = len(n.output)
            sizes = [-(-shape[axis] // k)] * k
            sizes[-1] = shape[axis] - sum(sizes[:-1])
        points = list(np.cumsum(sizes)[:-1].astype(int))
        tops = [ctx.out_blob(i, k=k) for k in range(len(n.output))]
        ctx.add_layer(ctx.new_layer_name(ctx.node_name(i)), "Slice", [ctx.bottom(n.input[0])], tops,
                      SliceParams(axis=axis, slice_point=tuple(int(p) for p in points)))
        for t, b in zip(n.output, tops):
            ctx.set_out(t, b)


def _slice_args(a, ins):
    """(starts, ends, axes, steps) from attributes (opset < 10) or inputs."""
    if "starts" in a:
        starts, ends = list(a["starts"]), list(a["ends"])
        return starts, ends, list(a.get("axes", range(len(starts)))), [1] * len(starts)
    starts, ends = ins[1].tolist(), ins[2].tolist()
    axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    return starts, ends, axes, steps


@onnx_op("Slice", foldable=True, slices=True, attrs=frozenset({"starts", "ends", "axes"}))
class Slice(OpConverter):
    """Slices of one tensor along one axis that do not overlap become ONE Caffe Slice
    (Caffe's Slice writes every piece; a piece nobody reads stays a named extra top)."""

    def static_problems(self, ctx, i, n, a, const):
        if any(t and t not in const for t in n.input[1:]):
            return ["starts/ends/axes/steps must be constant"]
        return []

    def fold(self, ctx, n, a, ins):
        x = ins[0]
        starts, ends, axes, steps = _slice_args(a, ins)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax % x.ndim] = slice(int(s), int(e), int(st))
        return [x[tuple(sl)]]

    @staticmethod
    def slice_range(ctx, n):
        """(axis, lo, hi) of a step-1 Slice along one axis; None when it takes everything."""
        shape = ctx.shape_of(n.input[0])
        a = attr_values(n)
        if "starts" not in a:
            for t in n.input[1:]:
                if t and not ctx.try_const(t):
                    raise Refuse("starts/ends/axes/steps must be constant")
        ins = [ctx.consts.get(t) if t else None for t in n.input]
        real = []
        for s, e, ax, st in zip(*_slice_args(a, ins)):
            ax = int(ax) % len(shape)
            lo, hi, step = slice(int(s), int(e), int(st)).indices(shape[ax])
            if step != 1:
                raise Refuse("Slice with steps other than 1 has no Caffe layer")
            if (lo, hi) != (0, shape[ax]):
                real.append((ax, lo, hi))
        if not real:
            return None
        if len(real) > 1:
            raise Refuse("Slice along more than one axis is not supported")
        if real[0][2] <= real[0][1]:
            raise Refuse("empty Slice")
        return real[0]

    def convert(self, ctx, i, n, a):
        from ..layers.tensor import SliceParams
        x = n.input[0]
        shape = ctx.shape_of(x)
        mine = self.slice_range(ctx, n)
        if mine is None:
            ctx.set_out(n.output[0], ctx.bottom(x))
            return
        ax = mine[0]
        group = [(i, mine)]
        for j in ctx.users(x):
            nj = ctx.nodes[j]
            if j <= i or j in ctx.skip or not ctx.role(nj, "slices") or nj.input[0] != x:
                continue
            try:
                r = self.slice_range(ctx, nj)
            except Refuse:
                continue
            if r is not None and r[0] == ax:
                group.append((j, r))
        spans = sorted((r[1], r[2]) for _, r in group)
        if any(spans[k][0] < spans[k - 1][1] for k in range(1, len(spans))) or len(set(spans)) != len(spans):
            group = [(i, mine)]
        points = sorted({p for _, (_, lo, hi) in group for p in (lo, hi) if 0 < p < shape[ax]})
        edges = [0] + points + [shape[ax]]
        name = ctx.new_layer_name(ctx.node_name(i))
        by_range = {(lo, hi): j for j, (_, lo, hi) in group}
        tops = []
        for k in range(len(edges) - 1):
            j = by_range.get((edges[k], edges[k + 1]))
            tops.append(ctx.out_blob(j) if j is not None else ctx.new_blob(f"{name}/unused{k}"))
        ctx.add_layer(name, "Slice", [ctx.bottom(x)], tops, SliceParams(axis=ax, slice_point=tuple(points)))
        for j, _ in group:
            t = ctx.nodes[j].output[0]
            ctx.set_out(t, ctx.blob[t])
            if j != i:
                ctx.skip.add(j)


@onnx_op("Reshape", foldable=True, reshapes=True, attrs=frozenset({"allowzero"}))
class Reshape(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        return [] if n.input[1] in const else ["the target shape must be constant"]

    def fold(self, ctx, n, a, ins):
        return [ins[0].reshape(onnx_reshape(ins[0].shape, ins[1], a.get("allowzero", 0)))]

    def convert(self, ctx, i, n, a):
        x = n.input[0]
        shape = ctx.shape_of(x)
        target = ctx.const(n.input[1], "the target shape").astype(np.int64)
        new = onnx_reshape(shape, target, int(a.get("allowzero", 0)))
        if self.try_shuffle(ctx, i, n, shape, new):
            return
        if len(shape) > 2 and tuple(new) == (shape[0], int(np.prod(shape[1:]))) and absorb_flatten(ctx, n, shape):
            return
        reshape_to(ctx, i, n, x, new)

    @staticmethod
    def try_shuffle(ctx, i, n, shape, new) -> bool:
        """Reshape (N,g,C/g,...) -> Transpose(0,2,1,...) -> Reshape (N,C,...) as one
        ShuffleChannel(group g)."""
        from ..layers.tensor import ShuffleChannelParams
        if len(shape) < 3 or len(new) < 4:
            return False
        u1 = ctx.sole_user(n.output[0])
        if u1 is None:
            return False
        tr = u1[1]
        if not ctx.role(tr, "transposes") or list(attr_values(tr).get("perm", [])) != swap12(len(new)):
            return False
        u2 = ctx.sole_user(tr.output[0])
        if u2 is None or not ctx.role(u2[1], "reshapes"):
            return False
        r2 = u2[1]
        n_, c = shape[:2]
        g = new[1]
        if (tuple(new[:3]) != (n_, g, c // g) or g * (c // g) != c
                or int(np.prod(new[3:])) != int(np.prod(shape[2:]))):
            return False
        swapped = (n_, c // g, g) + tuple(new[3:])
        ctx.shape.setdefault(n.output[0], tuple(new))
        ctx.shape.setdefault(tr.output[0], swapped)
        if not ctx.try_const(r2.input[1]):
            return False
        final = onnx_reshape(swapped, ctx.consts[r2.input[1]].astype(np.int64),
                             int(attr_values(r2).get("allowzero", 0)))
        if tuple(final) != tuple(shape):
            return False
        ctx.skip.update({u1[0], u2[0]})
        out = ctx.new_blob(r2.output[0])
        ctx.blob[r2.output[0]] = out
        names = [ctx.node_name(k) for k in (i, u1[0], u2[0])]
        prefix = os.path.commonprefix(names)
        prefix = prefix[:prefix.rfind("/")] if "/" in prefix else ""
        ctx.add_layer(ctx.new_layer_name(prefix or names[2]), "ShuffleChannel", [ctx.bottom(n.input[0])],
                      [out], ShuffleChannelParams(group=int(g)))
        ctx.set_out(r2.output[0], out)
        return True


def absorb_flatten(ctx, n, shape) -> bool:
    """A flatten to (N, rest) read only by a Gemm: no layer, since Caffe's InnerProduct
    flattens from axis 1 itself (exactly as Caffe nets are written)."""
    user = ctx.sole_user(n.output[0])
    if user is None or not ctx.role(user[1], "absorbs_flatten") or user[1].input[0] != n.output[0]:
        return False
    ctx.blob[n.output[0]] = ctx.bottom(n.input[0])
    ctx.shape[n.output[0]] = (shape[0], int(np.prod(shape[1:])))
    ctx.flattened[n.output[0]] = n.input[0]
    return True


@onnx_op("Flatten", foldable=True, attrs=frozenset({"axis"}))
class Flatten(OpConverter):
    def fold(self, ctx, n, a, ins):
        ax = a.get("axis", 1) % max(ins[0].ndim, 1)
        return [ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)]

    def convert(self, ctx, i, n, a):
        shape = ctx.shape_of(n.input[0])
        ax = int(a.get("axis", 1)) % (len(shape) + 1) if shape else 0
        if ax == 1 and absorb_flatten(ctx, n, shape):
            return
        reshape_to(ctx, i, n, n.input[0], (int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))))


def _axes(a, ins):
    if "axes" in a:
        return a.get("axes")
    return ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None


@onnx_op("Squeeze", foldable=True, attrs=frozenset({"axes"}))
class Squeeze(OpConverter):
    def fold(self, ctx, n, a, ins):
        axes = _axes(a, ins)
        x = ins[0]
        return [np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes) if axes is not None else None)]

    def convert(self, ctx, i, n, a):
        shape = ctx.shape_of(n.input[0])
        axes = a.get("axes")
        if axes is None and len(n.input) > 1 and n.input[1]:
            axes = ctx.const(n.input[1], "axes").tolist()
        axes = {int(x) % len(shape) for x in axes} if axes is not None else {k for k, d in enumerate(shape) if d == 1}
        reshape_to(ctx, i, n, n.input[0], [d for k, d in enumerate(shape) if k not in axes])


@onnx_op("Unsqueeze", foldable=True, attrs=frozenset({"axes"}))
class Unsqueeze(OpConverter):
    def fold(self, ctx, n, a, ins):
        axes = _axes(a, ins)
        x = ins[0]
        r = x.ndim + len(axes)
        for ax in sorted(ax % r for ax in axes):
            x = np.expand_dims(x, ax)
        return [x]

    def convert(self, ctx, i, n, a):
        shape = list(ctx.shape_of(n.input[0]))
        axes = a.get("axes")
        if axes is None:
            axes = ctx.const(n.input[1], "axes").tolist()
        r = len(shape) + len(axes)
        for ax in sorted(int(x) % r for x in axes):
            shape.insert(ax, 1)
        reshape_to(ctx, i, n, n.input[0], shape)


@onnx_op("Transpose", foldable=True, transposes=True, attrs=frozenset({"perm"}))
class Transpose(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        if not ctx.dialect.has_permute and not self._is_shuffle_transpose(ctx, i):
            return [f"Transpose needs the Permute layer, which the {ctx.dialect.name} dialect lacks"]
        return []

    @staticmethod
    def _is_shuffle_transpose(ctx, i) -> bool:
        n = ctx.nodes[i]
        perm = list(attr_values(n).get("perm", []))
        if len(perm) < 3 or perm != swap12(len(perm)):
            return False
        p = ctx.producer.get(n.input[0])
        users = ctx.users(n.output[0])
        return (p is not None and ctx.role(ctx.nodes[p], "reshapes") and len(users) == 1
                and ctx.role(ctx.nodes[users[0]], "reshapes"))

    def fold(self, ctx, n, a, ins):
        return [np.transpose(ins[0], a.get("perm"))]

    def convert(self, ctx, i, n, a):
        from ..layers.tensor import PermuteParams
        shape = ctx.shape_of(n.input[0])
        perm = tuple(int(p) for p in a.get("perm", range(len(shape) - 1, -1, -1)))
        if perm == tuple(range(len(shape))):
            ctx.set_out(n.output[0], ctx.bottom(n.input[0]))
            return
        ctx.emit(i, "Permute", PermuteParams(order=perm))
