"""Caffe's recurrent layers (LSTM, RNN) against an independent oracle: a numpy transcription of
the unrolled nets Caffe builds (BVLC/caffe src/caffe/layers/recurrent_layer.cpp,
lstm_layer.cpp's FillUnrolledNet, lstm_unit_layer.cpp's Forward_cpu, rnn_layer.cpp's
FillUnrolledNet), written here layer by layer as Caffe runs them (InnerProduct axis 2,
Slice of cont, Scale axis 0, Eltwise SUM, LSTMUnit, Concat). protogen's ONNX lowering (ORT,
float32) and its PyTorch reference (float64) must match it; the nets are read from prototxt
text and, once, from a caffemodel file so that the blob order is Caffe's.

OpenCV: its Caffe importer does not run Caffe's LSTM (it reads the blobs as (W_h, W_x, b)
where Caffe stores (W_xc, b_c, W_hc), and takes no cont input) and has no RNN type; the last
tests show both, so that ``LSTM.opencv_limit`` stays true.
"""
from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from protogen.caffe import pb  # noqa: E402
from protogen.caffe.prototxt import graph_from_net_param, parse_prototxt  # noqa: E402
from protogen.errors import ProtogenError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from protogen.onnx_io import export_onnx, load_check  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402

try:
    import cv2
    HAS_CV = hasattr(cv2.dnn, "readNetFromCaffe")
except ImportError:     # pragma: no cover
    HAS_CV = False


# ----------------------------------------------------------------------------- the oracle
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tanh_unit(x):
    # lstm_unit_layer.cpp writes tanh as 2 sigmoid(2x) - 1
    return 2.0 * _sigmoid(2.0 * x) - 1.0


def _inner_product(x, w, b=None, axis=2):
    """InnerProduct with ``axis``: (dims[:axis], K) @ W^T (+ b); W is (num_output, K)."""
    lead = x.shape[:axis]
    y = x.reshape(lead + (-1,)) @ w.T
    return y if b is None else y + b


def _lstm_unit(c_prev, gates, cont):
    """LSTMUnitLayer::Forward_cpu: c_prev (1, N, H), gates (1, N, 4H), cont (1, N)."""
    _, n, hd = c_prev.shape
    c = np.zeros_like(c_prev)
    h = np.zeros_like(c_prev)
    for k in range(n):
        x = gates[0, k]
        for d in range(hd):
            i = _sigmoid(x[d])
            f = 0.0 if cont[0, k] == 0 else cont[0, k] * _sigmoid(x[hd + d])
            o = _sigmoid(x[2 * hd + d])
            g = _tanh_unit(x[3 * hd + d])
            c[0, k, d] = f * c_prev[0, k, d] + i * g
            h[0, k, d] = o * _tanh_unit(c[0, k, d])
    return c, h


def lstm_oracle(x, cont, blobs, h0=None, c0=None, x_static=None):
    """Caffe's unrolled LSTM, first forward (h_0 = c_0 = 0 unless exposed)."""
    t_steps, n = x.shape[:2]
    w_xc, b_c = blobs[0], blobs[1]
    w_static = blobs[2] if x_static is not None else None
    w_hc = blobs[-1]
    hd = w_hc.shape[1]
    h = np.zeros((1, n, hd)) if h0 is None else h0.astype(np.float64)
    c = np.zeros((1, n, hd)) if c0 is None else c0.astype(np.float64)
    w_xc_x = _inner_product(x, w_xc, b_c)                             # x_transform
    static = None
    if x_static is not None:                                          # W_xc_x_static + reshape
        static = _inner_product(x_static, w_static, axis=1).reshape(1, n, -1)
    hs = []
    for t in range(t_steps):
        cont_t = cont[t:t + 1]                                        # cont_slice, (1, N)
        h_conted = h * cont_t[:, :, None]                             # Scale axis 0
        gate = _inner_product(h_conted, w_hc) + w_xc_x[t:t + 1]        # transform_t, gate_input_t
        if static is not None:
            gate = gate + static
        c, h = _lstm_unit(c, gate, cont_t)
        hs.append(h)
    return np.concatenate(hs, 0), h, c


