"""IR -> ONNX: walk the deploy net's resolved steps and ask each layer to lower itself.

The exporter owns naming, initializers, graph inputs/outputs and dynamic axes; every
layer type's ``to_onnx(ctx, step)`` (in :mod:`protogen.layers`) emits its own nodes through
the :class:`OnnxContext` below. Naming:

* graph inputs are the Caffe input blobs (``data``), graph outputs the net's output blobs
  (``prob``); every other value is named by its SSA name from :class:`protogen.ir.Resolved` (a blob
  rewritten in place has versions ``blob@1``, ``blob@2``, ... and its last version ``blob``);
* helper values inside one layer's lowering are ``<layer>/<what>``, made unique;
* Dropout and Split produce no node: their tops are aliases of the input value.

Dynamic axes: the batch axis is always symbolic (``N``). Height/width are symbolic too,
unless some lowering has to bake a size into the graph (an InnerProduct over spatial axes,
a Reshape to literal sizes, a CEIL pooling with stride > 1 whose exact Caffe windows
depend on the input size...). The exporter finds out which axes of each value follow the
input size by re-running shape inference at another size, lowers once assuming dynamic
H/W, and if a layer asked for a fixed size lowers again with static H/W.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .errors import ProtogenError, ShapeError
from .ir import DEPLOY, Dataflow, Graph, Resolved, Step
from .util import unique_name
from .wire import LEN, fields, len_field

#: models whose initializers exceed this many bytes are written with ONNX external data
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
#: with external data, initializers smaller than this stay inside the model file
EXTERNAL_MIN_BYTES = 1024
FLT_MAX = float(np.finfo(np.float32).max)


class OnnxContext(Dataflow):
    """What a layer's ``to_onnx`` sees: value names, constants, nodes, dataflow facts."""

    def __init__(self, resolved: Resolved, opset: int,
                 var_batch: dict, var_hw: dict, dynamic_hw: bool, dynamic_batch: bool):
        self._init_dataflow(resolved)
        self.opset = opset
        self.dynamic_hw = dynamic_hw
        self.dynamic_batch = dynamic_batch
        self._var_batch = var_batch
        self._var_hw = var_hw
        self.nodes: list = []           # (op, inputs, outputs, attrs, node name)
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: list[tuple[str, tuple]] = []   # (onnx name, shape)
        self._alias: dict[str, str] = {}
        self.need_fixed_hw = False
        self.need_fixed_batch = False
        self.shapes: dict[str, tuple] = dict(resolved.shapes)
        self._used = set(self.shapes)
        self._node_names: set[str] = set()
        self.current: Step | None = None

    # ---------------------------------------------------------------- values
    def name(self, ssa: str) -> str:
        """The ONNX value holding SSA value ``ssa`` (following aliases)."""
        while ssa in self._alias:
            ssa = self._alias[ssa]
        return ssa

    def alias(self, out_ssa: str, in_ssa: str) -> None:
        """Make ``out_ssa`` the same value as ``in_ssa`` (no node: Dropout, Split, no-op views)."""
        self._alias[out_ssa] = self.name(in_ssa)

    def is_alias(self, ssa: str) -> bool:
        return ssa in self._alias

    def tmp(self, hint: str) -> str:
        """A fresh value name ``<layer>/<hint>`` that clashes with nothing."""
        base = f"{self.current.layer.name}/{hint}" if self.current else hint
        return unique_name(base, self._used)

    def const(self, hint: str, value, dtype=np.float32) -> str:
        """An initializer holding ``value``; returns its name."""
        arr = np.asarray(value, dtype=dtype)
        name = self.tmp(hint)
        self.inits[name] = arr
        return name

    def ints(self, hint: str, values) -> str:
        return self.const(hint, np.asarray(values, np.int64).reshape(-1), np.int64)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, *, n_out: int = 1,
           outs: list[str] | None = None, **attrs):
        """Add a node. ``out`` names its single output (default: a fresh ``<layer>/<op>``);
        ``outs`` names several. Returns the output name (or the list of names)."""
        if outs is None:
            outs = [out if out is not None else self.tmp(op_type.lower())] if n_out == 1 else \
                   [self.tmp(f"{op_type.lower()}{i}") for i in range(n_out)]
        for o in outs:
            self._used.add(o)
        base = self.current.layer.name if self.current else op_type
        nname, k = base, 1
        while nname in self._node_names:
            k += 1
            nname = f"{base}/{op_type}" if k == 2 else f"{base}/{op_type}_{k - 1}"
        self._node_names.add(nname)
        self.nodes.append((op_type, list(inputs), list(outs),
                           {k_: v for k_, v in attrs.items() if v is not None}, nname))
        return outs[0] if len(outs) == 1 and n_out == 1 else list(outs)

    def input(self, ssa: str, shape) -> None:
        """Declare a graph input (Input layers)."""
        self.inputs.append((ssa, tuple(shape)))

    # ---------------------------------------------------------------- dynamic axes
    def varies(self, ssa: str, axis: int) -> bool:
        """Whether ``axis`` of value ``ssa`` is symbolic in this lowering."""
        axis = axis % max(1, len(self.shapes[ssa]))
        if self.dynamic_batch and axis in self._var_batch.get(ssa, ()):
            return True
        return self.dynamic_hw and axis in self._var_hw.get(ssa, ())

    def static(self, ssa: str, axis: int) -> int:
        """The size of ``axis`` of ``ssa``, for a lowering that bakes it into the graph. If the
        axis is symbolic, the export is redone with that kind of axis fixed."""
        axis = axis % max(1, len(self.shapes[ssa]))
        if self.varies(ssa, axis):
            if self.dynamic_batch and axis in self._var_batch.get(ssa, ()):
                self.need_fixed_batch = True
            else:
                self.need_fixed_hw = True
        return int(self.shapes[ssa][axis])

    def static_shape(self, ssa: str, axes=None) -> tuple[int, ...]:
        r = len(self.shapes[ssa])
        axes = range(r) if axes is None else axes
        return tuple(self.static(ssa, a) for a in axes)


