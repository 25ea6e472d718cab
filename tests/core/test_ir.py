"""IR structure checks: dataflow order, names, arity, in-place rules, phases and select."""
from __future__ import annotations

import pytest

from protogen.errors import ProtogenError
from protogen.ir import DEPLOY, TEST, TRAIN, TRAIN_VAL, Graph, Layer
from protogen.layers.conv import ConvParams
from protogen.layers.io import AccuracyParams, DataParams, InputParams, SoftmaxWithLossParams
from protogen.layers.pool import PoolParams
from protogen.layers.tensor import ConcatParams


def inp(name="data", shape=(1, 3, 8, 8), **kw):
    return Layer(name, "Input", [], [name], InputParams((shape,)), **kw)


def conv(name, bottom, top=None, n=4):
    return Layer(name, "Convolution", [bottom], [top or name],
                 ConvParams(num_output=n, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1))


def relu(name, bottom, top=None):
    return Layer(name, "ReLU", [bottom], [top or bottom])


def test_valid_graph_and_outputs():
    g = Graph("t", [inp(), conv("c1", "data"), relu("r1", "c1"), conv("c2", "c1")])
    g.check()
    assert g.outputs() == ["c2"]
    assert g.blob_shapes() == {"data": (1, 3, 8, 8), "c1": (1, 4, 8, 8), "c2": (1, 4, 8, 8)}


def test_unknown_bottom():
    g = Graph("t", [inp(), conv("c1", "nope")])
    with pytest.raises(ProtogenError, match="unknown bottom blob 'nope'") as e:
        g.check()
    assert e.value.layer == "c1"


def test_out_of_order_and_cycle():
    # c2 reads c1, which is produced later: a cycle or wrong order
    g = Graph("t", [inp(), conv("c2", "c1"), conv("c1", "data")])
    with pytest.raises(ProtogenError, match="at or after this one") as e:
        g.check()
    assert e.value.layer == "c2"
    # a layer reading its own output that no one produced before: a self-loop
    g = Graph("t", [inp(), Layer("r", "ReLU", ["x"], ["x"])])
    with pytest.raises(ProtogenError, match="cycle"):
        g.check()
    # a non-in-place type reading its own top is refused as in-place
    g = Graph("t", [inp(), Layer("cat", "Concat", ["data", "cat"], ["cat"], ConcatParams())])
    with pytest.raises(ProtogenError, match="in place"):
        g.check()


def test_duplicate_top_and_layer_name():
    g = Graph("t", [inp(), conv("c1", "data"), conv("c2", "data", top="c1")])
    with pytest.raises(ProtogenError, match="already produced") as e:
        g.check()
    assert e.value.layer == "c2"
    g = Graph("t", [inp(), conv("c1", "data"), conv("c1", "data", top="other")])
    with pytest.raises(ProtogenError, match="duplicate layer name"):
        g.check()
    g = Graph("t", [inp(), Layer("s", "Split", ["data"], ["a", "a"])])
    with pytest.raises(ProtogenError, match="twice"):
        g.check()


def test_wrong_number_of_bottoms_and_tops():
    g = Graph("t", [inp(), Layer("e", "Eltwise", ["data"], ["e"])])
    with pytest.raises(ProtogenError, match="takes 2..n bottom") as e:
        g.check()
    assert e.value.layer == "e"
    g = Graph("t", [inp(), Layer("s", "Sigmoid", ["data", "data"], ["s"])])
    with pytest.raises(ProtogenError, match="takes 1 bottom"):
        g.check()
    g = Graph("t", [inp(), Layer("r", "ReLU", ["data"], ["a", "b"])])
    with pytest.raises(ProtogenError, match="produces 1 top"):
        g.check()


def test_inplace_only_where_allowed():
    g = Graph("t", [inp(), conv("c1", "data", top="data")])
    with pytest.raises(ProtogenError, match="cannot run in place") as e:
        g.check()
    assert e.value.layer == "c1"
    p = PoolParams(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2)
    g = Graph("t", [inp(), Layer("p", "Pooling", ["data"], ["data"], p)])
    with pytest.raises(ProtogenError, match="in place"):
        g.check()
    # ReLU, BatchNorm, Scale may
    Graph("t", [inp(), relu("r", "data")]).check()


def test_inplace_ssa_names():
    g = Graph("t", [inp(), conv("c1", "data"), relu("r1", "c1"), relu("r2", "c1"), conv("c2", "c1")])
    steps = g.steps()
    by = {s.layer.name: s for s in steps}
    # three versions of c1: c1@1 (conv), c1@2 (r1), c1 (r2, the last keeps the plain name)
    assert by["c1"].outputs == ["c1@1"]
    assert by["r1"].inputs == ["c1@1"] and by["r1"].outputs == ["c1@2"]
    assert by["r2"].inputs == ["c1@2"] and by["r2"].outputs == ["c1"]
    assert by["c2"].inputs == ["c1"]


