"""Every layer type alone: ONNX Runtime (our ONNX lowering) == the PyTorch reference
(``torch_forward``) == an independent oracle written here (numpy transcriptions of Caffe's
forward loops, or hand-derived formulas), within float32 round-off, on non-degenerate data.
Every exported model also passes the full ONNX checker and strict shape inference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from protogen.ir import Graph, Layer  # noqa: E402
from protogen.layers.act import ClipParams, PowerParams, PReLUParams, ReLUParams  # noqa: E402
from protogen.layers.conv import ConvParams, InnerProductParams  # noqa: E402
from protogen.layers.io import InputParams  # noqa: E402
from protogen.layers.norm import BatchNormParams, BiasParams, LRNParams, ScaleParams  # noqa: E402
from protogen.layers.pool import PoolParams  # noqa: E402
from protogen.layers.tensor import (ConcatParams, EltwiseParams, FlattenParams, PermuteParams,  # noqa: E402
                                    ReshapeParams, ShuffleChannelParams, SliceParams, SoftmaxParams)
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402
from protogen.weights import init_weights  # noqa: E402

F32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- harness
def rand(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def make_graph(inputs: dict, layers: list) -> Graph:
    inp = Layer("input", "Input", [], list(inputs), InputParams(shape=tuple(tuple(a.shape) for a in inputs.values())))
    return Graph("t", [inp] + layers)


def run_both(g: Graph, inputs: dict, seed: int = 0, weights: bool = True):
    """Export + check + run ORT and TorchNet; returns (model, ort outputs, torch outputs)."""
    if weights:
        init_weights(g, seed)
    m = export_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    ops = [n.op_type for n in m.graph.node]
    assert "Identity" not in ops and "Dropout" not in ops, ops
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ro = dict(zip(names, sess.run(None, dict(inputs))))
    net = TorchNet.from_graph(g)
    with torch.no_grad():
        to = {k: v.numpy() for k, v in net({k: torch.from_numpy(v) for k, v in inputs.items()}).items()}
    assert sorted(ro) == sorted(to) == sorted(g.select(net="deploy").outputs())
    return m, ro, to


def close(got, want, rtol=1e-5, what=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(np.max(np.abs(want)), 1e-30)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} vs scale {scale:.3g}"


def spread(a):
    a = np.asarray(a, np.float64)
    assert np.isfinite(a).all()
    assert a.std() > 1e-3 * max(np.abs(a).max(), 1e-12) and a.std() > 0, "degenerate output"


def check(g, inputs, oracle: dict, rtol=1e-5, seed=0, weights=True):
    m, ro, to = run_both(g, inputs, seed, weights)
    for k, want in oracle.items():
        spread(want)
        close(ro[k], want, rtol, f"ORT {k}")
        close(to[k], want, rtol, f"torch {k}")
    return m


def ops_of(m):
    return [n.op_type for n in m.graph.node]


# ----------------------------------------------------------------------------- pooling
def caffe_pool_ref(x, pool, kh, kw, sh, sw, ph, pw, ceil=True, global_pooling=False):
    """Transcription of caffe/src/caffe/layers/pooling_layer.cpp (Reshape + Forward_cpu)."""
    n, c, h, w = x.shape
    if global_pooling:
        kh, kw, sh, sw, ph, pw = h, w, 1, 1, 0, 0
    rnd = math.ceil if ceil else math.floor
    ho = int(rnd((h + 2 * ph - kh) / sh)) + 1
    wo = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (ho - 1) * sh >= h + ph:
            ho -= 1
        if (wo - 1) * sw >= w + pw:
            wo -= 1
    y = np.empty((n, c, ho, wo), np.float64)
    xd = x.astype(np.float64)
    for i in range(ho):
        for j in range(wo):
            hs, ws = i * sh - ph, j * sw - pw
            if pool == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = xd[:, :, hs:he, ws:we]
                y[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -F32_MAX
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws = max(hs, 0), max(ws, 0)
                he, we = min(he, h), min(we, w)
                y[:, :, i, j] = xd[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return y


POOL_CASES = [
    # (pool, (H, W), (kh, kw), (sh, sw), (ph, pw), round_mode)            what it covers
    ("MAX", (12, 12), (3, 3), (2, 2), (0, 0), "CEIL"),   # ceil overhang, no pad (ShuffleNet pool1)
    ("MAX", (5, 5), (2, 2), (2, 2), (1, 1), "CEIL"),     # ceil + last-window clip with pad
    ("AVE", (5, 5), (2, 2), (2, 2), (1, 1), "CEIL"),     # same, AVE divisor
    ("MAX", (4, 7), (3, 3), (3, 3), (2, 2), "CEIL"),     # clip, pad > k/2 (torch limit)
    ("AVE", (8, 8), (3, 3), (2, 2), (1, 1), "CEIL"),     # AVE border with pad: clipped divisor
    ("AVE", (8, 8), (3, 3), (2, 2), (1, 1), "FLOOR"),    # ShuffleNet shortcut pool
    ("MAX", (8, 8), (3, 3), (2, 2), (1, 1), "FLOOR"),
    ("AVE", (7, 7), (3, 3), (1, 1), (1, 1), "CEIL"),     # stride 1: divisor always k*k
    ("MAX", (8, 11), (2, 2), (3, 3), (0, 0), "CEIL"),    # stride > kernel
    ("AVE", (8, 11), (2, 2), (3, 3), (0, 0), "CEIL"),
    ("MAX", (9, 7), (3, 2), (2, 1), (1, 0), "CEIL"),     # asymmetric kernel / stride / pad
    ("AVE", (9, 7), (3, 2), (2, 1), (1, 0), "CEIL"),
    ("AVE", (10, 9), (2, 4), (1, 3), (1, 2), "CEIL"),
    ("AVE", (6, 6), (3, 3), (2, 2), (2, 2), "CEIL"),     # pad > k/2 with AVE
]


def _random_pool_cases(n, seed=5):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        kh, kw = rng.integers(1, 5, 2)
        sh, sw = rng.integers(1, 5, 2)
        ph, pw = rng.integers(0, kh), rng.integers(0, kw)
        h, w = rng.integers(max(kh, 2), 13), rng.integers(max(kw, 2), 13)
        pool = ["MAX", "AVE"][rng.integers(2)]
        mode = ["CEIL", "FLOOR"][rng.integers(2)]
        # skip Caffe's degenerate empty windows (pad 0, stride > kernel, window past H):
        # MAX gives -FLT_MAX and AVE 0/0 there, which no tolerance test can compare
        ok = True
        for size, k, s, p in ((h, kh, sh, ph), (w, kw, sw, pw)):
            num = size + 2 * p - k
            o = (-(-num // s) if mode == "CEIL" else num // s) + 1
            if p > 0 and (o - 1) * s >= size + p:
                o -= 1
            if (o - 1) * s - p >= size:
                ok = False
        if ok:
            out.append((pool, (int(h), int(w)), (int(kh), int(kw)), (int(sh), int(sw)), (int(ph), int(pw)), mode))
    return out


@pytest.mark.parametrize("case", POOL_CASES + _random_pool_cases(30), ids=str)
def test_pooling(case):
    pool, (h, w), (kh, kw), (sh, sw), (ph, pw), mode = case
    x = rand((2, 3, h, w), 1)
    p = PoolParams(pool=pool, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                   round_mode=mode)
    g = make_graph({"data": x}, [Layer("pool", "Pooling", ["data"], ["out"], p)])
    want = caffe_pool_ref(x, pool, kh, kw, sh, sw, ph, pw, ceil=mode == "CEIL")
    m = check(g, {"data": x}, {"out": want})
    assert all(a.name != "ceil_mode" or a.i == 0 for n in m.graph.node for a in n.attribute)


def test_pooling_divisor_map_only_when_needed():
    # AVE 3x3/2 pad 1 on 8: the last window [7, 10) is clipped at H + pad = 9 -> a Mul map
    x = rand((1, 2, 8, 8), 2)
    g = make_graph({"data": x}, [Layer("pool", "Pooling", ["data"], ["out"],
                                       PoolParams(pool="AVE", kernel_h=3, kernel_w=3, stride_h=2, stride_w=2,
                                                  pad_h=1, pad_w=1))])
    m = check(g, {"data": x}, {"out": caffe_pool_ref(x, "AVE", 3, 3, 2, 2, 1, 1)})
    assert ops_of(m) == ["Pad", "AveragePool", "Mul"]
    # 3x3/2 pad 1 on 7: every window ends inside H + pad -> one AveragePool, no map
    x = rand((1, 2, 7, 7), 2)
    g = make_graph({"data": x}, [Layer("pool", "Pooling", ["data"], ["out"],
                                       PoolParams(pool="AVE", kernel_h=3, kernel_w=3, stride_h=2, stride_w=2,
                                                  pad_h=1, pad_w=1))])
    m = check(g, {"data": x}, {"out": caffe_pool_ref(x, "AVE", 3, 3, 2, 2, 1, 1)})
    assert ops_of(m) == ["AveragePool"]


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_global_pooling(pool):
    x = rand((2, 4, 5, 7), 3)
    g = make_graph({"data": x}, [Layer("gp", "Pooling", ["data"], ["out"],
                                       PoolParams(pool=pool, global_pooling=True))])
    m = check(g, {"data": x}, {"out": caffe_pool_ref(x, pool, 0, 0, 1, 1, 0, 0, global_pooling=True)})
    assert ops_of(m) == ["GlobalMaxPool" if pool == "MAX" else "GlobalAveragePool"]
    assert m.graph.input[0].type.tensor_type.shape.dim[2].dim_param  # dynamic H


def test_pooling_empty_window_max_is_minus_flt_max():
    # pad 0, stride 3 > kernel 1 on 5: Caffe's ceil makes a 3rd window starting at 6 >= H
    x = rand((1, 1, 5, 5), 4)
    g = make_graph({"data": x}, [Layer("pool", "Pooling", ["data"], ["out"],
                                       PoolParams(pool="MAX", kernel_h=1, kernel_w=1, stride_h=3, stride_w=3))])
    _, ro, to = run_both(g, {"data": x})
    want = caffe_pool_ref(x, "MAX", 1, 1, 3, 3, 0, 0)
    assert want.shape == (1, 1, 3, 3) and want[0, 0, 2, 0] == -F32_MAX
    np.testing.assert_array_equal(ro["out"], want.astype(np.float32))
    np.testing.assert_array_equal(to["out"], want.astype(np.float32))


# ----------------------------------------------------------------------------- conv family
def np_conv(x, wt, b, s, p, d, g):
    n, c, h, w = x.shape
    o, cg, kh, kw = wt.shape
    og = o // g
    ho = (h + 2 * p[0] - (d[0] * (kh - 1) + 1)) // s[0] + 1
    wo = (w + 2 * p[1] - (d[1] * (kw - 1) + 1)) // s[1] + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    y = np.zeros((n, o, ho, wo))
    for gi in range(g):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, gi * cg:(gi + 1) * cg, i * d[0]: i * d[0] + s[0] * (ho - 1) + 1: s[0],
                           j * d[1]: j * d[1] + s[1] * (wo - 1) + 1: s[1]]
                y[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, wt[gi * og:(gi + 1) * og, :, i, j])
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def np_deconv(x, wt, b, s, p, d, g):
    n, c, h, w = x.shape
    _, og, kh, kw = wt.shape
    cg = c // g
    fh, fw = s[0] * (h - 1) + d[0] * (kh - 1) + 1, s[1] * (w - 1) + d[1] * (kw - 1) + 1
    full = np.zeros((n, og * g, fh, fw))
    for gi in range(g):
        for i in range(kh):
            for j in range(kw):
                full[:, gi * og:(gi + 1) * og, i * d[0]: i * d[0] + s[0] * (h - 1) + 1: s[0],
                     j * d[1]: j * d[1] + s[1] * (w - 1) + 1: s[1]] += np.einsum(
                    "nchw,co->nohw", x[:, gi * cg:(gi + 1) * cg].astype(np.float64), wt[gi * cg:(gi + 1) * cg, :, i, j])
    y = full[:, :, p[0]: fh - p[0], p[1]: fw - p[1]]
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


CONV_CASES = [
    # type, cin, (H, W), num_output, (kh, kw), (sh, sw), (ph, pw), (dh, dw), group, bias
    ("Convolution", 4, (9, 9), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("Convolution", 6, (11, 10), 9, (3, 3), (2, 2), (1, 1), (1, 1), 3, False),     # grouped
    ("Convolution", 4, (12, 12), 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, True),      # dilated
    ("Convolution", 4, (13, 11), 8, (3, 2), (2, 1), (2, 0), (2, 3), 2, True),      # all asymmetric
    ("Convolution", 8, (10, 10), 8, (3, 3), (2, 2), (1, 1), (1, 1), 8, False),     # depthwise
    ("ConvolutionDepthwise", 6, (9, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, True),
    ("Deconvolution", 4, (5, 6), 6, (4, 4), (2, 2), (1, 1), (1, 1), 1, True),
    ("Deconvolution", 6, (5, 5), 4, (3, 2), (2, 3), (1, 0), (2, 1), 2, False),     # grouped dilated
    ("Deconvolution", 4, (6, 6), 4, (4, 4), (2, 2), (1, 1), (1, 1), 4, False),     # bilinear-upsample form
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_convolutions(case):
    typ, cin, (h, w), o, (kh, kw), (sh, sw), (ph, pw), (dh, dw), grp, bias = case
    x = rand((2, cin, h, w), 6)
    p = ConvParams(num_output=o, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                   dilation_h=dh, dilation_w=dw, group=grp, bias_term=bias)
    g = make_graph({"data": x}, [Layer("conv", typ, ["data"], ["out"], p)])
    init_weights(g, 3)
    blobs = g.layer("conv").blobs
    ref = np_deconv if typ == "Deconvolution" else np_conv
    want = ref(x, blobs[0].astype(np.float64), blobs[1] if bias else None, (sh, sw), (ph, pw), (dh, dw), grp)
    m = check(g, {"data": x}, {"out": want}, weights=False)
    assert ops_of(m) == ["ConvTranspose" if typ == "Deconvolution" else "Conv"]


@pytest.mark.parametrize("axis,transpose,shape", [(1, False, (2, 3, 4, 5)), (1, True, (2, 7)),
                                                  (2, False, (2, 3, 4, 5)), (2, True, (3, 2, 6))])
def test_inner_product(axis, transpose, shape):
    x = rand(shape, 7)
    g = make_graph({"data": x}, [Layer("fc", "InnerProduct", ["data"], ["out"],
                                       InnerProductParams(num_output=5, axis=axis, transpose=transpose))])
    init_weights(g, 1)
    wt, b = (a.astype(np.float64) for a in g.layer("fc").blobs)
    flat = x.reshape(shape[:axis] + (-1,)).astype(np.float64)
    want = flat @ (wt if transpose else wt.T) + b
    check(g, {"data": x}, {"out": want}, weights=False)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("factor", [1.0, 1000.0, 0.0])
def test_batchnorm_factor(factor):
    c = 5
    x = rand((2, c, 4, 3), 8)
    mean, var = rand(c, 9) * 0.5, np.random.default_rng(10).uniform(0.5, 2, c).astype(np.float32)
    g = make_graph({"data": x}, [Layer("bn", "BatchNorm", ["data"], ["out"], BatchNormParams(eps=1e-5),
                                       blobs=[mean * factor, var * factor, np.array([factor], np.float32)])])
    if factor == 0:    # Caffe: scale factor 0 -> mean = var = 0
        want = x / np.sqrt(1e-5)
    else:
        want = (x - mean.reshape(1, c, 1, 1)) / np.sqrt(var.reshape(1, c, 1, 1) + 1e-5)
    m = check(g, {"data": x}, {"out": want}, weights=False)
    assert ops_of(m) == ["BatchNormalization"]


def _bn_scale_layers(bn_top, scale_bottom, scale_top):
    c = 4
    bn = Layer("bn", "BatchNorm", ["data"], [bn_top], BatchNormParams(eps=1e-3),
               blobs=[rand(c, 11) * 2.0, np.random.default_rng(12).uniform(1, 3, c).astype(np.float32) * 2.0,
                      np.array([2.0], np.float32)])
    sc = Layer("sc", "Scale", [scale_bottom], [scale_top], ScaleParams(bias_term=True),
               blobs=[np.random.default_rng(13).uniform(0.5, 1.5, c).astype(np.float32), rand(c, 14)])
    return bn, sc


def _bn_scale_ref(x, bn, sc):
    m, v = bn.blobs[0] / 2.0, bn.blobs[1] / 2.0
    y = (x - m.reshape(1, -1, 1, 1)) / np.sqrt(v.reshape(1, -1, 1, 1) + 1e-3)
    return y, y * sc.blobs[0].reshape(1, -1, 1, 1) + sc.blobs[1].reshape(1, -1, 1, 1)


def test_batchnorm_scale_fuse_in_place():
    x = rand((2, 4, 5, 5), 15)
    bn, sc = _bn_scale_layers("data", "data", "data")
    relu = Layer("relu", "ReLU", ["data"], ["out"], ReLUParams())
    g = make_graph({"data": x}, [bn, sc, relu])
    _, z = _bn_scale_ref(x, bn, sc)
    m = check(g, {"data": x}, {"out": np.maximum(z, 0)}, weights=False)
    assert ops_of(m) == ["BatchNormalization", "Relu"]
    gamma = [i for i in m.graph.initializer if i.name.endswith("/scale")]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(gamma[0]), sc.blobs[0])


def test_batchnorm_scale_fuse_not_adjacent():
    # dataflow decides, not list position: another layer sits between BN and its Scale
    x = rand((2, 4, 5, 5), 16)
    bn, sc = _bn_scale_layers("bn", "bn", "out")
    other = Layer("other", "AbsVal", ["data"], ["abs"])
    g = make_graph({"data": x}, [bn, other, sc])
    _, z = _bn_scale_ref(x, bn, sc)
    m = check(g, {"data": x}, {"out": z, "abs": np.abs(x)}, weights=False)
    assert sorted(ops_of(m)) == ["Abs", "BatchNormalization"]


def test_batchnorm_output_also_read_elsewhere_does_not_fuse():
    x = rand((2, 4, 5, 5), 17)
    bn, sc = _bn_scale_layers("bn", "bn", "sc")
    add = Layer("add", "Eltwise", ["bn", "sc"], ["out"], EltwiseParams())
    g = make_graph({"data": x}, [bn, sc, add])
    y, z = _bn_scale_ref(x, bn, sc)
    m = check(g, {"data": x}, {"out": y + z}, weights=False)
    ops = ops_of(m)
    assert ops.count("BatchNormalization") == 1 and "Mul" in ops
    bn_node = [n for n in m.graph.node if n.op_type == "BatchNormalization"][0]
    gamma = [i for i in m.graph.initializer if i.name == bn_node.input[1]][0]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(gamma), np.ones(4, np.float32))


@pytest.mark.parametrize("axis,num_axes,bias", [(1, 1, True), (1, 2, False), (2, 2, True), (-1, 1, True)])
def test_scale_and_bias_alone(axis, num_axes, bias):
    x = rand((2, 3, 4, 5), 18)
    sc = Layer("sc", "Scale", ["data"], ["s"], ScaleParams(axis=axis, num_axes=num_axes, bias_term=bias))
    bi = Layer("bi", "Bias", ["data"], ["b"], BiasParams(axis=axis, num_axes=num_axes))
    g = make_graph({"data": x}, [sc, bi])
    init_weights(g, 4)
    a = axis % 4
    bshape = (1,) * a + x.shape[a:a + num_axes] + (1,) * (4 - a - num_axes)
    gam = sc.blobs[0].reshape(bshape)
    want_s = x * gam + (sc.blobs[1].reshape(bshape) if bias else 0)
    want_b = x + bi.blobs[0].reshape(bshape)
    check(g, {"data": x}, {"s": want_s, "b": want_b}, weights=False)


def test_scale_and_bias_second_bottom():
    x = rand((2, 3, 4, 5), 19)
    f = rand((3, 4), 20)
    g = make_graph({"data": x, "f": f}, [
        Layer("sc", "Scale", ["data", "f"], ["s"], ScaleParams(axis=1, bias_term=True)),
        Layer("bi", "Bias", ["data", "f"], ["b"], BiasParams(axis=1))])
    init_weights(g, 5)
    beta = g.layer("sc").blobs[0]
    want_s = x * f.reshape(1, 3, 4, 1) + beta.reshape(1, 3, 4, 1)
    check(g, {"data": x, "f": f}, {"s": want_s, "b": x + f.reshape(1, 3, 4, 1)}, weights=False)


def lrn_ref(x, n, alpha, beta, k, region):
    """caffe/src/caffe/layers/lrn_layer.cpp: CrossChannelForward_cpu, and the WITHIN_CHANNEL
    subnet (x^2 -> AVE pool n, pad (n-1)/2 -> (1 + alpha*avg)^-beta -> * x), as loops."""
    xd = x.astype(np.float64)
    N, C, H, W = x.shape
    r = (n - 1) // 2
    scale = np.empty_like(xd)
    if region == "ACROSS_CHANNELS":
        for c in range(C):
            lo, hi = max(0, c - r), min(C, c + r + 1)
            scale[:, c] = k + alpha / n * (xd[:, lo:hi] ** 2).sum(axis=1)
    else:
        for i in range(H):
            for j in range(W):
                win = xd[:, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
                scale[:, :, i, j] = 1.0 + alpha * (win ** 2).sum(axis=(2, 3)) / (n * n)
    return xd * scale ** -beta


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (5, 2.0, 0.6, 1.5),
                                            (1, 0.3, 0.5, 1.0)])
def test_lrn(region, n, alpha, beta, k):
    x = rand((2, 7, 6, 5), 21, scale=2.0)
    g = make_graph({"data": x}, [Layer("lrn", "LRN", ["data"], ["out"],
                                       LRNParams(local_size=n, alpha=alpha, beta=beta, k=k, norm_region=region))])
    m = check(g, {"data": x}, {"out": lrn_ref(x, n, alpha, beta, k, region)})
    if region == "ACROSS_CHANNELS":
        assert ops_of(m) == ["LRN"]


# ----------------------------------------------------------------------------- element-wise
def test_activations():
    x = rand((2, 3, 4, 5), 22, scale=4.0)
    layers = [
        Layer("relu", "ReLU", ["data"], ["relu"], ReLUParams()),
        Layer("leaky", "ReLU", ["data"], ["leaky"], ReLUParams(negative_slope=0.1)),
        Layer("relu6", "ReLU6", ["data"], ["relu6"]),
        Layer("clip", "Clip", ["data"], ["clip"], ClipParams(min=-0.5, max=0.7)),
        Layer("prelu", "PReLU", ["data"], ["prelu"], PReLUParams()),
        Layer("prelu_s", "PReLU", ["data"], ["prelu_s"], PReLUParams(channel_shared=True)),
        Layer("sig", "Sigmoid", ["data"], ["sig"]),
        Layer("tanh", "TanH", ["data"], ["tanh"]),
        Layer("abs", "AbsVal", ["data"], ["abs"]),
    ]
    g = make_graph({"data": x}, layers)
    init_weights(g, 6)
    a = g.layer("prelu").blobs[0].reshape(1, 3, 1, 1)
    a_s = float(g.layer("prelu_s").blobs[0][0])
    xd = x.astype(np.float64)
    want = {"relu": np.maximum(xd, 0), "leaky": np.where(xd > 0, xd, 0.1 * xd),
            "relu6": np.minimum(np.maximum(xd, 0), 6), "clip": np.minimum(np.maximum(xd, -0.5), 0.7),
            "prelu": np.where(xd > 0, xd, a * xd), "prelu_s": np.where(xd > 0, xd, a_s * xd),
            "sig": 1 / (1 + np.exp(-xd)), "tanh": np.tanh(xd), "abs": np.abs(xd)}
    m = check(g, {"data": x}, want, weights=False)
    assert sorted(ops_of(m)) == sorted(["Relu", "LeakyRelu", "Clip", "Clip", "PRelu", "PRelu", "Sigmoid",
                                        "Tanh", "Abs"])


@pytest.mark.parametrize("power,scale,shift,ops", [(2.0, 0.5, 1.0, ["Relu", "Mul", "Add", "Pow"]),
                                                   (1.0, -2.0, 0.0, ["Relu", "Mul"]),
                                                   (0.5, 1.0, 0.25, ["Relu", "Add", "Pow"]),
                                                   (-1.5, 3.0, 1.0, ["Relu", "Mul", "Add", "Pow"]),
                                                   (1.0, 1.0, 0.0, ["Relu"])])
def test_power(power, scale, shift, ops):
    x = rand((2, 3, 4, 4), 23)
    g = make_graph({"data": x}, [Layer("relu", "ReLU", ["data"], ["r"], ReLUParams()),
                                 Layer("pow", "Power", ["r"], ["out"], PowerParams(power, scale, shift))])
    r = np.maximum(x.astype(np.float64), 0)
    m = check(g, {"data": x}, {"out": (shift + scale * r) ** power})
    assert ops_of(m) == ops


def test_dropout_and_split_are_aliases():
    x = rand((2, 3, 4, 4), 24)
    g = make_graph({"data": x}, [
        Layer("relu", "ReLU", ["data"], ["r"], ReLUParams()),
        Layer("split", "Split", ["r"], ["a", "b", "c"]),
        Layer("drop", "Dropout", ["a"], ["a"]),
        Layer("add", "Eltwise", ["a", "b"], ["sum"], EltwiseParams()),
        Layer("drop2", "Dropout", ["sum"], ["sum"])])
    r = np.maximum(x.astype(np.float64), 0)
    m = check(g, {"data": x}, {"sum": 2 * r, "c": r})
    assert sorted(ops_of(m)) == ["Add", "Relu"]
    assert [o.name for o in m.graph.output] == ["sum", "c"] or sorted(o.name for o in m.graph.output) == ["c", "sum"]


@pytest.mark.parametrize("op,coeff", [("SUM", ()), ("SUM", (0.5, -2.0, 1.5)), ("SUM", (1.0, -1.0)),
                                      ("PROD", ()), ("MAX", ())])
def test_eltwise(op, coeff):
    n = len(coeff) or 3
    xs = {f"x{i}": rand((2, 3, 4, 5), 30 + i) for i in range(n)}
    g = make_graph(xs, [Layer("elt", "Eltwise", list(xs), ["out"], EltwiseParams(op, coeff))])
    arrs = [a.astype(np.float64) for a in xs.values()]
    if op == "SUM":
        want = sum(c * a for c, a in zip(coeff or [1.0] * n, arrs))
    elif op == "PROD":
        want = arrs[0] * arrs[1] * arrs[2]
    else:
        want = np.maximum(np.maximum(arrs[0], arrs[1]), arrs[2])
    check(g, xs, {"out": want})


# ----------------------------------------------------------------------------- tensor ops
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat_and_slice_each_axis(axis):
    a, b = rand((2, 3, 4, 5), 40), rand((2, 3, 4, 5), 41)
    ax = axis % 4
    size = a.shape[ax]
    pts = (1,) if size < 3 else (1, size - 1)
    g = make_graph({"a": a, "b": b}, [
        Layer("cat", "Concat", ["a", "b"], ["cat"], ConcatParams(axis=axis)),
        Layer("sl", "Slice", ["cat"], [f"s{i}" for i in range(len(pts) + 1)], SliceParams(axis=axis, slice_point=pts)),
        Layer("sl2", "Slice", ["a"], ["e0", "e1"], SliceParams(axis=axis))] if size % 2 == 0 else [
        Layer("cat", "Concat", ["a", "b"], ["cat"], ConcatParams(axis=axis)),
        Layer("sl", "Slice", ["cat"], [f"s{i}" for i in range(len(pts) + 1)], SliceParams(axis=axis, slice_point=pts))])
    cat = np.concatenate([a, b], axis=ax).astype(np.float64)
    edges = (0,) + pts + (2 * size,)
    want = {f"s{i}": np.take(cat, range(edges[i], edges[i + 1]), axis=ax) for i in range(len(edges) - 1)}
    if size % 2 == 0:
        want["e0"] = np.take(a, range(size // 2), axis=ax)
        want["e1"] = np.take(a, range(size // 2, size), axis=ax)
    check(g, {"a": a, "b": b}, want)


@pytest.mark.parametrize("dims,axis,num_axes,expect", [
    ((0, -1), 0, -1, (2, 120)),
    ((0, 3, 2, -1), 0, -1, (2, 3, 2, 20)),
    ((2, 3), 1, 1, (2, 2, 3, 4, 5)),           # split the channel axis
    ((-1,), 2, -1, (2, 6, 20)),                # merge H, W
    ((0, 0, -1), 0, -1, (2, 6, 20)),
    ((1,), -1, 0, (2, 6, 4, 5, 1)),            # insert an axis at the end
    ((4, -1), 1, 2, (2, 4, 6, 5)),             # replace (C, H) keeping W
    ((-1, 2), 2, 1, (2, 6, 2, 2, 5)),
])
def test_reshape(dims, axis, num_axes, expect):
    x = rand((2, 6, 4, 5), 42)
    g = make_graph({"data": x}, [Layer("rs", "Reshape", ["data"], ["out"], ReshapeParams(dims, axis, num_axes))])
    # row-major reshape keeps element order: the expected shape is computed by hand above
    m = check(g, {"data": x}, {"out": x.reshape(expect)})
    assert ops_of(m) == ["Reshape"]


@pytest.mark.parametrize("axis,end_axis,expect", [(1, -1, (2, 120)), (2, 3, (2, 6, 20)), (1, 2, (2, 24, 5)),
                                                  (0, -1, (240,))])
def test_flatten(axis, end_axis, expect):
    x = rand((2, 6, 4, 5), 43)
    g = make_graph({"data": x}, [Layer("fl", "Flatten", ["data"], ["out"], FlattenParams(axis, end_axis))])
    check(g, {"data": x}, {"out": x.reshape(expect)})


@pytest.mark.parametrize("order,full", [((0, 2, 3, 1), (0, 2, 3, 1)), ((0, 3), (0, 3, 1, 2)), ((1, 0), (1, 0, 2, 3)),
                                        ((3, 2, 1, 0), (3, 2, 1, 0))])
def test_permute(order, full):
    x = rand((2, 3, 4, 5), 44)
    g = make_graph({"data": x}, [Layer("perm", "Permute", ["data"], ["out"], PermuteParams(order))])
    # SSD's rule: the listed axes, then the unlisted ones in order (full order given by hand)
    m = check(g, {"data": x}, {"out": np.transpose(x, full)})
    assert ops_of(m) == ["Transpose"]


@pytest.mark.parametrize("c,g", [(12, 3), (12, 4), (8, 2), (10, 5)])
def test_shuffle_channel(c, g):
    x = rand((2, c, 3, 4), 45)
    gr = make_graph({"data": x}, [Layer("shuf", "ShuffleChannel", ["data"], ["out"], ShuffleChannelParams(g))])
    n = c // g
    want = np.empty_like(x)
    for i in range(g):
        for j in range(n):
            want[:, j * g + i] = x[:, i * n + j]
    m = check(gr, {"data": x}, {"out": want})
    if g > 1:
        assert [o for o in ops_of(m) if o != "Shape"] == ["Reshape", "Transpose", "Reshape"]


def test_shuffle_group_one_is_no_node():
    x = rand((2, 6, 3, 4), 47)
    g = make_graph({"data": x}, [Layer("relu", "ReLU", ["data"], ["r"], ReLUParams()),
                                 Layer("shuf", "ShuffleChannel", ["r"], ["out"], ShuffleChannelParams(1))])
    m = check(g, {"data": x}, {"out": np.maximum(x, 0)})
    assert ops_of(m) == ["Relu"] and m.graph.node[0].output[0] == "out"


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_softmax(axis):
    x = rand((2, 5, 3, 4), 46, scale=3.0)
    g = make_graph({"data": x}, [Layer("sm", "Softmax", ["data"], ["out"], SoftmaxParams(axis))])
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    check(g, {"data": x}, {"out": e / e.sum(axis=axis, keepdims=True)})


def test_every_deploy_layer_type_has_both_backends():
    """Every type but the allow-listed training-only ones (tests/layers/test_registry.py, where
    each type's examples run through all backends) has an ONNX lowering and a torch forward."""
    from protogen.layers import registered_types
    from protogen.layers.base import LayerType
    from tests.layers.test_registry import NO_EXAMPLES
    training_only = set(NO_EXAMPLES) - {"Input"}
    for name, kind in registered_types().items():
        if type(kind).type in training_only or kind.is_loss:
            continue
        assert type(kind).to_onnx is not LayerType.to_onnx, name
        assert type(kind).torch_forward is not LayerType.torch_forward, name


def test_relu_reference_keeps_caffe_formula_at_special_values():
    """The torch reference's one-clamp ReLU (slope 0) equals Caffe's max(x, 0) + 0 * min(x, 0)
    (BVLC/caffe src/caffe/layers/relu_layer.cpp, std::max/std::min) bit for bit, also for -0,
    +-inf and NaN: -inf gives NaN as in Caffe."""
    from protogen.layers import get_type
    kind = get_type("ReLU")
    cases = [[-3.0, -0.0, 0.0, 2.0], [1.0, float("inf"), -float("inf")], [float("nan"), -1.0],
             [float("nan"), -float("inf")]]
    for vals in cases:
        for dt in (torch.float32, torch.float64):
            x = torch.tensor(vals, dtype=dt)
            a = x.numpy()
            zero = np.zeros_like(a)
            # std::max(a, 0) is (a < 0) ? 0 : a; std::min(a, 0) is (0 < a) ? 0 : a (so -0 stays -0)
            with np.errstate(invalid="ignore"):        # 0 * -inf is NaN, as in Caffe
                want = np.where(a < zero, zero, a) + zero * np.where(zero < a, zero, a)
            got = kind.torch_forward(ReLUParams(), [x], [])[0].numpy()
            assert np.array_equal(got, want, equal_nan=True), (vals, got, want)
            assert np.array_equal(np.signbit(got), np.signbit(want)), vals
