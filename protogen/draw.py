"""Pictures of nets: SVG (written here), PNG (matplotlib) and Graphviz ``.dot`` text.

A node per layer, labelled with its name, type, key parameters (kernel/stride/pad, group,
outputs), output shape (batch dropped) and cost (mult-adds, or memory access for layers that
do no mult-adds). Layers computed in place (BatchNorm, Scale, ReLU... with top == bottom) are
folded into the node of the layer that produced their input, listed as ``+ BatchNorm + Scale
+ ReLU``. ``depth=N`` collapses every layer whose name has more than N '/'-separated parts
into one box per scope (``stage2/unit1``: all of a residual unit or inception module).
Training-only layers (absent from the deploy net, or active in the TRAIN phase only) have a
dashed outline and a ``[train]`` mark.

The layout needs no system package: layers are ranked by longest path from the inputs,
edges spanning several ranks get dummy points, nodes are ordered within a rank by
barycentre sweeps (fewer crossings), then placed next to their neighbours' mean position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .errors import ProtogenError
from .ir import DEPLOY, TEST, TRAIN, TRAIN_VAL, Graph

FORMATS = (".svg", ".png", ".dot")
PHASES = ("deploy", "train", "test")
FONT = 11                    # px
CHAR_W = 6.6                 # px per character at FONT (DejaVu Sans average)
LINE_H = 14
PAD_X, PAD_Y = 8, 6
GAP_NODE, GAP_RANK = 18, 34

#: fill colour per layer type (presentation only); others get DEFAULT_FILL
FILL = {"Convolution": "#cfe2f3", "Deconvolution": "#cfe2f3", "ConvolutionDepthwise": "#d9ead3",
        "InnerProduct": "#fce5cd", "Pooling": "#d9d2e9", "Concat": "#fff2cc", "Eltwise": "#fff2cc",
        "Slice": "#fff2cc", "Split": "#eeeeee", "ShuffleChannel": "#f4cccc",
        "Permute": "#f4cccc", "Reshape": "#f4cccc", "Flatten": "#f4cccc",
        "Input": "#e0e0e0", "Data": "#e0e0e0", "ImageData": "#e0e0e0",
        "Softmax": "#ead1dc", "SoftmaxWithLoss": "#ead1dc", "Accuracy": "#ead1dc"}
DEFAULT_FILL = "#f3f3f3"
SCOPE_FILL = "#dde7f0"


@dataclass
class Node:
    key: str
    label: list[str]
    fill: str
    train_only: bool = False
    index: int = 0               # first layer's position in the net (keeps the net's order)
    layers: list[str] = field(default_factory=list)
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0               # centre
    y: float = 0.0


@dataclass
class Picture:
    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    #: edge -> polyline points (centre coordinates), after layout
    routes: dict = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0
    rankdir: str = "TB"
    title: str = ""


# ----------------------------------------------------------------------------- model -> nodes
def select_view(graph: Graph, phase: str | None) -> tuple[Graph, set[str]]:
    """The layers to draw for ``phase`` (deploy | train | test; None = deploy when the graph
    has a deploy net, else as written, TEST phase) and the names of training-only layers."""
    if phase is not None and phase not in PHASES:
        raise ProtogenError(f"--phase must be one of {', '.join(PHASES)}, got {phase!r}")
    deploy_names = {l.name for l in graph.layers if DEPLOY in l.nets}
    has_train_net = any(l.nets == frozenset({TRAIN_VAL}) for l in graph.layers)
    if phase in (None, "deploy") and deploy_names:
        view = graph.select(net=DEPLOY)
    else:
        view = graph.select(net=TRAIN_VAL if has_train_net else None)
    ph = TRAIN if phase == "train" else TEST
    if any(l.phases for l in view.layers):
        view = view.select(phase=ph)
    train_only = {l.name for l in view.layers
                  if (has_train_net and l.nets == frozenset({TRAIN_VAL}))
                  or (l.phases is not None and TEST not in l.phases)}
    return view, train_only


def _pair(a, b, sep="x") -> str:
    return str(a) if a == b else f"{a}{sep}{b}"


def key_params(layer) -> str:
    """kernel/stride/pad, group, outputs of a layer, read from its params' common fields."""
    p = layer.params
    parts = []
    if getattr(p, "global_pooling", False):
        parts.append(f"global {getattr(p, 'pool', '')}".strip())
    elif getattr(p, "kernel_h", 0):
        k = f"{p.kernel_h}x{p.kernel_w}"
        s = _pair(getattr(p, "stride_h", 1), getattr(p, "stride_w", 1))
        txt = f"{k}" + (f"/{s}" if s != "1" else "")
        pad = _pair(getattr(p, "pad_h", 0), getattr(p, "pad_w", 0))
        if pad != "0":
            txt += f" pad {pad}"
        if getattr(p, "pool", None):
            txt = f"{p.pool} {txt}"
        parts.append(txt)
    d = _pair(getattr(p, "dilation_h", 1), getattr(p, "dilation_w", 1))
    if d != "1":
        parts.append(f"dil {d}")
    g = getattr(p, "group", 1)
    if g and g != 1:
        parts.append(f"g={g}")
    op = getattr(p, "operation", None)
    if isinstance(op, str) and op:
        parts.append(op)
    return ", ".join(str(x) for x in parts)


