"""The import context: the state of one ONNX -> IR import and the helpers every op
converter shares (names, constants, shapes, emitting layers, in-place decisions)."""
from __future__ import annotations

import re

import numpy as np

from ..errors import ProtogenError
from ..ir import BOTH_NETS, Layer
from .registry import Refuse, attr_values, converter_for

SAFE = re.compile(r"[^A-Za-z0-9_./:+\-]")


def opset_of(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


class ImportContext:
    """One import: the ONNX graph, the constants and shapes found so far, and the IR layers
    emitted so far. Op converters read and extend it through the methods below."""

    def __init__(self, model, dialect, input_shapes, file):
        from onnx import numpy_helper
        self.model = model
        self.g = model.graph
        self.dialect = dialect
        self.file = file
        self.opset = opset_of(model)
        self.nodes = list(self.g.node)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.inputs = [i for i in self.g.input if i.name not in self.consts]
        self.outputs = [o.name for o in self.g.output]
        if input_shapes is not None and not isinstance(input_shapes, dict):
            if len(self.inputs) != 1:
                raise ProtogenError(f"the model has {len(self.inputs)} inputs: give input_shapes as "
                                    "{name: shape}", file=file)
            input_shapes = {None: tuple(input_shapes)}
        self.input_shapes = dict(input_shapes or {})
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.producer = {t: i for i, n in enumerate(self.nodes) for t in n.output if t}
        # conversion state
        self.shape: dict[str, tuple] = {}          # ONNX tensor -> shape
        self.blob: dict[str, str] = {}             # ONNX tensor -> IR blob
        self.blob_shape: dict[str, tuple] = {}     # IR blob -> shape
        self.graph_inputs: set[str] = set()
        self.layers: list[Layer] = []
        self.layer_names: set[str] = set()
        self.blob_names: set[str] = set()
        self.skip: set[int] = set()                 # nodes already converted with another
        self.pad_fold: dict[str, tuple] = {}       # Pad output -> (input tensor, pads, value)
        self.flattened: dict[str, str] = {}        # Flatten output -> input (read by a Gemm)
        self.scaled: dict[str, tuple] = {}          # Mul output -> (input, scalar) for Eltwise coeff
        self.bare_scale = None                      # the last Scale made from x * constant block

    # ------------------------------------------------------------------ registry
    def converter(self, n):
        """The registered converter of node ``n`` (None for an unknown op)."""
        return converter_for(n.op_type)

    def role(self, n, flag: str) -> bool:
        """Whether node ``n``'s converter declares ``flag`` (e.g. ``folds_pad``)."""
        c = self.converter(n)
        return bool(c is not None and getattr(c, flag))

    def users(self, t: str) -> list[int]:
        return self.consumers.get(t, [])

    def sole_user(self, t: str):
        """(index, node) of the one node reading ``t`` when ``t`` is not a graph output."""
        users = self.users(t)
        if len(users) != 1 or t in self.outputs:
            return None
        return users[0], self.nodes[users[0]]

    # ------------------------------------------------------------------ names
    @staticmethod
    def unique(base: str, used: set) -> str:
        name = SAFE.sub("_", base) or "x"
        cand, k = name, 1
        while cand in used:
            cand = f"{name}_{k}"
            k += 1
        used.add(cand)
        return cand

    def node_name(self, i: int) -> str:
        n = self.nodes[i]
        return n.name or f"{n.op_type}_{i}"

    def new_layer_name(self, base: str) -> str:
        return self.unique(base, self.layer_names)

    def new_blob(self, tensor: str) -> str:
        # protogen's own exports name earlier versions of an in-place blob ``blob@k``: the
        # Caffe blob is ``blob`` (in-place layers then keep writing it)
        base = re.sub(r"@\d+$", "", tensor) or tensor
        return self.unique(base, self.blob_names)

    # ------------------------------------------------------------------ constants
    def fold(self, n) -> None:
        """Evaluate node ``n`` with numpy (its converter's :meth:`fold`)."""
        ins = [self.consts.get(t) if t else None for t in n.input]
        outs = self.converter(n).fold(self, n, attr_values(n), ins)
        for t, v in zip(n.output, outs):
            if t:
                self.consts[t] = np.asarray(v)

    def is_const(self, t: str) -> bool:
        return t in self.consts

    def try_const(self, t: str, depth: int = 0) -> bool:
        """Evaluate ``t`` ahead of node order when it is a constant expression (exporters
        often place a Reshape's shape computation after nodes that come before it)."""
        if t in self.consts:
            return True
        p = self.producer.get(t)
        if p is None or depth > 50:
            return False
        n = self.nodes[p]
        c = self.converter(n)
        if c is None or not (c.foldable or c.always_fold):
            return False
        for x in n.input:
            if not x:
                continue
            if c.shape_only:
                if x not in self.shape and x not in self.consts:
                    return False
            elif not self.try_const(x, depth + 1):
                return False
        try:
            self.fold(n)
        except Exception:   # noqa: BLE001 - not foldable after all
            return False
        return t in self.consts

    def shape_of(self, t: str) -> tuple:
        if t in self.consts:
            return tuple(self.consts[t].shape)
        return self.shape[t]

    def const(self, t: str, what: str) -> np.ndarray:
        if not t or t not in self.consts:
            raise Refuse(f"{what} must be constant")
        return self.consts[t]

    def nonneg(self, t: str) -> bool:
        """Whether tensor ``t`` is known to be >= 0 (from its producer's converter)."""
        p = self.producer.get(t)
        if p is None:
            return False
        c = self.converter(self.nodes[p])
        return c is not None and c.nonneg(self, self.nodes[p])

    # ------------------------------------------------------------------ emitting layers
    def add_layer(self, name: str, type_: str, bottoms: list[str], tops: list[str], params,
                  blobs=None) -> list[tuple]:
        """Append a layer on IR blob names; returns its output shapes."""
        from ..layers import get_type
        kind = get_type(type_)
        ins = [self.blob_shape[b] for b in bottoms]
        try:
            kind.validate(params)
            outs = [tuple(int(d) for d in s) for s in kind.output_shapes(params, ins, len(tops))]
            wshapes = kind.weight_shapes(params, ins)
        except ProtogenError as e:
            raise Refuse(e.message) from None
        if blobs is not None:
            blobs = [np.ascontiguousarray(b, np.float32) for b in blobs]
            got = [tuple(b.shape) for b in blobs]
            if got != [tuple(s) for s in wshapes]:
                raise Refuse(f"internal: {type_} weight shapes {got} != expected {wshapes}")
        self.layers.append(Layer(name=name, type=type_, bottoms=list(bottoms), tops=list(tops),
                                 params=params, nets=BOTH_NETS, blobs=blobs))
        for t, s in zip(tops, outs):
            self.blob_shape[t] = s
        return outs

    def emit(self, i: int, type_: str, params, blobs=None, x: str | None = None,
             inplace_ok: bool = False) -> None:
        """The common case: node ``i`` becomes one layer of ``type_`` reading its first input
        (or ``x``) and writing its first output."""
        n = self.nodes[i]
        x = n.input[0] if x is None else x
        out = self.out_blob(i, x, inplace_ok=inplace_ok)
        self.add_layer(self.new_layer_name(self.node_name(i)), type_, [self.bottom(x)], [out], params, blobs)
        self.set_out(n.output[0], out)

    def out_blob(self, i: int, in_tensor: str | None = None, k: int = 0, inplace_ok: bool = False) -> str:
        """The IR blob for output ``k`` of node ``i``; in place on ``in_tensor`` when allowed."""
        n = self.nodes[i]
        t = n.output[k]
        if inplace_ok and in_tensor is not None and self.can_inplace(in_tensor, t):
            b = self.blob[in_tensor]
        else:
            b = self.new_blob(t)
        self.blob[t] = b
        return b

    def can_inplace(self, in_tensor: str, out_tensor: str) -> bool:
        return (len(self.consumers.get(in_tensor, [])) == 1 and in_tensor not in self.outputs
                and out_tensor not in self.outputs and in_tensor not in self.graph_inputs
                and in_tensor in self.blob)

    def set_out(self, t: str, blob: str) -> None:
        self.blob[t] = blob
        self.shape[t] = self.blob_shape[blob]

    def bottom(self, t: str) -> str:
        if t not in self.blob:
            raise Refuse(f"input '{t}' is a constant where an activation is expected")
        return self.blob[t]

    # ------------------------------------------------------------------ padding helpers
    def spatial_pads(self, a, shape, kernel, strides, dilations, transpose=False):
        """(begin_h, begin_w, end_h, end_w) from pads / auto_pad."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = list(a.get("pads", [0, 0, 0, 0]))
            return pads[0], pads[1], pads[2], pads[3]
        if auto == "VALID":
            return 0, 0, 0, 0
        if transpose:
            raise Refuse(f"auto_pad {auto} is not supported for ConvTranspose")
        res_b, res_e = [], []
        for size, k, s, d in zip(shape[2:], kernel, strides, dilations):
            ek = d * (k - 1) + 1
            out = -(-size // s)
            total = max((out - 1) * s + ek - size, 0)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if auto == "SAME_UPPER" else (big, small)
            res_b.append(b)
            res_e.append(e)
        return res_b[0], res_b[1], res_e[0], res_e[1]

    def take_pad(self, t: str):
        """(real input tensor, (qb_h, qb_w, qe_h, qe_w), pad value) for a folded Pad."""
        if t not in self.pad_fold:
            return t, (0, 0, 0, 0), 0.0
        return self.pad_fold[t]
