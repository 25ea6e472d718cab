"""The ONNX-op converter registry: one :class:`OpConverter` per ONNX op (or op family).

A converter holds everything the importer knows about its op, in one place:

* ``attrs``: the attributes its conversion understands (any other attribute is reported);
* ``foldable`` / ``shape_only``: evaluated with numpy when every input is a constant
  (``shape_only``: when the input's *shape* is known, e.g. ``Shape``), by :meth:`fold`;
* :meth:`static_problems`: what the graph structure alone decides (checked for every node
  before anything is converted, so all problems are listed at once);
* :meth:`convert`: the conversion into IR layers through the import context;
* small facts other converters ask about instead of comparing op-type strings
  (:meth:`nonneg`, ``folds_pad``, ``absorbs_flatten``, ``sums``, ...).

Converters are registered with the :func:`onnx_op` class decorator, once per op type, with
per-op options (``@onnx_op("AveragePool", ave=True)``) that become instance attributes, in
the spirit of onnx2torch's ``add_converter`` registry (ENOT-AutoDL/onnx2torch,
onnx2torch/node_converters/registry.py). The op modules (``ops_*.py``) are imported by
:func:`converters`, so the registry is complete whenever it is read.
"""
from __future__ import annotations

import importlib

_REGISTRY: dict[str, "OpConverter"] = {}

# the modules whose import registers the converters (by family)
_OP_MODULES = ("ops_const", "ops_conv", "ops_pool", "ops_act", "ops_compose", "ops_norm",
               "ops_elementwise", "ops_shape", "ops_pad", "ops_resize")


class Refuse(Exception):
    """A shape-dependent problem with one node (collected, then raised together)."""


class OpConverter:
    """Base class; subclasses override what their op needs. ``self.op_type`` is the ONNX
    op this instance is registered for; decorator options are set as attributes."""

    #: attributes the conversion understands (others are reported as unsupported)
    attrs: frozenset = frozenset()
    #: evaluated with numpy (:meth:`fold`) when all inputs are constants
    foldable: bool = False
    #: folds once its input's shape is known (Shape, Size), constant or not
    shape_only: bool = False
    #: always folded (Constant)
    always_fold: bool = False
    #: has a conversion into layers (False: fold-only ops such as Gather)
    converts: bool = True
    #: a preceding constant Pad may be folded into this op's padding (Conv, pooling)
    folds_pad: bool = False
    #: a Flatten(axis=1) read only by this op needs no layer (Caffe's InnerProduct flattens)
    absorbs_flatten: bool = False
    #: an Eltwise SUM of activations: a ``x * scalar`` input may become its coefficient
    sums: bool = False
    #: a plain addition of two tensors (MatMul + Add -> InnerProduct with bias)
    adds: bool = False
    #: Reshape (part of a channel-shuffle pattern)
    reshapes: bool = False
    #: Transpose (part of a channel-shuffle pattern)
    transposes: bool = False
    #: Slice (neighbouring Slices of one tensor become one Caffe Slice)
    slices: bool = False

    def __init__(self, op_type: str, **options):
        self.op_type = op_type
        for k, v in options.items():
            setattr(self, k, v)

    def static_problems(self, ctx, i: int, n, a: dict, const: set) -> list[str]:
        """Problems decided by the graph structure alone (``const``: the tensors known to
        be constant at this point of the walk)."""
        return []

    def fold(self, ctx, n, a: dict, ins: list) -> list:
        """The outputs (numpy arrays) of the node from its constant inputs ``ins``."""
        raise NotImplementedError(f"{self.op_type} cannot be evaluated")

    def convert(self, ctx, i: int, n, a: dict) -> None:
        """Append the node's IR layers through ``ctx`` (raise :class:`Refuse` when the node
        cannot be expressed exactly)."""
        raise Refuse(f"operator {self.op_type} has no Caffe layer equivalent")

    def nonneg(self, ctx, n) -> bool:
        """Whether the node's output is known to be >= 0 (a zero Pad before MaxPool folds)."""
        return False

    def pad_value_ok(self, ctx, x: str, value: float) -> bool:
        """(``folds_pad`` ops) whether a Pad of ``value`` around tensor ``x`` folds exactly."""
        return value == 0.0

    def pad_value_problem(self, value: float) -> str:
        return f"a Pad value {value} before {self.op_type} cannot be folded (only 0)"


def onnx_op(*op_types: str, **options):
    """Class decorator: register an instance of the class for each of ``op_types``."""
    def deco(cls):
        for t in op_types:
            if t in _REGISTRY:
                raise RuntimeError(f"ONNX op {t} registered twice")
            _REGISTRY[t] = cls(t, **options)
        return cls
    return deco


def converters() -> dict[str, OpConverter]:
    """op type -> converter, every op module loaded."""
    for m in _OP_MODULES:
        importlib.import_module(f"{__package__}.{m}")
    return _REGISTRY


def converter_for(op_type: str) -> OpConverter | None:
    return converters().get(op_type)


def supported_ops() -> tuple[str, ...]:
    """The ONNX operations that can become layers (or are always folded)."""
    return tuple(sorted(t for t, c in converters().items() if c.converts))


def attr_values(node) -> dict:
    """A node's attributes as Python values."""
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
