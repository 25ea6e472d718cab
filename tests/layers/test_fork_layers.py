"""The layer types added for third-party and fork Caffe models (issue 9), each against an
independent oracle: a numpy transcription of the C++ forward that defines it (the file is named
next to each oracle), and OpenCV's dnn Caffe importer where it implements the type. protogen's
ONNX lowering (run by ONNX Runtime, float32) and its PyTorch reference (float64) must both
match the oracle within float32 round-off, on non-degenerate outputs.

Each net is written as prototxt text here and read through protogen's own parser, so the
params travel the way a user's file does.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from protogen.caffe import pb  # noqa: E402
from protogen.caffe.prototxt import graph_from_net_param, parse_prototxt  # noqa: E402
from protogen.onnx_io import export_onnx, load_check  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402

try:
    import cv2
    HAS_CV = hasattr(cv2.dnn, "readNetFromCaffe")
except ImportError:     # pragma: no cover
    HAS_CV = False


# ----------------------------------------------------------------------------- harness
def rand(shape, seed=0, lo=None, hi=None):
    rng = np.random.default_rng(seed)
    if lo is not None:
        return rng.uniform(lo, hi, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def net_text(layer: str, inputs: dict) -> str:
    """An Input layer for ``inputs`` (name -> array) and the layer text."""
    shapes = "".join("shape { " + " ".join(f"dim: {d}" for d in a.shape) + " } " for a in inputs.values())
    tops = "".join(f'top: "{n}" ' for n in inputs)
    return f'name: "t"\nlayer {{ name: "input" type: "Input" {tops}input_param {{ {shapes}}} }}\n{layer}\n'


def rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30)) if want.size else 0.0


def non_degenerate(a):
    a = np.asarray(a, np.float64)
    assert np.isfinite(a).all() and a.size and a.max() > a.min(), "degenerate oracle output"


def run(layer: str, inputs: dict, blobs=None, opencv=False, rtol=1e-5, want=None):
    """Run protogen (ORT float32 + torch float64) on the one-layer net; compare every output
    with ``want`` (name -> oracle array); with ``opencv``, OpenCV's Caffe importer too."""
    text = net_text(layer, inputs)
    g = graph_from_net_param(parse_prototxt(text))
    lay = g.layers[-1]
    if blobs is not None:
        lay.blobs = [np.asarray(b, np.float32) for b in blobs]
    m = export_onnx(g)
    load_check(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got_ort = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    net = TorchNet.from_graph(g).double()
    with torch.no_grad():
        got_t = {k: v.numpy() for k, v in net({k: torch.from_numpy(v.astype(np.float64))
                                               for k, v in inputs.items()}).items()}
    for k, w in (want or {}).items():
        non_degenerate(w)
        assert rel(got_t[k], w) <= 1e-6, f"torch {k}: {rel(got_t[k], w):.3g}"
        assert rel(got_ort[k], w) <= rtol, f"ORT {k}: {rel(got_ort[k], w):.3g}"
        if opencv and HAS_CV:
            cv = opencv_run(text, lay, inputs)
            assert rel(cv, w) <= max(rtol, 1e-5), f"OpenCV {k}: {rel(cv, w):.3g}"
    return got_ort, got_t


def opencv_run(text, lay, inputs):
    """OpenCV's dnn on the prototxt text (+ a caffemodel holding the layer's blobs)."""
    import tempfile
    from pathlib import Path
    d = Path(tempfile.mkdtemp())
    (d / "n.prototxt").write_text(text)
    args = [str(d / "n.prototxt")]
    if lay.blobs:
        npm = pb.NetParameter()
        lp = npm.layer.add(name=lay.name, type=lay.type)
        for b in lay.blobs:
            bp = lp.blobs.add()
            bp.shape.dim.extend(np.shape(b))
            bp.data.extend(np.asarray(b, np.float32).reshape(-1).tolist())
        (d / "n.caffemodel").write_bytes(npm.SerializeToString())
        args.append(str(d / "n.caffemodel"))
    net = cv2.dnn.readNetFromCaffe(*args)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for k, v in inputs.items():
        net.setInput(v, k)
    return net.forward(lay.name)


# ----------------------------------------------------------------------------- element-wise
def _softplus(x):
    return np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x)))


