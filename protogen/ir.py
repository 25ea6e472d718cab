"""The intermediate representation: a Caffe-semantics layer graph over named blobs.

A :class:`Graph` is an ordered list of :class:`Layer` objects, exactly as a Caffe net lists
them. Each layer reads ``bottoms`` and writes ``tops`` (blob names). A layer may write a blob
it reads (Caffe's in-place computation, e.g. ``ReLU`` with ``top == bottom``); every other
blob name is written once. Order matters: a bottom must have been written by an earlier
layer, which also makes the graph acyclic by construction.

What each layer type *means* (parameters, shape rule, weights, cost, translations) lives in
the layer registry (:mod:`protogen.layers`); the IR only holds the structure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .errors import ProtogenError, ShapeError

Shape = tuple[int, ...]

#: Caffe phases
TRAIN, TEST = "TRAIN", "TEST"
PHASES = (TRAIN, TEST)

#: Which emitted net a layer belongs to. ``deploy`` is the inference net with an Input
#: layer; ``train_val`` is the training net with data layers and losses.
DEPLOY, TRAIN_VAL = "deploy", "train_val"
BOTH_NETS = frozenset({DEPLOY, TRAIN_VAL})


@dataclass
class ParamSpec:
    """Caffe's per-blob learning options (``param { lr_mult decay_mult name }``)."""
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    params: Any = None
    #: phases in which the layer is active (Caffe include/exclude rules); None = always
    phases: frozenset | None = None
    #: which nets (deploy / train_val) the layer belongs to
    nets: frozenset = BOTH_NETS
    loss_weight: list[float] = field(default_factory=list)
    param_specs: list[ParamSpec] = field(default_factory=list)
    #: weight initialisers written into a training prototxt, e.g. {"weight_filler": {"type": "msra"}}
    fillers: dict = field(default_factory=dict)
    #: learned blobs (numpy arrays) when the graph carries weights
    blobs: list | None = None

    @property
    def kind(self):
        from .layers import get_type
        return get_type(self.type)

    @property
    def inplace(self) -> bool:
        return bool(set(self.tops) & set(self.bottoms))

    def copy(self, **changes) -> "Layer":
        return dataclasses.replace(self, **changes)

    def active_in(self, net: str | None = None, phase: str | None = None) -> bool:
        if net is not None and net not in self.nets:
            return False
        if phase is not None and self.phases is not None and phase not in self.phases:
            return False
        return True


@dataclass
class Step:
    """One layer with its inputs and outputs resolved to SSA values and shapes."""
    layer: Layer
    inputs: list[str]          # SSA value names of the bottoms
    outputs: list[str]         # SSA value names of the tops
    in_shapes: list[Shape]
    out_shapes: list[Shape]
    #: position in :attr:`Resolved.steps`
    index: int = -1


