"""Every emitted prototxt (every zoo net, deploy and train_val, every dialect) parses with the
project's schema, round-trips text -> message -> text unchanged, and reads back (deploy) with
the same blob shapes as the DSL graph."""
from __future__ import annotations

import functools

import pytest
from google.protobuf import text_format

from protogen import zoo
from protogen.caffe import pb
from protogen.caffe.loader import load_prototxt
from protogen.caffe.prototxt import parse_prototxt, to_prototxt
from protogen.dialect import Dialect
from protogen.errors import ProtogenError
from protogen.ir import DEPLOY, TEST, TRAIN, TRAIN_VAL

MODELS = sorted(zoo.models())
DIALECTS = {"default": Dialect(), "shufflechannel": Dialect.make(shuffle="shufflechannel"),
            "bvlc": Dialect.make("bvlc")}


@functools.lru_cache(maxsize=None)
def _built(model: str, dialect: str):
    return zoo.build(model, DIALECTS[dialect])


@functools.lru_cache(maxsize=None)
def _text(model: str, dialect: str, net: str) -> str:
    n = _built(model, dialect)
    return to_prototxt(n.graph, net, n.dialect)


@pytest.mark.parametrize("net", [DEPLOY, TRAIN_VAL])
@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("model", MODELS)
def test_emitted_prototxt_round_trips(model, dialect, net):
    text = _text(model, dialect, net)
    msg = parse_prototxt(text)                      # the project's schema, unknown fields refused
    assert text_format.MessageToString(msg) == text
    assert msg.name == _built(model, dialect).graph.name
    types = {lp.type for lp in msg.layer}
    if dialect == "bvlc":
        # only upstream BVLC layer types
        assert not types & {"Permute", "ShuffleChannel", "ReLU6", "ConvolutionDepthwise"}
    if net == DEPLOY:
        assert "Input" in types and not types & {"Data", "SoftmaxWithLoss", "Accuracy"}
        assert "include" not in text and "weight_filler" not in text
    else:
        assert "Data" in types and "SoftmaxWithLoss" in types and "Input" not in types
        assert "phase: TRAIN" in text and "phase: TEST" in text


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("model", MODELS)
def test_deploy_reads_back_with_same_shapes(model, dialect, tmp_path):
    n = _built(model, dialect)
    path = tmp_path / "deploy.prototxt"
    path.write_text(_text(model, dialect, DEPLOY))
    g = load_prototxt(path)
    want = n.graph.select(net=DEPLOY).blob_shapes()
    got = g.blob_shapes()
    # dialect expansions add intermediate blobs; every DSL blob is there with its shape
    assert {k: got.get(k) for k in want} == want
    assert g.outputs() == n.graph.select(net=DEPLOY).outputs()


@pytest.mark.parametrize("model", MODELS)
def test_train_val_reads_back_per_phase(model, tmp_path):
    n = _built(model, "default")
    path = tmp_path / "train_val.prototxt"
    path.write_text(_text(model, "default", TRAIN_VAL))
    g = load_prototxt(path)
    tv = n.graph.select(net=TRAIN_VAL)
    for phase in (TRAIN, TEST):
        want = tv.select(phase=phase).blob_shapes()
        got = g.select(phase=phase).blob_shapes()
        assert {k: got.get(k) for k in want} == want


def test_parse_error_has_line_and_column():
    with pytest.raises(ProtogenError) as e:
        parse_prototxt('name: "x"\nlayer {\n  nme: "a"\n}\n', file="bad.prototxt")
    assert e.value.file == "bad.prototxt" and e.value.line == 3
    assert str(e.value).startswith("bad.prototxt:3:")


def test_default_values_not_written():
    # Caffe defaults (BatchNorm eps 1e-5, moving_average_fraction 0.999, pool CEIL) are left out
    text = _text("mobilenet_v1", "default", DEPLOY)
    assert "moving_average_fraction" not in text and "eps:" not in text
    assert "round_mode" not in text
