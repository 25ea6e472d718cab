"""IR -> ONNX: walk the deploy net's resolved steps and ask each layer to lower itself.

The exporter owns naming, initializers, graph inputs/outputs and dynamic axes; every
layer type's ``to_onnx(ctx, step)`` (in :mod:`protogen.layers`) emits its own nodes through
the :class:`OnnxContext` below. Naming:

* graph inputs are the Caffe input blobs (``data``), graph outputs the net's output blobs
  (``prob``); every other value is named by its SSA name from :meth:`Graph.steps` (a blob
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
from pathlib import Path

import numpy as np

from .errors import ProtogenError, ShapeError
from .ir import DEPLOY, Graph, Step

#: models whose initializers exceed this many bytes are written with ONNX external data
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
FLT_MAX = float(np.finfo(np.float32).max)


class _NeedStatic(Exception):
    pass


class OnnxContext:
    """What a layer's ``to_onnx`` sees: value names, constants, nodes, dataflow facts."""

    def __init__(self, steps: list[Step], outputs: list[str], opset: int,
                 var_batch: dict, var_hw: dict, dynamic_hw: bool, dynamic_batch: bool):
        self.steps = steps
        self.opset = opset
        self.graph_outputs = list(outputs)
        self.dynamic_hw = dynamic_hw
        self.dynamic_batch = dynamic_batch
        self._var_batch = var_batch
        self._var_hw = var_hw
        self.nodes: list = []           # (op, inputs, outputs, attrs, node name)
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: list[tuple[str, tuple]] = []   # (onnx name, shape)
        self._alias: dict[str, str] = {}
        self._done: set[int] = set()
        self.need_fixed_hw = False
        self.need_fixed_batch = False
        self.shapes: dict[str, tuple] = {}
        self._consumers: dict[str, list[Step]] = {}
        for st in steps:
            for v, s in zip(st.outputs, st.out_shapes):
                self.shapes[v] = tuple(s)
            for v in st.inputs:
                self._consumers.setdefault(v, []).append(st)
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
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

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

    # ---------------------------------------------------------------- dataflow
    def consumers(self, ssa: str) -> list[Step]:
        return list(self._consumers.get(ssa, []))

    def is_output(self, ssa: str) -> bool:
        return ssa in self.graph_outputs

    def mark_done(self, step: Step) -> None:
        """``step`` was lowered together with another layer (BatchNorm + Scale)."""
        self._done.add(id(step))

    def done(self, step: Step) -> bool:
        return id(step) in self._done

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

    def fix_size(self) -> None:
        """Ask for static H/W (for lowerings whose constants depend on the input size)."""
        if self.dynamic_hw:
            self.need_fixed_hw = True


def _varying_axes(graph: Graph, base_steps: list[Step], perturb) -> dict | None:
    """Axes of each SSA value whose size changes when the inputs' shapes change."""
    shapes = {}
    for st in base_steps:
        if st.layer.kind.is_input:
            for t, s in zip(st.layer.tops, st.out_shapes):
                shapes[t] = perturb(tuple(s))
    try:
        other = graph.steps(shapes)
    except ProtogenError:
        return None
    res = {}
    for a, b in zip(base_steps, other):
        for v, s1, s2 in zip(a.outputs, a.out_shapes, b.out_shapes):
            if len(s1) != len(s2):
                return None
            res[v] = {i for i, (x, y) in enumerate(zip(s1, s2)) if x != y}
    return res


def _lower(steps, outputs, opset, var_batch, var_hw, dynamic_hw, dynamic_batch) -> OnnxContext:
    ctx = OnnxContext(steps, outputs, opset, var_batch, var_hw, dynamic_hw, dynamic_batch)
    for st in steps:
        if ctx.done(st):
            continue
        ctx.current = st
        try:
            st.layer.kind.to_onnx(ctx, st)
        except ProtogenError as e:
            raise e.with_context(layer=st.layer.name)
    ctx.current = None
    return ctx


