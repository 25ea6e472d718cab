"""LRCN-style nets (BVLC/caffe examples/LRCN_activity_recognition): a CNN over frames, the
frames reshaped to (T, N, ...) for an LSTM whose sequence markers (``clip_markers``) come from
the same data layer as the frames. The train net's inference view makes the markers an Input
when their shape is given by name (``input_shape={top: shape}``), and the whole net verifies
(float64 PyTorch reference == ONNX Runtime; OpenCV's Caffe importer cannot run Caffe's LSTM,
see protogen.layers.recurrent.LSTM.opencv_limit and tests/layers/test_recurrent.py).
"""
from __future__ import annotations

import pytest

from protogen.caffe.loader import load_model
from protogen.errors import ProtogenError

TRAIN = """name: "lrcn_small"
layer { name: "data" type: "Python" top: "data" top: "label" top: "clip_markers"
  python_param { module: "sequence_input_layer" layer: "videoRead" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc6" type: "InnerProduct" bottom: "conv1" top: "fc6" inner_product_param { num_output: 6 } }
layer { name: "reshape-data" type: "Reshape" bottom: "fc6" top: "fc6-reshape"
  reshape_param { shape { dim: 4 dim: 3 dim: 6 } } }
layer { name: "reshape-label" type: "Reshape" bottom: "label" top: "reshape-label"
  reshape_param { shape { dim: 4 dim: 3 } } }
layer { name: "reshape-cm" type: "Reshape" bottom: "clip_markers" top: "reshape-cm"
  reshape_param { shape { dim: 4 dim: 3 } } }
layer { name: "lstm1" type: "LSTM" bottom: "fc6-reshape" bottom: "reshape-cm" top: "lstm1"
  recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.01 max: 0.01 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "lstm1" top: "fc8"
  inner_product_param { num_output: 7 axis: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "reshape-label" top: "loss"
  softmax_param { axis: 2 } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc8" bottom: "reshape-label" top: "accuracy"
  accuracy_param { axis: 2 } }
"""

SHAPES = {"data": "12,3,9,9", "clip_markers": "12,1,1,1"}


@pytest.fixture
def train_file(tmp_path):
    p = tmp_path / "train.prototxt"
    p.write_text(TRAIN)
    return p


def test_markers_become_an_input_when_their_shape_is_given(train_file):
    g = load_model(train_file, input_shape=SHAPES)
    (inp,) = g.input_layers()
    assert inp.tops == ["data", "clip_markers"]
    assert inp.params.shape == ((12, 3, 9, 9), (12, 1, 1, 1))
    steps = {st.layer.name: st for st in g.steps()}
    assert steps["lstm1"].out_shapes == [(4, 3, 5)]
    assert g.outputs() == ["fc8"]
    assert any("'loss'" in n for n in g.notes) and any("zero state" in n for n in g.notes)


def test_without_the_markers_shape_the_net_is_refused_with_the_way_out(train_file):
    with pytest.raises(ProtogenError, match=r"'lstm1' reads 'reshape-cm'.*input_shape=\{top: shape\}"):
        load_model(train_file, input_shape="12,3,9,9")
    with pytest.raises(ProtogenError, match="'frames', which no input or data layer produces"):
        load_model(train_file, input_shape={"frames": "12,3,9,9"})


def test_small_lrcn_verifies(train_file):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from protogen.verify import verify
    g = load_model(train_file, input_shape=SHAPES)
    rep = verify(g, seed=0, batch=12, model_name="lrcn_small")
    assert rep.ok, rep.format_table()
    assert any(c.runtime == "ort-cpu" and c.ok for c in rep.comparisons), rep.format_table()
    # OpenCV is skipped for the LSTM, saying why (not silently compared against another function)
    cv = [r for r in rep.runtimes if r.name == "opencv-caffe"]
    assert cv and cv[0].status == "skipped", rep.format_table()
    assert "LSTM" in cv[0].note or "Caffe importer" in cv[0].note or "not installed" in cv[0].note, cv[0].note
