"""Layers are selected by NetState (phase, stage, level) BEFORE the graph is checked, as
Caffe's Net::FilterNet does (BVLC/caffe src/caffe/net.cpp); issue 13 item 4."""
from __future__ import annotations

import pytest

from protogen.caffe.loader import load_model
from protogen.errors import ProtogenError

TRAIN_TEST = '''name: "tt"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 8 } data_param { source: "train_lmdb" batch_size: 4 } }
layer { name: "test_in" type: "Input" top: "data" include { phase: TEST }
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { phase: TRAIN } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }
'''


def test_test_only_accuracy_reading_label_does_not_stop_phase_train(tmp_path):
    p = tmp_path / "tt.prototxt"
    p.write_text(TRAIN_TEST)
    g = load_model(p, phase="train")
    # TRAIN view: the Data layer becomes the input (batch_size 4, crop_size 8), the loss is dropped
    assert [l.name for l in g.layers] == ["data", "fc"]
    assert [st.out_shapes for st in g.steps()] == [[(4, 3, 8, 8)], [(4, 5)]]
    # the TEST view really reads a label nobody makes: Caffe refuses it too, naming the layer
    with pytest.raises(ProtogenError) as ei:
        load_model(p, phase="test")
    assert "label" in str(ei.value) and "accuracy" in str(ei.value)


STAGES = '''name: "digits_like"
input: "data" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" include { stage: "deploy" } }
layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "sig" exclude { stage: "deploy" } }
layer { name: "lvl" type: "TanH" bottom: "fc" top: "lvl" include { min_level: 2 } }
layer { name: "notlvl" type: "ReLU" bottom: "fc" top: "notlvl" include { max_level: 1 not_stage: "deploy" } }
'''


@pytest.mark.parametrize("stages, level, want", [
    ((), None, ["fc", "sig", "notlvl"]),              # TEST, level 0, no stage
    (("deploy",), None, ["fc", "prob"]),              # stage met: include prob, exclude sig
    ((), 2, ["fc", "sig", "lvl"]),                    # level 2: min_level met, max_level not
])
def test_stage_and_level_rules(tmp_path, stages, level, want):
    p = tmp_path / "s.prototxt"
    p.write_text(STAGES)
    g = load_model(p, stages=stages, level=level)
    assert [l.name for l in g.layers if l.type != "Input"] == want


def test_net_state_field_gives_the_default_stage(tmp_path):
    p = tmp_path / "s.prototxt"
    p.write_text(STAGES.replace('name: "digits_like"', 'name: "d" state { stage: "deploy" }'))
    g = load_model(p)
    assert [l.name for l in g.layers if l.type != "Input"] == ["fc", "prob"]
