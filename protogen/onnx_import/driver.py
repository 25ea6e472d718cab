"""The import driver: check every node, fold constants, walk the nodes through their
registered converters, collect problems, build the IR graph; and the Caffe-file writer."""
from __future__ import annotations

from pathlib import Path

from ..dialect import DEFAULT, PORTABLE, Dialect
from ..errors import ProtogenError, UnsupportedError
from ..ir import DEPLOY, Graph
from .context import SAFE, ImportContext
from .registry import Refuse, attr_values


def static_problems(ctx: ImportContext) -> list[tuple[str, str, str]]:
    """Everything the graph structure decides, for every node, before converting."""
    probs = []
    const = set(ctx.consts)
    for i, n in enumerate(ctx.nodes):
        name, op = ctx.node_name(i), n.op_type
        if n.domain not in ("", "ai.onnx"):
            probs.append((name, op, f"operator domain '{n.domain}' is not supported"))
            continue
        c = ctx.converter(n)
        ins = [t for t in n.input if t]
        if c is not None and (c.always_fold or (c.foldable and (c.shape_only or all(t in const for t in ins)))):
            const.update(t for t in n.output if t)
            continue
        if c is None or not c.converts:
            probs.append((name, op, f"operator {op} has no Caffe layer equivalent"))
            continue
        a = attr_values(n)
        for k in a:
            if k not in c.attrs:
                probs.append((name, op, f"attribute '{k}' is not supported"))
        probs.extend((name, op, m) for m in c.static_problems(ctx, i, n, a, const))
    return probs


def _foldable_now(ctx: ImportContext, c, ins) -> bool:
    if c is None:
        return False
    if c.always_fold:
        return True
    return c.foldable and all(ctx.is_const(t) or (c.shape_only and t in ctx.shape) for t in ins)


def _input_shape(ctx: ImportContext, inp) -> tuple:
    if inp.name in ctx.input_shapes:
        return tuple(int(d) for d in ctx.input_shapes[inp.name])
    if None in ctx.input_shapes:          # one shape given for the only input
        return tuple(int(d) for d in ctx.input_shapes[None])
    tt = inp.type.tensor_type
    if not tt.HasField("shape"):
        raise ProtogenError(f"input '{inp.name}' has no shape; give the input shape "
                            "(--input-shape N,C,H,W, or input_shapes= in Python)", file=ctx.file)
    dims = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif k == 0:
            dims.append(1)      # dynamic batch -> 1
        else:
            raise ProtogenError(f"input '{inp.name}' has a dynamic dimension {k} "
                                f"('{d.dim_param}'); give the input shape (--input-shape N,C,H,W, "
                                "or input_shapes= in Python)", file=ctx.file)
    return tuple(dims)


def run(ctx: ImportContext) -> Graph:
    """Convert the whole graph or raise every problem at once."""
    from ..layers.io import InputParams
    probs = static_problems(ctx)
    if probs:
        raise UnsupportedError(probs, file=ctx.file)
    for inp in ctx.inputs:
        shape = _input_shape(ctx, inp)
        b = ctx.new_blob(inp.name)
        ctx.graph_inputs.add(inp.name)
        ctx.add_layer(ctx.new_layer_name(inp.name), "Input", [], [b], InputParams(shape=(shape,)))
        ctx.set_out(inp.name, b)
    problems = []
    for i, n in enumerate(ctx.nodes):
        if i in ctx.skip:
            continue
        c = ctx.converter(n)
        ins = [t for t in n.input if t]
        if _foldable_now(ctx, c, ins):
            try:
                ctx.fold(n)
            except Exception as e:   # noqa: BLE001 - report, don't crash
                problems.append((ctx.node_name(i), n.op_type, f"cannot evaluate constant: {e}"))
            continue
        if any(t not in ctx.blob and t not in ctx.pad_fold and not ctx.is_const(t) for t in ins):
            # an input failed to convert; its problem is already listed
            continue
        try:
            c.convert(ctx, i, n, attr_values(n))
        except Refuse as e:
            problems.append((ctx.node_name(i), n.op_type, str(e)))
            for t in n.output:      # a refused node has no outputs: its consumers are skipped
                ctx.blob.pop(t, None)
    if problems:
        raise UnsupportedError(problems, file=ctx.file)
    missing = [o for o in ctx.outputs if o not in ctx.blob]
    if missing:
        raise ProtogenError(f"graph outputs {missing} are constants or not produced by any layer",
                            file=ctx.file)
    g = Graph(SAFE.sub("_", ctx.g.name) or "net", ctx.layers)
    g.check(ctx.file)
    return g