def _train_val():
    d = dict(crop_size=8, channels=3, batch_size=2)
    return Graph("tv", [
        inp(nets=frozenset({DEPLOY})),
        Layer("data", "Data", [], ["data", "label"], DataParams(source="train", **d),
              phases=frozenset({TRAIN}), nets=frozenset({TRAIN_VAL})),
        Layer("data", "Data", [], ["data", "label"], DataParams(source="val", **d),
              phases=frozenset({TEST}), nets=frozenset({TRAIN_VAL})),
        conv("c1", "data"),
        Layer("loss", "SoftmaxWithLoss", ["c1", "label"], ["loss"], SoftmaxWithLossParams(), nets=frozenset({TRAIN_VAL})),
        Layer("acc", "Accuracy", ["c1", "label"], ["acc"], AccuracyParams(), phases=frozenset({TEST}),
              nets=frozenset({TRAIN_VAL})),
    ])


def test_phases_and_select():
    g = _train_val()
    tv = g.select(net=TRAIN_VAL)
    tv.check()          # two 'data' layers (TRAIN and TEST) are fine: checked per phase
    train = tv.select(phase=TRAIN)
    assert [l.name for l in train] == ["data", "c1", "loss"]
    assert train.layers[0].params.source == "train"
    test = tv.select(phase=TEST)
    assert [l.name for l in test] == ["data", "c1", "loss", "acc"]
    assert test.layers[0].params.source == "val"
    assert test.blob_shapes()["data"] == (2, 3, 8, 8)
    dep = g.select(net=DEPLOY)
    assert [l.name for l in dep] == ["data", "c1"]
    assert dep.outputs() == ["c1"]
    assert sorted(test.outputs()) == ["acc", "loss"]
    # two same-phase data layers writing 'data' are a duplicate
    bad = Graph("b", [l for l in g.layers if l.nets != frozenset({DEPLOY})])
    bad.layers[2] = bad.layers[2].copy(phases=frozenset({TRAIN}))
    with pytest.raises(ProtogenError):
        bad.check()


def test_unknown_type_names_layer():
    g = Graph("t", [inp(), Layer("x", "NoSuchLayer", ["data"], ["x"])])
    with pytest.raises(ProtogenError, match="unknown layer type 'NoSuchLayer'") as e:
        g.check(file="net.prototxt")
    assert e.value.layer == "x" and e.value.file == "net.prototxt"


def test_input_shape_override():
    g = Graph("t", [inp(), conv("c1", "data")])
    assert g.blob_shapes({"data": (2, 3, 16, 16)})["c1"] == (2, 4, 16, 16)


def test_resolved_graph_facts():
    """Graph.resolve: SSA names (in-place rewrites of 'data' and 'c1'), shapes, producers,
    consumers, last use, inputs and outputs, worked out by hand for this net."""
    from protogen.ir import ssa_names
    g = Graph("t", [inp(), relu("r0", "data", "data"), conv("c1", "data"), relu("r1", "c1", "c1"),
                    conv("c2", "c1"), Layer("cat", "Concat", ["c1", "c2"], ["cat"], ConcatParams())])
    res = g.resolve()
    assert [st.outputs for st in res.steps] == [["data@1"], ["data"], ["c1@1"], ["c1"], ["c2"], ["cat"]]
    assert [st.inputs for st in res.steps] == [[], ["data@1"], ["data"], ["c1@1"], ["c1"], ["c1", "c2"]]
    assert ssa_names([["a"], ["a"], ["b", "a"]]) == [["a@1"], ["a@2"], ["b", "a"]]
    assert [st.index for st in res.steps] == list(range(6))
    assert res.inputs == [("data", "data@1", (1, 3, 8, 8))]
    assert res.outputs == ["cat"] and res.is_output("cat") and not res.is_output("c1")
    assert res.versions("c1") == ["c1@1", "c1"] and res.blob_of("c1@1") == "c1"
    assert res.producer["c1"].layer.name == "r1"
    assert [st.layer.name for st in res.consumers("c1")] == ["c2", "cat"]
    assert res.last_use == {"data@1": 1, "data": 2, "c1@1": 3, "c1": 5, "c2": 5}
    assert res.shapes["cat"] == (1, 8, 8, 8) and res.blob_shapes()["c1"] == (1, 4, 8, 8)
    assert g.blob_shapes() == res.blob_shapes()


def test_resolve_phases():
    g = Graph("t", [
        Layer("d", "Data", [], ["data", "label"], DataParams(batch_size=4, crop_size=8), phases=frozenset({TRAIN})),
        Layer("dt", "Data", [], ["data", "label"], DataParams(batch_size=2, crop_size=8), phases=frozenset({TEST})),
        conv("c1", "data")])
    views = g.resolve_phases()
    assert [v.inputs[0][2][0] for v in views] == [2, 4]          # TEST, then TRAIN (sorted)
    assert [[st.layer.name for st in v.steps] for v in views] == [["dt", "c1"], ["d", "c1"]]
