"""ONNX -> Caffe for 3-D convolutions: torch Conv3d / ConvTranspose3d exported by torch.onnx
become upstream Caffe's N-D Convolution / Deconvolution (three values per field); ONNX
Runtime on the original ONNX is the oracle for (a) the Caffe files read back by protogen and
exported to ONNX again, and (b) OpenCV dnn's Caffe importer on the written files (it runs
3-D Convolution; it refuses 3-D Deconvolution, tests/layers/test_conv3d.py). 3-D pooling has
no Caffe layer a runtime loads, and is refused by name."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.errors import ProtogenError  # noqa: E402
from protogen.onnx_import import load_onnx, onnx_to_caffe  # noqa: E402
from protogen.onnx_io import export_onnx  # noqa: E402
from tests.onnx_import.common import assert_close, opencv_or_skip, ort_run  # noqa: E402


def _export(m, x, path):
    m.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), opset_version=17, dynamo=False,
                          input_names=["data"], output_names=["out"])
    return path


def _randomise(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _round_trip(tmp_path, m, shape):
    """(reference, input, prototxt, caffemodel, graph read back from the Caffe files)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    path = _export(_randomise(m), x, tmp_path / "net.onnx")
    x = x.numpy()
    ref = ort_run(onnx.load(str(path)), {"data": x})[0]
    proto, cm = onnx_to_caffe(path, tmp_path / "net.prototxt")
    back = load_model(proto, cm)
    again = export_onnx(back)
    got = ort_run(again, {again.graph.input[0].name: x})[0]
    assert_close(ref, got.reshape(ref.shape), "Caffe files -> protogen ONNX")
    return ref, x, proto, cm, back


def _conv_fields(text):
    """kernel_size / stride / pad / dilation values of each Convolution-like layer."""
    from protogen.caffe.prototxt import read_prototxt
    return {lp.name: {f: list(getattr(lp.convolution_param, f)) for f in ("kernel_size", "stride", "pad", "dilation")}
            for lp in read_prototxt(text).layer if lp.type in ("Convolution", "Deconvolution")}


def test_conv3d_net_to_caffe_matches_ort_and_opencv(tmp_path):
    nn = torch.nn
    m = nn.Sequential(
        nn.Conv3d(3, 6, 3, padding=1), nn.ReLU(),
        nn.Conv3d(6, 4, (2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), groups=2), nn.ReLU(),
        nn.Conv3d(4, 5, 3, padding=(2, 2, 2), dilation=2, bias=False))
    ref, x, proto, cm, back = _round_trip(tmp_path, m, (2, 3, 5, 9, 8))
    assert ref.shape == (2, 5, 4, 5, 4)
    fields = list(_conv_fields(str(proto)).values())
    assert [f["kernel_size"] for f in fields] == [[3, 3, 3], [2, 3, 3], [3, 3, 3]]
    assert fields[1]["stride"] == [1, 2, 2] and fields[1]["pad"] == [0, 1, 1]
    assert fields[2]["dilation"] == [2, 2, 2] and fields[2]["pad"] == [2, 2, 2]
    convs = [l for l in back.layers if l.type == "Convolution"]
    assert [l.params.group for l in convs] == [1, 2, 1] and not convs[2].params.bias_term
    # an independent Caffe runtime on the written prototxt + caffemodel (OpenCV 4.14 names
    # its 3-D convolution layers after their tops: the net's own last output is read)
    cv2 = opencv_or_skip()
    net = cv2.dnn.readNetFromCaffe(str(proto), str(cm))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    got = net.forward()
    assert_close(ref, np.asarray(got).reshape(ref.shape), "OpenCV dnn (Caffe importer)")


def test_conv_transpose3d_net_to_caffe_matches_ort(tmp_path):
    nn = torch.nn
    m = nn.Sequential(
        nn.ConvTranspose3d(3, 4, (2, 3, 3), stride=(2, 1, 2), padding=(0, 1, 1)), nn.ReLU(),
        nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1, groups=2, dilation=1))
    ref, _, proto, _, back = _round_trip(tmp_path, m, (1, 3, 3, 4, 5))
    assert ref.shape == (1, 2, 11, 7, 17)
    fields = list(_conv_fields(str(proto)).values())
    assert fields[0] == {"kernel_size": [2, 3, 3], "stride": [2, 1, 2], "pad": [0, 1, 1], "dilation": []}
    assert [l.type for l in back.layers if l.blobs] == ["Deconvolution", "Deconvolution"]
    assert back.layers[-1].params.group == 2


