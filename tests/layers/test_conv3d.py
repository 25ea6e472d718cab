"""3-D convolution nets: upstream N-D Convolution/Deconvolution on 5-D blobs and the C3D fork's
CONVOLUTION3D / POOLING3D / VIDEO_DATA, against numpy transcriptions of the C++ forwards
written here, through the float64/float32 PyTorch reference, ONNX Runtime, the generated
PyTorch source and (where its Caffe importer runs the layer) OpenCV's dnn.

Transcribed sources:
* Convolution: BVLC/caffe src/caffe/layers/base_conv_layer.cpp (forward_cpu_gemm over
  im2col_nd_cpu of src/caffe/util/im2col.cpp): out[o, p] = sum over c, k of
  w[o, c, k] * x[c, p*stride - pad + k*dilation] (zero outside), per group, + bias;
* Deconvolution: BVLC/caffe src/caffe/layers/deconv_layer.cpp (backward_cpu_gemm +
  col2im_nd_cpu): every input element scatters w[c, o, k] * x[c, i] to output i*stride - pad
  + k*dilation;
* C3D Pooling3D: facebookarchive/C3D src/caffe/layers/pool3d_layer.cpp (SetUp, Forward_cpu),
  loops as written there.

OpenCV 4's Caffe importer (measured here): runs a 3-D Convolution when kernel_size (and the
other fields) give three values (a single kernel_size is read as 2-D, so protogen writes 5-D
layers with three values each); reads a 3-D Deconvolution but refuses to run it ("unsupported
on OpenCV backend"); has no Pooling3D (C3D's type), and its Pooling is 2-D only.
"""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.errors import ProtogenError  # noqa: E402
from protogen.weights import init_weights  # noqa: E402
from tests.helpers import CORPUS, needs_corpus, rel_err  # noqa: E402
from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)
from tests.layers.test_yolo import run_all  # noqa: E402

FLT_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- numpy forwards
def np_conv_nd(x, w, b, stride, pad, dil, group):
    """Caffe's N-D convolution (im2col_nd + gemm), as a sum over kernel offsets."""
    n, c = x.shape[:2]
    sizes, k = x.shape[2:], w.shape[2:]
    out = [(i + 2 * p - (d * (kk - 1) + 1)) // s + 1 for i, kk, s, p, d in zip(sizes, k, stride, pad, dil)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    y = np.zeros((n, w.shape[0], *out))
    cg, og = c // group, w.shape[0] // group
    for off in np.ndindex(*k):
        sl = tuple(slice(o * d, o * d + s * (m - 1) + 1, s) for o, d, s, m in zip(off, dil, stride, out))
        patch = xp[(slice(None), slice(None)) + sl]
        for g in range(group):
            y[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", patch[:, g * cg:(g + 1) * cg],
                                                   w[(slice(g * og, (g + 1) * og), slice(None)) + off])
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(out))
    return y


def np_deconv_nd(x, w, b, stride, pad, dil, group):
    """Caffe's N-D deconvolution (col2im_nd of w^T x): scatter, then drop ``pad`` each side."""
    n, c = x.shape[:2]
    sizes, k = x.shape[2:], w.shape[2:]
    full = [s * (i - 1) + d * (kk - 1) + 1 for i, kk, s, d in zip(sizes, k, stride, dil)]
    og = w.shape[1]
    cg = c // group
    y = np.zeros((n, og * group, *full))
    for off in np.ndindex(*k):
        sl = tuple(slice(o * d, o * d + s * (i - 1) + 1, s) for o, d, s, i in zip(off, dil, stride, sizes))
        for g in range(group):
            y[(slice(None), slice(g * og, (g + 1) * og)) + sl] += np.einsum(
                "nc...,co->no...", x[:, g * cg:(g + 1) * cg], w[(slice(g * cg, (g + 1) * cg), slice(None)) + off])
    y = y[(slice(None), slice(None)) + tuple(slice(p, f - p) for p, f in zip(pad, full))]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(sizes))
    return y