ELEMENTWISE = [
    # (type, params text, numpy oracle from the named C++ file, OpenCV implements it)
    ("ELU", "elu_param { alpha: 0.7 }", lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1)), True),  # elu_layer.cpp
    ("BNLL", "", _softplus, True),                                                               # bnll_layer.cpp
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x: 2.0 ** (1 + 0.5 * x), True),  # exp_layer.cpp
    ("Exp", "", np.exp, True),
    ("Threshold", "threshold_param { threshold: 0.3 }", lambda x: (x > 0.3).astype(np.float64), False),
    ("Swish", "swish_param { beta: 1.5 }", lambda x: x / (1 + np.exp(-1.5 * x)), False),
    ("Swish", "", lambda x: x / (1 + np.exp(-x)), True),
    ("HSwish", "", lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6, False),              # aovoc/caffe
    ("HSigmoid", "", lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6, False),
    ("Mish", "", lambda x: x * np.tanh(_softplus(x)), True),                                   # mish_layer.cpp
]


@pytest.mark.parametrize("kind,params,oracle,cv", ELEMENTWISE, ids=[f"{e[0]}-{i}" for i, e in enumerate(ELEMENTWISE)])
def test_elementwise(kind, params, oracle, cv):
    x = rand((2, 3, 4, 5), 1) * 3
    run(f'layer {{ name: "l" type: "{kind}" bottom: "x" top: "y" {params} }}', {"x": x},
        opencv=cv, want={"y": oracle(x.astype(np.float64))})


@pytest.mark.parametrize("params,base,scale,shift", [("", math.e, 1, 0), ("log_param { base: 10 scale: 2 shift: 0.5 }", 10, 2, 0.5)])
def test_log(params, base, scale, shift):
    x = rand((2, 3, 4, 4), 2, 0.1, 3.0)
    want = np.log(shift + scale * x.astype(np.float64)) / np.log(base)    # log_layer.cpp
    # OpenCV 4.x's Log ignores log_param (it computes ln(x)): compared only without params
    run(f'layer {{ name: "l" type: "Log" bottom: "x" top: "y" {params} }}', {"x": x}, opencv=not params,
        want={"y": want})


# ----------------------------------------------------------------------------- reductions
def reduction_ref(x, op, axis, coeff):
    """reduction_layer.cpp: num = count(0, axis) outputs, each over dim = count(axis) values."""
    x = x.astype(np.float64)
    num = int(np.prod(x.shape[:axis]))
    flat = x.reshape(num, -1)
    out = np.empty(num)
    for i in range(num):
        v = flat[i]
        out[i] = {"SUM": v.sum(), "ASUM": np.abs(v).sum(), "SUMSQ": (v * v).sum(), "MEAN": v.sum() / v.size}[op]
    return (out * coeff).reshape(x.shape[:axis])


@pytest.mark.parametrize("op,axis,coeff", [("SUM", 1, 1.0), ("ASUM", 2, -0.5), ("SUMSQ", 1, 2.0),
                                           ("MEAN", 2, 1.0), ("MEAN", -1, 3.0), ("SUM", 0, 0.25)])
def test_reduction_middle_axes(op, axis, coeff):
    x = rand((2, 3, 4, 5), 3)
    a = axis % 4
    layer = (f'layer {{ name: "l" type: "Reduction" bottom: "x" top: "y" '
             f'reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }} }}')
    want = reduction_ref(x, op, a, coeff)
    if want.size == 1:          # axis 0: a 0-D top; a single value cannot show spread
        got_ort, got_t = run(layer, {"x": x})
        assert got_ort["y"].shape == got_t["y"].shape == ()
        assert rel(got_t["y"], want) <= 1e-9 and rel(got_ort["y"], want) <= 1e-5
        return
    run(layer, {"x": x}, want={"y": want})


def argmax_ref(x, top_k, out_max_val, axis):
    """argmax_layer.cpp: (value, index) pairs sorted descending (std::greater: of equal values
    the larger index first); without axis over each sample's flattened values."""
    x = x.astype(np.float64)
    if axis is None:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        shape = [1] * max(3, x.ndim)
        shape[0], shape[1], shape[2] = n, 2 if out_max_val else 1, top_k
        out = np.zeros((n, 2 if out_max_val else 1, top_k))
        for i in range(n):
            pairs = sorted(((flat[i, j], j) for j in range(flat.shape[1])), reverse=True)[:top_k]
            for j, (v, k) in enumerate(pairs):
                out[i, 0, j] = k
                if out_max_val:
                    out[i, 1, j] = v
        return out.reshape(shape)
    xm = np.moveaxis(x, axis, -1)
    out = np.zeros(xm.shape[:-1] + (top_k,))
    for idx in np.ndindex(*xm.shape[:-1]):
        pairs = sorted(((xm[idx][j], j) for j in range(xm.shape[-1])), reverse=True)[:top_k]
        out[idx] = [v if out_max_val else k for v, k in pairs]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("top_k,out_max_val,axis", [(1, False, None), (3, True, None), (2, False, None),
                                                    (1, False, 1), (2, True, 1), (3, False, 3), (2, True, -2)])
