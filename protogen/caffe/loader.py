"""Caffe files -> IR: prototxt (any format version) and caffemodel weights."""
from __future__ import annotations

from ..errors import ProtogenError
from ..ir import Graph
from .prototxt import graph_from_net_param, read_text
from .upgrade import upgrade_net


def read_net(path):
    """The canonical V2 NetParameter of a prototxt of any format version."""
    return read_net_notes(path)[0]


def read_net_notes(path) -> tuple[object, list[str]]:
    """(canonical V2 NetParameter, notes): every field unknown to the schema is found at
    once; training-only ones are ignored with a note, others refuse the net
    (:func:`protogen.caffe.schema_check.read_net_text`)."""
    from .schema_check import read_net_text
    msg, notes = read_net_text(read_text(path), str(path))
    upgrade_net(msg, file=str(path))
    return msg, notes


def add_auto_tops(net) -> None:
    """Caffe's ``AutoTopBlobs``: a loss layer written without a top still gets one (an
    anonymous blob in Caffe); we name it ``<layer>_auto_top`` so the graph can hold it."""
    from ..layers.base import _REGISTRY
    used = {t for lp in net.layer for t in list(lp.top) + list(lp.bottom)}
    for lp in net.layer:
        kind = _REGISTRY.get(lp.type)
        if kind is not None and kind.is_loss and not lp.top:
            name = f"{lp.name}_auto_top"
            while name in used:
                name += "_"
            used.add(name)
            lp.top.append(name)


def load_prototxt(path, phase: str | None = None) -> Graph:
    """Read a prototxt as an IR graph (the ``phase`` view when given); ``graph.notes``
    lists what was ignored."""
    msg, notes = read_net_notes(path)
    from .fork_rewrite import rewrite_fork_layers     # DenseBlock, opencl fusions, int8 fields
    notes += rewrite_fork_layers(msg, str(path))[0]
    notes += rename_repeated_layers(msg)[1]
    return _graph_of(msg, notes, path, phase)


def _graph_of(msg, notes, path, phase=None) -> Graph:
    add_auto_tops(msg)
    g = graph_from_net_param(msg, file=str(path))
    if not g.layers:
        raise ProtogenError("the net has no layers or inputs (an empty file?)", file=str(path))
    g = g.select(phase=phase) if phase else g
    g.notes = notes
    return g


# ============================================================================ phases and inference view
#: refuse nets whose weights would need more elements than this before allocating anything
MAX_WEIGHT_ELEMENTS = 2 ** 32


def resolve_phase(graph: Graph, phase: str | None) -> Graph:
    """The net as Caffe instantiates it in ``phase`` (default TEST when the net has phase
    rules); the result has no phase rules left."""
    from ..ir import PHASES, TEST
    if phase is not None:
        phase = phase.upper()
        if phase not in PHASES:
            raise ProtogenError(f"unknown phase '{phase}' (choose train or test)")
    has_rules = any(l.phases is not None for l in graph.layers)
    if phase is None:
        phase = TEST if has_rules else None
    g = graph.select(phase=phase) if phase else graph
    return Graph(g.name, [l.copy(phases=None) for l in g.layers])


def parse_input_shape(text) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or a sequence) -> (1, 3, 224, 224), with clear errors."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = text.strip().replace("x", ",").split(",")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise ProtogenError(f"--input-shape must be integers like 1,3,224,224, got '{text}'") from None
    else:
        dims = tuple(int(d) for d in text)
    from ..layers.io import check_input_shape
    return check_input_shape(dims)


