"""SSH (Single Stage Headless face detector, Najibi et al. 2017): its Python ProposalLayer.

SSH's three detection modules each end in ``type: "Python"`` with python_param module
'SSH.layers.proposal_layer', layer 'ProposalLayer'. Semantics: mahyarnajibi/SSH
SSH/layers/proposal_layer.py (forward), SSH/layers/generate_anchors.py (py-faster-rcnn's,
plus a 'base_size' key), lib/utils/bbox_transform.py (bbox_transform_inv with an overflow
rule, clip_boxes). Unlike py-faster-rcnn's layer (:class:`protogen.layers.rcnn.PyProposal`)
it applies no NMS at TEST time ("DURING TEST WE HAVE NMS OUTSIDE OF THIS FUNCTION":
SSH/test.py runs NMS with cfg.TEST.NMS_THRESH 0.3 on the concatenated outputs, outside the
net), and its thresholds come from SSH's own config.

Config at test time. The layer reads ``cfg.TEST.N_DETS_PER_MODULE`` (pre-NMS top-N) and
``cfg.TEST.ANCHOR_MIN_SIZE`` (min box side, times im_info[2]); lib/utils/get_config.py loads
SSH/configs/default_config.yml (lib/SSH/default_config.yml is the same TEST block): 1000 and
0. SSH/main_test.py then merges ``--cfg`` (default SSH/configs/wider.yml, which changes only
SCALES/MAX_SIZE; wider_pyramid.yml repeats 1000 and 0) and ``--set``. A config that changes
them is not part of the prototxt: give its values with :func:`with_test_cfg`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ShapeError
from ..seed_inputs import SeedsImInfo
from .base import Example, LayerType, register, require_rank
from .python_code import PythonCode, parse_param_str
from .rcnn import anchors_py

#: SSH/configs/default_config.yml, TEST: what the ProposalLayer reads at test time
SSH_TEST_CFG = {"N_DETS_PER_MODULE": 1000, "ANCHOR_MIN_SIZE": 0}
_KEYS = {"feat_stride", "scales", "ratios", "base_size"}
TYPE = "Python:SSH.layers.proposal_layer.ProposalLayer"


@dataclass(frozen=True)
class SSHProposalParams:
    module: str = "SSH.layers.proposal_layer"
    layer: str = "ProposalLayer"
    param_str: str = ""
    n_dets_per_module: int = SSH_TEST_CFG["N_DETS_PER_MODULE"]   # cfg.TEST.N_DETS_PER_MODULE
    anchor_min_size: float = SSH_TEST_CFG["ANCHOR_MIN_SIZE"]     # cfg.TEST.ANCHOR_MIN_SIZE


def with_test_cfg(graph, n_dets_per_module: int | None = None, anchor_min_size: float | None = None):
    """``graph`` with every SSH ProposalLayer set to a user's SSH config (its
    TEST.N_DETS_PER_MODULE / TEST.ANCHOR_MIN_SIZE; None keeps the default config's value)."""
    from ..ir import Graph
    kw = {}
    if n_dets_per_module is not None:
        kw["n_dets_per_module"] = int(n_dets_per_module)
    if anchor_min_size is not None:
        kw["anchor_min_size"] = float(anchor_min_size)
    layers = [l.copy(params=replace(l.params, **kw)) if l.type == TYPE else l for l in graph.layers]
    out = Graph(graph.name, layers)
    ssh = [l for l in layers if l.type == TYPE]
    # the loader's note named the default values: say the ones now in use
    out.notes = [n for n in getattr(graph, "notes", []) if "SSH ProposalLayer: TEST config" not in n]
    if ssh:
        out.notes.append(f"{len(ssh)} layer(s) {TYPE}: {ssh[0].kind.note(ssh[0].params)}")
    return out


def _data(a: int, stride: int, ties: bool = False):
    """Bottoms like SSH's: softmax pairs (bg, fg) per anchor, small deltas, im_info for the
    map size; ``ties``: fg scores in a few exactly equal values."""
    def data(rng, shapes):
        import numpy as np
        s, d, info = shapes
        logits = rng.standard_normal((s[0], 2, a, s[2], s[3])) * 2
        if ties:
            logits = np.round(logits)
        e = np.exp(logits)
        prob = (e / e.sum(1, keepdims=True)).reshape(s).astype(np.float32)
        deltas = (rng.standard_normal(d) * 0.3).astype(np.float32)
        im = np.zeros(info, np.float32).reshape(-1)
        im[:3] = [s[2] * stride - 3, s[3] * stride + 2, 1.0][:im.size]
        return [prob, deltas, im.reshape(info)]
    return data


