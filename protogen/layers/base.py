"""The base of the layer-type registry.

A layer type is one :class:`LayerType` subclass holding everything true of it: its
parameters (a dataclass mirroring Caffe's ``*Parameter`` message), how they are read from and
written to Caffe's ``LayerParameter``, the shape rule, the weight-blob shapes, the seeded
initialisation, the cost (learnable params, multiply-adds, memory access), and — added by the
backends' issues in the same class — the ONNX lowering and the PyTorch forward.

Declaring examples (every new type must): give the class a tuple ``examples`` of
:class:`Example` cases; ``tests/layers/test_registry.py`` then checks each case through every
backend (shape rule == the torch forward's actual output shape; ONNX lowering run by ONNX
Runtime == the float64 torch forward within 1e-5 relative; the generated ``torch_source``
module == the torch forward; prototxt written and read back gives the same params)::

    examples = (
        Example(params=dict(num_output=8, kernel_size=3), ins=[(2, 4, 9, 9)]),
        Example(params=dict(num_output=6, kernel_size=3, group=2, pad=1), ins=[(2, 4, 7, 7)]),
    )

``params`` are fields of the type's Caffe parameter message (``convolution_param`` here), as
they are written in a prototxt (a scalar for a repeated field is one value; enums by name;
nested messages as dicts); they go through the type's own ``parse``. ``ins`` are the bottom
shapes; ``n_tops`` the number of tops; ``data`` a function ``(rng, shapes) -> [arrays]`` when
the inputs must lie in a domain (positive values, labels); ``skip`` names checks that do not
apply, with the reason in ``why`` (e.g. ``skip=("onnx",), why="no ONNX form"``). A type
that cannot run at inference (data layers, losses) declares no examples and is listed by name
in the test's allow-list.

Memory access cost (MAC) follows the ShuffleNet V2 paper: the number of elements a layer
reads and writes, i.e. ``sum(input sizes) + sum(output sizes) + weight sizes`` for batch 1.
For a 1x1 convolution with equal input/output spatial size this is ``h*w*(c1+c2) + c1*c2``
exactly as the paper writes it. In-place layers still read and write their blob. Layers that
only relabel memory (Reshape, Flatten, Split, Dropout at test time, Input) cost 0.
"""
from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError

Shape = tuple[int, ...]


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@dataclass
class Cost:
    params: int = 0            # learnable parameters
    stats: int = 0             # non-learnable statistics (BatchNorm mean/var/factor)
    macs: int = 0              # multiply-adds
    memory_access: int = 0     # elements read + written (ShuffleNet V2's MAC)


@dataclass(frozen=True)
class NoParams:
    pass


#: the per-type checks of tests/layers/test_registry.py that an Example may skip
EXAMPLE_CHECKS = ("shape", "onnx", "torch_source", "roundtrip")


@dataclass(frozen=True)
class Example:
    """One example case of a layer type (see the module docstring): Caffe param-message fields,
    input shapes, and the number of tops."""
    params: Any = field(default_factory=dict)
    ins: tuple = ((2, 3, 5, 5),)
    n_tops: int = 1
    #: ``(numpy Generator, list of shapes) -> list of float32 arrays``; default standard normal
    data: Callable | None = None
    #: checks (of EXAMPLE_CHECKS) that do not apply to this case, and why
    skip: tuple = ()
    why: str = ""
    #: relative tolerance of the float32 runtimes against the float64 reference
    rtol: float = 1e-5

    def __post_init__(self):
        object.__setattr__(self, "ins", tuple(tuple(int(d) for d in s) for s in self.ins))
        bad = set(self.skip) - set(EXAMPLE_CHECKS)
        if bad:
            raise ValueError(f"unknown checks {sorted(bad)} (choose from {EXAMPLE_CHECKS})")
        if self.skip and not self.why:
            raise ValueError("an Example that skips a check says why")

    def layer_param(self, kind: "LayerType"):
        """A ``caffe_pb2.LayerParameter`` of type ``kind`` carrying these params."""
        from google.protobuf import json_format

        from ..caffe import pb
        lp = pb.LayerParameter(name="layer", type=kind.type)
        if self.params and not isinstance(self.params, dict):
            raise TypeError("Example.params is a dict of Caffe param-message fields")
        if self.params:
            if kind.param_field is None:
                raise ValueError(f"{kind.type} has no parameter message")
            msg = getattr(lp, kind.param_field)
            d = {}
            for k, v in self.params.items():
                fd = msg.DESCRIPTOR.fields_by_name.get(k)
                if fd is None:
                    raise ValueError(f"{kind.param_field} has no field '{k}'")
                d[k] = [v] if fd.is_repeated and not isinstance(v, (list, tuple)) else v
            json_format.ParseDict(d, msg, ignore_unknown_fields=False)
        return lp

    def make_params(self, kind: "LayerType"):
        """The type's parsed Params for this case (through ``kind.parse``)."""
        return kind.parse(self.layer_param(kind))

    def inputs(self, seed: int = 0) -> list:
        """The example's float32 input arrays."""
        rng = np.random.default_rng(seed)
        if self.data is not None:
            return [np.asarray(a, np.float32) for a in self.data(rng, list(self.ins))]
        return [rng.standard_normal(s).astype(np.float32) for s in self.ins]


