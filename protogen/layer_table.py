"""The table ``protogen layers`` prints: every supported Caffe layer type, the Caffe schemas
that define it (``LayerType.schemas``: upstream BVLC and/or forks) and the ONNX ops it lowers
to, found by lowering the type's own examples (``LayerType.examples``) — so the table says what
the exporter really emits, not what someone wrote down.

Types without examples are data sources (they become graph inputs) or training-only layers
(losses and metrics, dropped by the inference view).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: how the schemas are called in the table (tags of LayerType.schemas)
SCHEMA_NAMES = {
    "upstream": "BVLC Caffe",
    "ssd": "SSD (weiliu89/caffe)",
    "py-faster-rcnn": "py-faster-rcnn",
    "r-fcn": "R-FCN",
    "segnet": "SegNet",
    "deeplab": "DeepLab/PSPNet",
    "yolo": "YOLO forks",
    "depthwise": "depthwise forks",
    "opencv": "OpenCV's schema",
    "refinedet": "RefineDet",
    "cascade-rcnn": "cascade-rcnn",
    "mobilenet-yolo": "MobileNet-YOLO (eric612)",
    "shufflenet": "ShuffleNet",
    "caffe-face": "caffe-face",
    "pspnet": "PSPNet (yjxiong BN)",
    "senet": "SENet forks",
    "waifu2x": "waifu2x-caffe",
    "mobilenet-v3": "MobileNet-v3 ports",
    "pva-faster-rcnn": "PVANet Faster R-CNN",
    "ssh": "SSH (mahyarnajibi)",
    "c3d": "C3D (facebookarchive)",
    "densenet-tongcheng": "DenseNet (Tongcheng)",
    "sphereface": "SphereFace",
    "hed": "HED (s9xie)",
}


@dataclass
class Row:
    type: str
    aliases: list = field(default_factory=list)
    schemas: list = field(default_factory=list)
    param_field: str | None = None
    onnx_ops: list = field(default_factory=list)
    role: str = "layer"          # layer | input | training-only
    note: str = ""


def _example_ops(kind) -> tuple[list[str], str]:
    """ONNX op types the exporter emits for ``kind``'s examples (sorted), and a note when an
    example cannot be lowered."""
    from .ir import Graph, Layer
    from .layers.io import InputParams
    from .onnx_io import export_onnx
    from .weights import init_weights
    ops: set[str] = set()
    notes = []
    for i, ex in enumerate(kind.examples):
        if "onnx" in getattr(ex, "skip", ()):
            continue
        try:
            params = ex.make_params(kind)
            names = [f"in{j}" for j in range(len(ex.ins))]
            inp = Layer("input", "Input", [], names, InputParams(shape=tuple(ex.ins)))
            layer = Layer("l", kind.type, names, [f"out{j}" for j in range(ex.n_tops)], params)
            g = Graph("example", [inp, layer])
            init_weights(g, 0)
            m = export_onnx(g)
            ops.update(n.op_type for n in m.graph.node)
        except Exception as e:   # a broken example is reported in the table, not fatal
            notes.append(f"example {i}: {type(e).__name__}")
    return sorted(ops), "; ".join(notes)


def build_rows(with_onnx: bool = True) -> list[Row]:
    """One row per registered type (aliases folded into their type), sorted by type."""
    from .layers import registered_types
    seen, rows = {}, []
    for name, kind in sorted(registered_types().items()):
        if id(kind) in seen:
            if name != kind.type:
                seen[id(kind)].aliases.append(name)
            continue
        row = Row(type=kind.type, schemas=list(getattr(kind, "schemas", ("upstream",))),
                  param_field=kind.param_field)
        if name != kind.type:
            row.aliases.append(name)
        if kind.is_input:
            row.role, row.onnx_ops = "input", ["(graph input)"]
        elif kind.is_loss or kind.is_metric:
            row.role, row.onnx_ops = "training-only", ["(dropped)"]
        elif getattr(kind, "expands_into", ()):      # rewritten by the loader (DenseBlock)
            row.role, row.onnx_ops = "expanded", [f"(as {', '.join(kind.expands_into)})"]
        elif with_onnx:
            row.onnx_ops, row.note = _example_ops(kind)
        seen[id(kind)] = row
        rows.append(row)
    return sorted(rows, key=lambda r: r.type)


def as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def format_table(rows: list[Row]) -> str:
    """A plain text table: type (aliases), schemas, ONNX ops."""
    lines = []
    w = max(len(r.type + (f" ({', '.join(r.aliases)})" if r.aliases else "")) for r in rows)
    w = min(w, 48)
    for r in rows:
        name = r.type + (f" ({', '.join(r.aliases)})" if r.aliases else "")
        schemas = ", ".join(SCHEMA_NAMES.get(s, s) for s in r.schemas)
        ops = ", ".join(r.onnx_ops) or "-"
        if r.note:
            ops += f"  [{r.note}]"
        lines.append(f"{name:<{w}}  {schemas:<28}  {ops}")
    head = f"{'Caffe type':<{w}}  {'schemas':<28}  ONNX ops"
    return "\n".join([head, "-" * len(head)] + lines)


def coverage_markdown(rows: list[Row]) -> str:
    """The README's coverage table: types x schemas."""
    out = ["| Caffe type | schemas | ONNX |", "|---|---|---|"]
    for r in rows:
        name = r.type + (f" ({', '.join(r.aliases)})" if r.aliases else "")
        out.append(f"| {name} | {', '.join(SCHEMA_NAMES.get(s, s) for s in r.schemas)} | "
                   f"{', '.join(r.onnx_ops) or '-'} |")
    return "\n".join(out)