def inference_view(graph: Graph, input_shape=None, file: str | None = None) -> Graph:
    """The net as an inference (deploy) graph: data layers (Data, ImageData, ...) become
    ``Input`` layers for their first top (shape from ``input_shape`` or the layer's own
    crop size); their other tops (labels), every layer depending on them and loss layers
    are dropped. ``input_shape`` overrides the shape of a single-input net's Input; a dict
    ``{top: shape}`` sets several, and makes the named later tops of a data layer Inputs."""
    from ..layers.io import InputParams
    named = None
    if isinstance(input_shape, dict):
        # {top: shape}: the shapes of several inputs, including data tops after the first that
        # the net computes with (an LRCN net's sequence markers); those become Inputs too
        named = {str(k): parse_input_shape(v) for k, v in input_shape.items()}
        tops = {t for l in graph.layers if l.kind.is_input for t in l.tops}
        unknown = sorted(set(named) - tops)
        if unknown:
            raise ProtogenError(f"input shapes given for {', '.join(map(repr, unknown))}, which no "
                                "input or data layer produces", file=file)
        input_shape = None
    shape = parse_input_shape(input_shape)
    dropped: set[str] = set()
    layers, losses, lost = [], [], []
    n_inputs = sum(len(l.tops) if l.kind.is_deploy_input else 1 for l in graph.layers if l.kind.is_input)
    if shape is not None and n_inputs != 1:
        raise ProtogenError(f"--input-shape sets one input, but the net has {n_inputs} input blobs",
                            file=file)
    for l in graph.layers:
        kind = l.kind
        if kind.is_input:
            if kind.is_deploy_input:
                if shape is not None:
                    l = l.copy(params=InputParams(shape=(shape,)))
                elif named and len(l.params.shape) == len(l.tops):
                    l = l.copy(params=InputParams(shape=tuple(
                        named.get(t, s) for t, s in zip(l.tops, l.params.shape))))
                layers.append(l)
                continue
            extra = [t for t in l.tops[1:] if named and t in named]
            if named and l.tops[0] in named:
                own = named[l.tops[0]]
            elif shape is None:
                try:
                    own = kind.output_shapes(l.params, [], len(l.tops))[0]
                except ProtogenError:
                    raise ProtogenError(
                        f"{l.type} layer gives no input size (no crop_size/new_height): "
                        "give the input shape, e.g. --input-shape 1,3,224,224",
                        file=file, layer=l.name) from None
            else:
                own = shape
            layers.append(Layer_(l.name, l.tops[0], own) if not extra else
                          Layer_(l.name, [l.tops[0]] + extra, [own] + [named[t] for t in extra]))
            dropped.update(t for t in l.tops[1:] if t not in extra)
            continue
        if kind.is_loss or any(b in dropped for b in l.bottoms):
            if kind.is_loss:
                losses.append(l.name)
            elif not kind.is_metric and any(b not in dropped for b in l.bottoms):
                # it computes with the net's data AND a dropped data top (rois, a second
                # image): dropping it would silently cut the net
                lost.append((l.name, [b for b in l.bottoms if b in dropped]))
            dropped.update(t for t in l.tops if t not in l.bottoms)
            continue
        layers.append(l)
    if lost:
        what = "; ".join(f"'{n}' reads {', '.join(repr(b) for b in bs)}" for n, bs in lost)
        raise ProtogenError(f"the inference view keeps only the first top of each data layer, but "
                            f"layers compute with the others ({what}): write a deploy net with "
                            "Input layers for them, or give their shapes by name "
                            "(input_shape={top: shape}; protogen: --input-shape TOP=N,C,H,W, "
                            "repeated)", file=file, layer=lost[0][0])
    out = Graph(graph.name, _drop_unread_inputs(layers, dropped))
    out.notes = ([f"dropped training-only layer(s) {', '.join(repr(n) for n in losses[:5])}"
                  f"{' and %d more' % (len(losses) - 5) if len(losses) > 5 else ''} "
                  "(losses and metrics)"] if losses else [])
    return out


def _drop_unread_inputs(layers: list, dropped: set) -> list:
    """Remove Input tops that only the dropped (training-only) layers read, e.g. a ``label``
    declared with ``input:`` for a loss: an inference net has no use for it (and OpenCV
    refuses a net input that nothing reads)."""
    from ..layers.io import InputParams
    if not dropped:
        return layers
    read = {b for l in layers for b in l.bottoms}
    out = []
    for l in layers:
        if l.kind.is_deploy_input and any(t not in read for t in l.tops) and any(t in read for t in l.tops):
            keep = [i for i, t in enumerate(l.tops) if t in read]
            shapes = l.params.shape
            if len(shapes) == len(l.tops):
                shapes = tuple(shapes[i] for i in keep)
            l = l.copy(tops=[l.tops[i] for i in keep], params=InputParams(shape=shapes))
        out.append(l)
    return out


def Layer_(name, top, shape):
    """An Input layer: one top and its shape, or lists of tops and shapes."""
    from ..ir import Layer
    from ..layers.io import InputParams
    tops, shapes = (top, shape) if isinstance(top, list) else ([top], [shape])
    return Layer(name=name, type="Input", bottoms=[], tops=list(tops),
                 params=InputParams(shape=tuple(tuple(int(d) for d in s) for s in shapes)))


# ============================================================================ weights
from .attach import MAX_WEIGHT_ELEMENTS, attach_weights, fit_blob as _fit_blob  # noqa: E402,F401


