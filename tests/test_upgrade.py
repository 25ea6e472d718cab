"""Caffe's legacy upgrade rules (protogen.caffe.upgrade) on hand-written nets and the corpus."""
from __future__ import annotations

from pathlib import Path

import pytest

from protogen.caffe.loader import load_prototxt, read_net
from protogen.caffe.prototxt import parse_prototxt
from protogen.caffe.upgrade import upgrade_net
from protogen.errors import ProtogenError

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def _net(text):
    return parse_prototxt(text, "t.prototxt")


# ---------------------------------------------------------------- input fields
def test_input_dim_becomes_front_input_layer():
    net = _net('''name: "n" input: "data" input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 9
                  layer { name: "r" type: "ReLU" bottom: "data" top: "r" }''')
    assert upgrade_net(net) == ["input"]
    assert not net.input and not net.input_dim
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 3, 8, 9]]
    assert [l.name for l in net.layer] == ["input", "r"]


def test_two_inputs_with_input_shape():
    net = _net('''input: "a" input_shape { dim: 1 dim: 3 } input: "b" input_shape { dim: 1 dim: 5 }
                  layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }''')
    upgrade_net(net)
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3], [1, 5]]


def test_two_inputs_input_dim_four_each():
    net = _net('input: "a" input: "b" ' + " ".join(f"input_dim: {d}" for d in (1, 2, 3, 4, 5, 6, 7, 8)))
    upgrade_net(net)
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_bare_input_is_stripped():
    net = _net('''input: "data"
                  layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }''')
    upgrade_net(net)
    assert not net.input and len(net.layer) == 1


@pytest.mark.parametrize("text, msg", [
    ('input: "a" input_dim: 1 input_dim: 2', "need 4 input_dim"),
    ('input: "a" input: "b" input_shape { dim: 1 }', "input_shape"),
    ('input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1', "no 'input' names"),
])
def test_bad_input_declarations(text, msg):
    with pytest.raises(ProtogenError, match=msg):
        upgrade_net(_net(text), file="t.prototxt")


def test_batchnorm_three_params_frozen():
    net = _net('''layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                          param { lr_mult: 1 name: "m" } param { lr_mult: 1 } param { decay_mult: 3 } }''')
    assert upgrade_net(net) == ["batchnorm"]
    ps = net.layer[0].param
    assert [(p.lr_mult, p.decay_mult) for p in ps] == [(0, 0)] * 3
    assert ps[0].name == "m"


@needs_corpus
def test_resnet50_input_dim_deploy_loads():
    g = load_prototxt(CORPUS / "kaiminghe_deep-residual-networks" / "ResNet-50-deploy.prototxt")
    assert g.layers[0].type == "Input" and g.layers[0].params.shape == ((1, 3, 224, 224),)
    # the published ResNet-50: 1000-way classifier
    assert g.steps()[-1].out_shapes == [(1, 1000)]