def _varying_axes(res: Resolved, perturb) -> dict | None:
    """Axes of each SSA value whose size changes when the inputs' shapes change."""
    shapes = {blob: perturb(shape) for blob, _, shape in res.inputs}
    try:
        other = res.graph.steps(shapes)
    except ProtogenError:
        return None
    res_axes = {}
    for a, b in zip(res.steps, other):
        for v, s1, s2 in zip(a.outputs, a.out_shapes, b.out_shapes):
            if len(s1) != len(s2):
                return None
            res_axes[v] = {i for i, (x, y) in enumerate(zip(s1, s2)) if x != y}
    return res_axes


def _lower(res: Resolved, opset, var_batch, var_hw, dynamic_hw, dynamic_batch) -> OnnxContext:
    ctx = OnnxContext(res, opset, var_batch, var_hw, dynamic_hw, dynamic_batch)
    for st in res.steps:
        if ctx.done(st):
            continue
        ctx.current = st
        try:
            st.layer.kind.to_onnx(ctx, st)
        except ProtogenError as e:
            raise e.with_context(layer=st.layer.name)
    ctx.current = None
    return ctx


def _lower_dynamic(res: Resolved, opset: int) -> OnnxContext:
    """Lower with symbolic batch and H/W where the net allows; lower again with static H/W
    (then a static batch) when a layer had to bake such a size into the graph."""
    def grow_batch(s):
        return (s[0] + 1,) + tuple(s[1:]) if s else s

    def grow_hw(s):
        return tuple(s[:2]) + tuple(2 * d + 1 for d in s[2:])

    var_batch = _varying_axes(res, grow_batch) or {}
    var_hw = _varying_axes(res, grow_hw)
    dynamic_hw = var_hw is not None and any(var_hw.values())
    var_hw = var_hw or {}
    ctx = _lower(res, opset, var_batch, var_hw, dynamic_hw, True)
    if ctx.need_fixed_hw or ctx.need_fixed_batch:
        ctx = _lower(res, opset, var_batch, var_hw, False, True)
        if ctx.need_fixed_batch:
            ctx = _lower(res, opset, var_batch, var_hw, False, False)
    return ctx


def _keep_input_names(ctx: OnnxContext, res: Resolved) -> None:
    """Graph inputs keep their blob names even when the blob is rewritten in place (then the
    input is SSA ``data@1`` and the last version ``data`` becomes ``data@<k>``)."""
    rename: dict[str, str] = {}
    for blob, v, _ in res.inputs:
        if v != blob and blob not in res.outputs:
            rename[v], rename[blob] = blob, f"{blob}@{len(res.versions(blob))}"
    if rename:
        ctx.inputs = [(rename.get(n, n), s) for n, s in ctx.inputs]
        ctx.nodes = [(op, [rename.get(i, i) for i in ins], [rename.get(o, o) for o in outs], a, nn)
                     for op, ins, outs, a, nn in ctx.nodes]
        ctx._alias = {k2: rename.get(v2, v2) for k2, v2 in ctx._alias.items()}


