"""Per-layer and total cost: learnable params, multiply-adds, memory access cost (MAC).

Definitions (batch 1; see :mod:`protogen.layers.base` for MAC):
* params: learnable weights and biases (Convolution, InnerProduct, Scale, Bias, PReLU...);
  BatchNorm's mean/variance/factor blobs are counted apart as ``stats``.
* macs: multiply-adds of Convolution/Deconvolution/InnerProduct, as the papers count them
  (no bias adds, activations, pooling or element-wise work).
* memory_access: elements read and written, inputs + outputs + weights (ShuffleNet V2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ProtogenError, ShapeError
from .ir import DEPLOY, Graph
from .layers.base import Cost


@dataclass
class LayerStats:
    name: str
    type: str
    output_shapes: list
    params: int
    stats: int
    macs: int
    memory_access: int


def batch_one(graph: Graph) -> dict[str, tuple]:
    """Input shapes of ``graph`` with the batch dimension set to 1."""
    shapes = {}
    for l in graph.input_layers():
        for st in Graph(graph.name, [l]).steps():
            for t, s in zip(l.tops, st.out_shapes):
                if s:
                    shapes[t] = (1,) + tuple(s[1:])
    return shapes


def compute(graph: Graph, net: str = DEPLOY, input_shapes: dict | None = None) -> dict:
    """Stats of ``graph`` (the ``net`` view) at batch 1 unless ``input_shapes`` say otherwise."""
    view = graph.select(net=net)
    if any(l.phases for l in view.layers):
        view = view.select(phase="TEST")
    notes = []
    if input_shapes is None:
        input_shapes = batch_one(view)
        try:
            res = view.resolve(input_shapes=input_shapes)
        except ShapeError as e:
            # a net whose Reshape spells out the batch (LRCN's 16 x 10 clips, DCGAN's 64) has
            # no batch-1 form: count it at its own input shapes and say so
            try:
                res = view.resolve()
            except ProtogenError:
                raise e from None
            input_shapes = {blob: tuple(shape) for blob, _, shape in res.inputs}
            batch = ", ".join(f"{b} {s[0]}" for b, s in input_shapes.items() if s)
            notes.append(f"no batch-1 form ({e}); counted at the net's own batch ({batch}): "
                         "mult-adds per batch element, memory access for the whole batch")
    else:
        res = view.resolve(input_shapes=input_shapes)
    rows = []
    total = Cost()
    for st in res.steps:
        c = st.layer.kind.cost(st.layer.params, st.in_shapes, st.out_shapes)
        rows.append(LayerStats(st.layer.name, st.layer.type, [list(s) for s in st.out_shapes],
                               c.params, c.stats, c.macs, c.memory_access))
        total.params += c.params
        total.stats += c.stats
        total.macs += c.macs
        total.memory_access += c.memory_access
    return {"name": graph.name, "params": total.params, "stats": total.stats, "macs": total.macs,
            "memory_access": total.memory_access,
            "inputs": {k: list(v) for k, v in input_shapes.items()}, "notes": notes,
            "outputs": list(res.outputs),
            "layers": [asdict(r) for r in rows]}


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3f}{unit}"
    return str(int(n))


def format_table(s: dict) -> str:
    rows = [("layer", "type", "output", "params", "mult-adds", "mem access")]
    for r in s["layers"]:
        out = " ".join("x".join(str(d) for d in shp) for shp in r["output_shapes"])
        rows.append((r["name"], r["type"], out, f"{r['params']:,}", f"{r['macs']:,}",
                     f"{r['memory_access']:,}"))
    rows.append(("TOTAL", "", "", f"{s['params']:,}", f"{s['macs']:,}", f"{s['memory_access']:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"{s['name']}: {human(s['params'])} params ({s['params']:,}), "
                 f"{human(s['macs'])} mult-adds, {human(s['memory_access'])} memory access"
                 + (f", {s['stats']:,} BatchNorm statistics (not learnable)" if s["stats"] else ""))
    lines += [f"note: {n}" for n in s.get("notes", ())]
    return "\n".join(lines)
