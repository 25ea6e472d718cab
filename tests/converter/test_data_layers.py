"""Training nets convert to their inference view whatever their data layers are: the input
shape comes from the data layer where it states one (shapes below worked out by hand from each
layer's DataLayerSetUp in the C++ source named in protogen/layers/data.py), from
--input-shape otherwise; train-phase losses are dropped."""
from __future__ import annotations

import pytest

from protogen.caffe.loader import load_model
from protogen.errors import ProtogenError

TAIL = '''
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''

CASES = {
    # memory_data_layer.cpp: data (batch, channels, height, width)
    "MemoryData": ('memory_data_param { batch_size: 2 channels: 3 height: 5 width: 7 }', (2, 3, 5, 7)),
    # dense_image_data_layer.cpp: resized to new_height x new_width, then crop_size
    "DenseImageData": ('dense_image_data_param { source: "l.txt" batch_size: 4 new_height: 12 new_width: 16 }',
                       (4, 3, 12, 16)),
    # window_data_layer.cpp: crop_size x crop_size windows, 3 channels
    "WindowData": ('window_data_param { source: "w.txt" batch_size: 8 } transform_param { crop_size: 9 }',
                   (8, 3, 9, 9)),
    # annotated_data_layer.cpp: resize_param height/width, batch from data_param
    "AnnotatedData": ('data_param { source: "lmdb" batch_size: 2 } annotated_data_param { label_map_file: "m" } '
                      'transform_param { resize_param { height: 30 width: 20 } }', (2, 3, 30, 20)),
    # dummy_data_layer.cpp: one shape per top
    "DummyData": ('dummy_data_param { shape { dim: 3 dim: 3 dim: 4 dim: 4 } shape { dim: 3 } }', (3, 3, 4, 4)),
}


def _net(tmp_path, layer: str):
    p = tmp_path / "n.prototxt"
    p.write_text('name: "n"\n' + layer + TAIL)
    return p


@pytest.mark.parametrize("kind", sorted(CASES))
def test_data_layer_gives_the_input_shape(tmp_path, kind):
    params, want = CASES[kind]
    g = load_model(_net(tmp_path, f'layer {{ name: "data" type: "{kind}" top: "data" top: "label" {params} }}'))
    assert [l.type for l in g.layers] == ["Input", "InnerProduct"]   # loss dropped, label gone
    assert g.steps()[0].out_shapes == [want]


@pytest.mark.parametrize("kind, params", [
    ("HDF5Data", 'hdf5_data_param { source: "h5.txt" batch_size: 10 }'),
    ("Python", 'python_param { module: "my_data" layer: "Reader" param_str: "x" }'),
])
def test_data_layer_without_a_shape_needs_input_shape(tmp_path, kind, params):
    p = _net(tmp_path, f'layer {{ name: "data" type: "{kind}" top: "data" top: "label" {params} }}')
    with pytest.raises(ProtogenError, match="--input-shape") as ei:
        load_model(p)
    assert ei.value.layer == "data"
    g = load_model(p, input_shape="1,4,6,6")
    assert g.steps()[0].out_shapes == [(1, 4, 6, 6)]


def test_python_layer_with_bottoms_is_refused_and_train_only_ones_are_dropped(tmp_path):
    body = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }\n'
            'layer { name: "pyloss" type: "Python" bottom: "fc" top: "l" python_param { module: "m" layer: "L" } %s }\n')
    p = tmp_path / "py.prototxt"
    p.write_text(body % "")
    with pytest.raises(ProtogenError, match="runs arbitrary Python code"):
        load_model(p)
    p.write_text(body % "include { phase: TRAIN }")
    g = load_model(p)          # TEST view: the TRAIN-only Python layer is not there
    assert [l.name for l in g.layers] == ["data", "fc"]


def test_a_net_computing_with_a_second_data_top_is_refused_not_cut(tmp_path):
    """Fast R-CNN's training data layer also gives the rois that ROI pooling reads: dropping
    the layers that use them would silently cut the net, so the inference view refuses."""
    p = tmp_path / "two.prototxt"
    p.write_text('name: "two"\n'
                 'layer { name: "data" type: "MemoryData" top: "data" top: "extra" '
                 'memory_data_param { batch_size: 1 channels: 2 height: 4 width: 4 } }\n'
                 'layer { name: "x" type: "Eltwise" bottom: "data" bottom: "extra" top: "x" }\n'
                 'layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "extra" top: "acc" }\n')
    with pytest.raises(ProtogenError, match="'x' reads 'extra'") as ei:
        load_model(p)
    assert ei.value.layer == "x"


def test_dropped_losses_are_noted(tmp_path):
    g = load_model(_net(tmp_path, 'layer { name: "data" type: "MemoryData" top: "data" top: "label" '
                                  'memory_data_param { batch_size: 1 channels: 1 height: 2 width: 2 } }'))
    assert any("dropped training-only layer(s) 'loss'" in n for n in g.notes), g.notes


@pytest.mark.parametrize("kind", ["EuclideanLoss", "SigmoidCrossEntropyLoss", "SmoothL1Loss",
                                  "SegAccuracy", "DetectionEvaluate"])
def test_training_only_types_are_dropped(tmp_path, kind):
    p = _net(tmp_path, 'layer { name: "data" type: "MemoryData" top: "data" top: "label" '
                       'memory_data_param { batch_size: 1 channels: 1 height: 2 width: 2 } }')
    p.write_text(p.read_text() + f'layer {{ name: "extra" type: "{kind}" bottom: "fc" bottom: "label" top: "e" }}\n')
    g = load_model(p)
    assert [l.name for l in g.layers] == ["data", "fc"]
    assert any("'extra'" in n for n in g.notes)
