"""ONNX -> IR import (protogen.onnx_import): numerical equality against ONNX Runtime on the
original model, Caffe's pooling rule checked against an independent numpy transcription of
Caffe's PoolingLayer, zoo round trips, and unsupported models listed in full."""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402

from protogen.errors import ProtogenError, UnsupportedError  # noqa: E402
from protogen.onnx_import import load_onnx, onnx_to_caffe  # noqa: E402

nn = torch.nn
F = torch.nn.functional
RTOL = 1e-4


# ----------------------------------------------------------------------------- helpers
def ort_run(model, feeds: dict) -> list[np.ndarray]:
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    if isinstance(data, Path):
        data = str(data)
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def assert_close(ref: np.ndarray, got: np.ndarray, what: str = "") -> None:
    assert ref.shape == got.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = float(np.abs(ref).max())
    assert scale > 0 and float(ref.std()) > 1e-6 * max(scale, 1), f"{what}: degenerate reference output"
    err = float(np.abs(ref - got).max())
    assert err <= RTOL * max(scale, 1e-3), f"{what}: max abs error {err} vs scale {scale}"


def export_torch(module, x, path, do_constant_folding=True) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), opset_version=17, dynamo=False,
                          input_names=["data"], output_names=["out"],
                          do_constant_folding=do_constant_folding)
    return Path(path)


def randomise_bn(module):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return module


def export_ir(graph):
    from protogen.onnx_io import export_onnx
    return export_onnx(graph)


def input_name(model) -> str:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits][0]


# ----------------------------------------------------------------------------- small torch models
class ConvBnReluPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool_ceil = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.pool_floor = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=(1, 2))

    def forward(self, x):
        x = self.pool_ceil(F.relu(self.bn(self.conv(x))))
        return self.conv2(self.pool_floor(x))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=6)
        self.gc = nn.Conv2d(6, 12, 1, groups=3)
        self.bn = nn.BatchNorm2d(12)

    def forward(self, x):
        return F.relu6(self.bn(self.gc(self.dw(x))))


class Shuffle(nn.Module):
    def __init__(self, groups=3):
        super().__init__()
        self.g = groups
        self.conv = nn.Conv2d(3, 12, 1)

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        x = x.view(n, self.g, c // self.g, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return F.leaky_relu(x, 0.1)


class ResidualConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(4, 6, 1)

    def forward(self, x):
        y = F.relu(self.a(x)) + x
        z = torch.cat([self.b(y), self.c(y), y], 1)
        return torch.max(z[:, :7], z[:, 7:])


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc1 = nn.Linear(16, 10)
        self.fc2 = nn.Linear(10, 7, bias=False)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(torch.sigmoid(self.conv(x)), 1).flatten(1)
        return torch.softmax(self.fc2(torch.tanh(self.fc1(x))), 1)


class AvgPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        x = self.conv(x)
        a = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
        b = F.avg_pool2d(x, 3, 2, 1, ceil_mode=False, count_include_pad=True)
        c = F.avg_pool2d(x, 2, 2, 0, ceil_mode=True, count_include_pad=False)
        return torch.cat([a.flatten(1), b.flatten(1), c.flatten(1)], 1)


class Acts(nn.Module):
    def __init__(self, clip=True):
        super().__init__()
        self.clip = clip
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.prelu = nn.PReLU(6, 0.2)
        self.deconv = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1)
        self.register_buffer("gamma", torch.linspace(0.5, 1.5, 6).view(1, 6, 1, 1))
        self.register_buffer("beta", torch.linspace(-0.3, 0.3, 6).view(6, 1, 1))

    def forward(self, x):
        x = self.prelu(self.conv(x)) * self.gamma + self.beta
        x = (F.hardtanh(x, -0.5, 1.5) if self.clip else x) * 2.0
        a, b = torch.chunk(x, 2, dim=1)
        return self.deconv(torch.cat([b, a], 1))