# --------------------------------------------------------------------------- public API
def load_onnx(path_or_model, *, dialect: Dialect = DEFAULT, input_shapes=None) -> Graph:
    """An IR graph (with ``layer.blobs`` weights) from an ONNX file or ``onnx.ModelProto``.

    ``dialect`` restricts the result to what that Caffe dialect can write (the ``bvlc``
    dialect has no Permute, so a general Transpose is refused up front). ``input_shapes``
    ({input name: shape}, or one shape for a single-input model) overrides the graph's
    input shapes, and is needed when height/width are dynamic; a dynamic batch becomes 1.
    Raises :class:`UnsupportedError` listing every unsupported node at once.
    """
    import onnx
    file = None
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        file = str(path_or_model)
        try:
            model = onnx.load(file)
        except FileNotFoundError:
            raise ProtogenError("no such file", file=file) from None
        except OSError as e:
            raise ProtogenError(f"cannot read: {e.strerror or e}", file=file) from None
        except Exception as e:   # noqa: BLE001 - a malformed protobuf
            raise ProtogenError(f"not a valid ONNX model ({type(e).__name__}: {e})", file=file) from None
    if not isinstance(dialect, Dialect):
        dialect = Dialect.make(str(dialect))
    if not model.graph.node:
        raise ProtogenError("the ONNX graph has no nodes", file=file)
    g = run(ImportContext(model, dialect, input_shapes, file))
    if file is not None and g.name == "net":
        g.name = SAFE.sub("_", Path(file).stem)
    return g


def write_caffe(graph: Graph, prototxt_path, dialect: Dialect = DEFAULT, caffemodel_path=None) -> tuple[Path, Path]:
    """Write an imported graph as a deploy prototxt + caffemodel (``.caffemodel`` beside the
    prototxt unless given), in the dialect the graph was loaded for (``load_onnx``'s). Both are generated into temporary files and renamed into place
    together: an error leaves neither. Returns (prototxt path, caffemodel path)."""
    from google.protobuf import text_format

    from ..caffe.caffemodel import write_caffemodel_to
    from ..caffe.prototxt import to_net_param
    from ..util import atomic_open
    prototxt_path = Path(prototxt_path)
    caffemodel_path = Path(caffemodel_path) if caffemodel_path else prototxt_path.with_suffix(".caffemodel")
    net = to_net_param(graph, DEPLOY, dialect)
    blobs = {l.name: l.blobs for l in graph.layers if l.blobs}
    text = text_format.MessageToString(net)
    with atomic_open(caffemodel_path, "wb") as fc:
        write_caffemodel_to(fc, net, {lp.name: blobs[lp.name] for lp in net.layer if lp.name in blobs})
        with atomic_open(prototxt_path, "w") as ft:
            ft.write(text)
    return prototxt_path, caffemodel_path


def onnx_to_caffe(onnx_path, prototxt_path, dialect: Dialect = PORTABLE, *, caffemodel_path=None,
                  input_shapes=None) -> tuple[Path, Path]:
    """Convert an ONNX model to a deploy prototxt and a caffemodel (``.caffemodel`` beside
    the prototxt unless given), by default in the ``portable`` dialect that upstream Caffe,
    OpenCV's Caffe importer and older forks all load. Both files appear atomically; nothing is written when the
    model cannot be converted. Returns (prototxt path, caffemodel path)."""
    if not isinstance(dialect, Dialect):
        dialect = Dialect.make(str(dialect))
    g = load_onnx(onnx_path, dialect=dialect, input_shapes=input_shapes)
    return write_caffe(g, prototxt_path, dialect, caffemodel_path)