def _f32(x: float) -> float:
    """``x`` rounded to float32 (without importing numpy)."""
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def _enum_name(field_desc, value):
    return field_desc.enum_type.values_by_number[value].name


class LayerType:
    """Base class: one subclass per Caffe layer type, registered by :func:`register`."""

    #: the Caffe type string (``LayerParameter.type``)
    type: ClassVar[str] = ""
    #: other type strings read as this type (e.g. legacy or fork spellings)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: the LayerParameter field holding this type's parameters, e.g. "convolution_param"
    param_field: ClassVar[str | None] = None
    Params: ClassVar[type] = NoParams
    n_bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    n_tops: ClassVar[tuple[int, int | None]] = (1, 1)
    #: may run in place (top == bottom)
    inplace: ClassVar[bool] = False
    #: a source of data (Input, Data, ...)
    is_input: ClassVar[bool] = False
    #: the inference net's entry (Input): one shape per top, given as parameters; data layers
    #: (is_input too) read files. Use this flag instead of comparing the type with "Input"
    is_deploy_input: ClassVar[bool] = False
    #: a loss layer: contributes loss_weight 1 by default
    is_loss: ClassVar[bool] = False
    #: a metric (Accuracy): reads labels, computes nothing the inference net returns; the
    #: inference view drops it with the labels
    is_metric: ClassVar[bool] = False
    #: only relabels memory; costs no memory access
    is_view: ClassVar[bool] = False
    #: LayerParameter fields (besides param_field) that this type understands and ignores
    #: silently when reading a Caffe net
    benign_fields: ClassVar[frozenset] = frozenset()
    #: fields of the param message that are read but have no effect at inference
    benign_param_fields: ClassVar[frozenset] = frozenset(
        {"weight_filler", "bias_filler", "filler", "engine"})
    #: seeded weights are calibrated on data (BatchNorm statistics): see calibrated_blobs
    calibrates: ClassVar[bool] = False
    #: sums branches elementwise (Eltwise): a BatchNorm whose result reaches it ends a
    #: residual branch, calibrated to a small output (protogen.weights)
    joins_residual: ClassVar[bool] = False
    #: example cases checked by tests/layers/test_registry.py through every backend (see
    #: the module docstring); a type without examples must be in that test's allow-list
    examples: ClassVar[tuple] = ()
    #: the Caffe schemas that define this type: "upstream" (BVLC) and/or fork tags such as
    #: "ssd" (weiliu89/caffe), "py-faster-rcnn", "r-fcn", "segnet", "deeplab", "yolo",
    #: "depthwise", "opencv", "refinedet", "cascade-rcnn", "mobilenet-yolo", "shufflenet"
    #: (listed by ``protogen layers``)
    schemas: ClassVar[tuple[str, ...]] = ("upstream",)

    # ----------------------------------------------------------- parameters
    def validate(self, p) -> None:
        """Raise ProtogenError for parameter values Caffe itself would refuse."""

    def default_params(self):
        return self.Params()

    def resolve(self, lp) -> "LayerType":
        """The registry type that reads Caffe layer ``lp`` of this type: itself, except for a
        generic type (``Python``) that hands a layer to the type of the code it names."""
        return self

    def canonical_params(self, p, ins: list[Shape], phase: str | None = None):
        """``p`` with Caffe-irrelevant spellings normalised, for structural comparison
        (:mod:`protogen.diff`): two layers whose canonical params are equal compute the same
        function of their inputs (of shapes ``ins``) in ``phase``."""
        return p

    def parse(self, lp) -> Any:
        """Parameters from a (V2) ``caffe_pb2.LayerParameter``."""
        if self.param_field is None:
            return self.Params()
        msg = getattr(lp, self.param_field)
        kw = {}
        names = {f.name for f in dataclasses.fields(self.Params)}
        for fd in msg.DESCRIPTOR.fields:
            if fd.name not in names:
                continue
            v = getattr(msg, fd.name)
            if fd.is_repeated:
                kw[fd.name] = tuple(v) if fd.message_type is None else tuple(v)
            elif msg.HasField(fd.name):
                kw[fd.name] = _enum_name(fd, v) if fd.enum_type is not None else v
        missing = [f.name for f in dataclasses.fields(self.Params)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in kw]
        if missing:   # e.g. a DIGITS net's InnerProduct without num_output: Caffe refuses it too
            raise ProtogenError(f"{self.param_field} needs {', '.join(missing)}")
        p = self.Params(**kw)
        self.validate(p)
        return p

    def unsupported(self, lp) -> list[str]:
        """Problems that stop this layer from being represented faithfully (for the loader)."""
        if self.param_field is None:
            return []
        msg = getattr(lp, self.param_field)
        names = {f.name for f in dataclasses.fields(self.Params)}
        bad = []
        for fd, v in msg.ListFields():
            if fd.name not in names and fd.name not in self.benign_param_fields:
                bad.append(f"{self.param_field}.{fd.name} is not supported")
        return bad

    def write(self, p, lp) -> None:
        """Write parameters into ``lp`` (only values that differ from Caffe's defaults)."""
        if self.param_field is None:
            return
        msg = getattr(lp, self.param_field)
        for f in dataclasses.fields(p):
            v = getattr(p, f.name)
            fd = msg.DESCRIPTOR.fields_by_name.get(f.name)
            if fd is None or v is None:
                continue
            if fd.is_repeated:
                if v:
                    getattr(msg, f.name).extend(v)
                continue
            dflt = fd.default_value if fd.enum_type is None else _enum_name(fd, fd.default_value)
            if fd.has_default_value and (v == dflt or (fd.cpp_type == fd.CPPTYPE_FLOAT
                                                       and _f32(v) == _f32(dflt))):
                # float fields: the descriptor's default is the float32 value (0.999 ->
                # 0.9990000128746033), so compare in float32
                continue
            if fd.enum_type is not None:
                v = fd.enum_type.values_by_name[v].number
            setattr(msg, f.name, v)

    def caffe_layers(self, layer, dialect, shapes=None) -> list:
        """The Caffe ``LayerParameter`` message(s) that express ``layer`` in ``dialect``.

        Most types give one message; a type that some Caffe dialects lack (channel shuffle,
        ReLU6) expands into several. ``shapes`` are the layer's input shapes when known.
        """
        from ..caffe import pb
        lp = pb.LayerParameter()
        lp.name = layer.name
        lp.type = self.caffe_type(layer, dialect)
        lp.bottom.extend(layer.bottoms)
        lp.top.extend(layer.tops)
        self.write(layer.params, lp)
        self.write_fillers(layer, lp)
        return [lp]

    def caffe_type(self, layer, dialect) -> str:
        return self.type

    def write_fillers(self, layer, lp) -> None:
        if not layer.fillers or self.param_field is None:
            return
        msg = getattr(lp, self.param_field)
        for key, spec in layer.fillers.items():
            if key in msg.DESCRIPTOR.fields_by_name:
                f = getattr(msg, key)
                for k, v in spec.items():
                    setattr(f, k, v)

    # ----------------------------------------------------------- shapes and weights
    def shapes(self, p, ins: list[Shape]) -> list[Shape]:
        """Output shapes for input shapes ``ins`` (Caffe's Reshape())."""
        return [ins[0]]

    def output_shapes(self, p, ins: list[Shape], n_tops: int) -> list[Shape]:
        """Like :meth:`shapes`, for types whose output count depends on the tops (Slice)."""
        return self.shapes(p, ins)

    def weight_shapes(self, p, ins: list[Shape]) -> list[Shape]:
        return []

    def learnable(self, p, ins: list[Shape]) -> list[bool]:
        """Which weight blobs are learnable parameters (BatchNorm's statistics are not)."""
        return [True] * len(self.weight_shapes(p, ins))

    def init_weights(self, p, ins: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
        """Seeded weights that keep activations in a healthy range (see protogen.weights)."""
        return [np.zeros(s, np.float32) for s in self.weight_shapes(p, ins)]

    # ----------------------------------------------------------- backends
    def to_onnx(self, ctx, step) -> None:
        """Lower one resolved step (:class:`protogen.ir.Step`) into ONNX nodes through ``ctx``
        (:class:`protogen.onnx_io.OnnxContext`): read inputs with ``ctx.name(step.inputs[i])``,
        produce ``step.outputs`` (or alias them to an input with ``ctx.alias``)."""
        from ..errors import UnsupportedError
        raise UnsupportedError([(step.layer.name, self.type, "no ONNX lowering (training-only layer?)")])

    def torch_forward(self, p, xs: list, blobs: list, n_tops: int = 1) -> list:
        """The PyTorch reference: Caffe's forward pass on tensors ``xs`` with weight tensors
        ``blobs``; returns one tensor per top. Written from Caffe's algorithm, independently of
        :meth:`to_onnx`."""
        from ..errors import UnsupportedError
        raise UnsupportedError([("?", self.type, "no PyTorch reference (training-only layer?)")])

    def torch_source(self, p, src, step) -> None:
        """Readable PyTorch source for one resolved step (``protogen.torch_codegen``): declare
        weights with ``src.module``/``src.parameter``, write one forward line with
        ``src.assign`` reading ``src.x(i)`` and writing ``src.ys()``. Same semantics as
        :meth:`torch_forward`, written as literal code that needs only torch."""
        from ..errors import UnsupportedError
        raise UnsupportedError([("?", self.type, "no PyTorch source form (training-only layer?)")])

    def calibrated_blobs(self, p, x, out_mean: float, out_std: float, var_floor: float) -> list:
        """For a type with ``calibrates``: weight blobs (float32 arrays) that make the output on
        input ``x`` (a float64 tensor) have per-channel mean ``out_mean`` and standard deviation
        ``out_std``; channel variances are floored at ``var_floor`` times their mean."""
        raise NotImplementedError(f"{self.type} does not calibrate")

    def batchnorm_affine(self, step):
        """For a layer that directly follows a BatchNorm: ``(gamma, beta)`` numpy arrays when
        it is a per-channel affine map that can fold into ONNX BatchNormalization, else None."""
        return None

    # ----------------------------------------------------------- cost
    def macs(self, p, ins: list[Shape], outs: list[Shape]) -> int:
        """Multiply-adds as the papers count them: only convolution and fully-connected."""
        return 0

    def cost(self, p, ins: list[Shape], outs: list[Shape]) -> Cost:
        ws = self.weight_shapes(p, ins)
        learn = self.learnable(p, ins)
        params = sum(numel(s) for s, l in zip(ws, learn) if l)
        stats = sum(numel(s) for s, l in zip(ws, learn) if not l)
        if self.is_view or self.is_input:
            mac = 0
        else:
            mac = sum(numel(s) for s in ins) + sum(numel(s) for s in outs) + params + stats
        return Cost(params=params, stats=stats, macs=self.macs(p, ins, outs), memory_access=mac)


# --------------------------------------------------------------------- registry
_REGISTRY: dict[str, LayerType] = {}


def register(cls):
    inst = cls()
    for name in (cls.type, *cls.aliases):
        if name in _REGISTRY:
            raise RuntimeError(f"layer type {name} registered twice")
        _REGISTRY[name] = inst
    return cls


def get_type(name: str) -> LayerType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProtogenError(f"unknown layer type '{name}'") from None


def registered_types() -> dict[str, LayerType]:
    return dict(_REGISTRY)


# --------------------------------------------------------------------- helpers
def spatial_pair(single: tuple, h: int, w: int, default: int, what: str) -> tuple[int, int]:
    """Caffe's ``X_size`` (repeated, 0/1/2 values) vs ``X_h``/``X_w`` resolution."""
    if h or w:
        if single:
            raise ProtogenError(f"give either {what} or {what}_h/_w, not both")
        return int(h), int(w)
    if len(single) == 0:
        return default, default
    if len(single) == 1:
        return int(single[0]), int(single[0])
    if len(single) == 2:
        return int(single[0]), int(single[1])
    raise ProtogenError(f"{what} has {len(single)} values; only 2-D is supported")


def require_rank(ins: list[Shape], rank: int, what: str) -> None:
    for s in ins:
        if len(s) != rank:
            raise ShapeError(f"{what} needs {rank}-D input, got shape {tuple(s)}")


def he_normal(shape, fan_in: int, rng: np.random.Generator, gain: float = 2.0) -> np.ndarray:
    std = math.sqrt(gain / max(fan_in, 1))
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def layer_blobs(step) -> list[np.ndarray]:
    """A resolved step's weight blobs as float32 arrays in this type's weight shapes (blobs
    read from legacy caffemodels may carry 4-D num/channels/height/width shapes)."""
    l = step.layer
    want = l.kind.weight_shapes(l.params, step.in_shapes)
    if want and (not l.blobs or len(l.blobs) < len(want)):
        raise ProtogenError("layer has no weights (fill them with protogen.weights.seeded_weights "
                            "or load a caffemodel)", layer=l.name)
    out = []
    for b, s in zip(l.blobs or [], want):
        a = np.asarray(b, np.float32)
        if a.size != numel(s):
            raise ShapeError(f"weight blob of shape {a.shape} does not fit {tuple(s)}", layer=l.name)
        out.append(a.reshape(s))
    return out