def test_argmax(top_k, out_max_val, axis):
    x = rand((2, 4, 3, 5), 4)
    p = f"top_k: {top_k} out_max_val: {str(out_max_val).lower()}" + ("" if axis is None else f" axis: {axis}")
    want = argmax_ref(x, top_k, out_max_val, None if axis is None else axis % 4)
    run(f'layer {{ name: "l" type: "ArgMax" bottom: "x" top: "y" argmax_param {{ {p} }} }}', {"x": x},
        want={"y": want})


def mvn_ref(x, normalize_variance, across_channels, eps):
    """mvn_layer.cpp: per sample (and channel), x - mean, then / (sqrt(E[(x - mean)^2]) + eps)."""
    x = x.astype(np.float64)
    num = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    flat = x.reshape(num, -1).copy()
    for i in range(num):
        flat[i] -= flat[i].mean()
        if normalize_variance:
            flat[i] /= math.sqrt((flat[i] ** 2).mean()) + eps
    return flat.reshape(x.shape)


@pytest.mark.parametrize("nv,ac,eps", [(True, False, 1e-9), (True, True, 1e-9), (False, False, 1e-9),
                                       (False, True, 1e-9), (True, False, 0.5)])
def test_mvn(nv, ac, eps):
    x = rand((2, 3, 4, 5), 5) * 2 + 1
    p = f"normalize_variance: {str(nv).lower()} across_channels: {str(ac).lower()} eps: {eps}"
    # OpenCV adds eps under the square root (Caffe adds it to the standard deviation): it
    # agrees only while eps is negligible
    run(f'layer {{ name: "l" type: "MVN" bottom: "x" top: "y" mvn_param {{ {p} }} }}', {"x": x},
        opencv=eps < 1e-6, want={"y": mvn_ref(x, nv, ac, eps)})


# ----------------------------------------------------------------------------- crop, tile, axpy
def crop_ref(x, ref_shape, axis, offsets):
    """crop_layer.cpp: axes from ``axis`` take bottom 1's size at offset (0 / one / per axis)."""
    out = x
    for i in range(axis, x.ndim):
        o = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - axis]
        out = np.take(out, range(o, o + ref_shape[i]), axis=i)
    return out


@pytest.mark.parametrize("shape0,shape1,axis,offsets", [
    ((2, 3, 9, 8), (1, 1, 5, 6), 2, []),
    ((2, 3, 9, 8), (1, 1, 5, 6), 2, [2]),
    ((2, 3, 9, 8), (1, 1, 5, 6), 2, [4, 1]),
    ((2, 5, 9, 8), (2, 2, 4, 3), 1, [2, 0, 5]),
    ((2, 3, 9, 8), (2, 3, 9, 2), -1, [6]),
])
def test_crop_offsets_per_axis(shape0, shape1, axis, offsets):
    x, r = rand(shape0, 6), rand(shape1, 7)
    p = f"axis: {axis} " + " ".join(f"offset: {o}" for o in offsets)
    # OpenCV's Crop runs only where bottom 1 keeps bottom 0's sizes before the axis
    cv = all(shape0[i] == shape1[i] for i in range(axis % 4))
    run(f'layer {{ name: "l" type: "Crop" bottom: "x" bottom: "r" top: "y" crop_param {{ {p} }} }}',
        {"x": x, "r": r}, opencv=cv, want={"y": crop_ref(x, shape1, axis % 4, offsets)})


def tile_ref(x, axis, tiles):
    """tile_layer.cpp: for each outer index, the inner block (axes from axis on) copied tiles times."""
    outer = int(np.prod(x.shape[:axis]))
    inner = x.reshape(outer, -1)
    out = np.concatenate([inner] * tiles, axis=1)
    shape = list(x.shape)
    shape[axis] *= tiles
    return out.reshape(shape)


@pytest.mark.parametrize("axis,tiles", [(1, 3), (2, 4), (3, 2), (0, 2), (-1, 3)])
def test_tile(axis, tiles):
    x = rand((2, 3, 2, 3), 8)
    run(f'layer {{ name: "l" type: "Tile" bottom: "x" top: "y" tile_param {{ axis: {axis} tiles: {tiles} }} }}',
        {"x": x}, want={"y": tile_ref(x, axis % 4, tiles)})


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy(a_shape):
    """hujie-frank/SENet axpy_layer.cpp: top[n, c] = a[n, c] * x[n, c] + y[n, c]."""
    a, x, y = rand(a_shape, 9), rand((2, 3, 4, 5), 10), rand((2, 3, 4, 5), 11)
    want = np.empty((2, 3, 4, 5))
    for n in range(2):
        for c in range(3):
            want[n, c] = a.reshape(2, 3)[n, c] * x[n, c].astype(np.float64) + y[n, c]
    run('layer { name: "l" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "z" }',
        {"a": a, "x": x, "y": y}, want={"z": want})     # OpenCV 4.14's Axpy fails on these shapes