class PadFold(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        y = self.conv(F.pad(x, (1, 2, 1, 2)))             # asymmetric, but same windows
        y = F.max_pool2d(F.pad(y, (0, 1, 0, 1), value=float("-inf")), 2, 2)
        return F.max_pool2d(F.pad(F.relu(y), (1, 1, 1, 1)), 3, 2)   # zero pad on ReLU output


TORCH_CASES = {
    "conv_bn_relu_pool": (ConvBnReluPool, (1, 3, 17, 17)),
    "depthwise_relu6": (Depthwise, (1, 6, 15, 15)),
    "channel_shuffle": (Shuffle, (1, 3, 6, 5)),
    "residual_concat_slice_max": (ResidualConcat, (1, 4, 8, 8)),
    "linear_softmax": (Head, (1, 3, 9, 9)),
    "avgpool_include_pad": (AvgPools, (1, 3, 12, 12)),
    "prelu_scale_bias_hardtanh_split_deconv": (Acts, (1, 3, 7, 7)),
    "pad_folding": (PadFold, (1, 3, 15, 15)),
    # OpenCV's Caffe importer has no (general) Clip layer: the same model without hardtanh,
    # so that OpenCV still checks PReLU, Scale with bias, Power, Slice, Concat, Deconvolution
    "prelu_scale_bias_split_deconv": (lambda: Acts(clip=False), (1, 3, 7, 7)),
}
# a general Clip(min, max) is BVLC Caffe's Clip layer (hardtanh), which OpenCV 4's Caffe
# importer lacks (it registers ReLU6 but no "Clip" type); checked below, not assumed
OPENCV_NO_CLIP = {"prelu_scale_bias_hardtanh_split_deconv"}
OPENCV_NO_CLIP_REASON = ("OpenCV's Caffe importer has no 'Clip' layer type (only ReLU6, i.e. Clip(0, 6)); "
                         "the same net without the Clip runs as prelu_scale_bias_split_deconv")
OPENCV_CASES = sorted(TORCH_CASES)


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_in")
    out = {}
    for name, (cls, shape) in TORCH_CASES.items():
        torch.manual_seed(0)
        m = randomise_bn(cls()).eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        # no constant folding: BatchNormalization stays a node and shapes come as Shape chains
        path = export_torch(m, x, d / f"{name}.onnx", do_constant_folding=False)
        with torch.no_grad():
            ref_torch = m(x).numpy()
        out[name] = (path, x.numpy(), ref_torch)
    return out


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_model_reexport_matches_ort(case, torch_models):
    path, x, ref_torch = torch_models[case]
    model = onnx.load(str(path))
    ref = ort_run(model, {"data": x})[0]
    assert_close(ref_torch, ref, "torch vs ORT (sanity)")
    g = load_onnx(path)
    pytest.importorskip("protogen.onnx_io")
    ours = export_ir(g)
    got = ort_run(ours, {input_name(ours): x})[0]
    assert_close(ref, got, f"{case}: ORT(original) vs ORT(IR re-export)")


def test_torch_models_structure(torch_models):
    """What the importer made of them, checked against what the models contain."""
    types = {}
    for case in TORCH_CASES:
        g = load_onnx(torch_models[case][0])
        types[case] = [l.type for l in g.layers]
        assert [l.type for l in g.layers if l.type == "Input"] == ["Input"]
        assert g.layer("data").params.shape == (TORCH_CASES[case][1],)
    assert types["conv_bn_relu_pool"].count("BatchNorm") == 1
    assert types["conv_bn_relu_pool"].count("Scale") == 1
    assert types["channel_shuffle"] == ["Input", "Convolution", "ShuffleChannel", "ReLU"]
    assert "ReLU6" in types["depthwise_relu6"]
    assert "PReLU" in types["prelu_scale_bias_hardtanh_split_deconv"]
    assert "Deconvolution" in types["prelu_scale_bias_hardtanh_split_deconv"]
    # the OpenCV stand-in is the same net minus the Clip (hardtanh), nothing else
    assert "Clip" in types["prelu_scale_bias_hardtanh_split_deconv"]
    assert types["prelu_scale_bias_split_deconv"] == [
        t for t in types["prelu_scale_bias_hardtanh_split_deconv"] if t != "Clip"]
    assert types["prelu_scale_bias_split_deconv"] == [
        "Input", "Convolution", "PReLU", "Scale", "Power", "Slice", "Concat", "Deconvolution"]
    g = load_onnx(torch_models["prelu_scale_bias_split_deconv"][0])
    scale = next(l for l in g.layers if l.type == "Scale")
    assert scale.params.bias_term          # x * gamma + beta: one Scale with its bias
    # Pad nodes are folded away: 1 conv + 2 max pools + ReLU, no extra layers
    assert types["pad_folding"] == ["Input", "Convolution", "Pooling", "ReLU", "Pooling"]
    g = load_onnx(torch_models["channel_shuffle"][0])
    assert g.layers[2].params.group == 3
    g = load_onnx(torch_models["conv_bn_relu_pool"][0])
    bn = next(l for l in g.layers if l.type == "BatchNorm")
    assert float(bn.blobs[2][0]) == 1.0 and bn.blobs[0].shape == (8,)
    scale = next(l for l in g.layers if l.type == "Scale")
    assert scale.params.bias_term and len(scale.blobs) == 2
    pools = [l.params for l in g.layers if l.type == "Pooling"]
    assert [(p.pad_h, p.round_mode) for p in pools] == [(1, "CEIL"), (1, "FLOOR")]


# ----------------------------------------------------------------------------- Caffe files
def _caffe_pool_ref(x, p):
    """Caffe's PoolingLayer forward (MAX/AVE), transcribed loop for loop from
    src/caffe/layers/pooling_layer.cpp (CAFFE-SEMANTICS.md section 1)."""
    n, c, h, w = x.shape
    if p.global_pooling:
        kh, kw, sh, sw, ph, pw = h, w, 1, 1, 0, 0
    else:
        kh, kw, sh, sw, ph, pw = p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w

    def size(L, k, pad, s):
        num = L + 2 * pad - k
        o = (-(-num // s) if p.round_mode == "CEIL" else num // s) + 1
        if pad and (o - 1) * s >= L + pad:
            o -= 1
        return o
    ho, wo = size(h, kh, ph, sh), size(w, kw, pw, sw)
    y = np.zeros((n, c, ho, wo), np.float64)
    for i in range(ho):
        for j in range(wo):
            hs, ws = i * sh - ph, j * sw - pw
            if p.pool == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                y[:, :, i, j] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                pool_size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                y[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / pool_size
    return y.astype(np.float32)


def _pool_model(op, size, k, s, pads, ceil, include_pad):
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=list(pads), ceil_mode=int(ceil))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(include_pad)
    node = helper.make_node(op, ["x"], ["y"], name="pool", **attrs)
    g = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_pooling_mapping_matches_caffe_rule_exactly():
    """Every accepted ONNX pooling is reproduced by Caffe's own loop with the chosen
    pad/round_mode (independent numpy transcription); refused ones are reported clearly."""
    rng = np.random.default_rng(0)
    accepted = refused = 0
    for op, size, k, s, (pb, pe), ceil, inc in itertools.product(
            ("MaxPool", "AveragePool"), (6, 7, 8), (2, 3), (1, 2, 3), ((0, 0), (1, 1), (0, 1), (1, 0), (1, 2)),
            (False, True), (False, True)):
        if op == "MaxPool" and inc:
            continue
        if pb >= k or pe >= k:
            continue
        m = _pool_model(op, size, k, s, (pb, pb, pe, pe), ceil, inc)
        x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
        try:
            ref = ort_run(m, {"x": x})[0]
        except Exception:   # ORT refuses some pad/kernel combinations itself
            continue
        try:
            g = load_onnx(m)
        except UnsupportedError as e:
            refused += 1
            assert e.items[0][0] == "pool" and e.items[0][1] == op
            continue
        accepted += 1
        pool = next(l for l in g.layers if l.type == "Pooling")
        got = _caffe_pool_ref(x, pool.params)
        assert got.shape == ref.shape, (op, size, k, s, pb, pe, ceil, inc, pool.params)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6,
                                   err_msg=str((op, size, k, s, pb, pe, ceil, inc, pool.params)))
    assert accepted > 250 and refused > 150      # 288 and 198 when written


def test_refuses_asymmetric_conv_pad_and_exclusive_average():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2, 3, 3], np.ones(72, np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="same_conv", kernel_shape=[3, 3],
                              strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["y"], name="exclusive_avg", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], count_include_pad=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError) as e:
        load_onnx(m)
    names = [it[0] for it in e.value.items]
    assert "same_conv" in names
    msg = str(e.value)
    assert "asymmetric padding" in msg and "symmetric" in msg


