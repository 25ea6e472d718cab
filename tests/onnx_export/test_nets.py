"""Whole zoo nets through both backends: ONNX Runtime == TorchNet, dynamic axes, every
intermediate value, the CLI's ONNX output carrying the caffemodel's weights, external data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from protogen import zoo  # noqa: E402
from protogen.errors import ProtogenError  # noqa: E402
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402
from protogen.weights import init_weights, seeded_input  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


def session(m):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def torch_run(net, x, all_blobs=False):
    with torch.no_grad():
        return {k: v.numpy() for k, v in net({"data": torch.from_numpy(x)}, all_blobs=all_blobs).items()}


@pytest.fixture(scope="module", params=["shufflenet_v1", pytest.param("mobilenet_v1", marks=pytest.mark.slow)])
def zoo_net(request):
    g = zoo.build(request.param).graph
    init_weights(g, 1)
    return request.param, g, TorchNet.from_graph(g)


def test_whole_net_ort_matches_torch(zoo_net):
    name, g, net = zoo_net
    m = export_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"Identity", "Dropout"}
    assert [i.name for i in m.graph.input] == ["data"] and [o.name for o in m.graph.output] == ["prob"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    # one BatchNormalization per BatchNorm (the zoo nets have no separate Scale layers)
    n_bn = sum(l.type == "BatchNorm" for l in g.select(net="deploy"))
    assert sum(n.op_type == "BatchNormalization" for n in m.graph.node) == n_bn
    sess = session(m)
    logits = [l.tops[0] for l in g.select(net="deploy") if l.type == "InnerProduct"][-1]
    for batch in (2, 1, 3):     # dynamic batch
        x = seeded_input((batch, 3, 224, 224), batch)
        (y,) = sess.run(None, {"data": x})
        ref = torch_run(net, x, all_blobs=True)
        assert y.shape == (batch, 1000)
        assert rel_err(y, ref["prob"]) < 1e-4
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
        # non-degenerate: the logits spread over several units and differ between images
        lg = ref[logits]
        # (with seeded He weights, MobileNet's logits vary little with the image: ~0.3%)
        assert lg.std(axis=1).min() > 0.1
        assert batch == 1 or np.abs(lg[0] - lg[-1]).max() > 2e-4 * np.abs(lg).max()
        assert y.std() > 1e-5


def test_every_intermediate_value_matches(zoo_net):
    name, g, net = zoo_net
    m = export_onnx(g, intermediate=True)
    onnx.checker.check_model(m, full_check=True)
    sess = session(m)
    names = [o.name for o in sess.get_outputs()]
    x = seeded_input((2, 3, 224, 224), 5)
    got = dict(zip(names, sess.run(None, {"data": x})))
    ref = torch_run(net, x, all_blobs=True)
    assert len(got) > 50 and set(got) <= set(ref)
    worst = max(rel_err(got[k], ref[k]) for k in got)
    assert worst < 1e-4, worst


def test_dynamic_spatial_size_where_the_net_allows():
    # MobileNet v1: convolutions, global pooling, fc on 1x1 -> H/W symbolic
    g = zoo.build("mobilenet_v1", width=0.25).graph
    init_weights(g, 2)
    m = export_onnx(g)
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    x = seeded_input((1, 3, 160, 128), 3)
    (y,) = session(m).run(None, {"data": x})
    assert rel_err(y, torch_run(TorchNet.from_graph(g), x)["prob"]) < 1e-4
    # ShuffleNet v1: pool1 is a CEIL 3x3/2 max pool whose Caffe windows depend on the size
    g = zoo.build("shufflenet_v1", width=0.5).graph
    init_weights(g, 2)
    m = export_onnx(g)
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 224, 224]


@pytest.mark.slow
def test_cli_emit_onnx_carries_the_caffemodel_weights(tmp_path):
    from protogen.caffe.caffemodel import read_caffemodel
    from protogen.cli import main
    f_onnx, f_cm = tmp_path / "f.onnx", tmp_path / "f.caffemodel"
    assert main(["emit", "shufflenet_v1", "--format", "onnx", "--seed", "1", "-o", str(f_onnx)]) == 0
    assert main(["emit", "shufflenet_v1", "--format", "caffemodel", "--seed", "1", "-o", str(f_cm)]) == 0
    m = onnx.load(str(f_onnx))
    onnx.checker.check_model(m, full_check=True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    cm = read_caffemodel(f_cm)
    g = zoo.build("shufflenet_v1").graph
    n_checked = 0
    for l in g.select(net="deploy"):
        blobs = cm.blobs.get(l.name)
        if l.type in ("Convolution", "InnerProduct"):
            np.testing.assert_array_equal(inits[f"{l.name}/weight"], np.asarray(blobs[0]).reshape(inits[f"{l.name}/weight"].shape))
            n_checked += 1
        elif l.type == "BatchNorm":
            s = float(np.asarray(blobs[2]).reshape(-1)[0])
            np.testing.assert_allclose(inits[f"{l.name}/mean"], np.asarray(blobs[0]) / s, rtol=1e-7)
            np.testing.assert_allclose(inits[f"{l.name}/var"], np.asarray(blobs[1]) / s, rtol=1e-7)
            n_checked += 1
    assert n_checked > 90


def test_exporter_imports_neither_torch_nor_onnxruntime():
    code = ("import sys; from protogen import zoo; from protogen.onnx_io import export_onnx; "
            "from protogen.weights import init_weights; g = zoo.build('mobilenet_v1', width=0.25).graph; "
            "export_onnx(init_weights(g, 0)); "
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'heavy import'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_external_data_beyond_threshold(tmp_path, monkeypatch):
    import protogen.onnx_io as oio
    g = zoo.build("mobilenet_v1", width=0.25, input_size=64).graph
    init_weights(g, 4)
    small = export_onnx(g)
    monkeypatch.setattr(oio, "EXTERNAL_DATA_THRESHOLD", 10_000)
    with pytest.raises(ProtogenError):
        export_onnx(g)                   # too big to hold without a file
    path = tmp_path / "m.onnx"
    export_onnx(g, path)
    assert (tmp_path / "m.onnx.data").stat().st_size > 10_000
    assert path.stat().st_size < 100_000
    m = onnx.load(str(path))             # loads the external data
    onnx.checker.check_model(str(path), full_check=True)
    x = seeded_input((2, 3, 64, 64), 1)
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    b = session(small).run(None, {"data": x})[0]
    np.testing.assert_array_equal(a, b)
    assert len(m.graph.initializer) == len(small.graph.initializer)


def test_missing_weights_is_a_clear_error():
    g = zoo.build("mobilenet_v1", width=0.25).graph
    with pytest.raises(ProtogenError, match="no weights"):
        export_onnx(g)
    with pytest.raises(ProtogenError, match="no weights"):
        TorchNet.from_graph(g)
