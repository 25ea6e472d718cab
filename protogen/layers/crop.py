"""Layers that cut, repeat, combine or swallow blobs: Crop, Tile, Silence (upstream Caffe),
Axpy (SENet fork)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, register


def _canon(axis: int, rank: int, what: str) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ShapeError(f"{what} axis {axis} out of range for a {rank}-D blob")
    return a


@dataclass(frozen=True)
class CropParams:
    axis: int = 2
    offset: tuple = ()


@register
class Crop(LayerType):
    """Crops bottom 0 to bottom 1's size on every axis from ``axis`` on; axes before keep
    bottom 0's size. ``offset``: none (all 0), one (for every cropped axis) or one per cropped
    axis. semantics: BVLC/caffe src/caffe/layers/crop_layer.cpp"""
    type = "Crop"
    param_field = "crop_param"
    Params = CropParams
    n_bottoms = (2, 2)
    examples = (
        Example(ins=[(2, 3, 9, 8), (1, 1, 5, 6)]),
        Example(params=dict(offset=2), ins=[(2, 3, 9, 8), (2, 3, 5, 6)]),
        Example(params=dict(axis=1, offset=[1, 3, 0]), ins=[(2, 5, 9, 8), (7, 2, 5, 6)]),
        Example(params=dict(axis=-1, offset=1), ins=[(2, 3, 4, 7), (1, 1, 1, 4)]),
    )

    def offsets(self, p, s0, s1) -> list[int]:
        """Per-axis offsets (0 before ``axis``), checked against both shapes."""
        rank = len(s0)
        if len(s1) != rank:
            raise ShapeError(f"Crop bottoms have different ranks: {tuple(s0)} and {tuple(s1)}")
        a = _canon(p.axis, rank, "Crop")
        if len(p.offset) > 1 and a + len(p.offset) != rank:
            raise ShapeError(f"{len(p.offset)} crop offsets for the {rank - a} axes from axis {a}")
        offs = [0] * rank
        for i in range(a, rank):
            offs[i] = int(p.offset[0] if len(p.offset) == 1 else p.offset[i - a] if p.offset else 0)
            if s0[i] - offs[i] < s1[i]:
                raise ShapeError(f"crop of axis {i} out of bounds: size {s1[i]} at offset {offs[i]} "
                                 f"of {s0[i]}")
        return offs

    def shapes(self, p, ins):
        s0, s1 = ins
        self.offsets(p, s0, s1)
        a = _canon(p.axis, len(s0), "Crop")
        return [tuple(s0[:a]) + tuple(s1[a:])]

    def to_onnx(self, ctx, step):
        """Slice: starts are the offsets, ends = offsets + Shape(bottom 1) (follows the size)."""
        p = step.layer.params
        s0, s1 = step.in_shapes
        offs = self.offsets(p, s0, s1)
        a = _canon(p.axis, len(s0), "Crop")
        axes = list(range(a, len(s0)))
        size = ctx.op("Shape", [ctx.name(step.inputs[1])], start=a)
        ends = ctx.op("Add", [size, ctx.ints("offsets", offs[a:])])
        ctx.op("Slice", [ctx.name(step.inputs[0]), ctx.ints("starts", offs[a:]), ends,
                         ctx.ints("axes", axes)], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x, ref = xs
        offs = self.offsets(p, tuple(x.shape), tuple(ref.shape))
        a = _canon(p.axis, x.dim(), "Crop")
        for i in range(a, x.dim()):
            x = x.narrow(i, offs[i], int(ref.shape[i]))
        return [x]

    def torch_source(self, p, src, step):
        s0, s1 = step.in_shapes
        offs = self.offsets(p, s0, s1)
        a = _canon(p.axis, len(s0), "Crop")
        ref = src.x(1)
        idx = [":"] * a + [f"{o}:{o} + {ref}.shape[{i}]" if o else f":{ref}.shape[{i}]"
                           for i, o in enumerate(offs) if i >= a]
        src.assign(f"{src.x()}[{', '.join(idx)}]")


@dataclass(frozen=True)
class TileParams:
    axis: int = 1
    tiles: int = 0


@register
class Tile(LayerType):
    """Repeats the block of axes [axis, end) ``tiles`` times along ``axis`` (numpy.tile).
    semantics: BVLC/caffe src/caffe/layers/tile_layer.cpp"""
    type = "Tile"
    param_field = "tile_param"
    Params = TileParams
    examples = (
        Example(params=dict(tiles=3), ins=[(2, 3, 2, 2)]),
        Example(params=dict(axis=2, tiles=4), ins=[(2, 3, 1, 1)]),
        Example(params=dict(axis=-1, tiles=2), ins=[(2, 3, 5)]),
        Example(params=dict(axis=0, tiles=2), ins=[(2, 3)]),
    )

    def validate(self, p):
        if p.tiles < 1:
            raise ProtogenError(f"Tile needs tiles >= 1, got {p.tiles}")

    def opencv_limit(self, p):
        """Why OpenCV's Caffe importer cannot check this layer (None: it can)."""
        return "cannot read Caffe's Tile (its TileLayer wants a 'repeats' parameter)"

    def shapes(self, p, ins):
        a = _canon(p.axis, len(ins[0]), "Tile")
        s = list(ins[0])
        s[a] *= p.tiles
        return [tuple(s)]

    def _repeats(self, p, rank):
        a = _canon(p.axis, rank, "Tile")
        return [p.tiles if i == a else 1 for i in range(rank)]

    def to_onnx(self, ctx, step):
        reps = self._repeats(step.layer.params, len(step.in_shapes[0]))
        ctx.op("Tile", [ctx.name(step.inputs[0]), ctx.ints("repeats", reps)], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [xs[0].repeat(*self._repeats(p, xs[0].dim()))]

    def torch_source(self, p, src, step):
        reps = self._repeats(p, len(step.in_shapes[0]))
        src.assign(f"{src.x()}.repeat({', '.join(str(r) for r in reps)})")


@register
class Silence(LayerType):
    """Consumes its bottoms and produces nothing (so they are no net outputs): no ONNX node,
    no PyTorch line. semantics: BVLC/caffe src/caffe/layers/silence_layer.cpp"""
    type = "Silence"
    n_bottoms = (1, None)
    n_tops = (0, 0)
    is_view = True
    examples = (Example(ins=[(2, 3), (2, 4, 5)], n_tops=0, skip=("onnx", "torch_source"),
                        why="no outputs, so a one-layer net has nothing to run; a net that "
                            "silences a blob is checked in tests/layers/test_fork_layers.py"),)

    def shapes(self, p, ins):
        return []

    def to_onnx(self, ctx, step):
        return

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return []

    def torch_source(self, p, src, step):
        src.line(f"# {step.layer.name} (Silence): consumes {', '.join(src.xs())}")


@register
class Axpy(LayerType):
    """y = a * x + b with a (N, C) or (N, C, 1, 1) broadcast over x's spatial axes; bottoms
    (a, x, b), x and b of one shape (SENet's SE-block fusion).
    semantics: hujie-frank/SENet src/caffe/layers/axpy_layer.cpp"""
    type = "Axpy"
    schemas = ("senet", "refinedet", "waifu2x")
    n_bottoms = (3, 3)
    examples = (
        Example(ins=[(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)]),
        Example(ins=[(2, 4), (2, 4, 3, 3), (2, 4, 3, 3)]),
    )

    def shapes(self, p, ins):
        a, x, b = ins
        if tuple(x) != tuple(b):
            raise ShapeError(f"Axpy needs x and y of one shape, got {tuple(x)} and {tuple(b)}")
        if len(x) < 2 or tuple(a[:2]) != tuple(x[:2]) or any(d != 1 for d in a[2:]):
            raise ShapeError(f"Axpy scale {tuple(a)} is not (N, C[, 1, 1]) of x {tuple(x)}")
        return [tuple(x)]

    def to_onnx(self, ctx, step):
        rank = len(step.in_shapes[1])
        a = ctx.name(step.inputs[0])
        if len(step.in_shapes[0]) != rank:
            a = ctx.op("Reshape", [a, ctx.ints("shape", [0, 0] + [1] * (rank - 2))])
        ax = ctx.op("Mul", [a, ctx.name(step.inputs[1])])
        ctx.op("Add", [ax, ctx.name(step.inputs[2])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        a, x, b = xs
        a = a.reshape(tuple(a.shape[:2]) + (1,) * (x.dim() - 2))
        return [a * x + b]

    def torch_source(self, p, src, step):
        a, x, b = src.xs()
        rank = len(step.in_shapes[1])
        if len(step.in_shapes[0]) != rank:
            a = f"{a}[:, :{', None' * (rank - len(step.in_shapes[0]))}]"
        src.assign(f"{a} * {x} + {b}")