def test_crop_center():
    """lltcggie/caffe crop_center_layer.cpp: crop_size[i] off both ends of axis i."""
    x = rand((2, 3, 9, 8), 12)
    run('layer { name: "l" type: "CropCenter" bottom: "x" top: "y" crop_center_param '
        '{ crop_size: 0 crop_size: 1 crop_size: 2 crop_size: 3 } }', {"x": x},
        want={"y": x[:, 1:2, 2:7, 3:5]})


def test_silence_consumes_without_output():
    x = rand((2, 3, 4, 4), 13)
    text = ('layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n'
            'layer { name: "s" type: "Silence" bottom: "x" bottom: "y" }\n'
            'layer { name: "t" type: "TanH" bottom: "x" top: "z" }')
    got_ort, got_t = run(text, {"x": x}, want={"z": np.tanh(x.astype(np.float64))})
    assert sorted(got_ort) == sorted(got_t) == ["z"]       # y is silenced: no net output


# ----------------------------------------------------------------------------- Interp
def interp_ref(x, h_out, w_out, pad_beg=0, pad_end=0):
    """caffe_cpu_interp2 (DeepLab src/caffe/util/interp.cpp) on the input cropped by the pads:
    float32 source positions r * i with r = (in - 1) / (out - 1), int truncation, neighbour
    clamped at the last row/column; a same-size input is copied."""
    h_in, w_in = x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end
    x = x[:, :, -pad_beg:-pad_beg + h_in, -pad_beg:-pad_beg + w_in].astype(np.float64)
    if (h_in, w_in) == (h_out, w_out):
        return x.copy()
    rh = np.float32(h_in - 1) / np.float32(h_out - 1) if h_out > 1 else np.float32(0)
    rw = np.float32(w_in - 1) / np.float32(w_out - 1) if w_out > 1 else np.float32(0)
    y = np.empty(x.shape[:2] + (h_out, w_out))
    for i in range(h_out):
        h1r = np.float32(rh * np.float32(i))
        h1 = int(h1r)
        h1p = 1 if h1 < h_in - 1 else 0
        l1 = float(np.float32(h1r - np.float32(h1)))
        for j in range(w_out):
            w1r = np.float32(rw * np.float32(j))
            w1 = int(w1r)
            w1p = 1 if w1 < w_in - 1 else 0
            m1 = float(np.float32(w1r - np.float32(w1)))
            y[:, :, i, j] = ((1 - l1) * ((1 - m1) * x[:, :, h1, w1] + m1 * x[:, :, h1, w1 + w1p])
                             + l1 * ((1 - m1) * x[:, :, h1 + h1p, w1] + m1 * x[:, :, h1 + h1p, w1 + w1p]))
    return y


@pytest.mark.parametrize("params,shape,out,pads", [
    ("zoom_factor: 2", (2, 3, 5, 7), (9, 13), (0, 0)),
    ("shrink_factor: 2", (2, 3, 9, 6), (5, 3), (0, 0)),
    ("shrink_factor: 4 zoom_factor: 3", (1, 2, 13, 11), (10, 7), (0, 0)),
    ("height: 7 width: 4", (2, 2, 5, 9), (7, 4), (0, 0)),
    ("zoom_factor: 3 pad_beg: -1 pad_end: -2", (1, 3, 8, 9), (13, 16), (-1, -2)),
    ("shrink_factor: 2 pad_beg: -1 pad_end: 0", (2, 2, 10, 7), (5, 3), (-1, 0)),
    ("height: 1 width: 5", (1, 2, 4, 3), (1, 5), (0, 0)),
])
def test_interp_odd_sizes_and_pads(params, shape, out, pads):
    x = rand(shape, 14)
    # OpenCV's Interp follows the same align-corners rule for zoom_factor and height/width
    # alone; it has no pads and sizes shrink_factor differently (or refuses it)
    run(f'layer {{ name: "l" type: "Interp" bottom: "x" top: "y" interp_param {{ {params} }} }}', {"x": x},
        opencv=pads == (0, 0) and "shrink" not in params, want={"y": interp_ref(x, *out, *pads)})


