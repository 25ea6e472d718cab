"""IR <-> Caffe NetParameter (prototxt text) for the V2 format.

Legacy V0/V1 nets and ``input:``/``input_dim`` declarations are upgraded to V2 first by
:mod:`protogen.caffe.upgrade`, so this module only deals with V2 ``layer {}`` messages.
"""
from __future__ import annotations

from typing import Iterable

from ..dialect import DEFAULT, Dialect
from ..errors import ProtogenError, UnsupportedError
from ..ir import BOTH_NETS, DEPLOY, PHASES, TEST, TRAIN, TRAIN_VAL, Graph, Layer, ParamSpec
from ..layers import get_type


def pb():
    from . import pb as mod
    return mod


# ----------------------------------------------------------------------------- writing
def _layer_shapes(graph: Graph, net: str) -> dict[str, list]:
    """Input shapes of every layer of ``net``, per phase where phases differ."""
    shapes: dict[str, list] = {}
    for res in graph.resolve_phases(net):
        for st in res.steps:
            shapes.setdefault(st.layer.name, st.in_shapes)
    return shapes


def _common_fields(layer: Layer, lp) -> None:
    if layer.phases is not None and set(layer.phases) != set(PHASES):
        for ph in sorted(layer.phases):
            lp.include.add().phase = pb().Phase.Value(ph)
    lp.loss_weight.extend(layer.loss_weight)
    for spec in layer.param_specs:
        ps = lp.param.add()
        if spec.name:
            ps.name = spec.name
        if spec.lr_mult != 1.0:
            ps.lr_mult = spec.lr_mult
        if spec.decay_mult != 1.0:
            ps.decay_mult = spec.decay_mult


def to_net_param(graph: Graph, net: str = DEPLOY, dialect: Dialect = DEFAULT):
    """The NetParameter of ``net`` (deploy or train_val) written in ``dialect``."""
    shapes = _layer_shapes(graph, net)
    msg = pb().NetParameter()
    msg.name = graph.name
    for layer in graph.select(net=net):
        kind = get_type(layer.type)
        if net == DEPLOY and layer.fillers:
            layer = layer.copy(fillers={})   # initialisers only matter for training
        try:
            lps = kind.caffe_layers(layer, dialect, shapes.get(layer.name))
        except ProtogenError as e:
            raise e.with_context(layer=layer.name)
        for i, lp in enumerate(lps):
            if i == 0:
                _common_fields(layer, lp)
            elif layer.phases is not None and set(layer.phases) != set(PHASES):
                for ph in sorted(layer.phases):
                    lp.include.add().phase = pb().Phase.Value(ph)
            msg.layer.append(lp)
    return msg


def to_prototxt(graph: Graph, net: str = DEPLOY, dialect: Dialect = DEFAULT) -> str:
    from google.protobuf import text_format
    return text_format.MessageToString(to_net_param(graph, net, dialect))


# ----------------------------------------------------------------------------- reading
def parse_prototxt(text: str, file: str | None = None):
    """Parse prototxt text into a NetParameter, with file/line/column on errors."""
    from google.protobuf import text_format
    msg = pb().NetParameter()
    try:
        text_format.Parse(text, msg, allow_unknown_field=False)
    except text_format.ParseError as e:
        line, col = getattr(e, "GetLine", lambda: None)(), getattr(e, "GetColumn", lambda: None)()
        detail = str(e)
        # the library prefixes "line:col :" itself; keep just the message
        if ":" in detail and line is not None:
            detail = detail.split(" : ", 1)[-1]
        raise ProtogenError(f"malformed prototxt: {detail}", file=file, line=line, column=col) from None
    return msg


def read_text(path) -> str:
    """A prototxt file's text; one-line errors for unreadable and binary files."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ProtogenError(f"cannot read: {e.strerror}", file=str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtogenError("not a text prototxt (invalid UTF-8; is it a binary caffemodel?)",
                            file=str(path)) from None


def read_prototxt(path) -> "object":
    return parse_prototxt(read_text(path), str(path))


def _phases_of(lp) -> frozenset | None:
    """Caffe's NetStateRule semantics restricted to phases."""
    names = pb().Phase
    if lp.include:
        ph = {names.Name(r.phase) for r in lp.include if r.HasField("phase")}
        return frozenset(ph) if ph else None
    if lp.exclude:
        ex = {names.Name(r.phase) for r in lp.exclude if r.HasField("phase")}
        return frozenset(set(PHASES) - ex) if ex else None
    return None


_LAYER_COMMON = frozenset({"name", "type", "bottom", "top", "phase", "loss_weight", "param",
                           "blobs", "propagate_down", "include", "exclude"})


def layer_problems(lp) -> list[str]:
    """Everything about ``lp`` that protogen cannot represent (empty: fine)."""
    try:
        kind = get_type(lp.type)
    except ProtogenError:
        return [f"unknown layer type '{lp.type}'"]
    kind = kind.resolve(lp)
    bad = []
    for fd, _ in lp.ListFields():
        if fd.name in _LAYER_COMMON or fd.name == kind.param_field or fd.name in kind.benign_fields:
            continue
        bad.append(f"field '{fd.name}' is not used by {lp.type}")
    for r in list(lp.include) + list(lp.exclude):
        if r.HasField("min_level") or r.HasField("max_level") or r.stage or r.not_stage:
            bad.append("include/exclude rules on levels or stages are not supported")
            break
    bad.extend(kind.unsupported(lp))
    return bad


def graph_from_net_param(msg, file: str | None = None) -> Graph:
    """A V2 NetParameter (``layer {}`` only) as an IR graph, with every problem listed."""
    problems = []
    for lp in msg.layer:
        for p in layer_problems(lp):
            problems.append((lp.name, lp.type, p))
    if problems:
        raise UnsupportedError(problems, file=file)
    layers = []
    for lp in msg.layer:
        kind = get_type(lp.type).resolve(lp)
        try:
            params = kind.parse(lp)
        except ProtogenError as e:
            raise e.with_context(file=file, layer=lp.name)
        specs = [ParamSpec(lr_mult=ps.lr_mult, decay_mult=ps.decay_mult, name=ps.name) for ps in lp.param]
        layers.append(Layer(name=lp.name, type=kind.type, bottoms=list(lp.bottom), tops=list(lp.top),
                            params=params, phases=_phases_of(lp), nets=BOTH_NETS,
                            loss_weight=list(lp.loss_weight), param_specs=specs))
    g = Graph(msg.name or "net", layers)
    g.check(file)
    return g