def drop_training_settings(net) -> list[str]:
    """Training-only parameter blocks (loss_param, transform_param, data-source params; see
    :data:`protogen.caffe.schema_check.TRAINING_ONLY_BLOCKS`) set on a layer whose type does
    not read them (e.g. ``loss_param`` on a Softmax, which Caffe ignores) are cleared, with a
    note; returns the notes."""
    from ..layers.base import _REGISTRY
    from .schema_check import TRAINING_ONLY_BLOCKS
    dropped: dict[str, list[str]] = {}
    for lp in net.layer:
        kind = _REGISTRY.get(lp.type)
        if kind is None:
            continue
        for fd, _ in lp.ListFields():
            if (fd.name in TRAINING_ONLY_BLOCKS and fd.name != kind.param_field
                    and fd.name not in kind.benign_fields):
                lp.ClearField(fd.name)
                dropped.setdefault(fd.name, []).append(lp.name)
    return [f"ignored training-only '{f}' on layer(s) {', '.join(repr(n) for n in names[:3])}"
            f"{' and %d more' % (len(names) - 3) if len(names) > 3 else ''} (their types do "
            "not read it)" for f, names in dropped.items()]


def rename_repeated_layers(net) -> tuple[set, list[str]]:
    """Caffe allows several layers of one name; the graph needs unique names. Later layers of
    a repeated name get ``name_2``, ``name_3``... (in place); returns (the renamed layers'
    new names, notes). Caffe gives caffemodel weights only to the first layer of a name
    (CopyTrainedLayersFrom), so the renamed ones never take caffemodel blobs."""
    used = {lp.name for lp in net.layer}
    seen: dict[str, int] = {}
    renamed, counts = set(), {}
    for lp in net.layer:
        k = seen.get(lp.name, 0) + 1
        seen[lp.name] = k
        if k == 1:
            continue
        new = f"{lp.name}_{k}"
        while new in used:
            new += "_"
        used.add(new)
        counts[lp.name] = counts.get(lp.name, 1) + 1
        lp.name = new
        renamed.add(new)
    notes = [f"layer name '{n}' is used {c} times (Caffe allows it): the later ones are named "
             f"{n}_2.. here, and only the first takes caffemodel weights, as in Caffe"
             for n, c in counts.items()]
    return renamed, notes


def load_model(prototxt, caffemodel=None, phase: str | None = None, input_shape=None,
               inference: bool = True, level: int | None = None, stages=None) -> Graph:
    """A Caffe model (prototxt of any version + optional caffemodel) as an IR graph.

    The net is upgraded to V2, filtered for the NetState (``phase``, default TEST when it
    has rules; ``level``, ``stages``) BEFORE the graph is checked, as Caffe's FilterNet does,
    turned into its inference view (see :func:`inference_view`) unless ``inference=False``,
    and — with a caffemodel — gets ``layer.blobs`` by layer name. ``graph.notes`` says what
    was ignored or assumed. Every problem is a :class:`ProtogenError` naming the file and
    layer.
    """
    from .caffemodel import read_caffemodel
    from .netstate import filter_net
    ptxt = str(prototxt)
    from .fill import fillers_of
    msg, notes = read_net_notes(ptxt)
    filter_net(msg, phase, level, stages, file=ptxt)
    from .fork_rewrite import rewrite_fork_layers, split_model_blobs
    more, blob_maps = rewrite_fork_layers(msg, ptxt)   # DenseBlock, opencl fusions, int8 fields
    notes += more
    renamed, more = rename_repeated_layers(msg)
    notes += more + drop_training_settings(msg)
    fillers = {lp.name: fillers_of(lp) for lp in msg.layer}
    g = _graph_of(msg, notes, ptxt)
    if inference:
        g = inference_view(g, input_shape, file=ptxt)
        notes += g.notes
    elif input_shape is not None:
        raise ProtogenError("input_shape needs the inference view")
    model = read_caffemodel(caffemodel) if caffemodel is not None else None
    split_model_blobs(model, blob_maps, file=str(caffemodel), graph=g if inference else None,
                      prototxt=ptxt)     # DenseBlock blobs -> its layers; initChannel checked
    try:
        attach_weights(g, model, file=str(caffemodel) if caffemodel is not None else ptxt,
                       fillers=fillers, no_source=renamed, notes=notes)
    except ProtogenError as e:
        # shape errors come from the prototxt itself
        raise e.with_context(file=ptxt)
    # layers that compute something rarely intended say so (LayerType.note; engineer E)
    said: dict[str, list[str]] = {}
    for l in g:
        n = l.kind.note(l.params) if hasattr(l.kind, "note") else None
        if n:
            said.setdefault(f"{l.type}: {n}", []).append(repr(l.name))
    notes += [f"{len(ls)} layer(s) ({', '.join(ls[:3])}{', ...' if len(ls) > 3 else ''}) {t}"
              for t, ls in said.items()]
    g.notes = notes
    return g