def _tensor(name: str, arr: np.ndarray):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def export_onnx(graph: Graph, path=None, *, opset: int = 17, intermediate: bool = False):
    """The deploy view of ``graph`` (weights in ``layer.blobs``) as an ``onnx.ModelProto``.

    With ``path`` the model is written atomically (and with external data, in
    ``<file>.data`` beside it, when its weights exceed 2 GB). ``intermediate=True`` also
    makes every intermediate value a graph output, under its SSA name.
    """
    import onnx
    from onnx import TensorProto, helper

    if opset < 17:
        raise ProtogenError(f"ONNX export needs opset >= 17, got {opset}")
    g = graph.select(net=DEPLOY)
    steps = g.steps()
    outputs = g.outputs()
    if not any(st.layer.kind.is_input for st in steps):
        raise ProtogenError("the deploy net has no Input layer")

    def grow_batch(s):
        return (s[0] + 1,) + tuple(s[1:]) if s else s

    def grow_hw(s):
        return tuple(s[:2]) + tuple(2 * d + 1 for d in s[2:])

    var_batch = _varying_axes(g, steps, grow_batch) or {}
    var_hw = _varying_axes(g, steps, grow_hw)
    dynamic_hw = var_hw is not None and any(var_hw.values())
    var_hw = var_hw or {}
    dynamic_batch = True
    ctx = _lower(steps, outputs, opset, var_batch, var_hw, dynamic_hw, dynamic_batch)
    if ctx.need_fixed_hw or ctx.need_fixed_batch:
        dynamic_hw = False
        ctx = _lower(steps, outputs, opset, var_batch, var_hw, False, dynamic_batch)
        if ctx.need_fixed_batch:
            dynamic_batch = False
            ctx = _lower(steps, outputs, opset, var_batch, var_hw, False, False)

    # ---- graph inputs keep their blob names even when the blob is rewritten in place
    # (then the input is SSA 'data@1' and the last version 'data' becomes 'data@<k>')
    rename: dict[str, str] = {}
    for st in steps:
        if st.layer.kind.is_input:
            for top, v in zip(st.layer.tops, st.outputs):
                if v != top and top not in outputs:
                    k = sum(t == top for s2 in steps for t in s2.layer.tops)
                    rename[v], rename[top] = top, f"{top}@{k}"
    if rename:
        ctx.inputs = [(rename.get(n, n), s) for n, s in ctx.inputs]
        ctx.nodes = [(op, [rename.get(i, i) for i in ins], [rename.get(o, o) for o in outs], a, nn)
                     for op, ins, outs, a, nn in ctx.nodes]
        ctx._alias = {k2: rename.get(v2, v2) for k2, v2 in ctx._alias.items()}
        rename = {}

    # ---- graph outputs: an output that is an alias gets its producer renamed
    input_names = {n for n, _ in ctx.inputs}
    produced = {o for (_, _, outs, _, _) in ctx.nodes for o in outs}
    extra_nodes = []
    for o in outputs:
        v = ctx.name(o)
        if v == o:
            continue
        if v in produced and v not in input_names and v not in outputs and v not in rename:
            rename[v] = o
        else:   # an output equal to a graph input or to another output: needs a node
            extra_nodes.append(("Identity", [rename.get(v, v)], [o], {}, f"{o}/output"))
    aliases = {}
    for ssa in ctx.shapes:
        if ctx.is_alias(ssa) and ssa not in outputs:
            v = ctx.name(ssa)
            aliases[ssa] = rename.get(v, v)

    def rn(n):
        return rename.get(n, n)

    nodes = []
    for op, ins, outs, attrs, nname in ctx.nodes + extra_nodes:
        nodes.append(helper.make_node(op, [rn(i) for i in ins], [rn(o) for o in outs], name=nname, **attrs))

    def dims(ssa: str, shape):
        res = []
        for a, d in enumerate(shape):
            if dynamic_batch and a in var_batch.get(ssa, ()):
                res.append("N")
            elif dynamic_hw and a in var_hw.get(ssa, ()):
                res.append(None)
            else:
                res.append(int(d))
        return res

    single = len(ctx.inputs) == 1
    g_inputs = []
    for n, shape in ctx.inputs:
        ds = []
        for a, d in enumerate(shape):
            if dynamic_batch and a in var_batch.get(n, ()):
                ds.append("N")
            elif dynamic_hw and a in var_hw.get(n, ()):
                label = {2: "H", 3: "W"}.get(a, f"d{a}") if len(shape) == 4 else f"d{a}"
                ds.append(label if single else f"{n}_{label}")
            else:
                ds.append(int(d))
        g_inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ds))
    out_names = list(outputs)
    if intermediate:
        seen = set(out_names) | input_names
        for st in steps:
            for v in st.outputs:
                onnx_v = rn(v)
                if v in seen or ctx.is_alias(v) or onnx_v != v or v not in produced:
                    continue
                seen.add(v)
                out_names.append(v)
    g_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims(o, ctx.shapes[o]))
                 for o in out_names]

    total = sum(a.nbytes for a in ctx.inits.values())
    external = total > EXTERNAL_DATA_THRESHOLD
    if external and path is None:
        raise ProtogenError(f"the weights take {total / 2**30:.1f} GiB (> 2 GB): give an output "
                            "path so they can be written as ONNX external data")
    inits = [_tensor(n, a) for n, a in ctx.inits.items()] if not external else []
    gp = helper.make_graph(nodes, graph.name, g_inputs, g_outputs, initializer=inits)
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="protogen", producer_version="0.1.0")
    m.ir_version = helper.find_min_ir_version_for(list(m.opset_import), ignore_unknown=True)
    meta = {"protogen:aliases": json.dumps(aliases, sort_keys=True),
            "protogen:dynamic": json.dumps({"batch": dynamic_batch, "hw": dynamic_hw})}
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    if path is not None:
        _save(m, Path(path), ctx.inits if external else None)
    return m


def _save(m, path: Path, external: dict | None) -> None:
    from .util import atomic_open
    if external is not None:
        from onnx import TensorProto, helper
        data_name = path.name + ".data"
        offset = 0
        with atomic_open(path.parent / data_name, "wb") as f:
            for name, arr in external.items():
                arr = np.ascontiguousarray(arr)
                t = TensorProto()
                t.name = name
                t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
                t.dims.extend(arr.shape)
                t.data_location = TensorProto.EXTERNAL
                pad = (-offset) % 4096
                if pad:
                    f.write(b"\0" * pad)
                    offset += pad
                buf = arr.tobytes()
                f.write(buf)
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(buf)))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
                offset += len(buf)
                m.graph.initializer.append(t)
    with atomic_open(path, "wb") as f:
        f.write(m.SerializeToString())


def load_check(m) -> None:
    """Full checker + strict shape inference (used by tests and ``verify``)."""
    import onnx
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)


__all__ = ["export_onnx", "OnnxContext", "EXTERNAL_DATA_THRESHOLD", "FLT_MAX", "ShapeError"]