def test_interp_size_from_second_bottom():
    x, r = rand((2, 3, 5, 4), 15), rand((1, 1, 8, 11), 16)
    run('layer { name: "l" type: "Interp" bottom: "x" bottom: "r" top: "y" }', {"x": x, "r": r},
        want={"y": interp_ref(x, 8, 11)})


# ----------------------------------------------------------------------------- Upsample
def pool_mask(rng, n, c, h, w, out_h, out_w):
    """Flat h*W+w indices of a 2x2 stride-2 max pooling over an out_h x out_w plane."""
    hh = np.minimum(2 * np.arange(h)[:, None] + rng.integers(0, 2, (n, c, h, w)), out_h - 1)
    ww = np.minimum(2 * np.arange(w)[None, :] + rng.integers(0, 2, (n, c, h, w)), out_w - 1)
    return (hh * out_w + ww).astype(np.float32)


def unpool_ref(x, mask, out_h, out_w):
    """alexgkendall/caffe-segnet upsample_layer.cpp: zero output, top[mask[i]] = x[i] per plane."""
    n, c = x.shape[:2]
    y = np.zeros((n, c, out_h * out_w))
    for a in range(n):
        for b in range(c):
            for i, (v, k) in enumerate(zip(x[a, b].reshape(-1), mask[a, b].reshape(-1))):
                y[a, b, int(k)] = v
    return y.reshape(n, c, out_h, out_w)


@pytest.mark.parametrize("params,shape,out", [
    ("scale: 2", (2, 3, 4, 5), (8, 10)),
    ("scale: 2 pad_out_h: true pad_out_w: true", (2, 2, 4, 3), (7, 5)),     # odd output sizes
    ("upsample_h: 9 upsample_w: 7", (1, 3, 5, 4), (9, 7)),
    ("scale_h: 2 scale_w: 2 pad_out_w: true", (2, 2, 3, 4), (6, 7)),
])
def test_upsample_with_mask(params, shape, out):
    rng = np.random.default_rng(17)
    x = rand(shape, 18)
    mask = pool_mask(rng, *shape, *out)
    run(f'layer {{ name: "l" type: "Upsample" bottom: "x" bottom: "m" top: "y" upsample_param {{ {params} }} }}',
        {"x": x, "m": mask}, want={"y": unpool_ref(x, mask, *out)})


