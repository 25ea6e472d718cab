"""Binary caffemodel IO: bit-exact round trip, zero-copy reading, corrupt files, a real V1
caffemodel from the corpus, and OpenCV reading what we wrote."""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import CORPUS_SKIP_REASON

from protogen import Net
from protogen.caffe import pb
from protogen.caffe.caffemodel import read_caffemodel, write_caffemodel
from protogen.caffe.prototxt import to_net_param, to_prototxt
from protogen.errors import ProtogenError
from protogen.ir import DEPLOY
from protogen.weights import init_weights

from tests.helpers import CORPUS  # noqa: E402
LENET = CORPUS / "everpeace_caffe" / "examples" / "mnist" / "lenet_iter_10000.caffemodel"


def _small_net():
    n = Net("small")
    x = n.input("data", (1, 3, 16, 16))
    y = n.relu(n.bn(n.conv(x, 8, 3, pad=1, bias=False)))
    y = n.conv(y, 8, 3, group=8, pad=1)
    y = n.max_pool(y, 2, 2)
    n.fc(y, 10, name="fc")
    init_weights(n.graph, seed=3)
    return n


def _write(n, path):
    g = n.graph
    blobs = {l.name: l.blobs for l in g.select(net=DEPLOY) if l.blobs}
    size = write_caffemodel(path, to_net_param(g, DEPLOY, n.dialect), blobs)
    return blobs, size


def test_round_trip_bit_exact(tmp_path):
    n = _small_net()
    path = tmp_path / "m.caffemodel"
    blobs, size = _write(n, path)
    assert size == path.stat().st_size
    m = read_caffemodel(path)
    assert m.format == "V2"
    assert set(m.blobs) == set(blobs) == {"conv1", "conv1/bn", "conv1/scale", "conv2", "fc"}
    for name, arrs in blobs.items():
        got = m.blobs[name]
        assert len(got) == len(arrs)
        for a, b in zip(arrs, got):
            assert b.dtype == np.float32 and b.shape == a.shape
            assert b.tobytes() == np.ascontiguousarray(a, np.float32).tobytes()
    # shapes written are Caffe's: conv [O, I/g, kh, kw], BN (C), (C), (1), IP [N, K]
    assert [b.shape for b in m.blobs["conv2"]] == [(8, 1, 3, 3), (8,)]
    assert [b.shape for b in m.blobs["conv1/bn"]] == [(8,), (8,), (1,)]
    assert m.blobs["fc"][0].shape == (10, 8 * 8 * 8)
    # the net definition survives (without blobs) and protobuf agrees with our wire encoding
    assert [lp.name for lp in m.net.layer] == [l.name for l in n.graph.select(net=DEPLOY)]
    full = pb.NetParameter()
    full.ParseFromString(path.read_bytes())
    fc = [lp for lp in full.layer if lp.name == "fc"][0]
    assert list(fc.blobs[0].shape.dim) == [10, 512]
    assert np.array_equal(np.asarray(fc.blobs[0].data, np.float32), blobs["fc"][0].reshape(-1))


def test_read_is_zero_copy(tmp_path):
    path = tmp_path / "m.caffemodel"
    _write(_small_net(), path)
    m = read_caffemodel(path)
    for arrs in m.blobs.values():
        for a in arrs:
            assert not a.flags.owndata and not a.flags.writeable
            base = a
            while isinstance(base, np.ndarray):
                base = base.base
            # the chain of views ends at a memoryview of the memory-mapped file
            assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "m.caffemodel"
    _write(_small_net(), path)
    data = path.read_bytes()
    bad = tmp_path / "cut.caffemodel"
    for cut in (len(data) // 2, len(data) - 3, 8):   # 8: inside the first layer key
        bad.write_bytes(data[:cut])
        with pytest.raises(ProtogenError) as e:
            read_caffemodel(bad)
        assert e.value.file == str(bad) and str(bad) in str(e.value)
    bad.write_bytes(b"")
    with pytest.raises(ProtogenError, match="empty"):
        read_caffemodel(bad)
    with pytest.raises(ProtogenError, match="cannot read"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def test_failed_write_leaves_no_file(tmp_path):
    n = _small_net()
    path = tmp_path / "out.caffemodel"
    blobs = {l.name: l.blobs for l in n.graph.layers if l.blobs}
    blobs["fc"] = [object()]                       # not an array: fails mid-write
    with pytest.raises(Exception):
        write_caffemodel(path, to_net_param(n.graph, DEPLOY, n.dialect), blobs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not LENET.exists(), reason=CORPUS_SKIP_REASON)
def test_v1_lenet_from_corpus():
    m = read_caffemodel(LENET)
    assert m.format == "V1"
    # LeNet (examples/mnist/lenet.prototxt of the same commit): conv1 20x1x5x5, conv2 50x20x5x5,
    # ip1 500 outputs on 50*4*4 = 800 inputs, ip2 10 on 500. V1 blobs carry the legacy 4-D
    # num/channels/height/width, aligned from the end: biases 1x1x1xN, IP weights 1x1xNxK.
    expected = {"conv1": [(20, 1, 5, 5), (1, 1, 1, 20)], "conv2": [(50, 20, 5, 5), (1, 1, 1, 50)],
                "ip1": [(1, 1, 500, 800), (1, 1, 1, 500)], "ip2": [(1, 1, 10, 500), (1, 1, 1, 10)]}
    assert {k: [a.shape for a in v] for k, v in m.blobs.items()} == expected
    n_floats = sum(a.size for v in m.blobs.values() for a in v)
    assert n_floats == 20 * 25 + 20 + 50 * 20 * 25 + 50 + 500 * 800 + 500 + 10 * 500 + 10
    # the floats are nearly the whole file: only layer metadata besides
    assert 0 < LENET.stat().st_size - 4 * n_floats < 2000
    for v in m.blobs.values():
        for a in v:
            assert np.isfinite(a).all() and a.std() > 0    # trained weights
    assert [l.name for l in m.net.layers][:2] == ["mnist", "conv1"]


def test_opencv_reads_what_we_wrote(tmp_path):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5)")
    n = _small_net()
    proto, model = tmp_path / "m.prototxt", tmp_path / "m.caffemodel"
    proto.write_text(to_prototxt(n.graph, DEPLOY, n.dialect))
    blobs, _ = _write(n, model)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    for name in ("conv2", "fc"):
        for i, a in enumerate(blobs[name]):
            got = np.asarray(net.getParam(name, i))
            assert got.reshape(-1).tobytes() == a.reshape(-1).tobytes(), (name, i)
    # a forward pass runs on the weights as written
    net.setInput(np.ones((1, 3, 16, 16), np.float32))
    assert net.forward().shape == (1, 10)
