"""ONNX files written with streamed weights (``export_onnx(graph, path)``).

The writer never builds TensorProtos holding the weights: it serializes the model's skeleton
and splices each initializer's ``raw_data`` in from the arrays' own memory (zero-copy views of a
memory-mapped caffemodel). These tests check that the file is exactly the model the in-memory
exporter builds (``export_onnx(graph)``: numpy_helper.from_array + SerializeToString), that it
passes the full checker and runs in ONNX Runtime like the in-memory model, that the external
data variant is right, that output stays atomic, and that converting a caffemodel does not hold
copies of its weights.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

import protogen.onnx_io as oio  # noqa: E402
from protogen import zoo  # noqa: E402
from protogen.caffe.caffemodel import write_caffemodel  # noqa: E402
from protogen.caffe.loader import load_model  # noqa: E402
from protogen.caffe.prototxt import to_net_param  # noqa: E402
from protogen.ir import DEPLOY  # noqa: E402
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.weights import init_weights, seeded_input  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# conv -> BatchNorm (scale factor 4) + Scale (folded into one BatchNormalization) ->
# InnerProduct over axis 2 (lowered as MatMul with W^T: a non-contiguous view) ->
# InnerProduct with transpose: true (Gemm transB=0)
PROTOTXT = """name: "streamed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "ip_axis2" type: "InnerProduct" bottom: "conv" top: "ip2"
        inner_product_param { num_output: 5 axis: 2 } }
layer { name: "ip_t" type: "InnerProduct" bottom: "ip2" top: "out"
        inner_product_param { num_output: 7 transpose: true } }
"""


def _caffe_files(tmp_path, prototxt=PROTOTXT, seed=5, tweak=None):
    """prototxt + a caffemodel of seeded weights written by write_caffemodel; returns the
    paths and the weights as numpy copies (the independent reference)."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(prototxt)
    g = load_model(proto)
    init_weights(g, seed)
    if tweak:
        tweak(g)
    blobs = {l.name: [np.array(b, np.float32) for b in l.blobs] for l in g if l.blobs}
    model = tmp_path / "net.caffemodel"
    write_caffemodel(model, to_net_param(g, DEPLOY), blobs)
    return proto, model, blobs


def _inits(m) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _same_model(a, b) -> None:
    """Semantically equal: the same graph (nodes, inputs, outputs, names), metadata, opsets,
    and initializers with the same names, types, shapes and bytes, in the same order."""
    assert [t.name for t in a.graph.initializer] == [t.name for t in b.graph.initializer]
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        assert (list(ta.dims), ta.data_type) == (list(tb.dims), tb.data_type), ta.name
        assert numpy_helper.to_array(ta).tobytes() == numpy_helper.to_array(tb).tobytes(), ta.name
    assert list(a.graph.node) == list(b.graph.node)
    assert list(a.graph.input) == list(b.graph.input)
    assert list(a.graph.output) == list(b.graph.output)
    assert list(a.metadata_props) == list(b.metadata_props)
    assert list(a.opset_import) == list(b.opset_import) and a.ir_version == b.ir_version


def _run(model_or_path, x):
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"data": x})


@pytest.mark.parametrize("name,opts", [("resnet18", {"input_size": 64}), ("mobilenet_v1", {"width": 0.25})])
def test_streamed_file_is_the_in_memory_model(tmp_path, name, opts):
    """resnet18: BatchNorm + Scale folded, Pad constants, scalar constants; mobilenet: grouped
    convolutions. The file holds exactly protobuf's serialization of the in-memory model."""
    g = zoo.build(name, **opts).graph
    init_weights(g, 2)
    full = export_onnx(g)
    path = tmp_path / "m.onnx"
    skeleton = export_onnx(g, path)
    data = path.read_bytes()
    assert data == full.SerializeToString()
    m = onnx.load(str(path))
    _same_model(m, full)
    onnx.checker.check_model(m, full_check=True)
    # the returned skeleton: same graph, initializers named and shaped but without data
    assert [t.name for t in skeleton.graph.initializer] == [t.name for t in full.graph.initializer]
    assert all(not t.HasField("raw_data") and list(t.dims) == list(f.dims)
               for t, f in zip(skeleton.graph.initializer, full.graph.initializer))
    assert list(skeleton.graph.node) == list(full.graph.node)
    # weights in the file are the layers' blobs (independent of the exporter's tensors)
    inits = _inits(m)
    n = 0
    for l in g.select(net=DEPLOY):
        if l.type == "Convolution":
            np.testing.assert_array_equal(inits[f"{l.name}/weight"], l.blobs[0])
            n += 1
    assert n > 10
    x = seeded_input((2, 3) + ((64, 64) if name == "resnet18" else (224, 224)), 3)
    np.testing.assert_array_equal(_run(path, x)[0], _run(full, x)[0])


