"""Caffe's legacy upgrade rules (protogen.caffe.upgrade) on hand-written nets and the corpus."""
from __future__ import annotations

from pathlib import Path

import pytest

from protogen.caffe.loader import load_prototxt, read_net
from protogen.caffe.prototxt import parse_prototxt
from protogen.caffe.upgrade import upgrade_net
from protogen.errors import ProtogenError

from tests.helpers import CORPUS  # noqa: E402
from tests.helpers import needs_corpus  # noqa: E402


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


# ---------------------------------------------------------------- V0 / V1 by hand
V0_NET = '''name: "v0"
input: "data" input_dim: 1 input_dim: 3 input_dim: 10 input_dim: 10
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1
                 biasterm: false blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.25 } bottom: "pool1" top: "norm1" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "norm1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 7 } bottom: "norm1" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
'''

V2_NET = '''name: "v0"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 2 bias_term: false group: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.25 } }
layer { name: "drop" type: "Dropout" bottom: "norm1" top: "norm1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def test_v0_net_upgrades_to_handwritten_v2():
    """The V0 net, upgraded, equals the V2 net written by hand from Caffe's rules
    (padding folded into conv1, V0 fields into typed params, blobs_lr -> lr_mult)."""
    net = _net(V0_NET)
    assert upgrade_net(net) == ["v0", "v1", "input"]
    assert net == _net(V2_NET)


def test_v1_net_with_data_transform_fields():
    net = _net('''layers { name: "d" type: DATA top: "data" top: "label"
                           data_param { source: "db" batch_size: 8 crop_size: 27 mirror: true scale: 0.5
                                        mean_file: "m.binaryproto" } include { phase: TRAIN } }
                  layers { name: "fc" type: INNER_PRODUCT bottom: "data" top: "fc" blobs_lr: 1 blobs_lr: 2
                           weight_decay: 1 weight_decay: 0 param: "w" param: "b"
                           inner_product_param { num_output: 3 } }
                  layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss"
                           loss_weight: 2 }''')
    assert upgrade_net(net) == ["data", "v1"]
    d, fc, loss = net.layer
    assert (d.type, fc.type, loss.type) == ("Data", "InnerProduct", "SoftmaxWithLoss")
    assert not d.data_param.HasField("crop_size") and d.transform_param.crop_size == 27
    assert d.transform_param.mirror and d.transform_param.scale == 0.5
    assert d.transform_param.mean_file == "m.binaryproto"
    assert d.include[0].phase == 0   # TRAIN
    assert [(p.name, p.lr_mult, p.decay_mult) for p in fc.param] == [("w", 1, 1), ("b", 2, 0)]
    assert list(loss.loss_weight) == [2]


def test_net_with_layer_and_layers_is_refused():
    net = _net('''layer { name: "a" type: "ReLU" bottom: "x" top: "x" }
                  layers { name: "b" type: RELU bottom: "x" top: "x" }''')
    with pytest.raises(ProtogenError, match="both 'layer'"):
        upgrade_net(net, file="t.prototxt")


def test_v0_problems_are_listed_together():
    net = _net('''layers { layer { name: "a" type: "weird" } bottom: "x" top: "y" }
                  layers { layer { name: "b" type: "relu" num_output: 3 } bottom: "y" top: "z" }
                  input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1''')
    with pytest.raises(ProtogenError) as ei:
        upgrade_net(net, file="t.prototxt")
    text = str(ei.value)
    assert "layer 'a'" in text and "weird" in text
    assert "layer 'b'" in text and "num_output" in text


def test_padding_into_non_conv_is_refused():
    net = _net('''input: "x" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
                  layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }
                  layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }''')
    with pytest.raises(ProtogenError, match="not conv/pool"):
        upgrade_net(net, file="t.prototxt")


# ---------------------------------------------------------------- corpus: legacy == current
def _signature(g, specs=True):
    """What a net means, layer by layer (the Input layer's own name aside: Caffe's
    upgrade calls it "input", the hand-written V2 files "data")."""
    out = []
    for l in g.layers:
        row = ["<input>" if l.type == "Input" else l.name, l.type, l.bottoms, l.tops, l.params,
               l.phases, l.loss_weight]
        if specs:
            row.append([(s.lr_mult, s.decay_mult, s.name) for s in l.param_specs])
        out.append(row)
    return out


B = "bvlc_caffe/"
# (legacy file, its V2 counterpart, compare param specs too). V0 deploy nets declared
# blobs_lr that the later deploy files dropped, so their learning rates are not compared.
PAIRS = [
    ("history_11a4c1655_v1/models/bvlc_alexnet/deploy.prototxt", "current/models/bvlc_alexnet/deploy.prototxt", True),
    ("history_11a4c1655_v1/models/bvlc_alexnet/train_val.prototxt", "current/models/bvlc_alexnet/train_val.prototxt", True),
    ("history_11a4c1655_v1/models/bvlc_googlenet/deploy.prototxt", "current/models/bvlc_googlenet/deploy.prototxt", True),
    ("history_11a4c1655_v1/models/bvlc_reference_caffenet/deploy.prototxt", "current/models/bvlc_reference_caffenet/deploy.prototxt", True),
    ("history_11a4c1655_v1/models/bvlc_reference_caffenet/train_val.prototxt", "current/models/bvlc_reference_caffenet/train_val.prototxt", True),
    ("history_11a4c1655_v1/examples/mnist/lenet.prototxt", "current/examples/mnist/lenet.prototxt", True),
    ("history_11a4c1655_v1/examples/mnist/lenet_train_test.prototxt", "current/examples/mnist/lenet_train_test.prototxt", True),
    ("history_11a4c1655_v1/examples/cifar10/cifar10_full_train_test.prototxt", "current/examples/cifar10/cifar10_full_train_test.prototxt", True),
    ("history_11a4c1655_v1/examples/imagenet/bvlc_caffenet_full_conv.prototxt", "current/examples/net_surgery/bvlc_caffenet_full_conv.prototxt", True),
    ("history_2e330581c_v0/examples/lenet/lenet.prototxt", "current/examples/mnist/lenet.prototxt", True),
    ("history_2e330581c_v0/examples/cifar10/cifar10_quick.prototxt", "current/examples/cifar10/cifar10_quick.prototxt", True),
    ("history_2e330581c_v0/examples/imagenet/imagenet_deploy.prototxt", "current/models/bvlc_reference_caffenet/deploy.prototxt", False),
    ("history_4b273e35c_v0_padding/models/imagenet.prototxt", "current/models/bvlc_reference_caffenet/deploy.prototxt", False),
    ("history_833b334b5_v2_input_dim/models/bvlc_alexnet/deploy.prototxt", "current/models/bvlc_alexnet/deploy.prototxt", True),
    ("history_833b334b5_v2_input_dim/models/bvlc_googlenet/deploy.prototxt", "current/models/bvlc_googlenet/deploy.prototxt", True),
    ("history_833b334b5_v2_input_dim/examples/mnist/lenet.prototxt", "current/examples/mnist/lenet.prototxt", True),
    ("history_833b334b5_v2_input_dim/examples/cifar10/cifar10_quick.prototxt", "current/examples/cifar10/cifar10_quick.prototxt", True),
]


@needs_corpus
@pytest.mark.parametrize("old, new, specs", PAIRS, ids=[p[0] for p in PAIRS])
def test_legacy_corpus_net_upgrades_to_its_v2_counterpart(old, new, specs):
    a, b = CORPUS / B / old, CORPUS / B / new
    if not (a.exists() and b.exists()):
        pytest.skip("corpus file missing")
    assert _signature(load_prototxt(a), specs) == _signature(load_prototxt(b), specs)


@needs_corpus
def test_v0_padding_layers_fold_into_conv_pad():
    g = load_prototxt(CORPUS / B / "history_4b273e35c_v0_padding/models/imagenet.prototxt")
    assert all(l.type != "padding" for l in g.layers)
    # CaffeNet conv2: 5x5 pad 2 (from the V0 "pad2" padding layer), conv3-5: 3x3 pad 1
    assert (g.layer("conv2").params.pad_h, g.layer("conv3").params.pad_h) == (2, 1)
    assert g.layer("conv2").bottoms == ["norm1"]