def _conv_model(auto_pad, kernel, pads=None, strides=None):
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3) + kernel).astype(np.float32), "w")
    attrs = dict(kernel_shape=list(kernel))
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    if pads is not None:
        attrs["pads"] = pads
    if strides is not None:
        attrs["strides"] = strides
    node = helper.make_node("Conv", ["data", "w"], ["out"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 4, 5, 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_conv3d_auto_pad_same_and_asymmetric_pads(tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 5, 6)).astype(np.float32)
    # SAME_UPPER with odd kernels: symmetric pads, the same windows in Caffe
    model = _conv_model("SAME_UPPER", (3, 1, 3))
    ref = ort_run(model, {"data": x})[0]
    again = export_onnx(load_onnx(model))
    assert_close(ref, ort_run(again, {again.graph.input[0].name: x})[0], "SAME_UPPER")
    # an extra end pad on H that no stride-2 window reaches (5 + 1 + 2 - 3 = 5: 3 windows
    # either way): Caffe's symmetric pad 1 gives the same windows
    model = _conv_model(None, (3, 3, 3), pads=[1, 1, 1, 1, 2, 1], strides=[1, 2, 1])
    ref = ort_run(model, {"data": x})[0]
    again = export_onnx(load_onnx(model))
    assert_close(ref, ort_run(again, {again.graph.input[0].name: x})[0], "explicit pads")
    # even kernels with SAME: 0 before, 1 after changes the output size: Caffe pads symmetrically
    with pytest.raises(ProtogenError, match=r"asymmetric padding \(0 before, 1 after\) on axis d"):
        load_onnx(_conv_model("SAME_UPPER", (2, 2, 2)))


@pytest.mark.parametrize("pool", ["MaxPool3d", "AvgPool3d"])
def test_pool3d_refused_with_reason(tmp_path, pool):
    nn = torch.nn
    m = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), getattr(nn, pool)(2))
    path = _export(m, torch.randn(1, 3, 4, 4, 4), tmp_path / "p.onnx")
    op = "MaxPool" if pool == "MaxPool3d" else "AveragePool"
    with pytest.raises(ProtogenError, match=rf"3-D {op} has no Caffe layer that a runtime loads: "
                                            r"upstream Caffe's \(and OpenCV's\) Pooling is 2-D only"):
        onnx_to_caffe(path, tmp_path / "p.prototxt")
    assert not (tmp_path / "p.prototxt").exists() and not (tmp_path / "p.caffemodel").exists()


class _Both(torch.nn.Module):
    """A 3-D classifier head: mean and max over (D, H, W), each through a Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.avg, self.max = nn.AdaptiveAvgPool3d(1), nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.body(x)
        return self.fc(torch.cat([self.avg(y), self.max(y) - 1], 1).flatten(1))


def test_global_pool3d_as_reshape_and_2d_global_pooling(tmp_path):
    """GlobalAveragePool / GlobalMaxPool on 5-D: Reshape (N, C, D*H*W, 1) -> global Pooling ->
    Reshape (N, C, 1, 1, 1), upstream layers that OpenCV runs as well."""
    ref, x, proto, cm, back = _round_trip(tmp_path, _Both(), (2, 3, 4, 5, 6))
    pools = [l for l in back.layers if l.type == "Pooling"]
    assert sorted(l.params.pool for l in pools) == ["AVE", "MAX"] and all(l.params.global_pooling for l in pools)
    assert [l.type for l in back.layers].count("Reshape") >= 4
    cv2 = opencv_or_skip()
    net = cv2.dnn.readNetFromCaffe(str(proto), str(cm))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    assert_close(ref, np.asarray(net.forward()).reshape(ref.shape), "OpenCV dnn (Caffe importer)")