@register
class SSHProposal(PythonCode, SeedsImInfo, LayerType):
    """SSH's Python ProposalLayer at TEST time (see the module docstring; torch forward
    :func:`protogen.layers.ssh_torch.ssh_proposal`). param_str: feat_stride (needed), scales
    (8, 16, 32), ratios (0.5, 1, 2), base_size (16). im_info holds (height, width, scale).
    rois [R, 5], scores [R, 1], R = min(N_DETS_PER_MODULE, H * W * A) with the default
    ANCHOR_MIN_SIZE 0 (a clipped box is at least 1 wide, so only NaN boxes are dropped).

    Read from a Caffe net through the ``Python`` type's :meth:`resolve`; written back as that
    Python layer (the config values stay outside the prototxt, as in SSH)."""
    type = TYPE
    Params = SSHProposalParams
    n_bottoms = (3, 3)
    n_tops = (1, 2)
    schemas = ("ssh",)
    #: verify (protogen.verify_sets): rois/scores rows in score order, compared as sets; one image
    proposal_output, max_batch = True, 1
    #: seeded weights (protogen.seed_heads): the head layers feeding the scores (bottom 0) and
    #: the deltas (bottom 1) scaled down, so that the face scores spread over (0, 1) and the
    #: boxes stay mostly inside the image (at 224 x 224: max score 0.999, half the boxes
    #: inside); plain seeded weights saturate the softmax (three in four scores > 0.999, many
    #: equal in float32) and clip all but ~6% of the boxes at the image border
    seeded_bottom_scales = {0: 0.4, 1: 0.12}
    param_keys, required_keys, code_name = frozenset(_KEYS), ("feat_stride",), "SSH ProposalLayer"
    examples = (
        Example(params=dict(module="SSH.layers.proposal_layer", layer="ProposalLayer",
                            param_str="{'feat_stride': 8,'scales': [1,2], 'ratios':[1,]}"),
                ins=[(1, 4, 5, 6), (1, 8, 5, 6), (1, 3)], n_tops=2, data=_data(2, 8)),
        Example(params=dict(module="SSH.layers.proposal_layer", layer="ProposalLayer",
                            param_str="'feat_stride': 16, 'scales': [2, 4, 8], 'ratios': [0.5, 1, 2]"),
                ins=[(1, 18, 9, 12), (1, 36, 9, 12), (1, 3)], n_tops=2, data=_data(9, 16, ties=True)),
    )

    # ------------------------------------------------------------------ parameters
    def note(self, p):
        return (f"SSH ProposalLayer: TEST config N_DETS_PER_MODULE {p.n_dets_per_module}, "
                f"ANCHOR_MIN_SIZE {p.anchor_min_size:g} (SSH/configs/default_config.yml; another "
                "SSH config: protogen.layers.ssh.with_test_cfg); no NMS inside the net "
                "(SSH/test.py applies it to the outputs)")

    def config(self, p):
        d = parse_param_str(p.param_str)
        return (int(d["feat_stride"]), int(d.get("base_size", 16)), tuple(d.get("ratios", (0.5, 1, 2))),
                tuple(d.get("scales", (8, 16, 32))))

    def anchors(self, p):
        _, base, ratios, scales = self.config(p)
        return anchors_py(base, ratios, scales)

    def opencv_limit(self, p):
        return ("cannot run Python layers: its Caffe importer refuses SSH's ProposalLayer "
                "(\"Can't create layer ... of type Python\")")

    # ------------------------------------------------------------------ shapes
    def shapes(self, p, ins):
        s, d, info = ins
        require_rank([s, d], 4, "SSH ProposalLayer")
        a = self.anchors(p).shape[0]
        if s[1] != 2 * a or d[1] != 4 * a or s[2:] != d[2:] or s[0] != d[0]:
            raise ShapeError(f"SSH ProposalLayer: scores {s} and deltas {d} do not fit {a} anchors "
                             f"(2 x {a} and 4 x {a} channels, one map size)")
        n_info = 1
        for v in info[1:]:
            n_info *= v
        if n_info < 3:
            raise ShapeError(f"SSH ProposalLayer: im_info needs 3 values per image, got {info}")
        k = s[2] * s[3] * a
        n = p.n_dets_per_module
        r = s[0] * (min(k, n) if n > 0 else k)
        return [(r, 5), (r, 1)]

    def output_shapes(self, p, ins, n_tops):
        return self.shapes(p, ins)[:n_tops]

    # ------------------------------------------------------------------ backends
    def _args(self, p):
        return self.config(p)[0], int(p.n_dets_per_module), float(p.anchor_min_size)

    def to_onnx(self, ctx, step):
        p = step.layer.params
        fs, n_dets, min_size = self._args(p)
        _onnx(ctx, step, self.anchors(p), fs, n_dets, min_size)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        from .rcnn import _checked
        from .ssh_torch import ssh_proposal
        out = _checked(ssh_proposal, xs[0], xs[1], xs[2], torch.from_numpy(self.anchors(p)), *self._args(p))
        return list(out[:n_tops])

    def torch_source(self, p, src, step):
        from .ssh_torch import emit
        fn = emit(src, "ssh_proposal")
        rows = ", ".join("[" + ", ".join(repr(float(v)) for v in r) + "]" for r in self.anchors(p))
        anc = src.constant("anchors", f"torch.tensor([{rows}])", "SSH anchors (x1, y1, x2, y2)")
        fs, n_dets, min_size = self._args(p)
        call = f"{fn}({src.x(0)}, {src.x(1)}, {src.x(2)}, {anc}, {fs}, {n_dets}, {min_size!r})"
        src.assign(call if len(step.outputs) > 1 else call + "[0]", comment=True)