def _output_renames(ctx: OnnxContext, outputs: list[str]):
    """Graph outputs keep their blob names: an output that is an alias gets its producer
    renamed (or, aliasing a graph input or another output, an Identity node). Returns
    (rename, extra nodes, aliases of the non-output values for the metadata)."""
    input_names = {n for n, _ in ctx.inputs}
    produced = {o for (_, _, outs, _, _) in ctx.nodes for o in outs}
    rename: dict[str, str] = {}
    extra_nodes = []
    for o in outputs:
        v = ctx.name(o)
        if v == o:
            continue
        if v in produced and v not in input_names and v not in outputs and v not in rename:
            rename[v] = o
        else:
            extra_nodes.append(("Identity", [rename.get(v, v)], [o], {}, f"{o}/output"))
    aliases = {}
    for ssa in ctx.shapes:
        if ctx.is_alias(ssa) and ssa not in outputs:
            v = ctx.name(ssa)
            aliases[ssa] = rename.get(v, v)
    return rename, extra_nodes, aliases


def _value_infos(ctx: OnnxContext, res: Resolved, rename: dict, intermediate: bool):
    """The graph's input and output ValueInfos, with symbolic axes (``N``, ``H``, ``W``)."""
    from onnx import TensorProto, helper
    dyn_b, dyn_hw = ctx.dynamic_batch, ctx.dynamic_hw
    var_b, var_hw = ctx._var_batch, ctx._var_hw

    batches = {int(s[0]) for _, s in ctx.inputs if len(s)}

    def dims(ssa: str, shape, label=None):
        res_ = []
        for a, d in enumerate(shape):
            if dyn_b and a in var_b.get(ssa, ()):
                # a first axis that grows with the batch but is not the batch (ROI rows, the
                # bound of a data-dependent count): unnamed, so that ORT assumes no equal sizes
                res_.append(None if a == 0 and int(d) not in batches else "N")
            elif dyn_hw and a in var_hw.get(ssa, ()):
                res_.append(label(a) if label else None)
            else:
                res_.append(int(d))
        return res_

    single = len(ctx.inputs) == 1
    g_inputs = []
    for n, shape in ctx.inputs:
        def label(a, n=n, shape=shape):
            lab = {2: "H", 3: "W"}.get(a, f"d{a}") if len(shape) == 4 else f"d{a}"
            return lab if single else f"{n}_{lab}"
        g_inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, dims(n, shape, label)))
    out_names = list(res.outputs)
    if intermediate:
        input_names = {n for n, _ in ctx.inputs}
        produced = {o for (_, _, outs, _, _) in ctx.nodes for o in outs}
        seen = set(out_names) | input_names
        for st in res.steps:
            for v in st.outputs:
                if v in seen or ctx.is_alias(v) or rename.get(v, v) != v or v not in produced:
                    continue
                seen.add(v)
                out_names.append(v)
    g_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims(o, ctx.shapes[o]))
                 for o in out_names]
    return g_inputs, g_outputs