def _shape(s) -> str:
    s = list(s)
    return "x".join(str(d) for d in (s[1:] if len(s) > 1 else s))


def _cost_text(macs: int, mac: int) -> str:
    from .stats import human
    if macs:
        return f"{human(macs)} MAdds"
    return f"{human(mac)} MAC" if mac else ""


def build(graph: Graph, phase: str | None = None, depth: int | None = None) -> Picture:
    """Nodes and edges of the picture (no layout yet)."""
    view, train_only = select_view(graph, phase)
    if not view.layers:
        raise ProtogenError("nothing to draw: the selected view of the net has no layers")
    if depth is not None and depth < 1:
        raise ProtogenError(f"--depth must be >= 1, got {depth}")
    steps = view.steps()
    owner: dict[str, str] = {}          # SSA value -> node key
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str]] = []
    layer_node: dict[str, str] = {}
    costs = {}
    scope_size: dict[str, int] = {}
    if depth is not None:
        for st in steps:
            parts = st.layer.name.split("/")
            if len(parts) > depth:
                sc = "/".join(parts[:depth])
                scope_size[sc] = scope_size.get(sc, 0) + 1
    for i, st in enumerate(steps):
        l = st.layer
        c = l.kind.cost(l.params, st.in_shapes, st.out_shapes)
        costs[l.name] = (c.macs, c.memory_access)
        folded = l.inplace and st.inputs and st.inputs[0] in owner and \
            not nodes[owner[st.inputs[0]]].key.startswith("scope:")
        scope = "/".join(l.name.split("/")[:depth]) if depth is not None else ""
        if scope_size.get(scope, 0) > 1 and len(l.name.split("/")) > depth:
            key = "scope:" + scope
        elif folded:
            key = owner[st.inputs[0]]
        else:
            key = "layer:" + l.name
        n = nodes.get(key)
        if n is None:
            n = nodes[key] = Node(key, [], FILL.get(l.type, DEFAULT_FILL), index=i)
        n.layers.append(l.name)
        n.train_only = n.train_only or l.name in train_only
        layer_node[l.name] = key
        for v in st.inputs:
            src = owner.get(v)
            if src is not None and src != key and (src, key) not in edges:
                edges.append((src, key))
        for v in st.outputs:
            owner[v] = key
    by_name = {st.layer.name: st for st in steps}
    for key, n in nodes.items():
        first = by_name[n.layers[0]]
        last = by_name[n.layers[-1]]
        macs = sum(costs[x][0] for x in n.layers)
        mac = sum(costs[x][1] for x in n.layers)
        out = " ".join(_shape(s) for s in last.out_shapes)
        mark = " [train]" if n.train_only else ""
        if key.startswith("scope:"):
            types = []
            for x in n.layers:
                t = by_name[x].layer.type
                if t not in types:
                    types.append(t)
            n.fill = SCOPE_FILL
            n.label = [key[6:] + mark, f"{len(n.layers)} layers", out, _cost_text(macs, mac)]
        else:
            kp = key_params(first.layer)
            extra = [by_name[x].layer.type for x in n.layers[1:]]
            typ = first.layer.type + "".join(f" + {t}" for t in extra)
            n.label = [first.layer.name + mark, typ] + ([kp] if kp else []) + [out, _cost_text(macs, mac)]
        n.label = [s for s in n.label if s]
    return Picture(nodes, edges, title=view.name)


