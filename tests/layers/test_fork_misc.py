"""The fork layers of protogen/layers/fork_misc.py and protogen/caffe/fork_rewrite.py against
independent oracles: numpy transcriptions of the forks' C++ forwards (file named at each
oracle), and OpenCV's dnn Caffe importer running the equivalent standard-layer prototxt.

Each net is a prototxt written here (and, for DenseBlock, a caffemodel with the fork's blob
layout), loaded through ``load_model`` as a user's files are.
"""
from __future__ import annotations

import numpy as np
import pytest

from protogen.caffe import pb
from protogen.caffe.caffemodel import write_caffemodel
from protogen.caffe.loader import load_model
from protogen.caffe.prototxt import parse_prototxt
from protogen.errors import ProtogenError, UnsupportedError

from tests.helpers import rel_err

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

try:
    import cv2
    HAS_CV = hasattr(cv2.dnn, "readNetFromCaffe")
except ImportError:     # pragma: no cover
    HAS_CV = False


def _run(graph, feeds: dict) -> tuple[dict, dict]:
    """(float64 PyTorch reference, ONNX Runtime float32) outputs of ``graph``."""
    from protogen.onnx_io import export_onnx
    from protogen.torch_ref import TorchNet
    net = TorchNet.from_graph(graph).double()
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in net({k: torch.from_numpy(v.astype(np.float64))
                                              for k, v in feeds.items()}).items()}
    m = export_onnx(graph)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})))
    return ref, got


def _write(tmp_path, text: str, blobs: dict | None = None):
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    if blobs is None:
        return proto, None
    model = tmp_path / "net.caffemodel"
    write_caffemodel(model, parse_prototxt(text), blobs)
    return proto, model


# =============================================================================== DenseBlock
# numpy transcription of the fork's forward at TEST (senlinuc/caffe_ocr copy of Tongcheng's
# src/caffe/layers/DenseBlock_layer.cpp: convolution_Fwd, ReLU_Fwd, mergeChannelData; and
# DenseBlock_layer.cu Forward_gpu: cudnnBatchNormalizationForwardInference with the stored
# mean/variance and CUDNN_BN_MIN_EPSILON = 1e-5)
def _np_conv_fwd(x, filt, k):
    """convolution_Fwd: out[n,o,h,w] = sum filt[o,c,fx,fy] * x[n,c,h+k//2-fx,w+k//2-fy]
    (zero outside): a true convolution, as cuDNN's CUDNN_CONVOLUTION mode."""
    n, c, hh, ww = x.shape
    out = np.zeros((n, filt.shape[0], hh, ww))
    for fx in range(k):
        for fy in range(k):
            dx, dy = k // 2 - fx, k // 2 - fy
            sh = np.zeros_like(x)
            hs, he = max(0, -dx), min(hh, hh - dx)
            ws, we = max(0, -dy), min(ww, ww - dy)
            sh[:, :, hs:he, ws:we] = x[:, :, hs + dx:he + dx, ws + dy:we + dy]
            out += np.einsum("oc,nchw->nohw", filt[:, :, fx, fy], sh)
    return out


def _np_bn_inf(x, mean, var, scaler, bias):
    m, v, s, b = (np.asarray(a, np.float64).reshape(1, -1, 1, 1) for a in (mean, var, scaler, bias))
    return s * (x - m) / np.sqrt(v + 1e-5) + b


def _np_dense_block(x, blobs, t, g, bc):
    x = x.astype(np.float64)
    b = [np.asarray(a, np.float64) for a in blobs]
    for i in range(t):
        y = np.maximum(_np_bn_inf(x, b[3 * t + i], b[4 * t + i], b[t + i], b[2 * t + i]), 0)
        if bc:
            y = _np_conv_fwd(y, b[5 * t + i], 1)
            y = np.maximum(_np_bn_inf(y, b[8 * t + i], b[9 * t + i], b[6 * t + i], b[7 * t + i]), 0)
        x = np.concatenate([x, _np_conv_fwd(y, b[i], 3)], axis=1)
    return x