def ssa_names(tops: Iterable[list[str]]) -> list[list[str]]:
    """The SSA naming rule, for the tops of layers in order: the last write of a blob keeps the
    blob's name, earlier writes (a blob rewritten in place) are ``blob@1``, ``blob@2``, ...
    (also used for a written NetParameter, whose layers may differ from the IR's)."""
    tops = [list(ts) for ts in tops]
    n_writes: dict[str, int] = {}
    for ts in tops:
        for t in ts:
            n_writes[t] = n_writes.get(t, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for ts in tops:
        names = []
        for t in ts:
            k = seen.get(t, 0) + 1
            seen[t] = k
            names.append(t if k == n_writes[t] else f"{t}@{k}")
        out.append(names)
    return out


class Resolved:
    """One view (net, phase) of a :class:`Graph` resolved once for every backend: the ONNX
    export, the torch executor and source generator, weights, prototxt writing and verify.

    * ``steps``: :class:`Step` per layer, in order (SSA names from :func:`ssa_names`, shapes);
    * ``graph``: the view itself; ``outputs``: the net outputs (SSA names, = blob names);
    * ``inputs``: ``(blob, ssa, shape)`` of every top of an input layer (``kind.is_input``);
    * ``shapes[ssa]``, ``producer[ssa]`` (the step writing it), ``blob_of(ssa)``,
      ``versions(blob)`` (its SSA names in write order), ``consumers(ssa)`` (steps reading it),
      ``last_use[ssa]`` (index of the last step reading it; absent when never read).
    """

    def __init__(self, graph: "Graph", steps: list[Step]):
        self.graph = graph
        self.steps = steps
        self.outputs: list[str] = graph.outputs()
        self.shapes: dict[str, Shape] = {}
        self.producer: dict[str, Step] = {}
        self._blob: dict[str, str] = {}
        self._versions: dict[str, list[str]] = {}
        self._consumers: dict[str, list[Step]] = {}
        self.last_use: dict[str, int] = {}
        for i, st in enumerate(steps):
            st.index = i
            for v in st.inputs:
                self._consumers.setdefault(v, []).append(st)
                self.last_use[v] = i
            for t, v, sh in zip(st.layer.tops, st.outputs, st.out_shapes):
                self.shapes[v] = tuple(sh)
                self.producer[v] = st
                self._blob[v] = t
                self._versions.setdefault(t, []).append(v)
        self.inputs: list[tuple[str, str, Shape]] = [
            (t, v, tuple(sh)) for st in steps if st.layer.kind.is_input
            for t, v, sh in zip(st.layer.tops, st.outputs, st.out_shapes)]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def consumers(self, ssa: str) -> list[Step]:
        return list(self._consumers.get(ssa, []))

    def is_output(self, ssa: str) -> bool:
        return ssa in self.outputs

    def blob_of(self, ssa: str) -> str:
        return self._blob[ssa]

    def versions(self, blob: str) -> list[str]:
        return list(self._versions.get(blob, []))

    def step(self, layer_name: str) -> Step:
        for st in self.steps:
            if st.layer.name == layer_name:
                return st
        raise KeyError(layer_name)

    def blob_shapes(self) -> dict[str, Shape]:
        """Final shape of every blob name (after the last in-place rewrite)."""
        return {t: self.shapes[vs[-1]] for t, vs in self._versions.items()}


class Dataflow:
    """Dataflow facts over a :class:`Resolved` graph, for backends that lower a layer together
    with its neighbour (BatchNorm + Scale): who reads a value, which values are net outputs,
    and which steps were already handled."""

    def _init_dataflow(self, resolved: Resolved) -> None:
        self.resolved = resolved
        self.steps = resolved.steps
        self.graph_outputs = list(resolved.outputs)
        self._done: set[int] = set()

    def consumers(self, ssa: str) -> list[Step]:
        return self.resolved.consumers(ssa)

    def is_output(self, ssa: str) -> bool:
        return self.resolved.is_output(ssa)

    def mark_done(self, step: Step) -> None:
        """``step`` was handled together with another layer (e.g. BatchNorm + Scale)."""
        self._done.add(id(step))

    def done(self, step: Step) -> bool:
        return id(step) in self._done


class Graph:
    def __init__(self, name: str = "net", layers: Iterable[Layer] = ()):
        self.name = name
        self.layers: list[Layer] = list(layers)

    # ------------------------------------------------------------------ basics
    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def select(self, net: str | None = None, phase: str | None = None) -> "Graph":
        """The sub-net active for ``net`` (deploy/train_val) and ``phase`` (TRAIN/TEST)."""
        return Graph(self.name, [l for l in self.layers if l.active_in(net, phase)])

    def input_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.kind.is_input]

    # ------------------------------------------------------------------ checks
    def check(self, file: str | None = None) -> None:
        """Structural checks with clear errors: known types, arity, names, dataflow order.

        Layers active in different phases may reuse names and tops (a train_val net has a
        TRAIN and a TEST data layer both writing ``data``), so the per-phase views are
        checked separately.
        """
        from .layers import get_type
        problems = []
        for l in self.layers:
            try:
                kind = get_type(l.type)
            except ProtogenError as e:
                raise e.with_context(file=file, layer=l.name)
            lo, hi = kind.n_bottoms
            if len(l.bottoms) < lo or (hi is not None and len(l.bottoms) > hi):
                want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
                problems.append((l.name, f"{l.type} takes {want} bottom(s), got {len(l.bottoms)}"))
            lo, hi = kind.n_tops
            if len(l.tops) < lo or (hi is not None and len(l.tops) > hi):
                want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
                problems.append((l.name, f"{l.type} produces {want} top(s), got {len(l.tops)}"))
            if l.inplace and not kind.inplace:
                problems.append((l.name, f"{l.type} cannot run in place (top == bottom)"))
        if problems:
            name, msg = problems[0]
            raise ProtogenError(msg, file=file, layer=name)
        for ph in self.phases():
            self.select(phase=ph)._check_dataflow(file)

    def _check_dataflow(self, file: str | None) -> None:
        names: set[str] = set()
        written: set[str] = set()
        for i, l in enumerate(self.layers):
            if l.name in names:
                raise ProtogenError("duplicate layer name", file=file, layer=l.name)
            names.add(l.name)
            for b in l.bottoms:
                if b not in written:
                    later = [j for j, m in enumerate(self.layers) if j >= i and b in m.tops]
                    if later and later[0] == i:
                        raise ProtogenError(
                            f"in-place bottom '{b}' is not produced by any earlier layer or input "
                            "(a self-loop cycle)", file=file, layer=l.name)
                    if later:
                        raise ProtogenError(
                            f"bottom '{b}' is produced by layer '{self.layers[later[0]].name}', "
                            "which comes at or after this one (a cycle, or layers out of order)",
                            file=file, layer=l.name)
                    raise ProtogenError(f"unknown bottom blob '{b}' (no earlier layer produces it)",
                                        file=file, layer=l.name)
            if len(set(l.tops)) != len(l.tops):
                raise ProtogenError("the same top is listed twice", file=file, layer=l.name)
            for t in l.tops:
                if t in written and t not in l.bottoms:
                    raise ProtogenError(
                        f"top '{t}' is already produced by an earlier layer "
                        "(only in-place layers may write a blob again)", file=file, layer=l.name)
                written.add(t)

    # ------------------------------------------------------------------ SSA + shapes
    def resolve(self, net: str | None = None, phase: str | None = None,
                input_shapes: dict[str, Shape] | None = None, file: str | None = None) -> Resolved:
        """The view for ``net``/``phase`` (see :meth:`select`) resolved: SSA values, shapes,
        consumers, last use, outputs. ``input_shapes`` override input layers' shapes by blob."""
        view = self.select(net, phase) if (net is not None or phase is not None) else self
        return Resolved(view, view.steps(input_shapes, file))

    def phases(self) -> list[str | None]:
        """The phases whose views differ (sorted), or ``[None]`` when no layer is phase-bound."""
        return sorted({p for l in self.layers if l.phases for p in l.phases}) or [None]

    def resolve_phases(self, net: str | None = None) -> list[Resolved]:
        """One :class:`Resolved` per phase of the ``net`` view (a train_val net's TRAIN and
        TEST views; one view when no layer is phase-bound)."""
        view = self.select(net=net)
        return [view.resolve(phase=ph) for ph in view.phases()]

    def steps(self, input_shapes: dict[str, Shape] | None = None, file: str | None = None) -> list[Step]:
        """Resolve in-place blobs to SSA values (:func:`ssa_names`) and infer every shape, in
        order (:meth:`resolve` adds the dataflow facts)."""
        from .layers import get_type
        self.check(file)
        names = ssa_names(l.tops for l in self.layers)
        current: dict[str, str] = {}
        shapes: dict[str, Shape] = {}
        out: list[Step] = []
        overrides = dict(input_shapes or {})
        for l, outs in zip(self.layers, names):
            kind = get_type(l.type)
            ins = [current[b] for b in l.bottoms]
            in_shapes = [shapes[v] for v in ins]
            try:
                out_shapes = [tuple(int(d) for d in s)
                              for s in kind.output_shapes(l.params, in_shapes, len(l.tops))]
                if kind.is_input:
                    out_shapes = [tuple(overrides.get(t, s)) for t, s in zip(l.tops, out_shapes)]
            except ProtogenError as e:
                raise e.with_context(file=file, layer=l.name)
            _check_out_shapes(l, in_shapes, out_shapes, file)
            for t, v, s in zip(l.tops, outs, out_shapes):
                current[t] = v
                shapes[v] = s
            out.append(Step(l, ins, outs, in_shapes, out_shapes, len(out)))
        return out

    def blob_shapes(self, input_shapes: dict[str, Shape] | None = None) -> dict[str, Shape]:
        """Final shape of every blob name (the shape after the last in-place rewrite)."""
        return self.resolve(input_shapes=input_shapes).blob_shapes()

    def outputs(self) -> list[str]:
        """Blobs written but never read afterwards (Caffe's net outputs)."""
        consumed: set[str] = set()
        for l in self.layers:
            consumed.update(b for b in l.bottoms if b not in l.tops)
        outs = []
        for l in self.layers:
            for t in l.tops:
                if t not in consumed and t not in outs:
                    outs.append(t)
        return outs


def _check_out_shapes(l: Layer, in_shapes, out_shapes, file) -> None:
    for s in out_shapes:
        if any(d < 0 for d in s):
            raise ShapeError(f"negative output dimension {s} (input {in_shapes} too small?)",
                             file=file, layer=l.name)
        n = 1
        for d in s:
            n *= d
        if n > 2**40:
            raise ShapeError(f"absurd output shape {s} ({n} elements)", file=file, layer=l.name)
    if len(out_shapes) != len(l.tops):
        raise ShapeError(f"{l.type} gives {len(out_shapes)} outputs for {len(l.tops)} tops",
                         file=file, layer=l.name)
