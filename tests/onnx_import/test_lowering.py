"""Lowerings of what ONNX exporters write (issue 11), one quick hand-built case each: the
graph converted to Caffe files in the portable dialect must (a) load in OpenCV's Caffe
importer and equal ONNX Runtime on the original graph, and (b) re-exported to ONNX from the
IR, equal it again. Plus the refusals that stay refusals, with their reasons."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from protogen.dialect import Dialect  # noqa: E402
from protogen.errors import UnsupportedError  # noqa: E402
from protogen.onnx_import import load_onnx, onnx_to_caffe  # noqa: E402
from tests.onnx_import.common import assert_close, opencv_caffe_run, ort_run  # noqa: E402

PORTABLE = Dialect.make("portable")
RNG = np.random.default_rng(11)


def model(nodes, x_shape, inits=(), opset=17, outputs=("y",)):
    g = helper.make_graph(
        nodes, "lowering", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[helper.make_tensor(n, TensorProto.INT64 if a.dtype == np.int64 else TensorProto.FLOAT,
                                        a.shape, a.reshape(-1).tolist()) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def conv_in(c_out=6, c_in=3):
    """A 3x3 conv in front, so that the op sees a spread of values from a fixed input."""
    w = (RNG.standard_normal((c_out, c_in, 3, 3)) * 0.6).astype(np.float32)
    b = RNG.standard_normal(c_out).astype(np.float32)
    return helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]), [("w", w), ("b", b)]


def check(m, x, tmp_path, types=None, dialect=PORTABLE):
    """ORT(original) == OpenCV(Caffe files) == ORT(IR re-exported); returns the layer types."""
    from protogen.onnx_io import export_onnx
    ref = ort_run(m, {"x": x})[0]
    onnx.save(m, str(tmp_path / "m.onnx"))
    proto, cm = onnx_to_caffe(tmp_path / "m.onnx", tmp_path / "m.prototxt", dialect)
    text = proto.read_text()
    assert "round_mode" not in text or dialect != PORTABLE
    got = opencv_caffe_run(proto, cm, x, m.graph.output[0].name)
    assert_close(ref, got.reshape(ref.shape), "OpenCV Caffe vs ORT")
    g = load_onnx(m, dialect=dialect)
    again = export_onnx(g)
    assert_close(ref, ort_run(again, {"x": x})[0], "ORT(IR re-export) vs ORT")
    layer_types = [l.type for l in g.layers]
    if types is not None:
        assert layer_types == types
    return layer_types, text


X = RNG.standard_normal((1, 3, 9, 9)).astype(np.float32) * 2


@pytest.mark.parametrize("op,attrs,opset", [
    ("HardSwish", {}, 14), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 13), ("Softplus", {}, 13),
    ("Mish", {}, 18), ("Gelu", {"approximate": "tanh"}, 20)])
def test_activation_compositions(op, attrs, opset, tmp_path):
    conv, inits = conv_in()
    m = model([conv, helper.make_node(op, ["c"], ["y"], name="act", **attrs)], X.shape, inits, opset)
    types, _ = check(m, X, tmp_path)
    assert set(types) <= {"Input", "Convolution", "Power", "ReLU", "Eltwise", "BNLL", "TanH"}


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-0.5, 1.5), (None, 0.7), (-1.0, None)])
def test_portable_clip_and_relu6(lo, hi, tmp_path):
    """Clip/ReLU6 exist in neither all runtimes (upstream lacks ReLU6, OpenCV lacks Clip):
    the portable dialect writes ReLU/Power chains; the default dialect keeps the layers."""
    conv, inits = conv_in()
    ins = ["c", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    extra = [(n, np.array(v, np.float32)) for n, v in (("lo", lo), ("hi", hi)) if v is not None]
    m = model([conv, helper.make_node("Clip", ins, ["y"], name="clip")], X.shape, inits + extra, 13)
    types, _ = check(m, X * 3, tmp_path)
    assert "ReLU6" not in types and "Clip" not in types
    default = [l.type for l in load_onnx(m).layers]
    assert default[-1] == ("ReLU6" if (lo, hi) == (0.0, 6.0) else "Clip")


@pytest.mark.parametrize("op,pool", [("ReduceMean", "AVE"), ("ReduceMax", "MAX")])
@pytest.mark.parametrize("keepdims,opset", [(1, 13), (0, 18)])
def test_reduce_over_hw_is_global_pooling(op, pool, keepdims, opset, tmp_path):
    conv, inits = conv_in()
    if opset >= 18:         # axes became an input
        node = helper.make_node(op, ["c", "axes"], ["y"], name="reduce", keepdims=keepdims)
        inits = inits + [("axes", np.array([-1, 2], np.int64))]
    else:
        node = helper.make_node(op, ["c"], ["y"], name="reduce", axes=[2, 3], keepdims=keepdims)
    m = model([conv, node], X.shape, inits, opset)
    types, _ = check(m, X, tmp_path)
    assert types == ["Input", "Convolution", "Pooling"] + ([] if keepdims else ["Flatten"])


def test_reduce_over_channels_is_refused():
    conv, inits = conv_in()
    m = model([conv, helper.make_node("ReduceMean", ["c"], ["y"], name="cmean", axes=[1])], X.shape, inits, 13)
    with pytest.raises(UnsupportedError, match="cmean.*H and W"):
        load_onnx(m)


def se_block(op):
    """x * sigmoid(fc(mean(x))) / x + gate: the squeeze-and-excitation broadcast."""
    conv, inits = conv_in()
    w = (RNG.standard_normal((6, 6, 1, 1)) * 0.5).astype(np.float32)
    nodes = [conv,
             helper.make_node("GlobalAveragePool", ["c"], ["m"], name="squeeze"),
             helper.make_node("Conv", ["m", "w2"], ["e"], name="excite"),
             helper.make_node("Sigmoid", ["e"], ["s"], name="gate"),
             helper.make_node(op, ["s", "c"], ["y"], name="scale")]
    return model(nodes, X.shape, inits + [("w2", w)], 13)


def test_se_broadcast_mul_is_scale_with_two_bottoms(tmp_path):
    types, text = check(se_block("Mul"), X, tmp_path)
    assert types[-2:] == ["Flatten", "Scale"]


def test_broadcast_add_of_channel_vector(tmp_path):
    types, _ = check(se_block("Add"), X, tmp_path)
    assert types[-2:] == ["Deconvolution", "Eltwise"]


@pytest.mark.parametrize("ctm,nearest,opset", [("asymmetric", "floor", 13), ("half_pixel", "round_prefer_floor", 18),
                                               ("pytorch_half_pixel", "round_prefer_floor", 13)])
def test_resize_nearest_integer_factor(ctm, nearest, opset, tmp_path):
    conv, inits = conv_in()
    scales = np.array([1, 1, 2, 3], np.float32)
    node = helper.make_node("Resize", ["c", "", "scales"], ["y"], name="up", mode="nearest",
                            coordinate_transformation_mode=ctm, nearest_mode=nearest)
    m = model([conv, node], X.shape, inits + [("scales", scales)], opset)
    types, _ = check(m, X, tmp_path)
    assert types[-1] == "Deconvolution"


def test_resize_refusals_name_the_reason():
    conv, inits = conv_in()
    nodes = [conv, helper.make_node("Resize", ["c", "", "scales"], ["r"], name="bilinear", mode="linear"),
             helper.make_node("Resize", ["r", "", "s2"], ["y"], name="odd", mode="nearest")]
    m = model(nodes, X.shape, inits + [("scales", np.array([1, 1, 2, 2], np.float32)),
                                       ("s2", np.array([1, 1, 1.5, 1.5], np.float32))], 13)
    with pytest.raises(UnsupportedError) as e:
        load_onnx(m)
    assert [it[0] for it in e.value.items] == ["bilinear"]     # 'odd' reads a refused node
    assert "linear" in str(e.value)


def test_cast_identity_dropout_dropped(tmp_path):
    conv, inits = conv_in()
    nodes = [conv, helper.make_node("Cast", ["c"], ["k"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Identity", ["k"], ["i"], name="ident"),
             helper.make_node("Dropout", ["i"], ["d"], name="drop"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    types, _ = check(model(nodes, X.shape, inits, 13), X, tmp_path)
    assert types == ["Input", "Convolution", "ReLU"]


def test_gelu_erf_refused_with_reason():
    conv, inits = conv_in()
    m = model([conv, helper.make_node("Gelu", ["c"], ["y"], name="gelu")], X.shape, inits, 20)
    with pytest.raises(UnsupportedError, match="erf"):
        load_onnx(m)


def test_elu_worked_example(tmp_path):
    """docs/onnx-import.md, 'Adding an ONNX import op': Elu -> Caffe ELU, alpha carried."""
    conv, inits = conv_in()
    m = model([conv, helper.make_node("Elu", ["c"], ["y"], name="elu", alpha=0.7)], X.shape, inits, 13)
    types, text = check(m, X, tmp_path, types=["Input", "Convolution", "ELU"])
    assert "alpha: 0.7" in text


def test_resize_linear_align_corners_is_interp_in_default_dialect(tmp_path):
    """The fork Interp layer (OpenCV has it; upstream Caffe does not): default dialect only."""
    conv, inits = conv_in()
    node = helper.make_node("Resize", ["c", "", "", "sizes"], ["y"], name="interp", mode="linear",
                            coordinate_transformation_mode="align_corners")
    m = model([conv, node], X.shape, inits + [("sizes", np.array([1, 6, 17, 13], np.int64))], 13)
    check(m, X, tmp_path, types=["Input", "Convolution", "Interp"], dialect=Dialect.make("default"))
    with pytest.raises(UnsupportedError, match="Interp layer of the default dialect"):
        load_onnx(m, dialect=PORTABLE)
