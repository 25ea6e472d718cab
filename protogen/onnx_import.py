"""ONNX -> IR import (a raising into Caffe semantics), and ONNX -> Caffe files.

``load_onnx(path_or_model)`` turns an ONNX graph made of operations that the layer registry
can express into an IR :class:`~protogen.ir.Graph` whose layers carry their weights in
``layer.blobs``. ``onnx_to_caffe(onnx_path, prototxt_path)`` writes the deploy prototxt and
the caffemodel beside it.

How it works
------------
1. **Check first.** Every node is checked before anything is converted: unknown operations,
   unknown or unsupported attributes, and what can be decided from the graph structure
   alone (a ``Pad`` with nothing to fold into, a used ``MaxPool`` indices output, training
   mode BatchNorm, ...). Everything found is raised at once as one
   :class:`~protogen.errors.UnsupportedError` naming each node and op.
2. **Constants.** Initializers, ``Constant`` nodes and every node whose inputs are all
   constant (shape arithmetic such as ``Shape -> Gather -> Concat -> Reshape`` that exporters
   emit) are evaluated with numpy; shapes are static (a dynamic batch dimension becomes 1).
3. **Convert.** Each remaining node becomes one or a few IR layers; shape-dependent
   refusals (asymmetric conv pads Caffe cannot express, pooling windows or divisors that
   Caffe's pooling rule cannot reproduce) are collected and raised together.

Mappings (see docs/onnx-import.md): Conv/ConvTranspose -> Convolution/Deconvolution (a
preceding zero ``Pad`` is folded into the pad); Gemm, MatMul(+Add) -> InnerProduct;
BatchNormalization -> BatchNorm (blobs mean, var, factor 1) + Scale (gamma, beta);
MaxPool/AveragePool -> Pooling with pad and round mode chosen so that Caffe's output size,
windows and average divisor are exactly ONNX's (or refused); Global*Pool -> global Pooling;
Relu/LeakyRelu/PRelu/Sigmoid/Tanh/Clip -> ReLU/PReLU/Sigmoid/TanH/ReLU6/Clip;
Add/Sub/Mul/Max/Sum -> Eltwise (x*scalar terms of a sum -> coeff), or Scale/Power with a
broadcast constant (x*g+b as one Scale with bias_term; also Div by a constant); Concat;
Split/Slice -> Slice; Reshape/Flatten/Squeeze/Unsqueeze -> Reshape/Flatten;
Transpose -> Permute; Reshape (N,g,C/g,...) -> Transpose(0,2,1,...) -> Reshape -> ShuffleChannel;
Softmax; LRN; Dropout/Identity dropped.

Names: layers take the node names and blobs the tensor names, changed only where Caffe or
the IR cannot use them (empty names, characters outside ``[A-Za-z0-9_./:+-]``, ``@`` which
the IR reserves, clashes). Element-wise layers run in place (Caffe style) when their input
has no other reader and neither tensor is a graph input or output.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .dialect import DEFAULT, Dialect
from .errors import ProtogenError, UnsupportedError
from .ir import BOTH_NETS, DEPLOY, Graph, Layer

__all__ = ["load_onnx", "onnx_to_caffe", "SUPPORTED_OPS"]

# ops evaluated with numpy when all their inputs are constants
_FOLDABLE = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice",
             "Reshape", "Identity", "Transpose", "Mul", "Add", "Sub", "Div", "Neg", "Sqrt",
             "Flatten", "ConstantOfShape", "Floor", "Ceil", "Range", "Expand", "Equal", "Where",
             "ReduceProd", "Pow", "Size"}

# op -> the attributes its conversion understands (anything else is reported)
_ATTRS = {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "ConvTranspose": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides",
                      "output_padding", "output_shape"},
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "MatMul": set(),
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial"},
    "MaxPool": {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides",
                "storage_order"},
    "AveragePool": {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape",
                    "pads", "strides"},
    "GlobalAveragePool": set(), "GlobalMaxPool": set(),
    "Relu": set(), "LeakyRelu": {"alpha"}, "PRelu": set(), "Sigmoid": set(), "Tanh": set(),
    "Clip": {"min", "max"},
    "Add": set(), "Mul": set(), "Max": set(), "Sum": set(), "Sub": set(), "Div": set(),
    "Concat": {"axis"}, "Split": {"axis", "split", "num_outputs"},
    "Slice": {"starts", "ends", "axes"},
    "Reshape": {"allowzero"}, "Flatten": {"axis"}, "Squeeze": {"axes"}, "Unsqueeze": {"axes"},
    "Transpose": {"perm"}, "Softmax": {"axis"}, "LRN": {"alpha", "beta", "bias", "size"},
    "Dropout": {"ratio", "seed"}, "Identity": set(), "Pad": {"mode", "pads", "value"},
    "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
}

#: the ONNX operations that can become layers
SUPPORTED_OPS = tuple(sorted(_ATTRS))

_SAFE = re.compile(r"[^A-Za-z0-9_./:+\-]")
_NONNEG_OPS = {"Relu", "Sigmoid"}


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


class _Refuse(Exception):
    """A shape-dependent problem with one node (collected, then raised together)."""


# --------------------------------------------------------------------------- pooling maths
def _onnx_pool_out(size: int, k: int, s: int, pb: int, pe: int, ceil: bool) -> int:
    num = size + pb + pe - k
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _caffe_pool_out(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    from .layers.pool import pooled_size
    return pooled_size(size, k, p, s, ceil)


def _match_pool_axis(size, k, s, pool_pads, pre_pads, ceil, ave, include_pad):
    """Caffe (pad, ceil) reproducing one ONNX pooling axis, or a reason string.

    ``size`` is the real input size; ``pre_pads`` a folded constant Pad's (begin, end) whose
    values count as data for the pool; ``pool_pads`` the pool's own pads. Windows start at
    ``i*s - pb - qb`` in both; the ONNX divisor (AVE) clips each window to the padded extent
    (count_include_pad=1) or to the data plus the Pad node's values (0); Caffe's divisor
    clips it to ``size + pad``.
    """
    pb, pe = pool_pads
    qb, qe = pre_pads
    out = _onnx_pool_out(size + qb + qe, k, s, pb, pe, ceil)
    p = pb + qb
    if out <= 0:
        return "the pooling window is larger than the padded input"
    if p >= k:
        return f"begin padding {p} is not smaller than the kernel {k} (Caffe requires pad < kernel)"
    starts = [i * s - p for i in range(out)]
    if starts[-1] >= size:
        return "the last window lies entirely in padding (Caffe would pool an empty window)"
    if ave:
        if include_pad:
            onnx_div = [min(a + k, size + qe + pe) - a for a in starts]
        else:
            onnx_div = [min(a + k, size + qe) - max(a, -qb) for a in starts]
        caffe_div = [min(a + k, size + p) - a for a in starts]
    for c in ((True, False) if ceil else (False, True)):
        if _caffe_pool_out(size, k, s, p, c) != out:
            continue
        if ave and onnx_div != caffe_div:
            return (f"Caffe's average divisor {caffe_div} (it counts padding up to size+pad) "
                    f"differs from ONNX's {onnx_div}")
        return p, c
    return (f"no Caffe pad/round_mode gives ONNX's {out} windows (input {size}, kernel {k}, "
            f"stride {s}, pads {p},{pe + qe})")


# --------------------------------------------------------------------------- importer
class _Importer:
    def __init__(self, model, dialect: Dialect, input_shapes: dict | None, file: str | None):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.nh = onnx, numpy_helper
        self.model = model
        self.g = model.graph
        self.dialect = dialect
        self.file = file
        self.opset = _opset(model)
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
        self.shape: dict[str, tuple] = {}
        self.blob: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.layer_names: set[str] = set()
        self.blob_names: set[str] = set()
        self.skip: set[int] = set()
        self.pad_fold: dict[str, tuple] = {}       # Pad output -> (input tensor, pads, value)
        self.flattened: dict[str, str] = {}        # Flatten output -> input (read by a Gemm)
        self.scaled: dict[str, tuple] = {}          # Mul output -> (input, scalar) for Eltwise coeff

    # ------------------------------------------------------------------ names
    def _unique(self, base: str, used: set) -> str:
        name = _SAFE.sub("_", base) or "x"
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
        return self._unique(base, self.layer_names)

    def new_blob(self, tensor: str) -> str:
        # protogen's own exports name earlier versions of an in-place blob ``blob@k``: the
        # Caffe blob is ``blob`` (in-place layers then keep writing it)
        base = re.sub(r"@\d+$", "", tensor) or tensor
        return self._unique(base, self.blob_names)

    # ------------------------------------------------------------------ static check
    def static_problems(self) -> list[tuple[str, str, str]]:
        probs = []
        const = set(self.consts)
        for i, n in enumerate(self.nodes):
            name, op = self.node_name(i), n.op_type
            if n.domain not in ("", "ai.onnx"):
                probs.append((name, op, f"operator domain '{n.domain}' is not supported"))
                continue
            ins = [t for t in n.input if t]
            if op == "Constant" or (op in _FOLDABLE and (op in ("Shape", "Size") or all(t in const for t in ins))):
                const.update(t for t in n.output if t)
                continue
            if op not in _ATTRS:
                probs.append((name, op, f"operator {op} has no Caffe layer equivalent"))
                continue
            a = _attrs(n)
            for k in a:
                if k not in _ATTRS[op]:
                    probs.append((name, op, f"attribute '{k}' is not supported"))
            probs.extend((name, op, m) for m in self._static_node_problems(i, n, a, const))
        return probs

    def _static_node_problems(self, i, n, a, const) -> list[str]:
        op = n.op_type
        bad = []
        if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
            ks = a.get("kernel_shape")
            if ks is not None and len(ks) != 2:
                bad.append(f"only 2-D {op} is supported (kernel_shape {list(ks)})")
            if op in ("Conv", "ConvTranspose") and (len(n.input) < 2 or n.input[1] not in const):
                bad.append("the weights must be constant (an initializer)")
            if op in ("MaxPool", "AveragePool") and any(d != 1 for d in a.get("dilations", [])):
                bad.append("pooling dilation is not supported by Caffe")
            if op == "MaxPool" and len(n.output) > 1 and n.output[1] and (
                    n.output[1] in self.consumers or n.output[1] in self.outputs):
                bad.append("the Indices output is not supported")
            if op == "ConvTranspose" and any(a.get("output_padding", [])):
                bad.append("output_padding is not expressible in Caffe's Deconvolution")
        elif op == "Gemm":
            if a.get("transA", 0):
                bad.append("transA=1 is not supported")
            if len(n.input) < 2 or n.input[1] not in const:
                bad.append("the B input must be constant (an initializer)")
            if len(n.input) > 2 and n.input[2] and n.input[2] not in const:
                bad.append("the C input must be constant")
        elif op == "MatMul":
            if n.input[1] not in const:
                bad.append("MatMul of two activations has no Caffe layer (B must be constant)")
        elif op == "BatchNormalization":
            if a.get("training_mode", 0):
                bad.append("training_mode=1 is not supported (inference only)")
            if any(t not in const for t in n.input[1:5]):
                bad.append("scale, bias, mean and variance must be constant")
            if any(o for o in n.output[1:]):
                bad.append("running mean/variance outputs are not supported")
        elif op == "PRelu":
            if n.input[1] not in const:
                bad.append("the slope must be constant")
        elif op == "Clip":
            if any(t and t not in const for t in n.input[1:]):
                bad.append("min/max must be constant")
        elif op == "LRN":
            if int(a.get("size", 1)) % 2 == 0:
                bad.append(f"even LRN size {a.get('size')} (Caffe needs an odd local_size)")
        elif op == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode != "constant":
                bad.append(f"Pad mode '{mode}' has no Caffe equivalent")
            if any(t and t not in const for t in n.input[1:]):
                bad.append("pads and value must be constant")
            users = self.consumers.get(n.output[0], [])
            if (len(users) != 1 or n.output[0] in self.outputs
                    or self.nodes[users[0]].op_type not in ("Conv", "MaxPool", "AveragePool")
                    or self.nodes[users[0]].input[0] != n.output[0]):
                bad.append("a Pad is only supported when folded into the one Conv/MaxPool/AveragePool "
                           "that reads it (Caffe has no Pad layer)")
        elif op in ("Slice",):
            if any(t and t not in const for t in n.input[1:]):
                bad.append("starts/ends/axes/steps must be constant")
        elif op in ("Reshape",):
            if n.input[1] not in const:
                bad.append("the target shape must be constant")
        elif op == "Transpose" and self.dialect.name == "bvlc" and not self._is_shuffle_transpose(i):
            bad.append("Transpose needs the Permute layer, which the bvlc dialect lacks")
        elif op == "Softmax" and self.opset < 13:
            pass  # decided on shapes
        elif op == "Dropout" and len(n.input) > 2 and n.input[2]:
            t = n.input[2]
            if t not in const or bool(np.asarray(self.consts.get(t, False)).reshape(-1)[0]):
                bad.append("training_mode must be a constant false")
        return bad

    def _is_shuffle_transpose(self, i) -> bool:
        n = self.nodes[i]
        perm = list(_attrs(n).get("perm", []))
        if len(perm) < 3 or perm != _swap12(len(perm)):
            return False
        p = self.producer.get(n.input[0])
        users = self.consumers.get(n.output[0], [])
        return (p is not None and self.nodes[p].op_type == "Reshape" and len(users) == 1
                and self.nodes[users[0]].op_type == "Reshape")

    # ------------------------------------------------------------------ constants
    def fold(self, n) -> None:
        op = n.op_type
        a = _attrs(n)
        c = self.consts
        ins = [c.get(t) if t else None for t in n.input]
        outs = None
        if op == "Constant":
            if "value" in a:
                v = self.nh.to_array(a["value"])
            elif "value_float" in a:
                v = np.array(a["value_float"], np.float32)
            elif "value_floats" in a:
                v = np.array(a["value_floats"], np.float32)
            elif "value_int" in a:
                v = np.array(a["value_int"], np.int64)
            else:
                v = np.array(a["value_ints"], np.int64)
            outs = [v]
        elif op == "Shape":
            s = np.array(self.shape_of(n.input[0]), np.int64)
            start, end = a.get("start", 0), a.get("end", None)
            outs = [s[start:end]]
        elif op == "Size":
            outs = [np.array(int(np.prod(self.shape_of(n.input[0]))), np.int64)]
        elif op == "Gather":
            outs = [np.take(ins[0], ins[1], axis=a.get("axis", 0))]
        elif op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes") if "axes" in a else (ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None)
            x = ins[0]
            if op == "Unsqueeze":
                r = x.ndim + len(axes)
                for ax in sorted(ax % r for ax in axes):
                    x = np.expand_dims(x, ax)
            else:
                x = np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes) if axes is not None else None)
            outs = [x]
        elif op == "Concat":
            outs = [np.concatenate([np.atleast_1d(x) for x in ins], axis=a.get("axis", 0))]
        elif op == "Cast":
            from onnx import helper
            outs = [ins[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))]
        elif op == "Slice":
            outs = [self._np_slice(ins, a)]
        elif op == "Reshape":
            outs = [ins[0].reshape(_onnx_reshape(ins[0].shape, ins[1], a.get("allowzero", 0)))]
        elif op == "Identity":
            outs = [ins[0]]
        elif op == "Transpose":
            outs = [np.transpose(ins[0], a.get("perm"))]
        elif op == "Flatten":
            ax = a.get("axis", 1) % max(ins[0].ndim, 1)
            outs = [ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)]
        elif op == "ConstantOfShape":
            v = self.nh.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            outs = [np.full(tuple(int(d) for d in ins[0]), v.reshape(-1)[0], v.dtype)]
        elif op == "Range":
            outs = [np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)]
        elif op == "Expand":
            outs = [ins[0] * np.ones(tuple(int(d) for d in ins[1]), ins[0].dtype)]
        elif op == "Where":
            outs = [np.where(ins[0], ins[1], ins[2])]
        elif op == "ReduceProd":
            outs = [np.prod(ins[0], keepdims=bool(a.get("keepdims", 1))).astype(ins[0].dtype)]
        else:
            f = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Pow": np.power,
                 "Equal": np.equal, "Neg": np.negative, "Sqrt": np.sqrt, "Floor": np.floor,
                 "Ceil": np.ceil}.get(op)
            if op == "Div":
                x, y = ins
                outs = [x // y if np.issubdtype(x.dtype, np.integer) else (x / y).astype(x.dtype)]
            else:
                r = f(*ins)
                outs = [np.asarray(r).astype(ins[0].dtype) if op not in ("Equal",) else np.asarray(r)]
        for t, v in zip(n.output, outs):
            if t:
                c[t] = np.asarray(v)

    @staticmethod
    def _np_slice(ins, a):
        x = ins[0]
        if "starts" in a:
            starts, ends = a["starts"], a["ends"]
            axes = a.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts, ends = ins[1].tolist(), ins[2].tolist()
            axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
            steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax % x.ndim] = slice(int(s), int(e), int(st))
        return x[tuple(sl)]

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
        if n.op_type not in _FOLDABLE:
            return False
        for x in n.input:
            if not x:
                continue
            if n.op_type in ("Shape", "Size"):
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

    # ------------------------------------------------------------------ emitting layers
    def add_layer(self, name: str, type_: str, bottoms: list[str], tops: list[str], params,
                  blobs=None) -> list[tuple]:
        """Append a layer on IR blob names; returns its output shapes."""
        from .layers import get_type
        kind = get_type(type_)
        ins = [self.blob_shape[b] for b in bottoms]
        try:
            kind.validate(params)
            outs = [tuple(int(d) for d in s) for s in kind.output_shapes(params, ins, len(tops))]
            wshapes = kind.weight_shapes(params, ins)
        except ProtogenError as e:
            raise _Refuse(e.message) from None
        if blobs is not None:
            blobs = [np.ascontiguousarray(b, np.float32) for b in blobs]
            got = [tuple(b.shape) for b in blobs]
            if got != [tuple(s) for s in wshapes]:
                raise _Refuse(f"internal: {type_} weight shapes {got} != expected {wshapes}")
        self.layers.append(Layer(name=name, type=type_, bottoms=list(bottoms), tops=list(tops),
                                 params=params, nets=BOTH_NETS, blobs=blobs))
        for t, s in zip(tops, outs):
            self.blob_shape[t] = s
        return outs

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

    # ------------------------------------------------------------------ main
    def run(self) -> Graph:
        from .layers.io import InputParams
        probs = self.static_problems()
        if probs:
            raise UnsupportedError(probs, file=self.file)
        self.blob_shape: dict[str, tuple] = {}
        self.graph_inputs = set()
        for inp in self.inputs:
            shape = self._input_shape(inp)
            b = self.new_blob(inp.name)
            self.graph_inputs.add(inp.name)
            name = self.new_layer_name(inp.name)
            self.add_layer(name, "Input", [], [b], InputParams(shape=(shape,)))
            self.set_out(inp.name, b)
        problems = []
        for i, n in enumerate(self.nodes):
            if i in self.skip:
                continue
            ins = [t for t in n.input if t]
            if n.op_type == "Constant" or (n.op_type in _FOLDABLE and all(
                    self.is_const(t) or (n.op_type in ("Shape", "Size") and t in self.shape) for t in ins)):
                try:
                    self.fold(n)
                except Exception as e:   # noqa: BLE001 - report, don't crash
                    problems.append((self.node_name(i), n.op_type, f"cannot evaluate constant: {e}"))
                continue
            if any(t not in self.blob and t not in self.pad_fold and not self.is_const(t) for t in ins):
                # an input failed to convert; its problem is already listed
                continue
            try:
                getattr(self, f"op_{n.op_type}")(i, n, _attrs(n))
            except _Refuse as e:
                problems.append((self.node_name(i), n.op_type, str(e)))
                for t in n.output:      # a refused node has no outputs: its consumers are skipped
                    self.blob.pop(t, None)
        if problems:
            raise UnsupportedError(problems, file=self.file)
        missing = [o for o in self.outputs if o not in self.blob]
        if missing:
            raise ProtogenError(f"graph outputs {missing} are constants or not produced by any layer",
                                file=self.file)
        g = Graph(_SAFE.sub("_", self.g.name) or "net", self.layers)
        g.check(self.file)
        return g

    def _input_shape(self, inp) -> tuple:
        if inp.name in self.input_shapes:
            return tuple(int(d) for d in self.input_shapes[inp.name])
        if None in self.input_shapes:          # one shape given for the only input
            return tuple(int(d) for d in self.input_shapes[None])
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            raise ProtogenError(f"input '{inp.name}' has no shape; give the input shape "
                                "(--input-shape N,C,H,W, or input_shapes= in Python)", file=self.file)
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(1)      # dynamic batch -> 1
            else:
                raise ProtogenError(f"input '{inp.name}' has a dynamic dimension {k} "
                                    f"('{d.dim_param}'); give the input shape (--input-shape N,C,H,W, "
                                    "or input_shapes= in Python)", file=self.file)
        return tuple(dims)

    # ------------------------------------------------------------------ helpers for ops
    def bottom(self, t: str) -> str:
        if t not in self.blob:
            raise _Refuse(f"input '{t}' is a constant where an activation is expected")
        return self.blob[t]

    def const(self, t: str, what: str) -> np.ndarray:
        if not t or t not in self.consts:
            raise _Refuse(f"{what} must be constant")
        return self.consts[t]

    def _spatial_pads(self, n, a, shape, kernel, strides, dilations, transpose=False):
        """(begin_h, begin_w, end_h, end_w) from pads / auto_pad."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = list(a.get("pads", [0, 0, 0, 0]))
            return pads[0], pads[1], pads[2], pads[3]
        if auto == "VALID":
            return 0, 0, 0, 0
        if transpose:
            raise _Refuse(f"auto_pad {auto} is not supported for ConvTranspose")
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

    def _take_pad(self, t: str, conv: bool):
        """(real input tensor, (qb_h, qb_w, qe_h, qe_w), pad value) for a folded Pad."""
        if t not in self.pad_fold:
            return t, (0, 0, 0, 0), 0.0
        return self.pad_fold[t]

    # ------------------------------------------------------------------ ops
    def op_Pad(self, i, n, a):
        pads = list(a["pads"]) if "pads" in a else self.const(n.input[1], "pads").astype(int).tolist()
        if len(n.input) > 3 and n.input[3]:
            raise _Refuse("the axes input of Pad is not supported")
        value = float(a.get("value", 0.0))
        if len(n.input) > 2 and n.input[2]:
            value = float(np.asarray(self.const(n.input[2], "the pad value")).reshape(-1)[0])
        r = len(pads) // 2
        if r != 4 or pads[0] or pads[1] or pads[4] or pads[5]:
            raise _Refuse(f"only spatial padding of a 4-D tensor can be folded (pads {pads})")
        if min(pads) < 0:
            raise _Refuse("negative pads (cropping) are not supported")
        user = self.nodes[self.consumers[n.output[0]][0]]
        if user.op_type in ("Conv", "AveragePool") and value != 0.0:
            raise _Refuse(f"a Pad value {value} before {user.op_type} cannot be folded (only 0)")
        if user.op_type == "MaxPool" and not (value <= -3.0e38 or (value == 0.0 and self._nonneg(n.input[0]))):
            raise _Refuse(f"a Pad value {value} before MaxPool can be folded only when it is -inf, "
                          "or 0 on a non-negative input")
        self.pad_fold[n.output[0]] = (n.input[0], (pads[2], pads[3], pads[6], pads[7]), value)
        self.shape[n.output[0]] = tuple(d + pads[k] + pads[k + r] for k, d in enumerate(self.shape[n.input[0]]))

    def _nonneg(self, t: str) -> bool:
        p = self.producer.get(t)
        if p is None:
            return False
        n = self.nodes[p]
        if n.op_type in _NONNEG_OPS:
            return True
        if n.op_type == "Clip":
            lo = _attrs(n).get("min")
            if lo is None and len(n.input) > 1 and n.input[1] in self.consts:
                lo = float(np.asarray(self.consts[n.input[1]]).reshape(-1)[0])
            return lo is not None and lo >= 0
        if n.op_type in ("MaxPool", "Identity", "Dropout", "Pad"):
            return self._nonneg(n.input[0])
        return False

    def op_Conv(self, i, n, a, transpose=False):
        from .layers.conv import ConvParams
        x, q, _ = self._take_pad(n.input[0], True)
        shape = self.shape_of(x)
        if len(shape) != 4:
            raise _Refuse(f"only 4-D (N,C,H,W) input is supported, got {shape}")
        w = self.const(n.input[1], "the weights")
        kh, kw = a.get("kernel_shape", w.shape[2:])
        sh, sw = a.get("strides", [1, 1])
        dh, dw = a.get("dilations", [1, 1])
        group = int(a.get("group", 1))
        qshape = (shape[0], shape[1], shape[2] + q[0] + q[2], shape[3] + q[1] + q[3])
        bh, bw, eh, ew = self._spatial_pads(n, a, qshape, (kh, kw), (sh, sw), (dh, dw), transpose)
        pads = []
        if transpose:
            if q != (0, 0, 0, 0):
                raise _Refuse("a Pad before ConvTranspose cannot be folded")
            if "output_shape" in a:
                raise _Refuse("output_shape is not supported; give symmetric pads")
            if (bh, bw) != (eh, ew):
                raise _Refuse(f"asymmetric pads ({bh},{bw},{eh},{ew}) are not expressible in "
                              "Caffe's Deconvolution")
            pads = [bh, bw]
            cout = w.shape[1] * group
        else:
            for ax, (size, k, s, d, b, e, qb, qe) in enumerate(zip(shape[2:], (kh, kw), (sh, sw), (dh, dw),
                                                                   (bh, bw), (eh, ew), q[:2], q[2:])):
                b, e = b + qb, e + qe
                ek = d * (k - 1) + 1
                onnx_out = (size + b + e - ek) // s + 1
                caffe_out = (size + 2 * b - ek) // s + 1
                if b != e and onnx_out != caffe_out:
                    raise _Refuse(f"asymmetric padding ({b} before, {e} after) on axis {'hw'[ax]} changes "
                                  "the output size; Caffe's convolution pads symmetrically")
                pads.append(b)
            cout = w.shape[0]
        bias = None
        if len(n.input) > 2 and n.input[2]:
            bias = self.const(n.input[2], "the bias").reshape(-1)
        p = ConvParams(num_output=int(cout), kernel_h=int(kh), kernel_w=int(kw), stride_h=int(sh),
                       stride_w=int(sw), pad_h=int(pads[0]), pad_w=int(pads[1]), dilation_h=int(dh),
                       dilation_w=int(dw), group=group, bias_term=bias is not None)
        blobs = [w] + ([bias] if bias is not None else [])
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)),
                       "Deconvolution" if transpose else "Convolution", [self.bottom(x)], [out], p, blobs)
        self.set_out(n.output[0], out)

    def op_ConvTranspose(self, i, n, a):
        self.op_Conv(i, n, a, transpose=True)

    def _inner_product(self, i, x, w_nk, bias, out_tensor, axis):
        from .layers.conv import InnerProductParams
        p = InnerProductParams(num_output=int(w_nk.shape[0]), bias_term=bias is not None, axis=axis)
        blobs = [w_nk] + ([bias] if bias is not None else [])
        out = self.new_blob(out_tensor)
        self.add_layer(self.new_layer_name(self.node_name(i)), "InnerProduct", [self.bottom(x)], [out],
                       p, blobs)
        self.set_out(out_tensor, out)

    def op_Gemm(self, i, n, a):
        x = self.flattened.get(n.input[0], n.input[0])
        if len(self.shape_of(n.input[0])) != 2:
            raise _Refuse(f"Gemm input must be 2-D, got {self.shape_of(x)}")
        w = self.const(n.input[1], "B").astype(np.float32)
        w = w if a.get("transB", 0) else w.T
        w = w * np.float32(a.get("alpha", 1.0))
        bias = None
        if len(n.input) > 2 and n.input[2]:
            c = self.const(n.input[2], "C").astype(np.float32) * np.float32(a.get("beta", 1.0))
            if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
                raise _Refuse(f"C of shape {c.shape} is not a per-output bias")
            bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
        self._inner_product(i, x, w, bias, n.output[0], 1)

    def op_MatMul(self, i, n, a):
        x = n.input[0]
        shape = self.shape_of(x)
        w = self.const(n.input[1], "B").astype(np.float32)
        if w.ndim != 2 or len(shape) < 2:
            raise _Refuse(f"only activation[..., K] x constant[K, N] is supported (B shape {w.shape})")
        out_tensor, bias = n.output[0], None
        users = self.consumers.get(out_tensor, [])
        if len(users) == 1 and out_tensor not in self.outputs:
            u = self.nodes[users[0]]
            other = [t for t in u.input if t != out_tensor]
            if (u.op_type == "Add" and len(u.input) == 2 and len(other) == 1 and self.is_const(other[0])
                    and self.consts[other[0]].size == w.shape[1]):
                bias = self.consts[other[0]].astype(np.float32).reshape(-1)
                self.skip.add(users[0])
                out_tensor = u.output[0]
        self._inner_product(i, x, np.ascontiguousarray(w.T), bias, out_tensor, len(shape) - 1)

    def op_BatchNormalization(self, i, n, a):
        from .layers.norm import BatchNormParams, ScaleParams
        x = n.input[0]
        if len(self.shape_of(x)) < 2:
            raise _Refuse("BatchNormalization needs a channel axis")
        gamma, beta, mean, var = (self.const(t, "BatchNormalization parameters").astype(np.float32).reshape(-1)
                                  for t in n.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        base = self.node_name(i)
        out_t = n.output[0]
        if self.can_inplace(x, out_t):
            b = self.blob[x]
        else:
            b = self.new_blob(out_t)
        self.add_layer(self.new_layer_name(base), "BatchNorm", [self.bottom(x)], [b],
                       BatchNormParams(eps=eps), [mean, var, np.ones(1, np.float32)])
        self.add_layer(self.new_layer_name(f"{base}/scale"), "Scale", [b], [b],
                       ScaleParams(bias_term=True), [gamma, beta])
        self.set_out(out_t, b)

    def op_MaxPool(self, i, n, a, ave=False):
        from .layers.pool import PoolParams
        x, q, _ = self._take_pad(n.input[0], False)
        shape = self.shape_of(x)
        if len(shape) != 4:
            raise _Refuse(f"only 4-D (N,C,H,W) input is supported, got {shape}")
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        qshape = (shape[0], shape[1], shape[2] + q[0] + q[2], shape[3] + q[1] + q[3])
        bh, bw, eh, ew = self._spatial_pads(n, a, qshape, (kh, kw), (sh, sw), (1, 1))
        ceil = bool(a.get("ceil_mode", 0))
        include = bool(a.get("count_include_pad", 0))
        res = []
        for ax, (size, k, s, b, e, qb, qe) in enumerate(zip(shape[2:], (kh, kw), (sh, sw), (bh, bw), (eh, ew),
                                                             q[:2], q[2:])):
            r = _match_pool_axis(size, k, s, (b, e), (qb, qe), ceil, ave, include)
            if isinstance(r, str):
                raise _Refuse(f"axis {'hw'[ax]}: {r}")
            res.append(r)
        if res[0][1] != res[1][1]:
            raise _Refuse("height and width need different Caffe round modes")
        p = PoolParams(pool="AVE" if ave else "MAX", kernel_h=int(kh), kernel_w=int(kw), stride_h=int(sh),
                       stride_w=int(sw), pad_h=int(res[0][0]), pad_w=int(res[1][0]),
                       round_mode="CEIL" if res[0][1] else "FLOOR")
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "Pooling", [self.bottom(x)], [out], p)
        self.set_out(n.output[0], out)

    def op_AveragePool(self, i, n, a):
        self.op_MaxPool(i, n, a, ave=True)

    def _global_pool(self, i, n, pool):
        from .layers.pool import PoolParams
        if len(self.shape_of(n.input[0])) != 4:
            raise _Refuse("only 4-D input is supported")
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "Pooling", [self.bottom(n.input[0])], [out],
                       PoolParams(pool=pool, global_pooling=True))
        self.set_out(n.output[0], out)

    def op_GlobalAveragePool(self, i, n, a):
        self._global_pool(i, n, "AVE")

    def op_GlobalMaxPool(self, i, n, a):
        self._global_pool(i, n, "MAX")

    def _elementwise(self, i, n, type_, params, blobs=None):
        x = n.input[0]
        out = self.out_blob(i, x, inplace_ok=True)
        self.add_layer(self.new_layer_name(self.node_name(i)), type_, [self.bottom(x)], [out], params, blobs)
        self.set_out(n.output[0], out)

    def op_Relu(self, i, n, a):
        from .layers.act import ReLUParams
        self._elementwise(i, n, "ReLU", ReLUParams())

    def op_LeakyRelu(self, i, n, a):
        from .layers.act import ReLUParams
        self._elementwise(i, n, "ReLU", ReLUParams(negative_slope=float(a.get("alpha", 0.01))))

    def op_Sigmoid(self, i, n, a):
        self._elementwise(i, n, "Sigmoid", None)

    def op_Tanh(self, i, n, a):
        self._elementwise(i, n, "TanH", None)

    def op_PRelu(self, i, n, a):
        from .layers.act import PReLUParams
        slope = self.const(n.input[1], "the slope").astype(np.float32)
        shape = self.shape_of(n.input[0])
        if slope.size == 1:
            self._elementwise(i, n, "PReLU", PReLUParams(channel_shared=True), [slope.reshape(1)])
            return
        c = shape[1] if len(shape) > 1 else -1
        squeezed = [d for d in slope.shape]
        # slope broadcasts from the right: (C,1,1) for N,C,H,W (or (C,) for N,C)
        ok = slope.size == c and len(squeezed) <= len(shape) - 1 and squeezed[0] == c and all(
            d == 1 for d in squeezed[1:]) and len(squeezed) == len(shape) - 1
        if not ok:
            raise _Refuse(f"slope shape {slope.shape} is not per-channel for input {shape}")
        self._elementwise(i, n, "PReLU", PReLUParams(), [slope.reshape(-1)])

    def op_Clip(self, i, n, a):
        from .layers.act import ClipParams, ReLUParams
        lo, hi = a.get("min"), a.get("max")
        if len(n.input) > 1 and n.input[1]:
            lo = float(np.asarray(self.const(n.input[1], "min")).reshape(-1)[0])
        if len(n.input) > 2 and n.input[2]:
            hi = float(np.asarray(self.const(n.input[2], "max")).reshape(-1)[0])
        lo = -3.4028234663852886e38 if lo is None else float(lo)
        hi = 3.4028234663852886e38 if hi is None else float(hi)
        if lo == 0.0 and hi == 6.0:
            self._elementwise(i, n, "ReLU6", None)
        elif lo == 0.0 and hi >= 3.4e38:
            self._elementwise(i, n, "ReLU", ReLUParams())
        else:
            self._elementwise(i, n, "Clip", ClipParams(min=lo, max=hi))

    def op_Dropout(self, i, n, a):
        self.set_out(n.output[0], self.bottom(n.input[0]))

    op_Identity = op_Dropout

    def op_Softmax(self, i, n, a):
        from .layers.tensor import SoftmaxParams
        shape = self.shape_of(n.input[0])
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1)) % len(shape)
        if self.opset < 13 and any(d != 1 for d in shape[axis + 1:]):
            raise _Refuse(f"opset {self.opset} Softmax flattens axes {axis}.. of {shape} into one; "
                          "Caffe's Softmax works along one axis")
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "Softmax", [self.bottom(n.input[0])], [out],
                       SoftmaxParams(axis=axis))
        self.set_out(n.output[0], out)

    def op_LRN(self, i, n, a):
        from .layers.norm import LRNParams
        p = LRNParams(local_size=int(a["size"]), alpha=float(a.get("alpha", 1e-4)),
                      beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)))
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "LRN", [self.bottom(n.input[0])], [out], p)
        self.set_out(n.output[0], out)

    # element-wise binary ops -------------------------------------------------------
    def _binary(self, i, n, op, sign=1.0):
        from .layers.tensor import EltwiseParams
        ins = [t for t in n.input if t]
        consts = [t for t in ins if self.is_const(t)]
        acts = [t for t in ins if not self.is_const(t)]
        if not consts:
            coeff = [1.0] * len(acts)
            if sign != 1.0:
                coeff[1] = sign
            if op == "SUM":     # Mul(x, scalar) feeding only this sum: Caffe's Eltwise coeff
                for k, t in enumerate(acts):
                    if t in self.scaled:
                        acts[k], c = self.scaled[t]
                        coeff[k] *= c
            shapes = [self.shape_of(t) for t in acts]
            if any(s != shapes[0] for s in shapes):
                raise _Refuse(f"broadcasting between activations {shapes} has no Caffe layer")
            out = self.out_blob(i)
            p = EltwiseParams(operation=op, coeff=tuple(coeff) if any(c != 1.0 for c in coeff) else ())
            self.add_layer(self.new_layer_name(self.node_name(i)), "Eltwise", [self.bottom(t) for t in acts],
                           [out], p)
            self.set_out(n.output[0], out)
            return
        if len(acts) != 1 or len(consts) != 1 or op == "MAX" or (sign != 1.0 and n.input[0] != acts[0]):
            raise _Refuse(f"{n.op_type} with constant operands is only supported as activation "
                          f"{'-' if sign != 1.0 else '(+ or *)'} one constant")
        c = self.consts[consts[0]].astype(np.float32)
        self._affine_const(i, n, acts[0], c * np.float32(sign) if op == "SUM" else c, op == "PROD")

    def _defer_scaled(self, i, n) -> bool:
        """x * scalar read only by an Add/Sum/Sub of activations: becomes that Eltwise's coeff."""
        ins = list(n.input)
        if len(ins) != 2 or sum(self.is_const(t) for t in ins) != 1:
            return False
        x = ins[0] if self.is_const(ins[1]) else ins[1]
        c = self.consts[ins[1] if x == ins[0] else ins[0]]
        users = self.consumers.get(n.output[0], [])
        if c.size != 1 or len(users) != 1 or n.output[0] in self.outputs:
            return False
        u = self.nodes[users[0]]
        if u.op_type not in ("Add", "Sum") or u.input[0] == u.input[-1]:
            return False
        if any(t in self.consts or self.try_const(t) for t in u.input if t):
            return False
        self.scaled[n.output[0]] = (x, float(c.reshape(-1)[0]))
        self.shape[n.output[0]] = self.shape_of(x)
        self.blob[n.output[0]] = self.bottom(x)      # placeholder; the Eltwise reads x itself
        return True

    def _affine_const(self, i, n, x, c, mul):
        from .layers.act import PowerParams
        from .layers.norm import ScaleParams
        shape = self.shape_of(x)
        if c.ndim > len(shape):
            raise _Refuse(f"constant of shape {c.shape} broadcasts beyond the input {shape}")
        cs = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
        if any(d not in (1, s) for d, s in zip(cs, shape)):
            raise _Refuse(f"constant of shape {c.shape} does not broadcast onto {shape}")
        big = [k for k, d in enumerate(cs) if d != 1]
        out = self.out_blob(i, x, inplace_ok=True)
        name = self.new_layer_name(self.node_name(i))
        if not big:
            v = float(c.reshape(-1)[0])
            p = PowerParams(scale=v) if mul else PowerParams(shift=v)
            self.add_layer(name, "Power", [self.bottom(x)], [out], p)
        else:
            axis, end = big[0], big[-1] + 1
            if axis == 0 and shape[0] == 1 and len(big) > 1:
                axis = big[1]
            if any(cs[k] != shape[k] for k in range(axis, end)):
                raise _Refuse(f"constant of shape {c.shape} is not a block of the input {shape}")
            blob = c.reshape(shape[axis:end])
            if mul:
                self.add_layer(name, "Scale", [self.bottom(x)], [out],
                               ScaleParams(axis=axis, num_axes=end - axis), [blob])
            else:
                # an added per-channel constant: merged into the Scale just before it (x*g + b,
                # one Caffe Scale with bias_term) or a Scale with gamma 1 (OpenCV and several
                # Caffe forks lack the Bias layer)
                last = self.layers[-1]
                if (last.type == "Scale" and len(last.bottoms) == 1 and not last.params.bias_term
                        and last.tops == [self.blob[x]] and out == self.blob[x]
                        and (last.params.axis, last.params.num_axes) == (axis, end - axis)):
                    self.layers.pop()
                    self.layer_names.discard(name)
                    name = last.name
                    gamma = last.blobs[0]
                else:
                    gamma = np.ones(blob.shape, np.float32)
                self.add_layer(name, "Scale", [self.bottom(x)], [out],
                               ScaleParams(axis=axis, num_axes=end - axis, bias_term=True), [gamma, blob])
        self.set_out(n.output[0], out)

    def op_Add(self, i, n, a):
        self._binary(i, n, "SUM")

    op_Sum = op_Add

    def op_Mul(self, i, n, a):
        if self._defer_scaled(i, n):
            return
        self._binary(i, n, "PROD")

    def op_Sub(self, i, n, a):
        if sum(1 for t in n.input if not self.is_const(t)) == 2 and n.input[1] in self.scaled:
            raise _Refuse("Sub of a scaled activation is not supported")
        self._binary(i, n, "SUM", sign=-1.0)

    def op_Div(self, i, n, a):
        if not self.is_const(n.input[1]) or self.is_const(n.input[0]):
            raise _Refuse("Div is only supported as activation / constant")
        self._affine_const(i, n, n.input[0], 1.0 / self.consts[n.input[1]].astype(np.float32), True)

    def op_Max(self, i, n, a):
        self._binary(i, n, "MAX")

    # tensor ops --------------------------------------------------------------------
    def op_Concat(self, i, n, a):
        from .layers.tensor import ConcatParams
        ins = [t for t in n.input if t]
        rank = len(self.shape_of(ins[0]))
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "Concat", [self.bottom(t) for t in ins], [out],
                       ConcatParams(axis=int(a.get("axis", 1)) % rank))
        self.set_out(n.output[0], out)

    def op_Split(self, i, n, a):
        from .layers.tensor import SliceParams
        shape = self.shape_of(n.input[0])
        axis = int(a.get("axis", 0)) % len(shape)
        if "split" in a:
            sizes = list(a["split"])
        elif len(n.input) > 1 and n.input[1]:
            sizes = self.const(n.input[1], "split").astype(int).tolist()
        else:
            k = len(n.output)
            sizes = [-(-shape[axis] // k)] * k
            sizes[-1] = shape[axis] - sum(sizes[:-1])
        points = list(np.cumsum(sizes)[:-1].astype(int))
        tops = [self.out_blob(i, k=k) for k in range(len(n.output))]
        self.add_layer(self.new_layer_name(self.node_name(i)), "Slice", [self.bottom(n.input[0])], tops,
                       SliceParams(axis=axis, slice_point=tuple(int(p) for p in points)))
        for t, b in zip(n.output, tops):
            self.set_out(t, b)

    def _slice_range(self, n):
        """(axis, lo, hi) of a step-1 Slice along one axis; None when it takes everything."""
        shape = self.shape_of(n.input[0])
        a = _attrs(n)
        if "starts" in a:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            for t in n.input[1:]:
                if t and not self.try_const(t):
                    raise _Refuse("starts/ends/axes/steps must be constant")
            ins = [self.consts.get(t) if t else None for t in n.input]
            starts, ends = ins[1].tolist(), ins[2].tolist()
            axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
            steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        real = []
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax = int(ax) % len(shape)
            lo, hi, step = slice(int(s), int(e), int(st)).indices(shape[ax])
            if step != 1:
                raise _Refuse("Slice with steps other than 1 has no Caffe layer")
            if (lo, hi) != (0, shape[ax]):
                real.append((ax, lo, hi))
        if not real:
            return None
        if len(real) > 1:
            raise _Refuse("Slice along more than one axis is not supported")
        if real[0][2] <= real[0][1]:
            raise _Refuse("empty Slice")
        return real[0]

    def op_Slice(self, i, n, a):
        """Slices of one tensor along one axis that do not overlap become ONE Caffe Slice
        (Caffe's Slice writes every piece; a piece nobody reads stays a named extra top)."""
        from .layers.tensor import SliceParams
        x = n.input[0]
        shape = self.shape_of(x)
        mine = self._slice_range(n)
        if mine is None:
            self.set_out(n.output[0], self.bottom(x))
            return
        ax = mine[0]
        group = [(i, mine)]
        for j in self.consumers.get(x, []):
            nj = self.nodes[j]
            if j <= i or j in self.skip or nj.op_type != "Slice" or nj.input[0] != x:
                continue
            try:
                r = self._slice_range(nj)
            except _Refuse:
                continue
            if r is not None and r[0] == ax:
                group.append((j, r))
        spans = sorted((r[1], r[2]) for _, r in group)
        if any(spans[k][0] < spans[k - 1][1] for k in range(1, len(spans))) or len(set(spans)) != len(spans):
            group = [(i, mine)]
        points = sorted({p for _, (_, lo, hi) in group for p in (lo, hi) if 0 < p < shape[ax]})
        edges = [0] + points + [shape[ax]]
        name = self.new_layer_name(self.node_name(i))
        by_range = {(lo, hi): j for j, (_, lo, hi) in group}
        tops = []
        for k in range(len(edges) - 1):
            j = by_range.get((edges[k], edges[k + 1]))
            tops.append(self.out_blob(j) if j is not None else self.new_blob(f"{name}/unused{k}"))
        self.add_layer(name, "Slice", [self.bottom(x)], tops, SliceParams(axis=ax, slice_point=tuple(points)))
        for j, _ in group:
            t = self.nodes[j].output[0]
            self.set_out(t, self.blob[t])
            if j != i:
                self.skip.add(j)

    def _reshape_to(self, i, n, x, new_shape):
        from .layers.tensor import FlattenParams, ReshapeParams
        shape = self.shape_of(x)
        new_shape = tuple(int(d) for d in new_shape)
        out = self.out_blob(i)
        name = self.new_layer_name(self.node_name(i))
        if len(shape) >= 2 and len(new_shape) == 2 and new_shape[0] == shape[0] and len(shape) > 2:
            self.add_layer(name, "Flatten", [self.bottom(x)], [out], FlattenParams(axis=1))
        else:
            dims = list(new_shape)
            if dims and shape and dims[0] == shape[0]:
                dims[0] = 0    # keep the batch dimension as Caffe's "copy" (batch-agnostic)
            self.add_layer(name, "Reshape", [self.bottom(x)], [out], ReshapeParams(shape=tuple(dims)))
        self.set_out(n.output[0], out)

    def op_Reshape(self, i, n, a):
        x = n.input[0]
        shape = self.shape_of(x)
        target = self.const(n.input[1], "the target shape").astype(np.int64)
        new = _onnx_reshape(shape, target, int(a.get("allowzero", 0)))
        if self._try_shuffle(i, n, shape, new):
            return
        self._reshape_to(i, n, x, new)

    def _try_shuffle(self, i, n, shape, new) -> bool:
        from .layers.tensor import ShuffleChannelParams
        if len(shape) < 3 or len(new) < 4:
            return False
        users = self.consumers.get(n.output[0], [])
        if len(users) != 1 or n.output[0] in self.outputs:
            return False
        tr = self.nodes[users[0]]
        if tr.op_type != "Transpose" or list(_attrs(tr).get("perm", [])) != _swap12(len(new)):
            return False
        u2 = self.consumers.get(tr.output[0], [])
        if len(u2) != 1 or tr.output[0] in self.outputs:
            return False
        r2 = self.nodes[u2[0]]
        if r2.op_type != "Reshape":
            return False
        n_, c = shape[:2]
        g = new[1]
        if (tuple(new[:3]) != (n_, g, c // g) or g * (c // g) != c
                or int(np.prod(new[3:])) != int(np.prod(shape[2:]))):
            return False
        swapped = (n_, c // g, g) + tuple(new[3:])
        self.shape.setdefault(n.output[0], tuple(new))
        self.shape.setdefault(tr.output[0], swapped)
        if not self.try_const(r2.input[1]):
            return False
        final = _onnx_reshape(swapped, self.consts[r2.input[1]].astype(np.int64),
                              int(_attrs(r2).get("allowzero", 0)))
        if tuple(final) != tuple(shape):
            return False
        self.skip.update({users[0], u2[0]})
        out = self.new_blob(r2.output[0])
        self.blob[r2.output[0]] = out
        names = [self.node_name(k) for k in (i, users[0], u2[0])]
        prefix = os.path.commonprefix(names)
        prefix = prefix[:prefix.rfind("/")] if "/" in prefix else ""
        self.add_layer(self.new_layer_name(prefix or names[2]), "ShuffleChannel", [self.bottom(n.input[0])],
                       [out], ShuffleChannelParams(group=int(g)))
        self.set_out(r2.output[0], out)
        return True

    def op_Flatten(self, i, n, a):
        shape = self.shape_of(n.input[0])
        ax = int(a.get("axis", 1)) % (len(shape) + 1) if shape else 0
        users = self.consumers.get(n.output[0], [])
        if (ax == 1 and len(users) == 1 and n.output[0] not in self.outputs
                and self.nodes[users[0]].op_type == "Gemm" and self.nodes[users[0]].input[0] == n.output[0]):
            # Caffe's InnerProduct flattens from axis 1 itself: no layer (exactly as Caffe nets)
            self.blob[n.output[0]] = self.bottom(n.input[0])
            self.shape[n.output[0]] = (shape[0], int(np.prod(shape[1:])))
            self.flattened[n.output[0]] = n.input[0]
            return
        self._reshape_to(i, n, n.input[0], (int(np.prod(shape[:ax])), int(np.prod(shape[ax:]))))

    def op_Squeeze(self, i, n, a):
        shape = self.shape_of(n.input[0])
        axes = a.get("axes")
        if axes is None and len(n.input) > 1 and n.input[1]:
            axes = self.const(n.input[1], "axes").tolist()
        axes = {int(x) % len(shape) for x in axes} if axes is not None else {k for k, d in enumerate(shape) if d == 1}
        self._reshape_to(i, n, n.input[0], [d for k, d in enumerate(shape) if k not in axes])

    def op_Unsqueeze(self, i, n, a):
        shape = list(self.shape_of(n.input[0]))
        axes = a.get("axes")
        if axes is None:
            axes = self.const(n.input[1], "axes").tolist()
        r = len(shape) + len(axes)
        for ax in sorted(int(x) % r for x in axes):
            shape.insert(ax, 1)
        self._reshape_to(i, n, n.input[0], shape)

    def op_Transpose(self, i, n, a):
        from .layers.tensor import PermuteParams
        shape = self.shape_of(n.input[0])
        perm = tuple(int(p) for p in a.get("perm", range(len(shape) - 1, -1, -1)))
        if perm == tuple(range(len(shape))):
            self.set_out(n.output[0], self.bottom(n.input[0]))
            return
        out = self.out_blob(i)
        self.add_layer(self.new_layer_name(self.node_name(i)), "Permute", [self.bottom(n.input[0])], [out],
                       PermuteParams(order=perm))
        self.set_out(n.output[0], out)


def _swap12(rank: int) -> list[int]:
    return [0, 2, 1] + list(range(3, rank))


def _onnx_reshape(shape, target, allowzero=0) -> tuple:
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    out = []
    for k, d in enumerate(dims):
        if d == 0 and not allowzero:
            out.append(int(shape[k]))
        else:
            out.append(d)
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shape)) // max(known, 1)
    return tuple(out)


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
    g = _Importer(model, dialect, input_shapes, file).run()
    if file is not None and g.name == "net":
        g.name = _SAFE.sub("_", Path(file).stem)
    return g


def onnx_to_caffe(onnx_path, prototxt_path, dialect: Dialect = DEFAULT, *, caffemodel_path=None,
                  input_shapes=None) -> tuple[Path, Path]:
    """Convert an ONNX model to a deploy prototxt and a caffemodel (``.caffemodel`` beside
    the prototxt unless given). Both files appear atomically; nothing is written when the
    model cannot be converted. Returns (prototxt path, caffemodel path)."""
    from google.protobuf import text_format

    from .caffe.caffemodel import write_caffemodel
    from .caffe.prototxt import to_net_param
    from .util import write_text
    if not isinstance(dialect, Dialect):
        dialect = Dialect.make(str(dialect))
    g = load_onnx(onnx_path, dialect=dialect, input_shapes=input_shapes)
    prototxt_path = Path(prototxt_path)
    caffemodel_path = Path(caffemodel_path) if caffemodel_path else prototxt_path.with_suffix(".caffemodel")
    msg = to_net_param(g, DEPLOY, dialect)
    text = text_format.MessageToString(msg)
    write_caffemodel(caffemodel_path, msg, {l.name: l.blobs for l in g.layers if l.blobs})
    write_text(prototxt_path, text)
    return prototxt_path, caffemodel_path