def np_c3d_pool(x, pool, k, kd, s, ts, pad):
    """pool3d_layer.cpp SetUp + Forward_cpu, loop for loop."""
    import math
    n, c, L, H, W = x.shape
    ph = int(math.ceil((H + 2 * pad - k) / s)) + 1
    pw = int(math.ceil((W + 2 * pad - k) / s)) + 1
    pl = int(math.ceil((L - kd) / ts)) + 1
    y = np.zeros((n, c, pl, ph, pw))
    for a in range(pl):
        for i in range(ph):
            for j in range(pw):
                if pool == "MAX":
                    hs, ws, ls = i * s, j * s, a * ts
                    he, we, le = min(hs + k, H), min(ws + k, W), min(ls + kd, L)
                    y[:, :, a, i, j] = np.maximum(-FLT_MAX, x[:, :, ls:le, hs:he, ws:we].max(axis=(2, 3, 4)))
                else:
                    hs, ws, ls = i * s - pad, j * s - pad, a * ts
                    he, we, le = min(hs + k, H + pad), min(ws + k, W + pad), min(ls + kd, L)
                    size = (he - hs) * (we - ws) * (le - ls)
                    hs, ws = max(hs, 0), max(ws, 0)
                    he, we, le = min(he, H), min(we, W), min(le, L)
                    y[:, :, a, i, j] = x[:, :, ls:le, hs:he, ws:we].sum(axis=(2, 3, 4)) / size
    return y