def _caffe_files_equal_original(tmp_path, path, x):
    """onnx_to_caffe writes prototxt + caffemodel; reading them back gives the same net."""
    from protogen.caffe.loader import load_model
    proto, cm = onnx_to_caffe(path, tmp_path / "net.prototxt")
    assert proto.exists() and cm.exists()
    g2 = load_model(str(proto), str(cm))
    ours = export_ir(g2)
    ref = ort_run(onnx.load(str(path)), {"data": x})[0]
    got = ort_run(ours, {input_name(ours): x})[0]
    assert_close(ref, got, "caffe files")
    return proto, cm


@pytest.mark.parametrize("case", ["conv_bn_relu_pool", "channel_shuffle", "linear_softmax",
                                  "avgpool_include_pad", "depthwise_relu6"])
def test_caffe_files_roundtrip(case, torch_models, tmp_path):
    pytest.importorskip("protogen.onnx_io")
    path, x, _ = torch_models[case]
    _caffe_files_equal_original(tmp_path, path, x)


@pytest.mark.parametrize("case", OPENCV_CASES)
def test_opencv_caffe_matches_original(case, torch_models, tmp_path):
    """OpenCV dnn (an independent Caffe runtime) on the emitted prototxt + caffemodel."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5)")
    from protogen.dialect import Dialect
    path, x, _ = torch_models[case]
    proto, cm = onnx_to_caffe(path, tmp_path / "net.prototxt", Dialect.make("default", shuffle="shufflechannel"))
    text = proto.read_text().replace("round_mode: FLOOR", "ceil_mode: false")
    proto.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(cm))
    net.setInput(x)
    if case in OPENCV_NO_CLIP:
        assert 'type: "Clip"' in text
        try:
            got = net.forward()      # OpenCV creates the layers on the first forward
        except cv2.error as e:
            # exactly the missing layer type, nothing else (should OpenCV gain Clip, the
            # comparison below runs instead)
            assert "Can't create layer" in str(e) and 'of type "Clip"' in str(e), str(e)
            pytest.skip(OPENCV_NO_CLIP_REASON)
    else:
        got = net.forward()
    ref = ort_run(onnx.load(str(path)), {"data": x})[0]
    assert_close(ref, got.reshape(ref.shape), f"{case}: OpenCV Caffe")


@pytest.mark.parametrize("dialect", ["default", "bvlc"])
def test_opencv_caffe_shuffle_dialects(dialect, torch_models, tmp_path):
    """The recovered ShuffleChannel written as Reshape/Permute/Reshape or BVLC's
    Slice/Reshape/Concat/Reshape runs in OpenCV like the original."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5)")
    from protogen.dialect import Dialect
    path, x, _ = torch_models["channel_shuffle"]
    proto, cm = onnx_to_caffe(path, tmp_path / "net.prototxt", Dialect.make(dialect))
    text = proto.read_text()
    assert ("Permute" in text) == (dialect == "default") and "ShuffleChannel" not in text
    net = cv2.dnn.readNetFromCaffe(str(proto), str(cm))
    net.setInput(x)
    ref = ort_run(onnx.load(str(path)), {"data": x})[0]
    assert_close(ref, net.forward().reshape(ref.shape), f"OpenCV Caffe ({dialect})")