def rnn_oracle(x, cont, blobs, h0=None, x_static=None):
    """Caffe's unrolled RNN (rnn_layer.cpp), first forward."""
    t_steps, n = x.shape[:2]
    w_xh, b_h = blobs[0], blobs[1]
    w_static = blobs[2] if x_static is not None else None
    w_hh, w_ho, b_o = blobs[-3:]
    h = np.zeros((1, n, w_hh.shape[1])) if h0 is None else h0.astype(np.float64)
    w_xh_x = _inner_product(x, w_xh, b_h)
    static = _inner_product(x_static, w_static, axis=1).reshape(1, n, -1) if x_static is not None else None
    os_ = []
    for t in range(t_steps):
        a = _inner_product(h * cont[t:t + 1, :, None], w_hh) + w_xh_x[t:t + 1]
        if static is not None:
            a = a + static
        h = np.tanh(a)
        os_.append(np.tanh(_inner_product(h, w_ho, b_o)))
    return np.concatenate(os_, 0), h


# ----------------------------------------------------------------------------- harness
def _net_text(kind, inputs: dict, tops, rparam: str) -> str:
    shapes = "".join("shape { " + " ".join(f"dim: {d}" for d in a.shape) + " } " for a in inputs.values())
    in_tops = "".join(f'top: "{n}" ' for n in inputs)
    bottoms = "".join(f'bottom: "{n}" ' for n in inputs)
    out = "".join(f'top: "{t}" ' for t in tops)
    return (f'name: "t"\nlayer {{ name: "input" type: "Input" {in_tops}input_param {{ {shapes}}} }}\n'
            f'layer {{ name: "rec" type: "{kind}" {bottoms}{out}recurrent_param {{ {rparam} }} }}\n')


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def _check(g, inputs: dict, want: dict):
    """ORT (float32) and the torch reference (float64) against the oracle, per top."""
    for k, w in want.items():
        assert np.isfinite(w).all() and w.max() > w.min(), f"degenerate oracle output {k}"
    m = export_onnx(g)
    load_check(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got_ort = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})))
    net = TorchNet.from_graph(g).double()
    with torch.no_grad():
        got_t = {k: v.numpy() for k, v in net({k: torch.from_numpy(v.astype(np.float64))
                                               for k, v in inputs.items()}).items()}
    for k, w in want.items():
        assert _rel(got_t[k], w) <= 1e-9, f"torch {k}: {_rel(got_t[k], w):.3g}"
        assert _rel(got_ort[k], w) <= 1e-5, f"ORT {k}: {_rel(got_ort[k], w):.3g}"
    return got_ort


def _run(kind, inputs, blobs, tops, rparam):
    text = _net_text(kind, inputs, tops, rparam)
    g = graph_from_net_param(parse_prototxt(text))
    g.layers[-1].blobs = [np.asarray(b, np.float32) for b in blobs]
    return g


def _lstm_blobs(rng, hd, k, ks=None, scale=0.6):
    ws = [rng.standard_normal((4 * hd, k)) * scale, rng.standard_normal(4 * hd) * 0.3]
    if ks is not None:
        ws.append(rng.standard_normal((4 * hd, ks)) * scale)
    ws.append(rng.standard_normal((4 * hd, hd)) * scale)
    return [w.astype(np.float32) for w in ws]


def _f64(blobs):
    return [b.astype(np.float64) for b in blobs]


# ----------------------------------------------------------------------------- LSTM
def test_lstm_cont_resets_mid_sequence():
    """Streams restart at different steps (cont_t = 0 flushes h and zeroes the forget gate);
    the result differs from the all-ones run, so the reset is really exercised."""
    rng = np.random.default_rng(1)
    t, n, d, hd = 7, 3, 4, 5
    x = rng.standard_normal((t, n, d)).astype(np.float32)
    cont = np.ones((t, n), np.float32)
    cont[0] = 0
    cont[3, 0] = 0
    cont[5, 1:] = 0
    blobs = _lstm_blobs(rng, hd, d)
    want = lstm_oracle(x.astype(np.float64), cont, _f64(blobs))[0]
    _check(_run("LSTM", {"x": x, "cont": cont}, blobs, ["h"], f"num_output: {hd}"),
           {"x": x, "cont": cont}, {"h": want})
    ones = lstm_oracle(x.astype(np.float64), np.ones_like(cont), _f64(blobs))[0]
    assert np.abs(ones[3, 0] - want[3, 0]).max() > 1e-3
    # a restarted stream computes what a fresh sequence of its remaining steps computes
    fresh = lstm_oracle(x[3:, :1].astype(np.float64), cont[3:, :1], _f64(blobs))[0]
    np.testing.assert_allclose(want[3:, :1], fresh, rtol=1e-12, atol=1e-12)