# ----------------------------------------------------------------------------- layout
def _text_w(s: str) -> float:
    return len(s) * CHAR_W


def layout(pic: Picture, rankdir: str = "TB", sweeps: int = 8) -> Picture:
    """Assign positions (see the module docstring); returns ``pic``."""
    if rankdir not in ("TB", "LR"):
        raise ProtogenError(f"--rankdir must be TB or LR, got {rankdir!r}")
    pic.rankdir = rankdir
    order = sorted(pic.nodes, key=lambda k: pic.nodes[k].index)
    pos = {k: i for i, k in enumerate(order)}
    for n in pic.nodes.values():
        n.w = max(_text_w(s) for s in n.label) + 2 * PAD_X
        n.h = len(n.label) * LINE_H + 2 * PAD_Y
    # forward edges only for ranking (collapsed scopes can interleave; keep the net's order)
    fwd = [(a, b) if pos[a] < pos[b] else (b, a) for a, b in pic.edges]
    rank = {k: 0 for k in order}
    preds: dict[str, list[str]] = {k: [] for k in order}
    for a, b in fwd:
        preds[b].append(a)
    for k in order:
        if preds[k]:
            rank[k] = max(rank[p] + 1 for p in preds[k])
    # dummy points for edges spanning ranks
    vnodes: dict[str, tuple[float, float]] = {}          # key -> (size along rank, across)
    for k, n in pic.nodes.items():
        vnodes[k] = (n.h, n.w) if rankdir == "TB" else (n.w, n.h)
    chains: dict[tuple[str, str], list[str]] = {}
    up: dict[str, list[str]] = {k: [] for k in vnodes}
    down: dict[str, list[str]] = {k: [] for k in vnodes}
    for a, b in fwd:
        chain = [a]
        for r in range(rank[a] + 1, rank[b]):
            d = f"dummy:{a}->{b}:{r}"
            vnodes[d] = (0.0, 4.0)
            rank[d] = r
            pos[d] = pos[a] + 0.5
            up[d], down[d] = [], []
            chain.append(d)
        chain.append(b)
        for u, v in zip(chain, chain[1:]):
            down[u].append(v)
            up[v].append(u)
        chains[(a, b)] = chain
    n_ranks = max(rank.values()) + 1
    layers: list[list[str]] = [[] for _ in range(n_ranks)]
    for k in sorted(vnodes, key=lambda k: (pos[k], k)):
        layers[rank[k]].append(k)
    # crossing reduction: barycentre sweeps
    idx = {k: i for lay in layers for i, k in enumerate(lay)}
    for it in range(sweeps):
        rng = range(1, n_ranks) if it % 2 == 0 else range(n_ranks - 2, -1, -1)
        nb = up if it % 2 == 0 else down
        for r in rng:
            lay = layers[r]
            bary = {k: (sum(idx[u] for u in nb[k]) / len(nb[k]) if nb[k] else idx[k]) for k in lay}
            lay.sort(key=lambda k: (bary[k], idx[k]))
            for i, k in enumerate(lay):
                idx[k] = i
    # coordinates across ranks: pack, then pull towards neighbours, keeping order and gaps
    across: dict[str, float] = {}
    for lay in layers:
        x = 0.0
        for k in lay:
            w = vnodes[k][1]
            across[k] = x + w / 2
            x += w + GAP_NODE
    for it in range(2 * sweeps):
        rng = range(n_ranks) if it % 2 == 0 else range(n_ranks - 1, -1, -1)
        for r in rng:
            lay = layers[r]
            want = []
            for k in lay:
                nbs = up[k] + down[k]
                want.append(sum(across[u] for u in nbs) / len(nbs) if nbs else across[k])
            _place(lay, want, [vnodes[k][1] for k in lay], across)
    for lay in layers:             # a plain chain link sits straight under its only parent
        if len(lay) == 1 and len(up[lay[0]]) == 1 and len(down[up[lay[0]][0]]) == 1:
            across[lay[0]] = across[up[lay[0]][0]]
    lo = min(across[k] - vnodes[k][1] / 2 for k in vnodes)
    for k in across:
        across[k] -= lo - 10
    # coordinates along ranks
    along_r, band, a = [], [], 10.0
    for lay in layers:
        size = max(vnodes[k][0] for k in lay)
        along_r.append(a + size / 2)
        band.append(size)
        a += size + GAP_RANK
    span_across = max(across[k] + vnodes[k][1] / 2 for k in vnodes) + 10
    span_along = a - GAP_RANK + 10
    for k, n in pic.nodes.items():
        c, r = across[k], along_r[rank[k]]
        n.x, n.y = (c, r) if rankdir == "TB" else (r, c)
    pic.width, pic.height = (span_across, span_along) if rankdir == "TB" else (span_along, span_across)
    for e, chain in chains.items():
        pts = []
        for k in chain:
            c, r = across[k], along_r[rank[k]]
            if k.startswith("dummy:"):      # straight through the rank's band: no box crossed
                half = band[rank[k]] / 2
                pts += [(c, r - half), (c, r + half)] if rankdir == "TB" else [(r - half, c), (r + half, c)]
            else:
                pts.append((c, r) if rankdir == "TB" else (r, c))
        pic.routes[e] = pts
    return pic