def _dense_blobs(rng, t, c0, g, bc):
    """Blobs in the fork's LayerSetUp order; the BN timer 0 as a GPU-trained model keeps it."""
    cs = [c0 + i * g for i in range(t)]
    f = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.5   # noqa: E731
    pos = lambda *s: (rng.random(s) + 0.5).astype(np.float32)        # noqa: E731
    blobs = [f(g, 4 * g if bc else c, 3, 3) for c in cs]
    blobs += [pos(1, c, 1, 1) for c in cs] + [f(1, c, 1, 1) for c in cs]
    blobs += [f(1, c, 1, 1) for c in cs] + [pos(1, c, 1, 1) for c in cs]
    if bc:
        blobs += [f(4 * g, c, 1, 1) for c in cs]
        blobs += [pos(1, 4 * g, 1, 1) for _ in cs] + [f(1, 4 * g, 1, 1) for _ in cs]
        blobs += [f(1, 4 * g, 1, 1) for _ in cs] + [pos(1, 4 * g, 1, 1) for _ in cs]
    return blobs + [np.zeros(1, np.float32)]


def _dense_text(t, c0, g, bc, dropout=False, init=None):
    return f"""
name: "db"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c0} dim: 7 dim: 6 }} }} }}
layer {{ name: "DenseBlock1" type: "DenseBlock" bottom: "data" top: "DenseBlock1"
  denseblock_param {{ numTransition: {t} initChannel: {init or c0} growthRate: {g}
    Filter_Filler {{ type: "msra" }} BN_Scaler_Filler {{ type: "constant" value: 1 }}
    use_dropout: {str(dropout).lower()} dropout_amount: 0.2 use_BC: {str(bc).lower()}
    BC_ultra_space_efficient: true }} }}
"""


@pytest.mark.parametrize("bc,dropout", [(False, False), (True, False), (True, True)])
def test_dense_block_equals_the_forks_forward(tmp_path, bc, dropout):
    t, c0, g = 3, 4, 3
    rng = np.random.default_rng(1)
    blobs = _dense_blobs(rng, t, c0, g, bc)
    text = _dense_text(t, c0, g, bc, dropout)
    proto, model = _write(tmp_path, text, {"DenseBlock1": blobs})
    graph = load_model(proto, model)
    assert any("DenseBlock" in n and "flipped" in n for n in graph.notes)
    types = {l.type for l in graph.layers}
    assert "DenseBlock" not in types and {"BatchNorm", "Scale", "Convolution", "Concat"} <= types
    x = rng.standard_normal((2, c0, 7, 6)).astype(np.float32)
    want = _np_dense_block(x, blobs, t, g, bc)
    assert want.shape == (2, c0 + t * g, 7, 6) and np.std(want[:, c0:]) > 0.1
    ref, got = _run(graph, {"data": x})
    assert rel_err(ref["DenseBlock1"], want) < 1e-9
    assert rel_err(got["DenseBlock1"], want) < 1e-5


def test_dense_block_kernels_are_flipped_not_transposed(tmp_path):
    """An asymmetric 3x3 kernel with one non-zero tap: the true convolution moves the input
    the other way than Caffe's cross-correlation; protogen follows the fork."""
    t, c0, g = 1, 1, 1
    blobs = _dense_blobs(np.random.default_rng(0), t, c0, g, False)
    blobs[0] = np.zeros((1, 1, 3, 3), np.float32)
    blobs[0][0, 0, 0, 2] = 1.0                 # tap at (fx, fy) = (0, 2)
    blobs[1][...] = 1.0                        # scaler
    blobs[2][...] = 0.0                        # bias
    blobs[3][...] = 0.0                        # mean
    blobs[4][...] = 1.0 - 1e-5                 # var: BN is the identity
    proto, model = _write(tmp_path, _dense_text(t, c0, g, False), {"DenseBlock1": blobs})
    graph = load_model(proto, model)
    x = np.abs(np.random.default_rng(2).standard_normal((2, 1, 7, 6))).astype(np.float32)
    ref, _ = _run(graph, {"data": x})
    new = ref["DenseBlock1"][:, 1]
    # out[h, w] = x[h + 1, w - 1] (h + k//2 - fx, w + k//2 - fy)
    assert np.allclose(new[:, :-1, 1:], x[:, 0, 1:, :-1]) and np.allclose(new[:, -1, :], 0)


@pytest.mark.skipif(not HAS_CV, reason="OpenCV dnn is not installed")
def test_dense_block_opencv_runs_the_expanded_net(tmp_path):
    """OpenCV (an independent Caffe runtime) runs the expanded standard layers with the mapped
    blobs: protogen.verify compares it with the PyTorch reference and ONNX Runtime."""
    from protogen.verify import verify
    t, c0, g = 2, 4, 3
    blobs = _dense_blobs(np.random.default_rng(3), t, c0, g, True)
    proto, model = _write(tmp_path, _dense_text(t, c0, g, True), {"DenseBlock1": blobs})
    rep = verify(load_model(proto, model), weights_loaded=True, batch=2)
    assert rep.ok, rep.format_table()
    assert any(r.name.startswith("opencv") and r.status == "ran" for r in rep.runtimes), rep.format_table()


