"""protogen.diff: structural comparison of two nets, and the `protogen diff` command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import CORPUS_SKIP_REASON

from protogen.caffe.loader import load_prototxt
from protogen.caffe.prototxt import parse_prototxt, graph_from_net_param, to_prototxt
from protogen.cli import main
from protogen.diff import diff_graphs
from protogen.dsl import Net, TrainData

from tests.helpers import CORPUS  # noqa: E402
BVLC = CORPUS / "bvlc_caffe"


def small(*, names="a", inplace=True, dropout=True, k=3, order=("x", "y"), pool="local",
          eltwise_order=("s", "b"), bn_global=None):
    """A small net with branches, an Eltwise, BN, dropout; knobs change one thing each."""
    n = Net("small")
    x = n.input("data", (1, 3, 32, 32))
    x = n.conv(x, 16, 3, 1, 1, name=f"{names}conv1")
    x = n.relu(x, inplace=inplace, name=f"{names}relu1")
    branches = {}
    for b in order:
        if b == "x":
            branches[b] = n.conv(x, 8, 1, name=f"{names}bx")
        else:
            y = n.conv(x, 8, k, 1, k // 2, name=f"{names}by")
            branches[b] = n.relu(y, inplace=inplace, name=f"{names}by_relu")
    c = n.concat([branches["x"], branches["y"]], name=f"{names}cat")
    s = n.conv(c, 16, 1, bias=False, name=f"{names}sc")
    from protogen.layers.norm import BatchNormParams
    s = n.add("BatchNorm", [s], BatchNormParams(use_global_stats=bn_global), name=f"{names}bn",
              inplace=inplace)
    blobs = {"s": s, "b": c}
    e = n.eltwise([blobs[eltwise_order[0]], blobs[eltwise_order[1]]], name=f"{names}sum")
    if dropout:
        e = n.dropout(e, 0.5, inplace=inplace, name=f"{names}drop")
    if pool == "global":
        e = n.global_pool(e, name=f"{names}pool")
    else:
        e = n.ave_pool(e, 32, 1, name=f"{names}pool")
    f = n.fc(e, 10, name=f"{names}fc")
    n.add("Softmax", [f], name=f"{names}prob")
    return n.graph


def test_identical_and_renamed_nets_are_equal():
    assert diff_graphs(small(), small()) is None
    # every layer and blob renamed
    assert diff_graphs(small(names="a"), small(names="zz_")) is None


def test_inplace_vs_out_of_place_is_not_a_difference():
    assert diff_graphs(small(inplace=True), small(inplace=False)) is None


def test_branch_order_and_commutative_bottoms_do_not_matter():
    assert diff_graphs(small(order=("x", "y")), small(order=("y", "x"))) is None
    assert diff_graphs(small(eltwise_order=("s", "b")), small(eltwise_order=("b", "s"))) is None


def test_first_param_difference_names_both_layers():
    d = diff_graphs(small(names="a"), small(names="q", k=5))
    assert d is not None and d.what == "params"
    assert (d.a_layer, d.b_layer) == ("aby", "qby")
    fields = {f: (x, y) for f, x, y in d.details}
    assert fields["kernel_h"] == (3, 5) and fields["pad_h"] == (1, 2)
    assert "'aby'" in d.message and "'qby'" in d.message and "kernel_h 3 vs 5" in d.message


def test_dropout_is_compared_unless_ignored():
    d = diff_graphs(small(dropout=True), small(dropout=False))
    assert d is not None
    assert diff_graphs(small(dropout=True), small(dropout=False), ignore_dropout=True) is None


def test_global_pool_equals_full_window_pool_and_bn_default_stats():
    # AVE 32x32 stride 1 on a 32x32 map is one window: the same as global pooling
    assert diff_graphs(small(pool="local"), small(pool="global")) is None
    # use_global_stats unset means true in the TEST phase, false in TRAIN
    assert diff_graphs(small(bn_global=None), small(bn_global=True)) is None
    assert diff_graphs(small(bn_global=None), small(bn_global=True), phase="TRAIN") is not None


def test_extra_and_missing_layers():
    a, b = small(), small()
    b.layers.pop()                        # drop the Softmax
    d = diff_graphs(a, b)
    assert d.what == "missing" and d.a_layer == "aprob"
    d = diff_graphs(b, a)
    assert d.what == "extra" and d.b_layer == "aprob"


def test_shape_difference_is_reported():
    a = small()
    b = small()
    b.layers[0] = b.layers[0].copy(params=type(b.layers[0].params)(shape=((1, 3, 48, 48),)))
    d = diff_graphs(a, b)
    assert d.what == "shape" and "32x32" in d.message and "48x48" in d.message


def test_float_params_compared_at_float32_precision():
    """Prototxt floats are float32: alpha 1e-4 reads back as 9.999999747378752e-05."""
    n = Net("lrn")
    x = n.input("data", (1, 8, 8, 8))
    n.lrn(x, 5, 1e-4, 0.75, name="norm")
    g = graph_from_net_param(parse_prototxt(to_prototxt(n.graph)))
    assert g.layer("norm").params.alpha != 1e-4
    assert diff_graphs(n.graph, g) is None


def test_train_val_loss_weights():
    def net(w):
        n = Net("t")
        x = n.input("data", (1, 3, 8, 8), train=TrainData())
        f = n.fc(x, 10, name="fc")
        n.loss(f, name="loss", loss_weight=w)
        return n.graph
    assert diff_graphs(net(0.3), net(0.3), net="train_val") is None
    d = diff_graphs(net(1.0), net(0.3), net="train_val")
    assert d.what == "loss_weight"


@pytest.mark.skipif(not (BVLC / "current").is_dir(), reason=CORPUS_SKIP_REASON)
def test_bvlc_googlenet_versions_are_equal_and_train_net_has_aux_heads():
    cur = BVLC / "current/models/bvlc_googlenet"
    old = BVLC / "history_0d9a78f5a_v2_input_shape/models/bvlc_googlenet/deploy.prototxt"
    assert diff_graphs(load_prototxt(cur / "deploy.prototxt"), load_prototxt(old)) is None
    d = diff_graphs(load_prototxt(cur / "deploy.prototxt"), load_prototxt(cur / "train_val.prototxt"))
    # the deploy net's Softmax has no counterpart in train_val (loss layers instead)
    assert d.what == "missing" and d.a_layer == "prob"


@pytest.mark.skipif(not (BVLC / "current").is_dir(), reason=CORPUS_SKIP_REASON)
def test_cli_exit_codes(capsys):
    dep = str(BVLC / "current/models/bvlc_googlenet/deploy.prototxt")
    assert main(["diff", dep, dep]) == 0
    assert "equal" in capsys.readouterr().out
    assert main(["diff", dep, "mobilenet_v1", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["equal"] is False
    assert out["difference"]["a_layer"] == "conv1/7x7_s2" and out["difference"]["b_layer"] == "conv1"
    assert main(["diff", dep, "/nonexistent/x.prototxt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.prototxt" in err