def test_lstm_non_binary_cont_scales_the_state():
    """cont is a multiplier in Caffe (Scale of h, cont * sigmoid(f) in LSTMUnit), not a flag."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    cont = np.array([[0, 0], [0.5, 1], [1, 0.25], [2, 0]], np.float32)
    blobs = _lstm_blobs(rng, 4, 3)
    want = lstm_oracle(x.astype(np.float64), cont, _f64(blobs))[0]
    _check(_run("LSTM", {"x": x, "cont": cont}, blobs, ["h"], "num_output: 4"),
           {"x": x, "cont": cont}, {"h": want})


def test_lstm_expose_hidden_and_x_static():
    """expose_hidden: bottoms x, cont, x_static, h_0, c_0; tops h, h_T, c_T. cont_1 = 1 here,
    so the given state is used at the first step."""
    rng = np.random.default_rng(3)
    t, n, d, hd = 5, 2, 3, 4
    ins = {"x": rng.standard_normal((t, n, d)), "cont": np.ones((t, n)),
           "xs": rng.standard_normal((n, 2, 3)), "h0": rng.standard_normal((1, n, hd)),
           "c0": rng.standard_normal((1, n, hd))}
    ins["cont"][2, 1] = 0
    ins = {k: v.astype(np.float32) for k, v in ins.items()}
    blobs = _lstm_blobs(rng, hd, d, ks=6)
    h, h_t, c_t = lstm_oracle(ins["x"].astype(np.float64), ins["cont"], _f64(blobs), ins["h0"], ins["c0"],
                              ins["xs"].astype(np.float64))
    g = _run("LSTM", ins, blobs, ["h", "hT", "cT"], f"num_output: {hd} expose_hidden: true")
    assert [tuple(s) for s in g.layers[-1].kind.weight_shapes(g.layers[-1].params, [v.shape for v in ins.values()])] \
        == [(4 * hd, d), (4 * hd,), (4 * hd, 6), (4 * hd, hd)]
    _check(g, ins, {"h": h, "hT": h_t, "cT": c_t})
    # the given initial state matters (stream 0 never restarts)
    h_zero = lstm_oracle(ins["x"].astype(np.float64), ins["cont"], _f64(blobs),
                         x_static=ins["xs"].astype(np.float64))[0]
    assert np.abs(h_zero[-1, 0] - h[-1, 0]).max() > 1e-4


def test_lstm_single_timestep_and_4d_input():
    """T = 1 (no Split in the ONNX graph) with x (1, N, 2, 3): InnerProduct axis 2 flattens."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 2, 3)).astype(np.float32)
    cont = np.array([[0, 1, 1]], np.float32)
    blobs = _lstm_blobs(rng, 3, 6)
    want = lstm_oracle(x.astype(np.float64), cont, _f64(blobs))[0]
    _check(_run("LSTM", {"x": x, "cont": cont}, blobs, ["h"], "num_output: 3"),
           {"x": x, "cont": cont}, {"h": want})