def test_dense_block_refusals(tmp_path):
    t, c0, g = 2, 4, 3
    blobs = _dense_blobs(np.random.default_rng(0), t, c0, g, True)
    proto, model = _write(tmp_path, _dense_text(t, c0, g, True), {"DenseBlock1": blobs[:-3]})
    with pytest.raises(ProtogenError, match="blobs for this DenseBlock; the fork's layer has 21"):
        load_model(proto, model)
    proto, _ = _write(tmp_path, _dense_text(t, c0, g, True, init=8))
    with pytest.raises(ProtogenError, match="initChannel is 8 but the bottom has 4 channels"):
        load_model(proto)


# =============================================================================== opencl fusions
_FUSED = """
name: "fused"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 11 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { fuse_type: FUSED_CONV_RELU relu_param { negative_slope: 0.1 }
                      num_output: 4 kernel_size: 3 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "pool1"
  lrn_param { fuse_type: FUSED_POOL_MAX local_size: 3 alpha: 0.5 beta: 0.75
              pooling_param { pool: MAX kernel_size: 3 stride: 2 } } }
"""
_UNFUSED = """
name: "unfused"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 11 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
"""


def _np_conv_leaky(x, w, b, slope):
    """Caffe's cross-correlation (conv_layer.cpp) then ReLU with negative_slope (relu_layer.cpp)."""
    n, c, h, ww = x.shape
    oh, ow = h - 2, ww - 2
    y = np.zeros((n, w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("oc,nchw->nohw", w[:, :, i, j], x[:, :, i:i + oh, j:j + ow])
    y += b.reshape(1, -1, 1, 1)
    return np.where(y > 0, y, slope * y)


def test_opencl_fusions_are_conv_relu_and_lrn_pool(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    proto, model = _write(tmp_path, _FUSED, {"conv1": [w, b]})
    graph = load_model(proto, model)
    assert any("FUSED_CONV_RELU" in n for n in graph.notes)
    assert any("FUSED_POOL_MAX" in n for n in graph.notes)
    assert [l.type for l in graph.layers] == ["Input", "Convolution", "ReLU", "LRN", "Pooling"]
    x = rng.standard_normal((2, 3, 11, 11)).astype(np.float32)
    ref, got = _run(graph, {"data": x})
    assert ref["pool1"].shape == (2, 4, 4, 4)         # conv 11 -> 9, pool 3/2 (ceil) -> 4
    assert rel_err(got["pool1"], ref["pool1"]) < 1e-5
    unf = tmp_path / "u"
    unf.mkdir()
    up, um = _write(unf, _UNFUSED, {"conv1": [w, b]})
    ref_u, _ = _run(load_model(up, um), {"data": x})
    assert rel_err(ref["pool1"], ref_u["pool1"]) < 1e-12
    # conv + leaky relu: protogen's graph cut after relu equals numpy
    cut = tmp_path / "c"
    cut.mkdir()
    cp, cm = _write(cut, _FUSED.split('layer { name: "norm1"')[0], {"conv1": [w, b]})
    ref_c, got_c = _run(load_model(cp, cm), {"data": x})
    want = _np_conv_leaky(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                           float(np.float32(0.1)))   # negative_slope is a float32 field
    assert rel_err(ref_c["conv1"], want) < 1e-9 and (want < 0).any()
    if HAS_CV:
        # OpenCV runs the unfused net (standard layers) with the same weights
        n = cv2.dnn.readNetFromCaffe(str(up), str(um))
        n.setInput(x)
        assert rel_err(n.forward("pool1"), ref["pool1"]) < 1e-5


def test_other_opencl_fusions_are_refused_by_name(tmp_path):
    text = _FUSED.replace("FUSED_CONV_RELU", "FUSED_CONV_ELTWISE_RELU")
    proto, _ = _write(tmp_path, text)
    with pytest.raises(UnsupportedError, match="fuse_type FUSED_CONV_ELTWISE_RELU"):
        load_model(proto)


# =============================================================================== quantization_param
def test_intel_int8_scales_are_ignored_with_a_note(tmp_path):
    """intel/caffe reads quantization_param only in its MKL-DNN layers: the default-engine FP32
    convolution computes the same as without it."""
    base = """
name: "q"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 bias_term: false } QUANT }
"""
    q = "quantization_param { bw_layer_in: 8 bw_layer_out: 8 bw_params: 8 scale_in: 70.6 " \
        "scale_out: 37.2 scale_params: 50.0 scale_params: 54.9 scale_params: 93.1 }"
    w = np.random.default_rng(5).standard_normal((3, 2, 3, 3)).astype(np.float32)
    p1, m1 = _write(tmp_path, base.replace("QUANT", q), {"conv": [w]})
    g1 = load_model(p1, m1)
    assert any("quantization_param" in n and "MKL-DNN" in n for n in g1.notes)
    d2 = tmp_path / "plain"
    d2.mkdir()
    p2, m2 = _write(d2, base.replace("QUANT", ""), {"conv": [w]})
    x = np.random.default_rng(6).standard_normal((1, 2, 5, 5)).astype(np.float32)
    assert np.array_equal(_run(g1, {"data": x})[1]["conv"], _run(load_model(p2, m2), {"data": x})[1]["conv"])


# =============================================================================== training heads / data
_SPHERE = """
name: "sphere"
layer { name: "data" type: "ImageData" top: "data" top: "label"
  image_data_param { source: "list.txt" batch_size: 4 new_height: 12 new_width: 10 } }
layer { name: "fc5" type: "InnerProduct" bottom: "data" top: "fc5" inner_product_param { num_output: 8 } }
layer { name: "fc6" type: "MarginInnerProduct" bottom: "fc5" bottom: "label" top: "fc6" top: "lambda"
  margin_inner_product_param { num_output: 20 type: QUADRUPLE weight_filler { type: "xavier" }
    base: 1000 gamma: 0.12 power: 1 lambda_min: 5 iteration: 0 } }
layer { name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "fc6" bottom: "label" top: "softmax_loss" }
"""


def test_margin_inner_product_is_a_training_head(tmp_path):
    proto, _ = _write(tmp_path, _SPHERE)
    g = load_model(proto)
    assert g.outputs() == ["fc5"]
    assert not any(l.type == "MarginInnerProduct" for l in g.layers)
    assert any("MarginInnerProduct 'fc6'" in n and "label" in n for n in g.notes)
    # the train view keeps it with Caffe's shapes: (N, num_output) and the scalar lambda
    gt = load_model(proto, phase="train", inference=False)
    st = {s.layer.name: s for s in gt.steps()}["fc6"]
    assert st.out_shapes == [(4, 20), (1,)]


def test_image_labelmap_data(tmp_path):
    text = """
name: "hed"
layer { name: "data" type: "ImageLabelmapData" top: "data" top: "label"
  image_data_param { source: "pairs.lst" batch_size: 2 new_height: 40 new_width: 30 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "conv" bottom: "label" top: "loss" }
"""
    proto, _ = _write(tmp_path, text)
    gt = load_model(proto, phase="train", inference=False)
    st = {s.layer.name: s for s in gt.steps()}["data"]
    assert st.out_shapes == [(2, 3, 40, 30), (2, 1, 40, 30)]   # label map: 1 channel, same size
    g = load_model(proto)
    assert [l.type for l in g.input_layers()] == ["Input"]
    assert {s.layer.name: s for s in g.steps()}["conv"].out_shapes == [(2, 1, 40, 30)]
    no_size = tmp_path / "n"
    no_size.mkdir()
    p2, _ = _write(no_size, text.replace("new_height: 40 new_width: 30", ""))
    with pytest.raises(ProtogenError, match="--input-shape"):
        load_model(p2)
    g2 = load_model(p2, input_shape="1,3,64,48")
    assert {s.layer.name: s for s in g2.steps()}["conv"].out_shapes == [(1, 1, 64, 48)]


def test_pb_knows_the_fork_fields():
    """The schema reads the forks' field names (CamelCase DenseBlock fields included)."""
    lp = pb.LayerParameter()
    for f in ("numTransition", "initChannel", "growthRate", "use_BC", "Filter_Filler"):
        assert f in lp.denseblock_param.DESCRIPTOR.fields_by_name
    assert pb.LayerParameter.DESCRIPTOR.fields_by_name["denseblock_param"].number == 260
    assert "lambda_min" in lp.margin_inner_product_param.DESCRIPTOR.fields_by_name