def _place(lay: list[str], want: list[float], widths: list[float], across: dict) -> None:
    """Positions as close to ``want`` as the order and the gaps allow: the mean of a
    left-to-right and a right-to-left packing (both keep the gaps, so their mean does)."""
    n = len(lay)
    fwd, bwd = list(want), list(want)
    for i in range(1, n):
        fwd[i] = max(fwd[i], fwd[i - 1] + (widths[i - 1] + widths[i]) / 2 + GAP_NODE)
    for i in range(n - 2, -1, -1):
        bwd[i] = min(bwd[i], bwd[i + 1] - (widths[i + 1] + widths[i]) / 2 - GAP_NODE)
    for k, a, b in zip(lay, fwd, bwd):
        across[k] = (a + b) / 2


def _box_edge(n: Node, toward: tuple[float, float], rankdir: str, leaving: bool):
    """Where an edge meets node ``n``'s box (top/bottom in TB, left/right in LR)."""
    if rankdir == "TB":
        return (n.x, n.y + n.h / 2) if leaving else (n.x, n.y - n.h / 2)
    return (n.x + n.w / 2, n.y) if leaving else (n.x - n.w / 2, n.y)


def edge_points(pic: Picture, e: tuple[str, str]) -> list[tuple[float, float]]:
    a, b = e
    pts = list(pic.routes.get(e) or pic.routes.get((b, a))[::-1])
    na, nb = pic.nodes[a], pic.nodes[b]
    forward = e in pic.routes
    pts[0] = _box_edge(na, pts[1], pic.rankdir, leaving=forward)
    pts[-1] = _box_edge(nb, pts[-2], pic.rankdir, leaving=not forward)
    return pts