# ----------------------------------------------------------------------------- helpers
def _load(tmp_path, text, name="t.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    g = load_model(p)
    init_weights(g, 0)
    return g


def _feeds(g, seed=0):
    rng = np.random.default_rng(seed)
    return {l.tops[0]: rng.standard_normal(l.kind.output_shapes(l.params, [], 1)[0]).astype(np.float32)
            for l in g.input_layers()}


def _check_all(g, want, top, rtol=1e-5):
    """float64 reference == numpy (1e-9); float32 reference, ORT, generated source within rtol."""
    feeds = _feeds(g)
    names = list(feeds)
    res = run_all(g, names, [top], [feeds[n] for n in names])
    assert res["torch64"][0].shape == want.shape
    assert rel_err(res["torch64"][0], want) <= 1e-9, rel_err(res["torch64"][0], want)
    for k in ("torch32", "ort", "source"):
        assert rel_err(res[k][0], want) <= rtol, (k, rel_err(res[k][0], want))
    return feeds


def _opencv(g, feeds, top, tmp_path):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer")
    from protogen import verify_runtimes as R
    from protogen.dialect import DEFAULT
    return R.run_opencv_caffe(g, DEFAULT, feeds, [top], tmp_path)


def _conv_net(typ, body, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n'
            f'layer {{ name: "c" type: "{typ}" bottom: "data" top: "c" convolution_param {{ {body} }} }}\n')


# ----------------------------------------------------------------------------- upstream N-D
CONV_CASES = [  # (body, input shape, stride, pad, dilation, group): odd sizes, pads, strides
    ("num_output: 4 kernel_size: 3 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2 stride: 2 "
     "pad: 1 pad: 0 pad: 1 dilation: 1 dilation: 1 dilation: 2", (2, 3, 5, 7, 9), (1, 2, 2), (1, 0, 1), (1, 1, 2), 1),
    ("num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 3", (1, 6, 5, 6, 7), (2, 2, 2), (1, 1, 1), (1, 1, 1), 3),
    ("num_output: 2 kernel_size: 2 stride: 2 bias_term: false", (1, 3, 4, 5, 3), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
]


@pytest.mark.parametrize("body,shape,stride,pad,dil,group", CONV_CASES)
def test_convolution_3d_matches_numpy(tmp_path, body, shape, stride, pad, dil, group):
    g = _load(tmp_path, _conv_net("Convolution", body, shape))
    w = g.layers[1].blobs
    feeds = _feeds(g)
    want = np_conv_nd(feeds["data"].astype(np.float64), w[0].astype(np.float64),
                      w[1].astype(np.float64) if len(w) > 1 else None, stride, pad, dil, group)
    _check_all(g, want, "c")
    # OpenCV's Caffe importer runs the written 3-D convolution (three values per field)
    got = _opencv(g, feeds, "c", tmp_path)["c"]
    assert rel_err(got, want) <= 1e-5


DECONV_CASES = [
    ("num_output: 3 kernel_size: 2 kernel_size: 3 kernel_size: 3 stride: 1 stride: 2 stride: 2 "
     "pad: 0 pad: 1 pad: 1", (2, 4, 3, 4, 5), (1, 2, 2), (0, 1, 1), (1, 1, 1), 1),
    ("num_output: 4 kernel_size: 2 stride: 2 group: 2", (1, 4, 3, 2, 5), (2, 2, 2), (0, 0, 0), (1, 1, 1), 2),
]


@pytest.mark.parametrize("body,shape,stride,pad,dil,group", DECONV_CASES)
def test_deconvolution_3d_matches_numpy(tmp_path, body, shape, stride, pad, dil, group):
    g = _load(tmp_path, _conv_net("Deconvolution", body, shape))
    w = g.layers[1].blobs
    feeds = _feeds(g)
    want = np_deconv_nd(feeds["data"].astype(np.float64), w[0].astype(np.float64),
                        w[1].astype(np.float64), stride, pad, dil, group)
    _check_all(g, want, "c")


def test_opencv_cannot_run_3d_deconvolution(tmp_path):
    """OpenCV 4 reads a 3-D Deconvolution and refuses to run it: verify skips OpenCV there
    (Deconvolution.opencv_limit_shapes) instead of failing. Should OpenCV run it one day, this
    fails and the limit goes."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer")
    from protogen import verify_runtimes as R
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import to_net_param
    from protogen.ir import DEPLOY
    g = _load(tmp_path, _conv_net("Deconvolution", DECONV_CASES[0][0], DECONV_CASES[0][1]))
    np_ = to_net_param(g, DEPLOY)
    (tmp_path / "d.prototxt").write_text(R.opencv_prototxt(np_))
    write_caffemodel(tmp_path / "d.caffemodel", R._weights_only(np_), {l.name: l.blobs for l in g.layers if l.blobs})
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "d.prototxt"), str(tmp_path / "d.caffemodel"))
    net.setInput(_feeds(g)["data"])
    with pytest.raises(cv2.error, match="unsupported on OpenCV backend"):
        net.forward()


def test_nd_field_counts_follow_caffe(tmp_path):
    # two values, or kernel_h/kernel_w, are 2-D only (base_conv_layer.cpp CHECKs)
    for body in ("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3 pad: 1 pad: 1",
                 "num_output: 2 kernel_h: 3 kernel_w: 2"):
        with pytest.raises(ProtogenError, match="spatial ax|2-D only|one value"):
            _load(tmp_path, _conv_net("Convolution", body, (1, 2, 4, 5, 6)))
    # three different values on a 4-D input
    with pytest.raises(ProtogenError, match="3 spatial values"):
        _load(tmp_path, _conv_net("Convolution", "num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3",
                                  (1, 2, 5, 6)))
    # C3D's fields on an upstream Convolution are refused, not ignored
    with pytest.raises(ProtogenError, match="kernel_depth"):
        _load(tmp_path, _conv_net("Convolution", "num_output: 2 kernel_size: 3 kernel_depth: 3", (1, 2, 4, 5, 6)))


def test_5d_layers_keep_caffe_semantics(tmp_path):
    """PReLU (slope per channel, axis 1), Eltwise, Concat (axis 1), Softmax (axis 1) and
    InnerProduct (flattens from axis 1) on 5-D blobs, against numpy."""
    text = _conv_net("Convolution", "num_output: 3 kernel_size: 3 pad: 1", (2, 2, 3, 4, 5)) + '''
layer { name: "pr" type: "PReLU" bottom: "c" top: "pr" }
layer { name: "cat" type: "Concat" bottom: "pr" bottom: "c" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "cat" bottom: "cat" top: "sum" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "sm" type: "Softmax" bottom: "sum" top: "sm" }
layer { name: "fc" type: "InnerProduct" bottom: "sm" top: "fc" inner_product_param { num_output: 4 } }
'''
    g = _load(tmp_path, text)
    blobs = {l.name: [b.astype(np.float64) for b in (l.blobs or [])] for l in g.layers}
    feeds = _feeds(g)
    c = np_conv_nd(feeds["data"].astype(np.float64), *blobs["c"], (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    a = blobs["pr"][0].reshape(1, -1, 1, 1, 1)
    pr = np.where(c > 0, c, a * c)
    cat = np.concatenate([pr, c], axis=1)
    s = 0.5 * cat
    e = np.exp(s - s.max(axis=1, keepdims=True))
    sm = e / e.sum(axis=1, keepdims=True)
    fc = sm.reshape(2, -1) @ blobs["fc"][0].T + blobs["fc"][1]
    _check_all(g, fc, "fc")


# ----------------------------------------------------------------------------- C3D fork
C3D_DATA = '''name: "c3d"
layers {{ name: "data" type: VIDEO_DATA top: "data" top: "label"
  image_data_param {{ source: "list.txt" use_image: true batch_size: 2 new_length: {L} new_height: {H}
    new_width: {W} show_data: 0 }} }}
'''


def _c3d(tmp_path, L, H, W, layers):
    return _load(tmp_path, C3D_DATA.format(L=L, H=H, W=W) + layers, "c3d.prototxt")


POOL_CASES = [  # (pool, kernel, kernel_depth, stride, temporal_stride, pad, L, H, W)
    ("MAX", 2, 2, 2, 2, 0, 5, 7, 6),      # ceil rounding in every axis (odd sizes)
    ("MAX", 3, 1, 2, 1, 0, 3, 8, 9),
    ("MAX", 3, 3, 2, 2, 0, 6, 6, 5),      # last windows clipped in length and width
    ("AVE", 3, 2, 2, 2, 1, 5, 6, 7),      # AVE with pad: divisor clipped at H + pad
    ("AVE", 2, 3, 2, 1, 0, 4, 5, 5),
    ("AVE", 2, 1, 2, 1, 1, 2, 3, 5),      # a last window inside the padding (upstream drops it)
]


@pytest.mark.parametrize("pool,k,kd,s,ts,pad,L,H,W", POOL_CASES)
def test_c3d_pooling_matches_numpy(tmp_path, pool, k, kd, s, ts, pad, L, H, W):
    g = _c3d(tmp_path, L, H, W, f'''layers {{ name: "pool" type: POOLING3D bottom: "data" top: "pool"
  pooling_param {{ pool: {pool} kernel_size: {k} kernel_depth: {kd} stride: {s} temporal_stride: {ts} pad: {pad} }} }}
''')
    feeds = _feeds(g)
    want = np_c3d_pool(feeds["data"].astype(np.float64), pool, k, kd, s, ts, pad)
    _check_all(g, want, "pool")


def test_c3d_pooling_rounds_unlike_upstream():
    """C3D keeps a last window that starts inside the right padding (its AVE output there is
    0); upstream Caffe's PoolingLayer drops it. An empty window (stride > kernel) is refused."""
    from protogen.layers import get_type
    from protogen.layers.c3d import Pool3DParams
    from protogen.layers.pool import pooled_size
    # H = 3, k = 2, s = 2, pad = 1: ceil((3 + 2 - 2) / 2) + 1 = 3 windows; the last starts at
    # 2*2 - 1 = 3 >= H: upstream drops it (3 >= H + pad = 4 is false... it checks (out-1)*s
    # = 4 >= H + pad = 4), C3D keeps it
    assert pooled_size(3, 2, 1, 2, True) == 2
    p = Pool3DParams(pool="AVE", kernel_size=2, kernel_depth=1, stride=2, pad=1)
    assert get_type("Pooling3D").shapes(p, [(1, 1, 1, 3, 3)]) == [(1, 1, 1, 3, 3)]
    with pytest.raises(ProtogenError, match="starts past the input"):
        get_type("Pooling3D").shapes(Pool3DParams(pool="AVE", kernel_size=1, kernel_depth=1, stride=2, pad=1),
                                     [(1, 1, 1, 2, 2)])


def test_c3d_convolution_matches_numpy_and_opencv(tmp_path):
    """CONVOLUTION3D = upstream N-D convolution with (kernel_depth, kernel_size, kernel_size),
    (temporal_pad, pad, pad), (temporal_stride, stride, stride); C3D's filter_group changes
    nothing (every filter group sees all input channels: convolution3d_layer.cpp)."""
    g = _c3d(tmp_path, 5, 7, 6, '''layers { name: "conv" type: CONVOLUTION3D bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 4 kernel_size: 3 kernel_depth: 2 pad: 1 temporal_pad: 1
    stride: 2 temporal_stride: 1 filter_group: 2 weight_filler { type: "gaussian" std: 0.01 } } }
''')
    conv = g.layers[1]
    assert conv.type in ("CONVOLUTION3D", "Convolution3D") and conv.params.group == 1
    w, b = (a.astype(np.float64) for a in conv.blobs)
    assert w.shape == (4, 3, 2, 3, 3) and b.shape == (4,)
    feeds = _feeds(g)
    assert feeds["data"].shape == (2, 3, 5, 7, 6)       # VIDEO_DATA: (batch, 3, new_length, H, W)
    want = np_conv_nd(feeds["data"].astype(np.float64), w, b, (1, 2, 2), (1, 1, 1), (1, 1, 1), 1)
    _check_all(g, want, "conv")
    # written as upstream's N-D Convolution, which OpenCV's Caffe importer runs
    from protogen.caffe.prototxt import to_prototxt
    text = to_prototxt(g)
    assert 'type: "Convolution"' in text and "kernel_depth" not in text
    got = _opencv(g, feeds, "conv", tmp_path)["conv"]
    assert rel_err(got, want) <= 1e-5


def test_c3d_video_data_shapes(tmp_path):
    g = _c3d(tmp_path, 16, 128, 171, "")
    assert [l.kind.output_shapes(l.params, [], 1)[0] for l in g.input_layers()] == [(2, 3, 16, 128, 171)]
    text = C3D_DATA.format(L=16, H=128, W=171).replace("show_data: 0", "crop_size: 112")
    (tmp_path / "crop.prototxt").write_text(text)
    g = load_model(tmp_path / "crop.prototxt")
    assert [l.kind.output_shapes(l.params, [], 1)[0] for l in g.input_layers()] == [(2, 3, 16, 112, 112)]
    (tmp_path / "nolen.prototxt").write_text(text.replace("new_length: 16", ""))
    with pytest.raises(ProtogenError, match="no input size"):     # new_length is required
        load_model(tmp_path / "nolen.prototxt")
    assert load_model(tmp_path / "nolen.prototxt", input_shape="1,3,8,112,112").steps()[0].out_shapes == \
        [(1, 3, 8, 112, 112)]


# ----------------------------------------------------------------------------- corpus nets
@needs_corpus
def test_c3d_corpus_net_shapes():
    """C3D's UCF101 net: the published 8192-value pool5 (512 x 1 x 4 x 4) feeding fc6."""
    g = load_model(CORPUS / "facebookarchive_c3d/c3d_ucf101_finetuning_test.prototxt")
    shapes = {st.layer.name: st.out_shapes[0] for st in g.steps()}
    assert shapes["data"] == (50, 3, 16, 112, 112)
    assert shapes["pool1"] == (50, 64, 16, 56, 56)       # kernel_depth 1: length kept
    assert shapes["pool5"] == (50, 512, 1, 4, 4)         # ceil((7 - 2) / 2) + 1 = 4
    assert shapes["fc8"][1] == 101


VNET = "bvlc_caffe/branch_intel/models/intel_optimized_models/VNet/test_noPooling_ResNet_cinque.prototxt"


def _vnet_reduced(tmp_path, size=(16, 16, 16)):
    """VNet's prototxt with the 128x128x64 volume reduced to ``size`` (the input_shape and the
    two Reshape layers' literal dims changed to match; every layer as published)."""
    text = (CORPUS / VNET).read_text()
    d, h, w = size
    text = text.replace("dim: 1 dim: 1 dim: 128 dim: 128 dim: 64", f"dim: 1 dim: 1 dim: {d} dim: {h} dim: {w}")
    text = text.replace("dim: 1048576", f"dim: {d * h * w}")
    text, n = re.subn(r"dim: 128\s*\n\s*dim: 128\s*\n\s*dim: 64", f"dim: {d}\n dim: {h}\n dim: {w}", text)
    assert n == 1
    p = tmp_path / "vnet.prototxt"
    p.write_text(text)
    return p


@needs_corpus
def test_vnet_full_size_shapes():
    g = load_model(CORPUS / VNET)
    shapes = {st.layer.name: st.out_shapes[0] for st in g.steps()}
    assert shapes["conv_in128_chan16"] == (1, 16, 128, 128, 64)
    assert shapes["labelmap"] == (1, 2, 128, 128, 64)


@needs_corpus
@pytest.mark.slow
def test_vnet_reduced_runtimes_agree(tmp_path):
    """VNet on a 16^3 volume: ONNX Runtime and the float32 reference == the float64 reference
    within 1e-4 (verify); OpenCV skipped for its 3-D Deconvolution (see above)."""
    from protogen.verify import verify
    g = load_model(_vnet_reduced(tmp_path))
    t0 = time.perf_counter()
    rep = verify(g, seed=0, batch=1, model_name="vnet-16")
    assert rep.ok, rep.format_table()
    assert any(c.runtime == "ort-cpu" for c in rep.comparisons), rep.format_table()
    cv = [r for r in rep.runtimes if r.name == "opencv-caffe"]
    assert not cv or cv[0].status == "ran" or "3-D Deconvolution" in cv[0].note, cv[0].note
    assert time.perf_counter() - t0 < 600


@needs_corpus
@pytest.mark.slow
def test_c3d_reduced_runtimes_agree():
    """C3D's UCF101 net on 16 x 32 x 32 clips (--input-shape; fc6 then reads 512 values): ONNX
    Runtime and the float32 reference == the float64 reference within 1e-4; OpenCV has no
    Pooling3D (skipped, named)."""
    from protogen.verify import verify
    g = load_model(CORPUS / "facebookarchive_c3d/c3d_ucf101_finetuning_test.prototxt", input_shape="1,3,16,32,32")
    rep = verify(g, seed=0, batch=1, model_name="c3d-32")
    assert rep.ok, rep.format_table()
    assert any(c.runtime == "ort-cpu" for c in rep.comparisons), rep.format_table()
    cv = [r for r in rep.runtimes if r.name == "opencv-caffe"]
    assert not cv or "Pooling3D" in cv[0].note, cv[0].note