# ----------------------------------------------------------------------------- zoo round trips
def _zoo_small(name):
    from protogen import zoo
    m = zoo.get(name)
    opts = {o.name for o in m.options}
    for size in (64, 96, 128, 160, 224, 299):
        kw = {}
        if "input_size" in opts:
            kw["input_size"] = size
        if "num_classes" in opts:
            kw["num_classes"] = 10
        try:
            return zoo.build(name, **kw)
        except ProtogenError:
            if "input_size" not in opts:
                raise
    raise AssertionError(f"{name}: no small input size builds")


def _zoo_names():
    from protogen import zoo
    return sorted(zoo.models())


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_onnx_caffe_onnx_roundtrip(name):
    pytest.importorskip("protogen.onnx_io")
    from protogen.ir import DEPLOY
    from protogen.weights import init_weights, seeded_input
    net = _zoo_small(name)
    graph = init_weights(net.graph, seed=0)
    first = export_ir(graph)
    deploy = graph.select(net=DEPLOY)
    inp = deploy.input_layers()[0]
    shape = inp.params.shape[0]
    iname = input_name(first)
    g2 = load_onnx(first, input_shapes={iname: shape})
    second = export_ir(g2)
    x = seeded_input(shape, seed=1)
    ref = ort_run(first, {iname: x})
    got = ort_run(second, {input_name(second): x})
    assert len(ref) == len(got)
    for r, y in zip(ref, got):
        assert_close(r, y, name)
    # the Caffe structure comes back: same layer types and counts (Dropout is dropped at
    # inference), the channel shuffle as ShuffleChannel, BN as BatchNorm + Scale
    from collections import Counter
    want = Counter(l.type for l in deploy.layers if l.type != "Dropout")
    assert Counter(l.type for l in g2.layers) == want