def _tensor(name: str, arr: np.ndarray):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def export_onnx(graph: Graph, path=None, *, opset: int = 17, intermediate: bool = False,
                external_data: bool | None = None):
    """The deploy view of ``graph`` (weights in ``layer.blobs``) as an ``onnx.ModelProto``.

    Without ``path``: the complete in-memory model (initializers hold their ``raw_data``).

    With ``path`` the model is written atomically and the weights are *streamed*: they go from
    the arrays (e.g. zero-copy views of a memory-mapped caffemodel) straight into the file,
    never into protobuf objects (see :func:`_write_streamed`). The file is then a single
    ``.onnx`` unless the weights exceed 2 GB (``EXTERNAL_DATA_THRESHOLD``) or
    ``external_data=True``: then they go to ``<file>.data`` beside it as ONNX external data.
    The returned ``ModelProto`` is the model's *skeleton*: its initializers carry name, dims
    and data type (plus the external-data references in that mode) but no data — load the
    file to get the weights. ``intermediate=True`` also makes every intermediate value a graph
    output, under its SSA name.
    """
    from onnx import helper

    if opset < 17:
        raise ProtogenError(f"ONNX export needs opset >= 17, got {opset}")
    res = graph.resolve(net=DEPLOY)
    if not res.inputs:
        raise ProtogenError("the deploy net has no Input layer")
    ctx = _lower_dynamic(res, opset)
    _keep_input_names(ctx, res)
    rename, extra_nodes, aliases = _output_renames(ctx, res.outputs)

    def rn(n):
        return rename.get(n, n)

    nodes = [helper.make_node(op, [rn(i) for i in ins], [rn(o) for o in outs], name=nname, **attrs)
             for op, ins, outs, attrs, nname in ctx.nodes + extra_nodes]
    g_inputs, g_outputs = _value_infos(ctx, res, rename, intermediate)
    external = _external(ctx.inits, path, external_data)
    if path is None:
        inits = [_tensor(n, a) for n, a in ctx.inits.items()]
    elif external:
        inits = []              # appended by _save with their external-data references
    else:
        inits = [_tensor_header(n, a) for n, a in ctx.inits.items()]   # data streamed by _save
    gp = helper.make_graph(nodes, graph.name, g_inputs, g_outputs, initializer=inits)
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="protogen", producer_version="0.1.0")
    m.ir_version = helper.find_min_ir_version_for(list(m.opset_import), ignore_unknown=True)
    meta = {"protogen:aliases": json.dumps(aliases, sort_keys=True),
            "protogen:dynamic": json.dumps({"batch": ctx.dynamic_batch, "hw": ctx.dynamic_hw})}
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    if path is not None:
        _save(m, Path(path), ctx.inits, external)
    return m


def _external(inits: dict, path, external_data: bool | None) -> bool:
    """Whether the weights go to ONNX external data (over 2 GB, or asked for)."""
    total = sum(a.nbytes for a in inits.values())
    external = total > EXTERNAL_DATA_THRESHOLD if external_data is None else bool(external_data)
    if external and path is None:
        if external_data:
            raise ProtogenError("external_data=True needs an output path")
        raise ProtogenError(f"the weights take {total / 2**30:.1f} GiB (> 2 GB): give an output "
                            "path so they can be written as ONNX external data")
    return external


# ----------------------------------------------------------------------------- streamed writing
# ONNX files are protobuf messages; the few fields below are written by hand so that weight
# payloads go from the arrays' own memory to the file (no TensorProto.raw_data copy, no
# SerializeToString copy of the whole model). Field numbers from onnx.proto3:
_MODEL_GRAPH = 7          # ModelProto.graph
_GRAPH_INITIALIZER = 5    # GraphProto.initializer (repeated TensorProto)
_TENSOR_NAME = 8          # TensorProto.name
_TENSOR_RAW_DATA = 9      # TensorProto.raw_data

#: dtypes whose ONNX raw_data is exactly the little-endian C-order bytes of the array
#: (numpy_helper.from_array packs or re-encodes anything else: strings, 4-bit, 2-bit ...)
_PLAIN_KINDS = "biuf"


def _tensor_header(name: str, arr: np.ndarray):
    """A TensorProto with ``name``, ``dims`` and ``data_type`` as ``numpy_helper.from_array``
    sets them, but no data (it is streamed)."""
    from onnx import TensorProto, helper
    t = TensorProto()
    # the shape _tensor gives: np.ascontiguousarray makes 0-d values 1-d
    t.dims.extend(np.shape(arr) or (1,))
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)
    return t


def _raw_bytes(arr) -> memoryview | None:
    """The bytes ONNX stores as ``raw_data`` for ``arr`` (C order, little-endian) as a
    memoryview of the array's own memory when it already has that layout (a contiguous
    float32 view of a mapped caffemodel: no copy); None for dtypes that need from_array."""
    a = np.asarray(arr)
    if a.dtype.kind not in _PLAIN_KINDS:
        return None
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)       # free for contiguous views; copies one tensor otherwise
    return memoryview(a.reshape(-1).view(np.uint8))