# ----------------------------------------------------------------------------- writers
def to_svg(pic: Picture) -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{pic.width:.0f}" height="{pic.height:.0f}" '
           f'viewBox="0 0 {pic.width:.0f} {pic.height:.0f}" font-family="DejaVu Sans, Verdana, sans-serif" '
           f'font-size="{FONT}">',
           f"<title>{escape(pic.title)}</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
           "</marker></defs>",
           f'<rect width="100%" height="100%" fill="white"/>', '<g class="edges" fill="none" '
           'stroke="#555" stroke-width="1">']
    for e in pic.edges:
        pts = edge_points(pic, e)
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" marker-end="url(#arrow)"/>')
    out.append("</g>")
    out.append('<g class="nodes">')
    for n in pic.nodes.values():
        x0, y0 = n.x - n.w / 2, n.y - n.h / 2
        dash = ' stroke-dasharray="5,3"' if n.train_only else ""
        out.append(f'<g class="node" id="{escape(n.key, {chr(34): "&quot;"})}">'
                   f"<title>{escape(', '.join(n.layers))}</title>"
                   f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" rx="5" '
                   f'fill="{n.fill}" stroke="#333"{dash}/>')
        for i, s in enumerate(n.label):
            ty = y0 + PAD_Y + (i + 0.78) * LINE_H
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{n.x:.1f}" y="{ty:.1f}" text-anchor="middle"{weight}>{escape(s)}</text>')
        out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(pic: Picture) -> str:
    lines = [f"digraph {_dot_str(pic.title or 'net')} {{", f"  rankdir={pic.rankdir};",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    ids = {k: f"n{i}" for i, k in enumerate(pic.nodes)}
    for k, n in pic.nodes.items():
        style = ', style="rounded,filled,dashed"' if n.train_only else ""
        label = "\\n".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in n.label)
        lines.append(f'  {ids[k]} [label="{label}", fillcolor="{n.fill}"{style}];')
    for a, b in pic.edges:
        lines.append(f"  {ids[a]} -> {ids[b]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


#: Agg cannot render images wider or taller than 2**16 pixels
MAX_PX = 32000


def to_png(pic: Picture) -> bytes:
    """The picture rendered by matplotlib (same layout as the SVG)."""
    import io
    try:
        import matplotlib
    except ImportError:
        raise ProtogenError("PNG output needs matplotlib (pip install matplotlib); "
                            "SVG and .dot need nothing") from None
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MPath
    from matplotlib.patches import PathPatch
    scale = min(1.5, MAX_PX / max(pic.width, pic.height))
    dpi = 72 * scale
    fig = Figure(figsize=(pic.width / 72, pic.height / 72), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, pic.width)
    ax.set_ylim(pic.height, 0)
    ax.axis("off")
    for e in pic.edges:
        pts = edge_points(pic, e)
        if len(pts) > 2:
            ax.add_patch(PathPatch(MPath(pts[:-1]), fill=False, color="#555555", lw=0.8))
        ax.add_patch(FancyArrowPatch(pts[-2], pts[-1], arrowstyle="-|>", mutation_scale=8,
                                     color="#555555", lw=0.8, shrinkA=0, shrinkB=0))
    for n in pic.nodes.values():
        ax.add_patch(FancyBboxPatch((n.x - n.w / 2, n.y - n.h / 2), n.w, n.h,
                                    boxstyle="round,pad=0,rounding_size=5", fc=n.fill, ec="#333333",
                                    lw=0.8, ls="--" if n.train_only else "-"))
        for i, s in enumerate(n.label):
            ty = n.y - n.h / 2 + PAD_Y + (i + 0.5) * LINE_H
            ax.text(n.x, ty, s, ha="center", va="center", fontsize=FONT * 0.9,
                    fontweight="bold" if i == 0 else "normal")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def render(graph: Graph, fmt: str, *, phase: str | None = None, depth: int | None = None,
           rankdir: str = "TB") -> bytes:
    """The picture of ``graph`` as bytes in ``fmt`` ('.svg', '.png' or '.dot')."""
    if fmt not in FORMATS:
        raise ProtogenError(f"output must end in {', '.join(FORMATS)}, got '{fmt}'")
    pic = layout(build(graph, phase, depth), rankdir)
    if fmt == ".svg":
        return to_svg(pic).encode()
    if fmt == ".dot":
        return to_dot(pic).encode()
    return to_png(pic)