# ----------------------------------------------------------------------------- unsupported
def test_every_unsupported_op_is_listed_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok_relu"),
             helper.make_node("Erf", ["a"], ["b"], name="gelu_erf"),
             helper.make_node("Round", ["b"], ["c"], name="rounding"),   # (HardSwish converts now)
             helper.make_node("LeakyRelu", ["c"], ["d"], name="leaky", alpha=0.1, bogus=3),
             helper.make_node("Pad", ["d", "pads"], ["y"], name="lonely_pad", mode="reflect")]
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[pads])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError) as e:
        load_onnx(m)
    items = e.value.items
    by_node = {}
    for n, op, msg in items:
        by_node.setdefault(n, []).append((op, msg))
    assert set(by_node) == {"gelu_erf", "rounding", "leaky", "lonely_pad"}
    assert by_node["gelu_erf"][0][0] == "Erf" and by_node["rounding"][0][0] == "Round"
    assert any("bogus" in msg for _, msg in by_node["leaky"])
    assert any("reflect" in msg for _, msg in by_node["lonely_pad"])
    assert "4 unsupported" in str(e.value) or len(items) >= 4


def test_cli_converts_onnx_to_caffe(torch_models, tmp_path):
    """`protogen convert IN.onnx -o OUT.prototxt` writes prototxt + caffemodel."""
    import subprocess
    import sys
    path = torch_models["channel_shuffle"][0]
    out = tmp_path / "shuffle.prototxt"
    r = subprocess.run([sys.executable, "-m", "protogen", "convert", str(path), "-o", str(out)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.with_suffix(".caffemodel").exists()
    text = out.read_text()
    # ONNX -> Caffe defaults to the portable dialect: the shuffle as BVLC Slice/Reshape/Concat
    assert "Permute" not in text and "ShuffleChannel" not in text and 'type: "Concat"' in text


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ProtogenError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ProtogenError):
        load_onnx(bad)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ProtogenError, match="dynamic dimension"):
        load_onnx(m)
    g2 = load_onnx(m, input_shapes={"x": (1, 3, 5, 5)})
    assert g2.layers[0].params.shape == ((1, 3, 5, 5),)