@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_nearest_scale(scale):
    """eric612/MobileNet-YOLO upsample_layer.cpp: top[h, w] = x[h / s, w / s]."""
    x = rand((2, 3, 4, 5), 19)
    want = np.empty((2, 3, 4 * scale, 5 * scale))
    for h in range(4 * scale):
        for w in range(5 * scale):
            want[:, :, h, w] = x[:, :, h // scale, w // scale]
    run(f'layer {{ name: "l" type: "Upsample" bottom: "x" top: "y" upsample_param {{ scale: {scale} }} }}',
        {"x": x}, want={"y": want})


# ----------------------------------------------------------------------------- batch statistics
def batch_stats_ref(x, eps):
    """batch_norm_layer.cpp, use_global_stats false: per channel mean over N, H, W, variance
    E[(x - mean)^2], y = (x - mean) / sqrt(var + eps)."""
    x = x.astype(np.float64)
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        v = x[:, c]
        m = v.mean()
        y[:, c] = (v - m) / math.sqrt(((v - m) ** 2).mean() + eps)
    return y


def test_batchnorm_use_global_stats_false_uses_batch_statistics():
    x = rand((3, 4, 5, 5), 20) * 2 + 0.5
    blobs = [rand(4, 21), rand(4, 22, 1, 2), np.ones(1, np.float32)]     # stored stats: ignored
    got_ort, _ = run('layer { name: "l" type: "BatchNorm" bottom: "x" top: "y" '
                     'batch_norm_param { use_global_stats: false eps: 0.001 } }', {"x": x}, blobs=blobs,
                     want={"y": batch_stats_ref(x, 1e-3)})
    # and the stored statistics would have given something else
    g = graph_from_net_param(parse_prototxt(net_text(
        'layer { name: "l" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.001 } }', {"x": x})))
    g.layers[-1].blobs = blobs
    stored = TorchNet.from_graph(g)({"x": torch.from_numpy(x)})["y"].detach().numpy()
    assert rel(stored, got_ort["y"]) > 0.1


def test_batch_statistics_note():
    from protogen.layers import get_type
    bn = get_type("BatchNorm")
    assert bn.note(bn.Params(use_global_stats=False))
    assert bn.note(bn.Params()) is None and bn.note(bn.Params(use_global_stats=True)) is None


def test_segnet_bn_modes():
    """alexgkendall/caffe-segnet bn_layer.cpp: LEARN normalises by the batch (var = E[x^2] -
    E[x]^2, eps 1e-9) then scale/shift; INFERENCE only scales and shifts."""
    x = rand((2, 3, 4, 5), 23) + 1
    scale, shift = rand((1, 3, 1, 1), 24, 0.5, 1.5), rand((1, 3, 1, 1), 25)
    xd = x.astype(np.float64)
    m = xd.mean(axis=(0, 2, 3), keepdims=True)
    var = (xd ** 2).mean(axis=(0, 2, 3), keepdims=True) - m ** 2
    learn = (xd - m) / np.sqrt(var + 1e-9) * scale + shift
    run('layer { name: "l" type: "BN" bottom: "x" top: "y" bn_param { bn_mode: LEARN '
        'scale_filler { type: "constant" value: 1 } } }', {"x": x}, blobs=[scale, shift], want={"y": learn})
    run('layer { name: "l" type: "BN" bottom: "x" top: "y" bn_param { bn_mode: INFERENCE } }', {"x": x},
        blobs=[scale, shift], want={"y": xd * scale + shift})


def test_pspnet_bn():
    """hszhao/PSPNet bn_layer.cpp (c479f4f), TEST phase: slope * (x - mean) * (var + eps)^-1/2 + bias."""
    x = rand((2, 3, 4, 5), 26)
    slope, bias, mean, var = (rand((1, 3, 1, 1), 27, 0.5, 1.5), rand((1, 3, 1, 1), 28),
                              rand((1, 3, 1, 1), 29), rand((1, 3, 1, 1), 30, 0.5, 2))
    want = slope * (x.astype(np.float64) - mean) * (var.astype(np.float64) + 1e-5) ** -0.5 + bias
    run('layer { name: "l" type: "BN" bottom: "x" top: "y" bn_param { frozen: true momentum: 0.95 '
        'slope_filler { type: "constant" value: 1 } } }', {"x": x}, blobs=[slope, bias, mean, var],
        want={"y": want})


# ----------------------------------------------------------------------------- convolution forms
def test_convolution_with_several_bottoms_shares_weights():
    xs = {"a": rand((2, 3, 6, 6), 31), "b": rand((2, 3, 6, 6), 32)}
    w, b = rand((4, 3, 3, 3), 33), rand(4, 34)
    # oracle: Caffe applies the one filter bank to each bottom: a direct correlation per bottom
    want = {}
    for name, top in (("a", "ya"), ("b", "yb")):
        x = xs[name].astype(np.float64)
        y = np.zeros((2, 4, 4, 4))
        for i in range(4):
            for j in range(4):
                y[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i:i + 3, j:j + 3], w) + b
        want[top] = y
    run('layer { name: "l" type: "Convolution" bottom: "a" bottom: "b" top: "ya" top: "yb" '
        'convolution_param { num_output: 4 kernel_size: 3 } }', xs, blobs=[w, b], want=want)


def test_convolution_depthwise_ignores_group():
    """conv_dw_layer.cpp: weights (C, 1, k, k), channel c filtered by its own kernel."""
    x, w = rand((2, 3, 5, 5), 35), rand((3, 1, 3, 3), 36)
    y = np.zeros((2, 3, 3, 3))
    for c in range(3):
        for i in range(3):
            for j in range(3):
                y[:, c, i, j] = (x[:, c, i:i + 3, j:j + 3].astype(np.float64) * w[c, 0]).sum(axis=(1, 2))
    for kind in ("ConvolutionDepthwise", "DepthwiseConvolution"):
        grp = "" if kind == "ConvolutionDepthwise" else " group: 3"
        run(f'layer {{ name: "l" type: "{kind}" bottom: "x" top: "y" convolution_param {{ num_output: 3 '
            f'kernel_size: 3 bias_term: false{grp} }} }}', {"x": x}, blobs=[w], want={"y": y})


def test_bad_params_are_refused_with_the_layer_named():
    from protogen.errors import ProtogenError
    x = rand((2, 3, 9, 8), 37)
    cases = [
        ('layer { name: "c" type: "Crop" bottom: "x" bottom: "x2" top: "y" crop_param { offset: 4 } }',
         {"x": x, "x2": rand((1, 1, 5, 6), 38)}, "out of bounds"),
        ('layer { name: "c" type: "Interp" bottom: "x" top: "y" interp_param { zoom_factor: 2 pad_beg: 1 } }',
         {"x": x}, "<= 0"),
        ('layer { name: "c" type: "CropCenter" bottom: "x" top: "y" crop_center_param { crop_size: 1 } }',
         {"x": x}, "one crop_size per axis"),
        ('layer { name: "c" type: "Upsample" bottom: "x" top: "y" upsample_param { upsample_h: 4 upsample_w: 4 } }',
         {"x": x}, "only `scale`"),
        ('layer { name: "c" type: "ConvolutionDepthwise" bottom: "x" top: "y" '
         'convolution_param { num_output: 6 kernel_size: 3 } }', {"x": x}, "num_output says 6"),
    ]
    for layer, inputs, msg in cases:
        with pytest.raises(ProtogenError) as e:
            graph_from_net_param(parse_prototxt(net_text(layer, inputs))).steps()
        assert msg in str(e.value) and "'c'" in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- MAX pooling's mask top