def _onnx(ctx, step, anchors, feat_stride: int, n_dets: int, min_size: float):
    """The TEST forward in standard ONNX ops (as ssh_torch.ssh_proposal): the overflow rule,
    decode and clip, the min-size filter (Compress), TopK (ties: lower index first), and the
    [0, 0, 0, 16, 16] row when nothing is left."""
    import numpy as np
    from .detect_onnx import column, flat, scalar, sort_desc
    s_in, d_in, i_in = (ctx.name(v) for v in step.inputs)
    a = anchors.shape[0]
    f32 = np.float32

    def c(hint, v):
        return ctx.const(hint, np.asarray(v, f32))
    fg = ctx.op("Slice", [s_in, ctx.ints("s", [0, a]), ctx.ints("e", [1, 2 * a]), ctx.ints("a", [0, 1])])
    fg = flat(ctx, ctx.op("Transpose", [fg], perm=[0, 2, 3, 1]))
    d = ctx.op("Slice", [d_in, ctx.ints("s", [0]), ctx.ints("e", [1]), ctx.ints("a", [0])])
    d = ctx.op("Reshape", [ctx.op("Transpose", [d], perm=[0, 2, 3, 1]), ctx.ints("k4", [-1, a, 4])])
    # shifted anchors in (h, w, anchor) order, for any map size
    hw = ctx.op("Shape", [s_in], start=2, end=4)
    fs = c("feat_stride", feat_stride)

    def grid(axis, shape):
        n = ctx.op("Squeeze", [ctx.op("Slice", [hw, ctx.ints("s", [axis]), ctx.ints("e", [axis + 1])]),
                               ctx.ints("ax", [0])])
        r = ctx.op("Range", [scalar(ctx, "zero", 0), n, scalar(ctx, "one", 1)])
        r = ctx.op("Mul", [ctx.op("Cast", [r], to=1), fs])
        return ctx.op("Expand", [ctx.op("Reshape", [r, ctx.ints("shape", shape)]), hw])
    sx, sy = grid(1, [1, -1]), grid(0, [-1, 1])
    parts = [ctx.op("Unsqueeze", [v, ctx.ints("ax", [2])]) for v in (sx, sy, sx, sy)]
    shift = ctx.op("Unsqueeze", [ctx.op("Concat", parts, axis=2), ctx.ints("ax", [2])])     # H, W, 1, 4
    anc = ctx.op("Reshape", [ctx.op("Add", [shift, ctx.const("anchors", anchors)]), ctx.ints("k4", [-1, 4])])
    # the overflow rule of SSH's bbox_transform_inv (ssh_torch.ssh_deltas): widths per anchor
    one, half, zero = c("one", 1.0), c("half", 0.5), c("zero", 0.0)
    base_w = c("base_w", (anchors[:, 2] - anchors[:, 0] + f32(1)).reshape(a, 1))
    base_h = c("base_h", (anchors[:, 3] - anchors[:, 1] + f32(1)).reshape(a, 1))
    dwh = ctx.op("Slice", [d, ctx.ints("s", [2]), ctx.ints("e", [4]), ctx.ints("a", [2])])      # K, A, 2
    size = ctx.op("Concat", [base_w, base_h], axis=1)                                          # A, 2
    finite = ctx.op("Not", [ctx.op("Or", [ctx.op("IsInf", [dwh]), ctx.op("IsNaN", [dwh])])])
    over = ctx.op("And", [finite, ctx.op("IsInf", [ctx.op("Mul", [ctx.op("Exp", [dwh]), size])])])
    any_over = ctx.op("ReduceSum", [flat(ctx, ctx.op("Cast", [over], to=1)), ctx.ints("ax", [0])], keepdims=1)
    fix = ctx.op("And", [ctx.op("Greater", [any_over, zero]), ctx.op("Greater", [dwh, c("fifty", 50.0)])])
    dwh = ctx.op("Where", [fix, c("five", 5.0), dwh])
    dxy = ctx.op("Slice", [d, ctx.ints("s", [0]), ctx.ints("e", [2]), ctx.ints("a", [2])])
    d = ctx.op("Reshape", [ctx.op("Concat", [dxy, dwh], axis=2), ctx.ints("k4", [-1, 4])])
    ax1, ay1, ax2, ay2 = (column(ctx, anc, j, f"a{j}") for j in range(4))
    dx, dy, dw, dh = (column(ctx, d, j, f"d{j}") for j in range(4))
    wid = ctx.op("Add", [ctx.op("Sub", [ax2, ax1]), one])
    hei = ctx.op("Add", [ctx.op("Sub", [ay2, ay1]), one])
    cx = ctx.op("Add", [ax1, ctx.op("Mul", [half, wid])])
    cy = ctx.op("Add", [ay1, ctx.op("Mul", [half, hei])])
    pcx = ctx.op("Add", [ctx.op("Mul", [dx, wid]), cx])
    pcy = ctx.op("Add", [ctx.op("Mul", [dy, hei]), cy])
    pw = ctx.op("Mul", [ctx.op("Exp", [dw]), wid])
    ph = ctx.op("Mul", [ctx.op("Exp", [dh]), hei])
    info = flat(ctx, i_in)

    def info_at(j):
        return ctx.op("Gather", [info, scalar(ctx, f"i{j}", j)], axis=0)
    xmax = ctx.op("Sub", [info_at(1), one])
    ymax = ctx.op("Sub", [info_at(0), one])

    def clip(v, top):
        return ctx.op("Max", [ctx.op("Min", [v, top]), zero])
    x1 = clip(ctx.op("Sub", [pcx, ctx.op("Mul", [half, pw])]), xmax)
    y1 = clip(ctx.op("Sub", [pcy, ctx.op("Mul", [half, ph])]), ymax)
    x2 = clip(ctx.op("Add", [pcx, ctx.op("Mul", [half, pw])]), xmax)
    y2 = clip(ctx.op("Add", [pcy, ctx.op("Mul", [half, ph])]), ymax)
    boxes = ctx.op("Concat", [x1, y1, x2, y2], axis=1)
    bw = flat(ctx, ctx.op("Add", [ctx.op("Sub", [x2, x1]), one]))
    bh = flat(ctx, ctx.op("Add", [ctx.op("Sub", [y2, y1]), one]))
    m = ctx.op("Mul", [c("min_size", min_size), info_at(2)])
    ok = ctx.op("And", [ctx.op("GreaterOrEqual", [bw, m]), ctx.op("GreaterOrEqual", [bh, m])])
    boxes = ctx.op("Compress", [boxes, ok], axis=0)
    fg = ctx.op("Compress", [fg, ok], axis=0)
    order = sort_desc(ctx, fg, n_dets if n_dets > 0 else None)
    boxes = ctx.op("Gather", [boxes, order], axis=0)
    fg = ctx.op("Gather", [fg, order], axis=0)
    ids = ctx.op("Mul", [column(ctx, boxes, 0, "b0"), zero])
    rows = ctx.op("Concat", [ids, boxes], axis=1)
    # nothing left: the one row [0, 0, 0, 16, 16]
    both = ctx.op("Concat", [rows, c("empty_row", [[0, 0, 0, 16, 16]])], axis=0)
    r = ctx.op("Shape", [rows], start=0, end=1)
    empty = ctx.op("Cast", [ctx.op("Equal", [r, ctx.ints("zero_v", [0])])], to=7)
    ctx.op("Slice", [both, ctx.ints("start0", [0]), ctx.op("Add", [r, empty]), ctx.ints("axis0", [0])],
           step.outputs[0])
    if len(step.outputs) > 1:
        ctx.op("Reshape", [fg, ctx.ints("shape", [-1, 1])], step.outputs[1])
