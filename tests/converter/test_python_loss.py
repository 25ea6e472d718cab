"""A ``type: "Python"`` layer with a nonzero loss_weight on every top is a loss (Caffe's own
rule, Layer::SetLossWeights; pycaffe's examples/pycaffe/linreg.prototxt: "set loss weight so
Caffe knows this is a loss layer"): the inference view drops it like every other loss, with
the same note. A Python layer with inputs that is not such a loss is still refused.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CORPUS, needs_corpus

LINREG = "bvlc_caffe/current/examples/pycaffe/linreg.prototxt"

NET = """name: "n"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: 2 dim: 4 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param {{ num_output: 4 }} }}
layer {{ name: "loss" type: "Python" bottom: "ip" bottom: "y" {tops}
  python_param {{ module: "pyloss" layer: "EuclideanLossLayer" }} {weights} }}
{extra}"""


def _load(tmp_path, tops='top: "loss"', weights="loss_weight: 1", extra=""):
    from protogen.caffe.loader import load_model
    p = tmp_path / "n.prototxt"
    p.write_text(NET.format(tops=tops, weights=weights, extra=extra))
    return load_model(p)


def test_python_loss_dropped_with_note(tmp_path):
    g = _load(tmp_path)
    assert [l.name for l in g.layers if not l.kind.is_input] == ["ip"]
    assert "ip" in g.outputs() and "loss" not in g.outputs()
    assert any("dropped training-only layer(s) 'loss'" in n for n in g.notes), g.notes
    # two tops, each weighted: still a loss
    g = _load(tmp_path, tops='top: "loss" top: "loss2"', weights="loss_weight: 1 loss_weight: 0.5")
    assert [l.name for l in g.layers if not l.kind.is_input] == ["ip"]


@pytest.mark.parametrize("tops, weights", [
    ('top: "loss"', ""),                                                  # no loss_weight
    ('top: "loss"', "loss_weight: 0"),                                    # weight 0: not in the objective
    ('top: "loss" top: "other"', "loss_weight: 1 loss_weight: 0"),        # one top is an ordinary output
])
def test_python_layer_that_is_not_a_loss_is_refused(tmp_path, tops, weights):
    from protogen.errors import ProtogenError
    with pytest.raises(ProtogenError, match="runs arbitrary Python code"):
        _load(tmp_path, tops, weights)


def test_python_loss_read_by_a_computing_layer_is_refused(tmp_path):
    """Dropping the loss must not silently cut a layer that computes with its top and the net."""
    from protogen.errors import ProtogenError
    extra = 'layer { name: "mix" type: "Eltwise" bottom: "ip" bottom: "loss" top: "mix" }'
    with pytest.raises(ProtogenError, match="'mix' reads 'loss'"):
        _load(tmp_path, extra=extra)


def test_python_loss_written_back_as_python(tmp_path):
    from protogen.caffe.loader import load_model
    from protogen.caffe.prototxt import parse_prototxt, to_prototxt
    p = tmp_path / "n.prototxt"
    p.write_text(NET.format(tops='top: "loss"', weights="loss_weight: 1", extra=""))
    g = load_model(p, inference=False)
    lp = next(l for l in parse_prototxt(to_prototxt(g)).layer if l.name == "loss")
    assert lp.type == "Python" and list(lp.loss_weight) == [1.0]
    assert (lp.python_param.module, lp.python_param.layer) == ("pyloss", "EuclideanLossLayer")


@needs_corpus
def test_linreg_converts_and_computes_the_inner_products():
    """The corpus file: DummyData x, y become inputs [10, 3, 2]; the outputs are the two
    InnerProducts, checked in ONNX Runtime against numpy (x flattened @ W.T + b)."""
    ort = pytest.importorskip("onnxruntime")
    from protogen.caffe.loader import load_model
    from protogen.onnx_io import export_onnx
    from protogen.weights import init_weights
    g = load_model(CORPUS / LINREG)
    assert sorted(g.outputs()) == ["ipx", "ipy"]
    assert [tuple(s) for l in g.input_layers() for s in l.params.shape] == [(10, 3, 2), (10, 3, 2)]
    assert any("'loss'" in n for n in g.notes)
    init_weights(g, 0)
    m = export_onnx(g, None)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((10, 3, 2)).astype(np.float32) for k in ("x", "y")}
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    for x, ip in (("x", "ipx"), ("y", "ipy")):
        w, b = (np.asarray(a, np.float64) for a in next(l for l in g.layers if l.name == ip).blobs)
        want = feeds[x].reshape(10, 6).astype(np.float64) @ w.T + b.reshape(-1)
        np.testing.assert_allclose(got[ip], want, rtol=1e-5, atol=1e-5)
