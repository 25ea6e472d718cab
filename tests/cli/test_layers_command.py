"""``protogen layers [--json]``: every registered Caffe type, its schemas and its ONNX ops."""
from __future__ import annotations

import json

import pytest

from protogen.cli import main
from protogen.layers import registered_types

pytest.importorskip("onnx")


def _json(capsys):
    assert main(["layers", "--json"]) == 0
    return {r["type"]: r for r in json.loads(capsys.readouterr().out)}


def test_every_registered_type_is_listed_once(capsys):
    rows = _json(capsys)
    kinds = registered_types()
    assert set(rows) == {k.type for k in kinds.values()}
    # aliases are folded into their type, not listed twice
    listed = set(rows) | {a for r in rows.values() for a in r["aliases"]}
    assert listed == set(kinds)


def test_schemas_and_onnx_ops(capsys):
    rows = _json(capsys)
    # facts of the Caffe schemas (proto/caffe.proto, fork sources) and of ONNX's operator set
    assert rows["Convolution"]["schemas"] == ["upstream"] and "Conv" in rows["Convolution"]["onnx_ops"]
    assert "ConvTranspose" in rows["Deconvolution"]["onnx_ops"]
    assert {"MaxPool", "AveragePool"} <= set(rows["Pooling"]["onnx_ops"])
    assert rows["InnerProduct"]["param_field"] == "inner_product_param"
    assert rows["DenseImageData"]["schemas"] == ["segnet"] and rows["DenseImageData"]["role"] == "input"
    assert rows["AnnotatedData"]["schemas"] == ["ssd"]
    assert rows["SoftmaxWithLoss"]["role"] == "training-only"
    assert rows["HDF5Data"]["onnx_ops"] == ["(graph input)"]
    # every inference layer lowers to at least one ONNX op (except pure bookkeeping types)
    bare = sorted(t for t, r in rows.items() if r["role"] == "layer" and not r["onnx_ops"])
    assert set(bare) <= {"Accuracy", "Silence"}, bare


def test_text_and_markdown(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Caffe type") and "Conv" in out
    assert main(["layers", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| Caffe type | schemas | ONNX |") and "| Deconvolution | BVLC Caffe | ConvTranspose |" in md


def test_docs_layers_md_is_current(capsys):
    """docs/layers.md is the output of ``protogen layers --markdown`` (regenerate it when a type
    is added: the table's header lines are kept, the rest is the command's output)."""
    from tests.helpers import REPO
    assert main(["layers", "--markdown"]) == 0
    table = capsys.readouterr().out
    doc = (REPO / "docs" / "layers.md").read_text()
    assert doc.endswith(table), "docs/layers.md is stale: regenerate it with protogen layers --markdown"