def test_caffemodel_views_stream_into_the_file(tmp_path):
    """Weights loaded as views of the mapped caffemodel, including a BN factor, a BN+Scale fold
    and a transposed (non-contiguous) InnerProduct weight."""
    def tweak(g):
        g.layer("bn").blobs[2] = np.array([4.0], np.float32)     # Caffe's moving-average factor
    proto, model, blobs = _caffe_files(tmp_path, tweak=tweak)
    g = load_model(proto, model)
    for l in g:
        for b in l.blobs or []:     # load_model keeps zero-copy views of the mapped file
            base = b
            while isinstance(base, np.ndarray):
                assert not base.flags.owndata
                base = base.base
            assert isinstance(base, memoryview) and base.readonly
    full = export_onnx(g)
    path = tmp_path / "net.onnx"
    export_onnx(g, path)
    assert path.read_bytes() == full.SerializeToString()
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True)
    _same_model(m, full)
    inits = _inits(m)
    # hand-written expectations from the blobs that were written
    np.testing.assert_array_equal(inits["conv/weight"], blobs["conv"][0])
    np.testing.assert_array_equal(inits["ip_axis2/weight"], blobs["ip_axis2"][0].T)   # MatMul(x, W^T)
    np.testing.assert_array_equal(inits["ip_t/weight"], blobs["ip_t"][0])             # Gemm transB=0
    bn_mean = [v for k, v in inits.items() if k.startswith("bn/mean")][0]
    bn_var = [v for k, v in inits.items() if k.startswith("bn/var")][0]
    gamma = [v for k, v in inits.items() if k.startswith("bn/scale")][0]
    np.testing.assert_allclose(bn_mean, blobs["bn"][0] / 4, rtol=1e-7)
    np.testing.assert_allclose(bn_var, blobs["bn"][1] / 4, rtol=1e-7)
    np.testing.assert_array_equal(gamma, blobs["sc"][0])
    x = seeded_input((2, 3, 4, 6), 9)
    got = _run(path, x)[0]
    np.testing.assert_array_equal(got, _run(full, x)[0])
    # by hand: 3x3 conv (pad 1), Caffe BatchNorm (stats / factor, eps 1e-5) + Scale, the
    # axis-2 InnerProduct over the last 24 values, the transposed InnerProduct over 20
    xd = x.astype(np.float64)
    w, b = blobs["conv"]
    xp = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((2, 4, 4, 6))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 4, j:j + 6], w[:, :, i, j])
    y += b.reshape(1, -1, 1, 1)
    mean, var = blobs["bn"][0] / 4, blobs["bn"][1] / 4
    y = (y - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + 1e-5)
    y = y * blobs["sc"][0].reshape(1, -1, 1, 1) + blobs["sc"][1].reshape(1, -1, 1, 1)
    y = y.reshape(2, 4, 24) @ blobs["ip_axis2"][0].T + blobs["ip_axis2"][1]
    want = y.reshape(2, 20) @ blobs["ip_t"][0] + blobs["ip_t"][1]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_external_data_streamed(tmp_path):
    """external_data=True: big tensors go to <file>.data (4 KiB-aligned), small constants
    (Pad's pads, scalars) stay inline so strict shape inference still sees them."""
    g = zoo.build("resnet18", input_size=64).graph
    init_weights(g, 6)
    full = export_onnx(g)
    path = tmp_path / "ext.onnx"
    skeleton = export_onnx(g, path, external_data=True)
    data_file = tmp_path / "ext.onnx.data"
    assert path.stat().st_size < 100_000
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))               # loads the external data
    _same_model(m, full)
    n_ext = 0
    raw = data_file.read_bytes()
    for t in skeleton.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            ext = {e.key: e.value for e in t.external_data}
            off, ln = int(ext["offset"]), int(ext["length"])
            assert ext["location"] == "ext.onnx.data" and off % 4096 == 0
            want = numpy_helper.to_array([f for f in full.graph.initializer if f.name == t.name][0])
            assert raw[off:off + ln] == want.astype("<f4").tobytes()
            assert ln >= oio.EXTERNAL_MIN_BYTES
            n_ext += 1
        else:
            assert t.HasField("raw_data") and len(t.raw_data) < oio.EXTERNAL_MIN_BYTES
    assert n_ext > 20
    x = seeded_input((1, 3, 64, 64), 4)
    np.testing.assert_array_equal(_run(path, x)[0], _run(full, x)[0])
    with pytest.raises(oio.ProtogenError, match="output path"):
        export_onnx(g, external_data=True)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    g = zoo.build("mobilenet_v1", width=0.25, input_size=64).graph
    init_weights(g, 1)
    path = tmp_path / "m.onnx"
    real = oio._splice_initializers

    def broken(skeleton, payloads):
        chunks, size = real(skeleton, payloads)
        return chunks[:len(chunks) // 2] + [object()], size     # f.write fails half-way
    monkeypatch.setattr(oio, "_splice_initializers", broken)
    with pytest.raises(TypeError):
        export_onnx(g, path)
    assert os.listdir(tmp_path) == []


_MEMORY_PROBE = r"""
import sys
from protogen.caffe.loader import load_model
from protogen.onnx_io import export_onnx
import onnx, numpy  # everything imported before the baseline

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

base = status("VmRSS:")
export_onnx(load_model(sys.argv[1], sys.argv[2]), sys.argv[3])
print(status("VmHWM:") - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_conversion_holds_no_copy_of_the_weights(tmp_path):
    """caffemodel -> ONNX of a 48 MiB InnerProduct: the process grows by the mapped file's pages
    (1x) plus small change. Building the ModelProto in memory would hold >= 3 more copies."""
    proto_txt = ('name: "big" layer { name: "data" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 dim: 1024 } } } '
                 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                 'inner_product_param { num_output: 12288 } }')
    proto, model, blobs = _caffe_files(tmp_path, proto_txt)
    size = model.stat().st_size
    assert size > 48 * 2**20
    out = tmp_path / "big.onnx"
    r = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(proto), str(model), str(out)],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    grown = int(r.stdout.strip().splitlines()[-1])
    assert grown < 1.5 * size, f"grew by {grown / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB caffemodel"
    m = onnx.load(str(out))
    np.testing.assert_array_equal(_inits(m)["fc/weight"], blobs["fc"][0])
