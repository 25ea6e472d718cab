"""The DSL: naming, scopes, in-place activations, stale handles, misuse errors, and the
issue's seed example (a naive and a reduced Inception module, hand-counted)."""
from __future__ import annotations

import pytest

from protogen import Net, ProtogenError
from protogen.ir import DEPLOY, TRAIN_VAL
from protogen import stats


def test_auto_names_and_scopes():
    n = Net("t")
    x = n.input("data", (1, 3, 32, 32))
    a = n.conv(x, 8, 3, pad=1)
    b = n.conv(a, 8, 3, pad=1)
    p = n.max_pool(b, 2, 2)
    assert (a.name, b.name, p.name) == ("conv1", "conv2", "pool1")
    with n.scope("inception_3a"):
        y = n.conv(p, 4, 1, name="1x1")
    assert y.name == "inception_3a/1x1"
    with n.scope("stage2"), n.scope("unit1"):
        z = n.conv(p, 4, 1)          # numbered per scope: conv1 again
    assert z.name == "stage2/unit1/conv1"
    assert [l.name for l in n.graph.layers][-1] == "stage2/unit1/conv1"


def test_inplace_activation_and_bn():
    n = Net("t")
    x = n.input("data", (1, 3, 8, 8))
    c = n.conv(x, 4, 3, pad=1, bias=False)
    r = n.relu(n.bn(c))
    layers = n.graph.layers
    assert [l.name for l in layers] == ["data", "conv1", "conv1/bn", "conv1/scale", "conv1/relu"]
    for l in layers[2:]:
        assert l.bottoms == ["conv1"] and l.tops == ["conv1"]
    assert [l.type for l in layers[2:]] == ["BatchNorm", "Scale", "ReLU"]
    assert r.name == "conv1" and r.shape == (1, 4, 8, 8)
    with n.scope("stage2/unit1"):
        y = n.conv(r, 4, 1, name="gconv1")
        y = n.relu(n.bn(y))
    assert [l.name for l in n.graph.layers[-3:]] == \
        ["stage2/unit1/gconv1/bn", "stage2/unit1/gconv1/scale", "stage2/unit1/gconv1/relu"]
    # not in place when asked
    q = n.relu(y, inplace=False, name="relu_copy")
    assert q.name == "relu_copy" and n.graph.layers[-1].bottoms == [y.name]


def test_stale_handle_after_inplace():
    n = Net("t")
    x = n.input("data", (1, 3, 8, 8))
    c = n.conv(x, 4, 3, pad=1)
    n.relu(c)                          # rewrites 'conv1' in place; `c` now names the old value
    with pytest.raises(ProtogenError, match="modified in place by layer 'conv1/relu'") as e:
        n.conv(c, 4, 1, name="late")
    assert e.value.layer == "late"


def test_misuse_errors_name_the_layer():
    n = Net("t")
    x = n.input("data", (1, 3, 8, 8))
    with pytest.raises(ProtogenError, match="unknown blob 'nope'") as e:
        n.conv("nope", 4, 3, name="c_missing")
    assert e.value.layer == "c_missing"
    with pytest.raises(ProtogenError, match="not divisible by group 2") as e:
        n.conv(x, 4, 3, group=2, name="c_group")      # 3 input channels, 2 groups
    assert e.value.layer == "c_group"
    with pytest.raises(ProtogenError, match="not divisible by group 3") as e:
        n.conv(x, 5, 3, group=3, name="c_out")         # 5 outputs, 3 groups
    assert e.value.layer == "c_out"
    y = n.conv(x, 4, 3, stride=2, name="small")
    with pytest.raises(ProtogenError, match="concatenate") as e:
        n.concat([x, y], name="cat")
    assert e.value.layer == "cat"
    with pytest.raises(ProtogenError, match="cannot run in place"):
        n.add("Softmax", [x], None, name="p", inplace=True)
    with pytest.raises(ProtogenError, match="duplicate layer name"):
        n.conv(x, 4, 3, name="small")
    other = Net("o").input("data", (1, 3, 8, 8))
    with pytest.raises(ProtogenError, match="expected a blob of net 't'"):
        n.conv(other, 4, 3)


def test_train_only_parts_and_outputs():
    from protogen.dsl import TrainData
    n = Net("t")
    x = n.input("data", (1, 3, 8, 8), train=TrainData())
    y = n.fc(x, 10, name="fc")
    with n.train_only():
        aux = n.fc(x, 10, name="aux_fc")
    n.loss(aux, name="aux_loss", loss_weight=0.3)
    n.classifier_outputs(y)
    dep = n.graph.select(net=DEPLOY)
    assert [l.name for l in dep] == ["data", "fc", "prob"]
    tv = n.graph.select(net=TRAIN_VAL)
    names = [l.name for l in tv]
    assert "aux_fc" in names and "prob" not in names and "accuracy_top5" in names
    assert tv.layer("aux_loss").loss_weight == [0.3]
    assert "phase: TRAIN" in n.train_prototxt() and "phase: TRAIN" not in n.deploy_prototxt()


# ----------------------------------------------------------------------------- seed example
def _naive_inception(reduced: bool):
    n = Net("inception")
    x = n.input("data", (1, 192, 28, 28))
    with n.scope("inception_3a"):
        b1 = n.conv(x, 64, 1, bias=False, name="1x1")
        if reduced:
            b2 = n.conv(n.conv(x, 96, 1, bias=False, name="3x3_reduce"), 128, 3, pad=1, bias=False, name="3x3")
            b3 = n.conv(n.conv(x, 16, 1, bias=False, name="5x5_reduce"), 32, 5, pad=2, bias=False, name="5x5")
            b4 = n.conv(n.max_pool(x, 3, 1, 1, name="pool"), 32, 1, bias=False, name="pool_proj")
        else:
            b2 = n.conv(x, 128, 3, pad=1, bias=False, name="3x3")
            b3 = n.conv(x, 32, 5, pad=2, bias=False, name="5x5")
            b4 = n.max_pool(x, 3, 1, 1, name="pool")
        y = n.concat([b1, b2, b3, b4], name="output")
    return n, y


def test_seed_example_naive_inception():
    n, y = _naive_inception(False)
    # weights (no bias): 1x1: 192*64 = 12,288; 3x3: 192*9*128 = 221,184; 5x5: 192*25*32 = 153,600
    # total 12,288 + 221,184 + 153,600 = 387,072
    assert 192 * 64 + 192 * 9 * 128 + 192 * 25 * 32 == 387_072
    s = stats.compute(n.graph)
    assert s["params"] == 387_072
    # output channels 64 + 128 + 32 + 192 (the pooled input passes through) = 416
    assert y.shape == (1, 416, 28, 28)
    assert y.name == "inception_3a/output"


def test_seed_example_reduced_inception():
    n, y = _naive_inception(True)
    # 1x1/64: 192*64 = 12,288; 1x1/96: 192*96 = 18,432; 3x3/128 on 96: 96*9*128 = 110,592;
    # 1x1/16: 192*16 = 3,072; 5x5/32 on 16: 16*25*32 = 12,800; pool proj 1x1/32: 192*32 = 6,144
    expected = 12_288 + 18_432 + 110_592 + 3_072 + 12_800 + 6_144
    assert expected == 163_328
    assert stats.compute(n.graph)["params"] == 163_328
    # 64 + 128 + 32 + 32 = 256
    assert y.shape == (1, 256, 28, 28)