def test_lstm_from_caffemodel_file(tmp_path):
    """Blobs read from a caffemodel in Caffe's order and shapes: W_xc, b_c, W_hc."""
    from protogen.caffe.loader import load_model
    rng = np.random.default_rng(5)
    t, n, d, hd = 3, 2, 4, 3
    x = rng.standard_normal((t, n, d)).astype(np.float32)
    cont = np.array([[0, 0], [1, 1], [1, 0]], np.float32)
    blobs = _lstm_blobs(rng, hd, d)
    (tmp_path / "n.prototxt").write_text(_net_text("LSTM", {"x": x, "cont": cont}, ["h"], f"num_output: {hd}"))
    npm = pb.NetParameter()
    lp = npm.layer.add(name="rec", type="LSTM")
    for b in blobs:
        bp = lp.blobs.add()
        bp.shape.dim.extend(b.shape)
        bp.data.extend(b.reshape(-1).tolist())
    (tmp_path / "n.caffemodel").write_bytes(npm.SerializeToString())
    g = load_model(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    assert any("zero state" in n for n in g.notes), g.notes
    _check(g, {"x": x, "cont": cont}, {"h": lstm_oracle(x.astype(np.float64), cont, _f64(blobs))[0]})


def test_lstm_cost():
    kind = get_type("LSTM")
    p = kind.Params(num_output=256)
    ins = [(16, 10, 4096), (16, 10)]
    c = kind.cost(p, ins, kind.shapes(p, ins))
    assert c.params == 4 * 256 * 4096 + 4 * 256 + 4 * 256 * 256          # LRCN's lstm1
    assert c.macs == 16 * (4 * 256 * 4096 + 4 * 256 * 256)                # one stream, 16 steps


@pytest.mark.parametrize("rparam,ins,tops,match", [
    ("num_output: 0", [(3, 2, 4), (3, 2)], 1, "num_output must be positive"),
    ("num_output: 4", [(3, 2, 4), (3, 3)], 1, "cont"),
    ("num_output: 4", [(3, 2, 4), (3, 2), (3, 2)], 1, "x_static"),
    ("num_output: 4 expose_hidden: true", [(3, 2, 4), (3, 2), (1, 2, 5), (1, 2, 4)], 3, "initial state"),
    ("num_output: 4 expose_hidden: true", [(3, 2, 4), (3, 2), (1, 2, 4), (1, 2, 4)], 1, "produces 3"),
])
def test_lstm_refusals(rparam, ins, tops, match):
    inputs = {f"b{i}": np.zeros(s, np.float32) for i, s in enumerate(ins)}
    text = _net_text("LSTM", inputs, [f"t{i}" for i in range(tops)], rparam)
    with pytest.raises(ProtogenError, match=match):
        graph_from_net_param(parse_prototxt(text)).steps()


# ----------------------------------------------------------------------------- RNN
def _rnn_blobs(rng, hd, k, ks=None):
    ws = [rng.standard_normal((hd, k)) * 0.6, rng.standard_normal(hd) * 0.3]
    if ks is not None:
        ws.append(rng.standard_normal((hd, ks)) * 0.6)
    ws += [rng.standard_normal((hd, hd)) * 0.6, rng.standard_normal((hd, hd)) * 0.6,
           rng.standard_normal(hd) * 0.3]
    return [w.astype(np.float32) for w in ws]


def test_rnn_cont_resets():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    cont = np.ones((6, 2), np.float32)
    cont[0] = 0
    cont[4, 1] = 0
    blobs = _rnn_blobs(rng, 4, 3)
    want = rnn_oracle(x.astype(np.float64), cont, _f64(blobs))[0]
    _check(_run("RNN", {"x": x, "cont": cont}, blobs, ["o"], "num_output: 4"),
           {"x": x, "cont": cont}, {"o": want})


def test_rnn_expose_hidden_and_x_static():
    rng = np.random.default_rng(7)
    t, n, d, hd = 4, 3, 2, 5
    ins = {"x": rng.standard_normal((t, n, d)), "cont": np.ones((t, n)),
           "xs": rng.standard_normal((n, 4)), "h0": rng.standard_normal((1, n, hd))}
    ins = {k: v.astype(np.float32) for k, v in ins.items()}
    blobs = _rnn_blobs(rng, hd, d, ks=4)
    o, h_t = rnn_oracle(ins["x"].astype(np.float64), ins["cont"], _f64(blobs), ins["h0"],
                        ins["xs"].astype(np.float64))
    _check(_run("RNN", ins, blobs, ["o", "hT"], f"num_output: {hd} expose_hidden: true"),
           ins, {"o": o, "hT": h_t})


# ----------------------------------------------------------------------------- OpenCV
def _opencv_net(tmp_path, kind, inputs, blobs, rparam):
    (tmp_path / "n.prototxt").write_text(_net_text(kind, inputs, ["y"], rparam))
    npm = pb.NetParameter()
    lp = npm.layer.add(name="rec", type=kind)
    for b in blobs:
        bp = lp.blobs.add()
        bp.shape.dim.extend(b.shape)
        bp.data.extend(b.reshape(-1).tolist())
    (tmp_path / "n.caffemodel").write_bytes(npm.SerializeToString())
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel"))
    for k, v in inputs.items():
        net.setInput(v, k)
    return net.forward("rec")


@pytest.mark.skipif(not HAS_CV, reason="needs OpenCV's Caffe importer")
@pytest.mark.parametrize("d,hd", [(4, 5), (5, 5)])
def test_opencv_does_not_run_caffe_lstm(tmp_path, d, hd):
    """OpenCV's LSTM (dnn/src/layers/recurrent_layers.cpp) takes blobs (W_h, W_x, b) and inputs
    (x[, h_0, c_0]): Caffe's (W_xc, b_c, W_hc) with (x, cont) is refused (measured with
    OpenCV 4.14 on both a D != H and a D == H layer). Should OpenCV start running it, the
    output must equal Caffe's, else opencv_limit stays."""
    assert get_type("LSTM").opencv_limit(get_type("LSTM").Params(num_output=hd))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, d)).astype(np.float32)
    cont = np.array([[0, 0], [1, 1], [1, 0]], np.float32)
    blobs = _lstm_blobs(rng, hd, d)
    try:
        got = _opencv_net(tmp_path, "LSTM", {"x": x, "cont": cont}, blobs, f"num_output: {hd}")
    except cv2.error:
        return
    want = lstm_oracle(x.astype(np.float64), cont, _f64(blobs))[0]
    assert got.shape != want.shape or _rel(got, want) > 1e-3, "OpenCV now runs Caffe's LSTM: drop opencv_limit"


