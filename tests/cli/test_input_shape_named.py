"""``--input-shape NAME=N,C,H,W`` (repeatable): several inputs by name on the command line, as
``load_model(input_shape={top: shape})`` takes them. A train net whose data layer's later tops
feed the net (Fast R-CNN's rois, NYUD's HHA image) converts with them; the unnamed form is
unchanged; bad combinations are one-line errors (exit 2, no output file)."""
from __future__ import annotations

import json

import pytest

from protogen.cli import main
from tests.helpers import CORPUS, needs_corpus

# a Fast R-CNN-shaped train net: a Python data layer yields data, rois and labels; ROIPooling
# reads rois, the loss reads labels
FRCN = """name: "frcn"
layer { name: "data" type: "Python" top: "data" top: "rois" top: "labels"
  python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool"
  roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 1.0 } }
layer { name: "cls_score" type: "InnerProduct" bottom: "pool" top: "cls_score"
  inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "labels" top: "loss" }
"""


def _fail(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("protogen: error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def test_named_shapes_convert_a_train_net(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    src = tmp_path / "frcn.prototxt"
    src.write_text(FRCN)
    out = tmp_path / "frcn.onnx"
    assert main(["convert", str(src), "--phase", "train", "--input-shape", "data=1,3,16,16",
                 "--input-shape", "rois=3,5", "-o", str(out)]) == 0, capsys.readouterr().err
    m = onnx.load(str(out))
    dims = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert set(dims) == {"data", "rois"}
    assert dims["rois"][1] == 5 and dims["data"][1] == 3     # (H, W are left dynamic)
    assert [o.name for o in m.graph.output] == ["cls_score"]
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rois = np.asarray([[0, 0, 0, 7, 7], [0, 4, 2, 15, 9], [0, 8, 8, 8, 8]], np.float32)
    (score,) = sess.run(None, {"data": np.ones((1, 3, 16, 16), np.float32), "rois": rois})
    assert score.shape == (3, 3)                              # one row per roi


def test_named_shapes_verify_a_train_net(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    src = tmp_path / "frcn.prototxt"
    src.write_text(FRCN)
    assert main(["verify", str(src), "--input-shape", "data=1,3,16,16", "--input-shape", "rois=3,5",
                 "--no-opencv", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and set(rep["inputs"]) == {"data", "rois"}


def test_named_shapes_refused_clearly(tmp_path, capsys):
    src = tmp_path / "frcn.prototxt"
    src.write_text(FRCN)
    out = tmp_path / "x.onnx"
    # without rois' shape the net would be cut: refused, naming the form to use
    err = _fail(capsys, "convert", src, "--input-shape", "1,3,16,16", "-o", out)
    assert "'roi_pool' reads 'rois'" in err and "--input-shape TOP=N,C,H,W" in err
    assert "name every shape" in _fail(capsys, "convert", src, "--input-shape", "data=1,3,16,16",
                                       "--input-shape", "3,5", "-o", out)
    assert "given several times" in _fail(capsys, "convert", src, "--input-shape", "1,3,16,16",
                                          "--input-shape", "3,5", "-o", out)
    assert "'data' given twice" in _fail(capsys, "convert", src, "--input-shape", "data=1,3,16,16",
                                         "--input-shape", "data=1,3,8,8", "-o", out)
    assert "for 'rois' must be integers" in _fail(capsys, "convert", src, "--input-shape", "data=1,3,16,16",
                                                  "--input-shape", "rois=3,five", "-o", out)
    assert "'roi'" in _fail(capsys, "convert", src, "--input-shape", "data=1,3,16,16",
                            "--input-shape", "roi=3,5", "-o", out)
    assert not out.exists()


def test_named_shape_for_an_onnx_input(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    f = tmp_path / "relu.onnx"
    onnx.save(m, str(f))
    assert main(["stats", str(f), "--input-shape", "x=1,3,6,5", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [1, 3, 6, 5] in [sh for l in s["layers"] for sh in l["output_shapes"]]


@needs_corpus
@pytest.mark.parametrize("rel, argv, params", [
    # VGG-16 (138,357,544) without fc8 (4096 x 1000 + 1000) with cls_score (4096 x 21 + 21)
    # and bbox_pred (4096 x 84 + 84)
    ("rbgirshick_fast-rcnn/models/VGG16/train.prototxt",
     ["--phase", "train", "--input-shape", "data=1,3,224,224", "--input-shape", "rois=1,5"],
     138_357_544 - 4_097_000 + 4096 * 21 + 21 + 4096 * 84 + 84),
    ("shelhamer_fcn/nyud-fcn32s-color-hha/trainval.prototxt",
     ["--input-shape", "color=1,3,425,560", "--input-shape", "hha=1,3,425,560"], None),
])
def test_corpus_train_nets_with_named_shapes(capsys, rel, argv, params):
    assert main(["stats", str(CORPUS / rel), *argv, "--json"]) == 0, capsys.readouterr().err
    s = json.loads(capsys.readouterr().out)
    if params is not None:
        assert s["params"] == params
    inputs = [l for l in s["layers"] if l["type"] == "Input"]
    assert len(inputs) == 1 and len(inputs[0]["output_shapes"]) == 2
