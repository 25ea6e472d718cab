"""Caffe's recurrent layers: LSTM and RNN (upstream since 2016; the LRCN examples).

semantics: BVLC/caffe src/caffe/layers/recurrent_layer.cpp (bottoms, expose_hidden, the state
between forward calls), src/caffe/layers/lstm_layer.cpp and src/caffe/layers/lstm_unit_layer.cpp
(LSTM), src/caffe/layers/rnn_layer.cpp (RNN). Caffe builds an unrolled net per layer:

* bottoms ``x`` (T, N, ...), ``cont`` (T, N) (0 starts a new sequence), optionally ``x_static``
  (N, ...), then with ``expose_hidden`` the initial states (1, N, H): ``h_0`` (and ``c_0``).
  A static input is there when there are more bottoms than 2 + the exposed states.
* tops ``h`` (LSTM) / ``o`` (RNN) (T, N, H), then with ``expose_hidden`` the final states.
* LSTM step t: ``g = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]`` split
  in gate order (i, f, o, g); ``f' = 0 if cont_t == 0 else cont_t * sigmoid(f)``;
  ``c_t = f' c_{t-1} + sigmoid(i) tanh(g)``; ``h_t = sigmoid(o) tanh(c_t)``.
  Blobs (the unrolled net's owned params, in order): W_xc (4H, K), b_c (4H),
  [W_xc_static (4H, K_static)], W_hc (4H, H).
* RNN step t: ``h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])``,
  ``o_t = tanh(W_ho h_t + b_o)``. Blobs: W_xh (H, K), b_h (H), [W_xh_static (H, K_static)],
  W_hh (H, H), W_ho (H, H), b_o (H).

Without ``expose_hidden`` Caffe copies the last forward's final state into h_0/c_0, which are
zero before the first forward; a converted model starts every forward from zero, i.e. computes
Caffe's first forward (a note says so; identical whenever cont_1 = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np
from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, he_normal, layer_blobs, numel, register


@dataclass(frozen=True)
class RecurrentParams:
    num_output: int = 0             # recurrent_param.num_output: the hidden size H
    expose_hidden: bool = False     # initial-state bottoms and final-state tops


def _sequences(rng, shapes):
    """Inputs of an example: x standard normal, cont 0/1 sequence markers (a new sequence at
    t = 0 and in the middle), the rest (x_static, h_0, c_0) standard normal."""
    out = [rng.standard_normal(s) for s in shapes]
    t, n = shapes[1]
    cont = np.ones((t, n))
    cont[0] = 0
    if t > 2:
        cont[t // 2, ::2] = 0
    out[1] = cont
    return out


class _Recurrent(LayerType):
    """What LSTM and RNN share (RecurrentLayer)."""
    param_field = "recurrent_param"
    Params = RecurrentParams
    benign_param_fields = frozenset({"weight_filler", "bias_filler", "debug_info"})
    n_bottoms = (2, 5)
    #: recurrent states (h, c for LSTM), gate blocks per hidden unit
    n_states = 1
    n_gates = 1
    #: the generated-source / reference function (protogen.layers.recurrent_torch)
    fn = ""

    def validate(self, p) -> None:
        if p.num_output <= 0:
            raise ProtogenError(f"{self.type}: recurrent_param.num_output must be positive "
                                f"(got {p.num_output})")

    def seed_input(self, p, bottom_index, shape, data_shape, rng):
        """cont fed directly from an input: sequence markers (0 at t = 0, 1 after)."""
        if bottom_index != 1 or len(shape) != 2:
            return None
        cont = np.ones(shape, np.float32)
        cont[0] = 0
        return cont

    def note(self, p) -> str | None:
        if p.expose_hidden:
            return None
        return ("start every forward from zero state (Caffe's first forward); Caffe carries the "
                "last forward's final state into the next call where cont_1 != 0")

    # ------------------------------------------------------------- shapes
    def _layout(self, p, ins):
        """(T, N, K, K_static or None), checking the bottoms as RecurrentLayer does."""
        x, cont = ins[0], ins[1]
        if len(x) < 2:
            raise ShapeError(f"{self.type}: bottom[0] must have at least 2 axes "
                             f"(#timesteps, #streams, ...), got {tuple(x)}")
        if tuple(cont) != tuple(x[:2]):
            raise ShapeError(f"{self.type}: bottom[1] (cont) must be (T, N) = {tuple(x[:2])}, "
                             f"got {tuple(cont)}")
        exposed = self.n_states if p.expose_hidden else 0
        n_static = len(ins) - 2 - exposed
        if n_static not in (0, 1):
            want = f"2{'' if not exposed else f' + {exposed} state'} (+1 x_static)"
            raise ShapeError(f"{self.type} takes {want} bottoms, got {len(ins)}")
        t, n = int(x[0]), int(x[1])
        ks = None
        if n_static:
            xs = ins[2]
            if len(xs) < 1 or xs[0] != n:
                raise ShapeError(f"{self.type}: x_static must be (N, ...) with N = {n}, got {tuple(xs)}")
            ks = numel(xs[1:])
        for s in ins[2 + n_static:]:
            if tuple(s) != (1, n, p.num_output):
                raise ShapeError(f"{self.type}: an initial state must be (1, N, num_output) = "
                                 f"{(1, n, p.num_output)}, got {tuple(s)}")
        return t, n, numel(x[2:]), ks

    def output_shapes(self, p, ins, n_tops):
        t, n, _, _ = self._layout(p, ins)
        want = 1 + (self.n_states if p.expose_hidden else 0)
        if n_tops != want:
            raise ShapeError(f"{self.type} with expose_hidden: {str(p.expose_hidden).lower()} "
                             f"produces {want} top(s), got {n_tops}")
        h = p.num_output
        return [(t, n, h)] + [(1, n, h)] * (want - 1)

    def shapes(self, p, ins):
        return self.output_shapes(p, ins, 1 + (self.n_states if p.expose_hidden else 0))

    def _static(self, p, ins) -> bool:
        return self._layout(p, ins)[3] is not None

    def macs(self, p, ins, outs) -> int:
        """One stream (N = 1) over all T steps: the input and recurrent matrix products (and
        the static input's, once), as LSTM/RNN costs are usually counted."""
        t, _, k, ks = self._layout(p, ins)
        g = self.n_gates * p.num_output
        return t * (g * k + g * p.num_output + self._extra_macs(p)) + (g * ks if ks else 0)

    def _extra_macs(self, p) -> int:
        return 0

    # ------------------------------------------------------------- backends
    def _weights(self, step):
        """(blobs in Caffe's order, static?) of a resolved step."""
        return layer_blobs(step), self._static(step.layer.params, step.in_shapes)

    def _onnx_inputs(self, ctx, step, w_in, b_in, w_static):
        """Common ONNX prologue: per-step input transforms (T values (1, N, G)), per-step cont
        (T values (1, N, 1)), the static term (1, N, G) or None."""
        shape = step.in_shapes[0]
        t = ctx.static(step.inputs[0], 0)                        # T unrolls into the graph
        ctx.static_shape(step.inputs[0], range(2, len(shape)))   # K is baked into the weights
        x = ctx.name(step.inputs[0])
        if len(shape) != 3:
            x = ctx.op("Reshape", [x, ctx.ints("shape", [0, 0, -1])])
        gx = ctx.op("Add", [ctx.op("MatMul", [x, ctx.const("w_x", w_in.T)]), ctx.const("b", b_in)])
        cont = ctx.op("Unsqueeze", [ctx.name(step.inputs[1]), ctx.ints("axes", [2])])
        gxs, conts = [gx], [cont]
        if t > 1:
            split = ctx.ints("split", [1] * t)
            gxs = ctx.op("Split", [gx, split], n_out=t, axis=0)
            conts = ctx.op("Split", [cont, split], n_out=t, axis=0)
        gs = None
        if w_static is not None:
            xs = ctx.name(step.inputs[2])
            ctx.static_shape(step.inputs[2], range(1, len(step.in_shapes[2])))
            if len(step.in_shapes[2]) != 2:
                xs = ctx.op("Flatten", [xs], axis=1)
            gs = ctx.op("Unsqueeze", [ctx.op("MatMul", [xs, ctx.const("w_static", w_static.T)]),
                                      ctx.ints("axes0", [0])])
        return gxs, conts, gs

    def _state_inputs(self, step, static: bool) -> list[str]:
        p = step.layer.params
        return list(step.inputs[2 + static:]) if p.expose_hidden else []

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from . import recurrent_torch
        fn = getattr(recurrent_torch, self.fn)
        return list(fn(*self._call_args(p, xs, blobs)))[:n_tops]

    def torch_source(self, p, src, step):
        from . import recurrent_torch
        blobs, static = self._weights(step)
        names = [src.parameter(n, b) for n, b in zip(self._blob_names(static), blobs)]
        fn = recurrent_torch.emit(src, self.fn)
        args = self._call_args(p, src.xs(), names, source=True)
        call = f"{fn}({', '.join(args)})"
        n_tops = len(step.layer.tops)
        src.assign(call if n_tops > 1 else f"{call}[0]")

    def _call_args(self, p, xs, blobs, source=False):
        """Arguments of the recurrent_torch function, from bottoms ``xs`` and ``blobs`` (tensors,
        or their source names with ``source``)."""
        static = len(xs) > 2 + (self.n_states if p.expose_hidden else 0)
        ws = list(blobs)
        w_static = ws.pop(2) if static else None
        states = list(xs[2 + static:]) if p.expose_hidden else [None] * self.n_states
        args = [xs[0], xs[1], *ws, *states, xs[2] if static else None, w_static]
        return [("None" if a is None else a) for a in args] if source else args


def _lstm_unit_onnx(ctx, g, ct, c, split4, outs=(None, None)):
    """One LSTMUnit step in ONNX: gates ``g`` (1, N, 4H) in order (i, f, o, g), ``ct`` (1, N, 1),
    ``c`` the previous cell (None: zero, which adds nothing). Returns (c_t, h_t)."""
    i, f, o, gg = ctx.op("Split", [g, split4], n_out=4, axis=2)
    ig = ctx.op("Mul", [ctx.op("Sigmoid", [i]), ctx.op("Tanh", [gg])], None if c is not None else outs[0])
    if c is not None:                       # f' = cont_t * sigmoid(f): 0 when cont_t = 0
        ig = ctx.op("Add", [ctx.op("Mul", [ctx.op("Mul", [ct, ctx.op("Sigmoid", [f])]), c]), ig], outs[0])
    return ig, ctx.op("Mul", [ctx.op("Sigmoid", [o]), ctx.op("Tanh", [ig])], outs[1])


@register
class LSTM(_Recurrent):
    """Caffe's LSTM (the unrolled net of lstm_layer.cpp with LSTMUnit steps).
    semantics: BVLC/caffe src/caffe/layers/lstm_layer.cpp, src/caffe/layers/lstm_unit_layer.cpp,
    src/caffe/layers/recurrent_layer.cpp"""
    type = "LSTM"
    n_tops = (1, 3)
    n_states = 2
    n_gates = 4
    fn = "caffe_lstm"
    examples = (
        Example(params=dict(num_output=5), ins=[(6, 3, 4), (6, 3)], data=_sequences),
        Example(params=dict(num_output=3), ins=[(1, 2, 2, 3), (1, 2)], data=_sequences),
        Example(params=dict(num_output=4), ins=[(4, 2, 3), (4, 2), (2, 3, 2)], data=_sequences),
        Example(params=dict(num_output=4, expose_hidden=True),
                ins=[(5, 2, 3), (5, 2), (1, 2, 4), (1, 2, 4)], n_tops=3, data=_sequences),
    )

    def opencv_limit(self, p):
        """OpenCV's LSTM (dnn/src/layers/recurrent_layers.cpp) reads the blobs as (W_h, W_x, b)
        where Caffe has (W_xc, b_c, W_hc), and takes 1 or 3 inputs (x, h_0, c_0): no cont."""
        return ("reads Caffe's LSTM blobs as (W_h, W_x, b) instead of (W_xc, b_c, W_hc) and has "
                "no cont input")

    def _blob_names(self, static):
        return ["W_xc", "b_c"] + (["W_xc_static"] if static else []) + ["W_hc"]

    def weight_shapes(self, p, ins):
        _, _, k, ks = self._layout(p, ins)
        g, h = 4 * p.num_output, p.num_output
        return [(g, k), (g,)] + ([(g, ks)] if ks is not None else []) + [(g, h)]

    def init_weights(self, p, ins, rng):
        _, _, k, ks = self._layout(p, ins)
        g, h = 4 * p.num_output, p.num_output
        ws = [he_normal((g, k), k, rng, gain=1.0), (rng.standard_normal(g) * 0.1).astype(np.float32)]
        if ks is not None:
            ws.append(he_normal((g, ks), ks, rng, gain=1.0))
        return ws + [he_normal((g, h), h, rng, gain=1.0)]

    def to_onnx(self, ctx, step):
        """Unrolled over T (Caffe's cont cannot go into ONNX's LSTM): per step
        MatMul/Add, Split into (i, f, o, g), Sigmoid/Tanh/Mul; outputs concatenated."""
        p = step.layer.params
        (w_xc, b_c, *rest), static = self._weights(step)
        w_static = rest[0] if static else None
        w_hc = rest[-1]
        gxs, conts, gs = self._onnx_inputs(ctx, step, w_xc, b_c, w_static)
        states = self._state_inputs(step, static)
        h = ctx.name(states[0]) if states else None
        c = ctx.name(states[1]) if states else None
        w_h = ctx.const("w_h", w_hc.T)
        split4 = ctx.ints("split4", [p.num_output] * 4)
        hs = []
        for gx, ct in zip(gxs, conts):
            g = gx
            if h is not None:                       # h = c = 0 at step 1 adds nothing
                g = ctx.op("Add", [ctx.op("MatMul", [ctx.op("Mul", [h, ct]), w_h]), gx])
            if gs is not None:
                g = ctx.op("Add", [g, gs])
            c, h = _lstm_unit_onnx(ctx, g, ct, c, split4)
            hs.append(h)
        ctx.op("Concat", hs, step.outputs[0], axis=0)
        if len(step.outputs) > 1:
            ctx.op("Identity", [h], step.outputs[1])
            ctx.op("Identity", [c], step.outputs[2])


@register
class RNN(_Recurrent):
    """Caffe's plain RNN (tanh hidden state, tanh output layer).
    semantics: BVLC/caffe src/caffe/layers/rnn_layer.cpp, src/caffe/layers/recurrent_layer.cpp
    OpenCV 4.x's Caffe importer has no "RNN" type (measured, 4.14: "Can't create layer"), so
    verify skips OpenCV for it."""
    type = "RNN"
    n_tops = (1, 2)
    n_bottoms = (2, 4)
    n_states = 1
    n_gates = 1
    fn = "caffe_rnn"
    examples = (
        Example(params=dict(num_output=5), ins=[(6, 3, 4), (6, 3)], data=_sequences),
        Example(params=dict(num_output=3), ins=[(1, 2, 2, 2), (1, 2)], data=_sequences),
        Example(params=dict(num_output=4, expose_hidden=True),
                ins=[(4, 2, 3), (4, 2), (2, 5), (1, 2, 4)], n_tops=2, data=_sequences),
    )

    def _blob_names(self, static):
        return ["W_xh", "b_h"] + (["W_xh_static"] if static else []) + ["W_hh", "W_ho", "b_o"]

    def _extra_macs(self, p) -> int:
        return p.num_output * p.num_output             # W_ho h_t

    def weight_shapes(self, p, ins):
        _, _, k, ks = self._layout(p, ins)
        h = p.num_output
        return [(h, k), (h,)] + ([(h, ks)] if ks is not None else []) + [(h, h), (h, h), (h,)]

    def init_weights(self, p, ins, rng):
        _, _, k, ks = self._layout(p, ins)
        h = p.num_output
        ws = [he_normal((h, k), k, rng, gain=1.0), (rng.standard_normal(h) * 0.1).astype(np.float32)]
        if ks is not None:
            ws.append(he_normal((h, ks), ks, rng, gain=1.0))
        return ws + [he_normal((h, h), h, rng, gain=1.0), he_normal((h, h), h, rng, gain=1.0),
                     (rng.standard_normal(h) * 0.1).astype(np.float32)]

    def to_onnx(self, ctx, step):
        """Unrolled over T: h_t = Tanh(MatMul(cont_t h_{t-1}, W_hh^T) + W_xh x_t + b_h), then
        o = Tanh(MatMul(h, W_ho^T) + b_o) over all steps at once."""
        (w_xh, b_h, *rest), static = self._weights(step)
        w_static = rest[0] if static else None
        w_hh, w_ho, b_o = rest[-3:]
        gxs, conts, gs = self._onnx_inputs(ctx, step, w_xh, b_h, w_static)
        states = self._state_inputs(step, static)
        h = ctx.name(states[0]) if states else None
        w_h = ctx.const("w_hh", w_hh.T)
        hs = []
        for gx, ct in zip(gxs, conts):
            a = gx
            if h is not None:                       # h_0 = 0 at step 1 adds nothing
                a = ctx.op("Add", [ctx.op("MatMul", [ctx.op("Mul", [h, ct]), w_h]), gx])
            if gs is not None:
                a = ctx.op("Add", [a, gs])
            h = ctx.op("Tanh", [a])
            hs.append(h)
        hcat = ctx.op("Concat", hs, axis=0) if len(hs) > 1 else hs[0]
        o = ctx.op("Add", [ctx.op("MatMul", [hcat, ctx.const("w_ho", w_ho.T)]), ctx.const("b_o", b_o)])
        ctx.op("Tanh", [o], step.outputs[0])
        if len(step.outputs) > 1:
            ctx.op("Identity", [h], step.outputs[1])


@register
class LSTMUnit(LayerType):
    """One LSTM step as a layer (what Caffe's LSTM unrolls into): bottoms c_{t-1} (1, N, H),
    gate inputs (1, N, 4H) in order (i, f, o, g), cont_t (1, N); tops c_t, h_t (1, N, H).
    semantics: BVLC/caffe src/caffe/layers/lstm_unit_layer.cpp"""
    type = "LSTMUnit"
    n_bottoms = (3, 3)
    n_tops = (2, 2)
    examples = (Example(ins=[(1, 3, 4), (1, 3, 16), (1, 3)], n_tops=2,
                        data=lambda rng, s: [rng.standard_normal(s[0]), rng.standard_normal(s[1]),
                                             np.array([[0.0, 1.0, 0.5]])]),)

    def output_shapes(self, p, ins, n_tops):
        c, x, cont = (tuple(s) for s in ins)
        if len(c) != 3 or len(x) != 3 or len(cont) != 2 or c[0] != 1 or x[0] != 1 or cont[0] != 1:
            raise ShapeError(f"LSTMUnit takes (1, N, H), (1, N, 4H), (1, N); got {c}, {x}, {cont}")
        if x[1] != c[1] or cont[1] != c[1] or x[2] != 4 * c[2]:
            raise ShapeError(f"LSTMUnit: gate input {x} must be (1, N, 4H) and cont {cont} (1, N) "
                             f"for a cell {c}")
        return [c, c]

    def to_onnx(self, ctx, step):
        hid = step.in_shapes[0][2]
        ct = ctx.op("Unsqueeze", [ctx.name(step.inputs[2]), ctx.ints("axes", [2])])
        _lstm_unit_onnx(ctx, ctx.name(step.inputs[1]), ct, ctx.name(step.inputs[0]),
                        ctx.ints("split4", [hid] * 4), outs=tuple(step.outputs))

    def torch_forward(self, p, xs, blobs, n_tops=2):
        from .recurrent_torch import caffe_lstm_unit
        return list(caffe_lstm_unit(*xs))

    def torch_source(self, p, src, step):
        from .recurrent_torch import emit
        src.assign(f"{emit(src, 'caffe_lstm_unit')}({', '.join(src.xs())})")