@pytest.mark.skipif(not HAS_CV, reason="needs OpenCV's Caffe importer")
def test_opencv_has_no_caffe_rnn(tmp_path):
    """OpenCV 4.x's Caffe importer has no "RNN" type (verify skips OpenCV for it)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 3)).astype(np.float32)
    with pytest.raises(cv2.error, match="RNN"):
        _opencv_net(tmp_path, "RNN", {"x": x, "cont": np.ones((3, 2), np.float32)},
                    _rnn_blobs(rng, 4, 3), "num_output: 4")


# ----------------------------------------------------------------------------- LSTMUnit
def test_lstm_unit_layer():
    """The LSTMUnit type alone (a hand-unrolled net): c_prev, gates, cont -> c, h, with a
    stream restarted (cont 0), a continued one and a scaled one (cont 0.5)."""
    rng = np.random.default_rng(10)
    ins = {"c": rng.standard_normal((1, 3, 4)).astype(np.float32),
           "g": (rng.standard_normal((1, 3, 16)) * 2).astype(np.float32),
           "cont": np.array([[0, 1, 0.5]], np.float32)}
    c, h = _lstm_unit(ins["c"].astype(np.float64), ins["g"].astype(np.float64), ins["cont"])
    text = (_net_text("LSTMUnit", ins, ["c_t", "h_t"], "").replace(" recurrent_param {  }", ""))
    g = graph_from_net_param(parse_prototxt(text))
    _check(g, ins, {"c_t": c, "h_t": h})


@pytest.mark.skipif(not HAS_CV, reason="needs OpenCV's Caffe importer")
def test_opencv_has_no_caffe_lstm_unit(tmp_path):
    ins = {"c": np.zeros((1, 2, 3), np.float32), "g": np.zeros((1, 2, 12), np.float32),
           "cont": np.ones((1, 2), np.float32)}
    (tmp_path / "n.prototxt").write_text(
        _net_text("LSTMUnit", ins, ["c_t", "h_t"], "").replace(" recurrent_param {  }", ""))
    with pytest.raises(cv2.error, match="LSTMUnit"):
        cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt")).forward("rec")