def _splice_initializers(skeleton: bytes, payloads: list) -> tuple[list, int]:
    """The chunks (bytes / memoryviews) of the full ModelProto, and its size.

    ``skeleton`` is the serialized model whose graph initializers carry no data;
    ``payloads`` holds, in initializer order, (name, memoryview of raw bytes | serialized
    full TensorProto). Each initializer gets its ``raw_data`` field inserted where protobuf
    would put it (field order: before the first field numbered above 9), and the lengths of
    the enclosing TensorProto, GraphProto and ModelProto fields are re-emitted, so the result
    is the bytes ``SerializeToString`` gives for the complete model.
    """
    buf = memoryview(skeleton)
    chunks: list = []
    k = 0
    graph_seen = False
    for no, wire, s, e, fs in fields(buf, 0, len(buf)):
        if no != _MODEL_GRAPH or wire != LEN:
            chunks.append(buf[fs:e])
            continue
        if graph_seen:
            raise ValueError("two graph fields in a serialized ModelProto")
        graph_seen = True
        g_chunks: list = []
        g_size = 0
        for gno, gwire, gs, ge, gfs in fields(buf, s, e):
            if gno != _GRAPH_INITIALIZER or gwire != LEN:
                g_chunks.append(buf[gfs:ge])
                g_size += ge - gfs
                continue
            if k >= len(payloads):
                raise ValueError("more initializers in the skeleton than payloads")
            name, data = payloads[k]
            k += 1
            cut, t_name = ge, None
            for tno, twire, ts, te, tfs in fields(buf, gs, ge):
                if tno == _TENSOR_NAME and twire == LEN:
                    t_name = bytes(buf[ts:te]).decode("utf-8")
                if tno > _TENSOR_RAW_DATA:
                    cut = tfs
                    break
            if t_name != name:
                raise ValueError(f"initializer {k - 1} is {t_name!r} in the skeleton, {name!r} in the payloads")
            if isinstance(data, (bytes, bytearray)):      # a fully serialized tensor
                body = [data]
                t_size = len(data)
            else:
                raw_key = len_field(_TENSOR_RAW_DATA, data.nbytes)
                body = [buf[gs:cut], raw_key, data, buf[cut:ge]]
                t_size = (cut - gs) + len(raw_key) + data.nbytes + (ge - cut)
            lead = len_field(_GRAPH_INITIALIZER, t_size)
            g_chunks.append(lead)
            g_chunks.extend(body)
            g_size += len(lead) + t_size
        lead = len_field(_MODEL_GRAPH, g_size)
        chunks.append(lead)
        chunks.extend(g_chunks)
    if k != len(payloads):
        raise ValueError(f"{len(payloads)} payloads for {k} initializers")
    return chunks, sum(len(c) for c in chunks)      # every chunk is flat bytes


def _write_streamed(m, path: Path, inits: dict) -> int:
    """Write ``m`` (initializers without data, in ``inits`` order) with the arrays of
    ``inits`` as their ``raw_data``, atomically. Returns the file size."""
    from .util import atomic_open
    payloads = []
    for name, arr in inits.items():
        raw = _raw_bytes(arr)
        payloads.append((name, raw if raw is not None else _tensor(name, arr).SerializeToString()))
    skeleton = m.SerializeToString()
    chunks, size = _splice_initializers(skeleton, payloads)
    if size >= 2**31:
        raise ProtogenError(f"the ONNX model would take {size / 2**30:.2f} GiB, over protobuf's "
                            "2 GiB message limit: write it with external data", file=str(path))
    with atomic_open(path, "wb") as f:
        for c in chunks:
            if len(c):
                f.write(c)
    return size


def _save(m, path: Path, inits: dict, external: bool) -> None:
    """Write the model: weights streamed into the single file, or (``external``) streamed into
    ``<file>.data`` (4 KiB-aligned ONNX external data) and referenced from the model."""
    from .util import atomic_open
    if not external:
        _write_streamed(m, path, inits)
        return
    from onnx import TensorProto
    data_name = path.name + ".data"
    offset = 0
    with atomic_open(path.parent / data_name, "wb") as f:
        for name, arr in inits.items():
            raw = _raw_bytes(arr)
            if raw is None or raw.nbytes < EXTERNAL_MIN_BYTES:
                # small constants (pads, shapes, scalars) stay in the model: shape inference
                # needs their values, and ONNX's own converter keeps tensors < 1 KiB inline too
                m.graph.initializer.append(_tensor(name, arr))
                continue
            t = _tensor_header(name, arr)
            t.data_location = TensorProto.EXTERNAL
            pad = (-offset) % 4096
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            if raw.nbytes:
                f.write(raw)
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(raw.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += raw.nbytes
            m.graph.initializer.append(t)
    with atomic_open(path, "wb") as f:
        f.write(m.SerializeToString())


def load_check(m) -> None:
    """Full checker + strict shape inference (used by tests and ``verify``)."""
    import onnx
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)


__all__ = ["export_onnx", "OnnxContext", "EXTERNAL_DATA_THRESHOLD", "EXTERNAL_MIN_BYTES", "FLT_MAX",
           "ShapeError"]