# ----------------------------------------------------------------------------- hand-built graphs
def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          initializer=[helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.reshape(-1))
                                       for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _reexport_equal(m, feeds):
    pytest.importorskip("protogen.onnx_io")
    g = load_onnx(m)
    ours = export_ir(g)
    ref = ort_run(m, feeds)
    got = ort_run(ours, {input_name(ours): next(iter(feeds.values()))})
    for r, y in zip(ref, got):
        assert_close(r, y)
    return g


def test_lrn_gemm_matmul_add():
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((6, 4)).astype(np.float32)        # Gemm B [K, N], transB = 0
    c1 = rng.standard_normal((1, 4)).astype(np.float32)
    w2 = rng.standard_normal((4, 3)).astype(np.float32)        # MatMul B [K, N]
    b2 = rng.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("LRN", ["x"], ["l"], name="norm", size=3, alpha=0.5, beta=0.75, bias=2.0),
             helper.make_node("GlobalMaxPool", ["l"], ["p"], name="gmax"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "w1", "c1"], ["h"], name="fc1", alpha=0.5, beta=2.0),
             helper.make_node("Unsqueeze", ["h", "ax"], ["h3"], name="unsq"),
             helper.make_node("MatMul", ["h3", "w2"], ["mm"], name="fc2"),
             helper.make_node("Add", ["mm", "b2"], ["y"], name="fc2_bias")]
    m = _model(nodes, [("x", [1, 6, 5, 5])], ["y"], [("w1", w1), ("c1", c1), ("w2", w2), ("b2", b2)])
    m.graph.initializer.append(helper.make_tensor("ax", TensorProto.INT64, [1], [1]))
    x = rng.standard_normal((1, 6, 5, 5)).astype(np.float32) * 3
    g = _reexport_equal(m, {"x": x})
    types = [l.type for l in g.layers]
    assert types == ["Input", "LRN", "Pooling", "InnerProduct", "Reshape", "InnerProduct"]
    lrn = g.layer("norm").params
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (3, 0.5, 0.75, 2.0)
    fc2 = g.layer("fc2")
    assert fc2.params.axis == 2 and fc2.params.bias_term
    np.testing.assert_array_equal(fc2.blobs[0], w2.T)     # Caffe stores [N_out, K]
    np.testing.assert_array_equal(g.layer("fc1").blobs[1], 2.0 * c1.reshape(-1))


def test_dialect_and_opset_refusals_and_input_shape():
    from protogen.dialect import Dialect
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Softmax", ["t"], ["y"], name="sm", axis=1)]
    m11 = _model(nodes, [("x", [1, 3, 4, 5])], ["y"], opset=11)
    with pytest.raises(UnsupportedError) as e:
        load_onnx(m11, dialect=Dialect.make("bvlc"))
    assert [it[0] for it in e.value.items] == ["nhwc"] and "Permute" in str(e.value)
    with pytest.raises(UnsupportedError) as e:      # opset 11 Softmax flattens axes 1.. into one
        load_onnx(m11)
    assert [it[0] for it in e.value.items] == ["sm"]
    m13 = _model(nodes, [("x", ["batch", 3, 4, 5])], ["y"], opset=13)
    g = load_onnx(m13)       # dynamic batch -> 1
    assert g.layers[0].params.shape == ((1, 3, 4, 5),)
    assert [l.type for l in g.layers] == ["Input", "Permute", "Softmax"]
    g = load_onnx(m13, input_shapes=(2, 3, 4, 5))
    assert g.blob_shapes()["y"] == (2, 4, 5, 3)