def max_pool_mask_ref(x, k, s, pad, ceil=True):
    """pooling_layer.cpp MAX with a mask top: windows clipped to the image, first maximum
    (strict >) in row-major order, mask = h * W + w."""
    n, c, h, w = x.shape
    rnd = math.ceil if ceil else math.floor
    ho, wo = int(rnd((h + 2 * pad - k) / s)) + 1, int(rnd((w + 2 * pad - k) / s)) + 1
    if pad and (ho - 1) * s >= h + pad:
        ho -= 1
    if pad and (wo - 1) * s >= w + pad:
        wo -= 1
    y, m = np.empty((n, c, ho, wo)), np.empty((n, c, ho, wo))
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    hs, ws = i * s - pad, j * s - pad
                    he, we = min(hs + k, h), min(ws + k, w)
                    hs, ws = max(hs, 0), max(ws, 0)
                    best, idx = -np.inf, -1
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            if x[a, b, hh, ww] > best:
                                best, idx = x[a, b, hh, ww], hh * w + ww
                    y[a, b, i, j], m[a, b, i, j] = best, idx
    return y, m


@pytest.mark.parametrize("shape,k,s,pad", [((2, 3, 8, 6), 2, 2, 0), ((2, 2, 7, 9), 3, 2, 1), ((1, 2, 5, 5), 2, 2, 0),
                                           ((1, 3, 6, 7), 3, 2, 0)])
def test_max_pooling_mask_top(shape, k, s, pad):
    x = rand(shape, 40)
    y, m = max_pool_mask_ref(x, k, s, pad)
    run(f'layer {{ name: "l" type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param {{ pool: MAX '
        f'kernel_size: {k} stride: {s} pad: {pad} }} }}', {"x": x}, want={"y": y, "m": m})


def test_segnet_pool_then_unpool_roundtrip():
    """SegNet's encoder/decoder pair: pool with a mask, unpool at the mask (upsample_h/w)."""
    x = rand((2, 3, 7, 9), 41)
    y, m = max_pool_mask_ref(x, 2, 2, 0)
    text = ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param { pool: MAX '
            'kernel_size: 2 stride: 2 } }\n'
            'layer { name: "u" type: "Upsample" bottom: "y" bottom: "m" top: "z" upsample_param '
            '{ upsample_h: 7 upsample_w: 9 } }')
    want = unpool_ref(y, m, 7, 9)
    run(text, {"x": x}, want={"z": want})
    # the generated PyTorch module computes the same (pad-free pooling with indices, scatter)
    from protogen.torch_codegen import SourceContext, graph_to_torch_source, torch_state_dict
    g = graph_from_net_param(parse_prototxt(net_text(text, {"x": x})))
    ctxs: list[SourceContext] = []
    src = graph_to_torch_source(g, "Net", _ctx_out=ctxs)
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)
    model = ns["Net"]()
    model.load_state_dict(torch_state_dict(ctxs[0]), strict=True)
    with torch.no_grad():
        got = model.double()(torch.from_numpy(x.astype(np.float64)))
    assert rel(got.numpy(), want) <= 1e-12


def test_loader_notes_batch_statistics_once(tmp_path):
    """A converted net says, in one line, which layers normalise with batch statistics."""
    from protogen.caffe.loader import load_model
    x = rand((1, 3, 4, 4), 42)
    layers = "\n".join(f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "x" top: "x" '
                       f'batch_norm_param {{ use_global_stats: false }} }}' for i in range(4))
    layers += '\nlayer { name: "seg" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: LEARN } }'
    layers += '\nlayer { name: "ok" type: "BatchNorm" bottom: "x" top: "x" }'
    f = tmp_path / "n.prototxt"
    f.write_text(net_text(layers, {"x": x}))
    g = load_model(f)
    said = [n for n in g.notes if "batch's own mean" in n]
    assert len(said) == 2, g.notes
    assert "4 layer(s) ('bn0', 'bn1', 'bn2', ...)" in said[0] and "use_global_stats: false" in said[0]
    assert "'seg'" in said[1] and "'ok'" not in " ".join(said)


