"""Constants and the shape arithmetic exporters emit (Shape -> Gather -> Unsqueeze -> Concat
-> Reshape, ...): ops evaluated with numpy when their inputs are constant. They have no
layer of their own: a node of these ops on an activation is reported as unsupported."""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, onnx_op


@onnx_op("Constant", always_fold=True, converts=True,
         attrs=frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"}))
class Constant(OpConverter):
    def fold(self, ctx, n, a, ins):
        from onnx import numpy_helper
        if "value" in a:
            return [numpy_helper.to_array(a["value"])]
        if "value_float" in a:
            return [np.array(a["value_float"], np.float32)]
        if "value_floats" in a:
            return [np.array(a["value_floats"], np.float32)]
        if "value_int" in a:
            return [np.array(a["value_int"], np.int64)]
        return [np.array(a["value_ints"], np.int64)]


class _FoldOnly(OpConverter):
    foldable = True
    converts = False


@onnx_op("Shape", shape_only=True)
class Shape(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        s = np.array(ctx.shape_of(n.input[0]), np.int64)
        return [s[a.get("start", 0):a.get("end", None)]]


@onnx_op("Size", shape_only=True)
class Size(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [np.array(int(np.prod(ctx.shape_of(n.input[0]))), np.int64)]


@onnx_op("Gather")
class Gather(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [np.take(ins[0], ins[1], axis=a.get("axis", 0))]


@onnx_op("Cast", attrs=frozenset({"to", "saturate"}))
class Cast(OpConverter):
    """Folded on constants; on a float activation a cast to a float type is dropped (Caffe
    computes in one float type); other casts of activations are refused."""
    foldable = True

    def fold(self, ctx, n, a, ins):
        from onnx import helper
        return [ins[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))]

    def convert(self, ctx, i, n, a):
        from onnx import helper
        if not np.issubdtype(helper.tensor_dtype_to_np_dtype(a["to"]), np.floating):
            raise Refuse(f"Cast of an activation to {helper.tensor_dtype_to_np_dtype(a['to'])} "
                         "has no Caffe layer")
        ctx.set_out(n.output[0], ctx.bottom(n.input[0]))


@onnx_op("ConstantOfShape")
class ConstantOfShape(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        from onnx import numpy_helper
        v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        return [np.full(tuple(int(d) for d in ins[0]), v.reshape(-1)[0], v.dtype)]


@onnx_op("Range")
class Range(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)]


@onnx_op("Expand")
class Expand(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [ins[0] * np.ones(tuple(int(d) for d in ins[1]), ins[0].dtype)]


@onnx_op("Where")
class Where(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [np.where(ins[0], ins[1], ins[2])]


@onnx_op("ReduceProd")
class ReduceProd(_FoldOnly):
    def fold(self, ctx, n, a, ins):
        return [np.prod(ins[0], keepdims=bool(a.get("keepdims", 1))).astype(ins[0].dtype)]


@onnx_op("Equal", fn=np.equal, keep_dtype=False)
@onnx_op("Neg", fn=np.negative)
@onnx_op("Sqrt", fn=np.sqrt)
@onnx_op("Floor", fn=np.floor)
@onnx_op("Ceil", fn=np.ceil)
@onnx_op("Pow", fn=np.power)
class NumpyFunction(_FoldOnly):
    """An element-wise numpy function; the result keeps the first input's dtype."""
    fn = None
    keep_dtype = True

    def fold(self, ctx, n, a, ins):
        r = np.asarray(self.fn(*ins))
        return [r.astype(ins[0].dtype) if self.keep_dtype else r]