# ----------------------------------------------------------------------------- Scale / Bias, two bottoms
def affine_ref(x, factor, axis, bias=None, add=False):
    """scale_layer.cpp / bias_layer.cpp with the factor as bottom 1: outer = count(0, axis),
    dim = bottom 1's count, inner = count(axis + bottom 1's axes);
    top[(n * dim + d) * inner + k] = x * factor[d] (+ bias[d]), or x + factor[d] for Bias."""
    x = x.astype(np.float64)
    outer = int(np.prod(x.shape[:axis]))
    dim = factor.size
    y = x.reshape(outer, dim, -1).copy()
    f = factor.reshape(-1).astype(np.float64)
    for n in range(outer):
        for d in range(dim):
            y[n, d] = y[n, d] + f[d] if add else y[n, d] * f[d] + (0 if bias is None else bias.reshape(-1)[d])
    return y.reshape(x.shape)


@pytest.mark.parametrize("axis,fshape", [(0, (2, 4)), (1, (4,)), (1, (4, 5)), (0, (2, 4, 5, 1))])
def test_scale_with_second_bottom(axis, fshape):
    """SE blocks (SENet-Caffe: scale_param { axis: 0 } with an (N, C) second bottom)."""
    x, f = rand((2, 4, 5, 1), 43), rand(fshape, 44)
    run(f'layer {{ name: "l" type: "Scale" bottom: "x" bottom: "f" top: "y" scale_param {{ axis: {axis} }} }}',
        {"x": x, "f": f}, opencv=True, want={"y": affine_ref(x, f, axis)})


def test_scale_with_second_bottom_and_bias_blob():
    x, f, b = rand((2, 4, 3, 3), 45), rand((2, 4), 46), rand((2, 4), 47)
    run('layer { name: "l" type: "Scale" bottom: "x" bottom: "f" top: "y" scale_param { axis: 0 bias_term: true } }',
        {"x": x, "f": f}, blobs=[b], want={"y": affine_ref(x, f, 0, bias=b)})


@pytest.mark.parametrize("axis,fshape", [(0, (2, 4)), (1, (4, 3))])
def test_bias_with_second_bottom(axis, fshape):
    x, f = rand((2, 4, 3, 2), 48), rand(fshape, 49)
    run(f'layer {{ name: "l" type: "Bias" bottom: "x" bottom: "f" top: "y" bias_param {{ axis: {axis} }} }}',
        {"x": x, "f": f}, want={"y": affine_ref(x, f, axis, add=True)})


def test_bias_second_bottom_shape_mismatch_is_refused():
    from protogen.errors import ProtogenError
    x, f = rand((2, 4, 3, 2), 50), rand((4, 2), 51)
    with pytest.raises(ProtogenError, match="does not match"):
        graph_from_net_param(parse_prototxt(net_text(
            'layer { name: "l" type: "Bias" bottom: "x" bottom: "f" top: "y" }', {"x": x, "f": f}))).steps()


@pytest.mark.skipif(not HAS_CV, reason="needs OpenCV's Caffe importer")
@pytest.mark.parametrize("layer,inputs", [
    ('layer { name: "l" type: "Tile" bottom: "x" top: "y" tile_param { axis: 1 tiles: 2 } }', {"x": (1, 2, 3, 3)}),
    ('layer { name: "l" type: "Interp" bottom: "x" top: "y" interp_param { shrink_factor: 2 } }', {"x": (1, 2, 9, 7)}),
    ('layer { name: "l" type: "Log" bottom: "x" top: "y" log_param { scale: 2 } }', {"x": (1, 2, 3, 3)}),
    ('layer { name: "l" type: "MVN" bottom: "x" top: "y" mvn_param { eps: 0.5 } }', {"x": (1, 2, 3, 3)}),
])
def test_opencv_limits_are_real(layer, inputs):
    """Each declared opencv_limit (verify skips OpenCV for such layers) is a real OpenCV
    shortcoming: OpenCV fails or differs from protogen's reference (itself tested above)."""
    xs = {k: rand(s, 52, 0.5, 2.0) for k, s in inputs.items()}
    text = net_text(layer, xs)
    g = graph_from_net_param(parse_prototxt(text))
    lay = g.layers[-1]
    assert lay.kind.opencv_limit(lay.params)
    _, got = run(layer, xs)
    try:
        cv = opencv_run(text, lay, xs)
    except cv2.error:
        return
    assert cv.shape != got["y"].shape or rel(cv, got["y"]) > 1e-3
