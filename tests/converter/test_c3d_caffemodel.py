"""facebookarchive/C3D caffemodels: C3D's own 5-D BlobProto inside a V1 ``layers`` net.

The caffemodels here are encoded by protobuf itself from C3D's wire schema, declared in this
file (facebookarchive/C3D src/caffe/proto/caffe.proto: BlobProto num 1, channels 2, length 3,
height 4, width 5, data 6 packed, diff 7 packed; NetParameter layers 2; LayerParameter
bottom 2, top 3, name 4, type 5 (enum: CONVOLUTION3D 30, POOLING3D 31, VIDEO_DATA 33), blobs
6, convolution_param 10, inner_product_param 17, pooling_param 19), not by protogen's
writer. Blob shapes as C3D's layers make them (convolution3d_layer.cpp: weight (num_output,
channels, kernel_depth, k, k), bias (1, 1, 1, 1, num_output); inner_product_layer.cpp:
weight (1, 1, 1, N, K), bias (1, 1, 1, 1, N)); blob.cpp FromProto takes a missing length as 1.

Expected values: the encoded arrays themselves, and a numpy transcription of C3D's forward
(vol2col + gemm of convolution3d_layer.cpp, pool3d_layer.cpp MAX, inner_product_layer.cpp).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from protogen.caffe.caffemodel import read_caffemodel
from protogen.caffe.loader import load_model
from protogen.errors import ProtogenError
from tests.helpers import rel_err

FLT_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- C3D's schema
def c3d_messages():
    """(NetParameter, LayerParameter, BlobProto) classes with C3D's field numbers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="c3d_wire_test.proto", package="c3dwiretest",
                                             syntax="proto2")

    def msg(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, no, typ, label, *rest in fields:
            f = m.field.add(name=fname, number=no, type=typ, label=label)
            if rest and rest[0] == "packed":
                f.options.packed = True
            elif rest:
                f.type_name = rest[0]
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobProto", ("num", 1, F.TYPE_INT32, opt), ("channels", 2, F.TYPE_INT32, opt),
        ("length", 3, F.TYPE_INT32, opt), ("height", 4, F.TYPE_INT32, opt),
        ("width", 5, F.TYPE_INT32, opt), ("data", 6, F.TYPE_FLOAT, rep, "packed"),
        ("diff", 7, F.TYPE_FLOAT, rep, "packed"))
    msg("ConvolutionParameter", ("num_output", 1, F.TYPE_UINT32, opt), ("bias_term", 2, F.TYPE_BOOL, opt),
        ("pad", 3, F.TYPE_UINT32, opt), ("kernel_size", 4, F.TYPE_UINT32, opt),
        ("kernel_depth", 6, F.TYPE_UINT32, opt), ("stride", 7, F.TYPE_UINT32, opt),
        ("temporal_stride", 8, F.TYPE_UINT32, opt), ("filter_group", 11, F.TYPE_UINT32, opt),
        ("temporal_pad", 12, F.TYPE_UINT32, opt))
    msg("PoolingParameter", ("pool", 1, F.TYPE_INT32, opt), ("kernel_size", 2, F.TYPE_UINT32, opt),
        ("stride", 3, F.TYPE_UINT32, opt), ("kernel_depth", 5, F.TYPE_UINT32, opt),
        ("temporal_stride", 6, F.TYPE_UINT32, opt))
    msg("InnerProductParameter", ("num_output", 1, F.TYPE_UINT32, opt))
    msg("LayerParameter", ("bottom", 2, F.TYPE_STRING, rep), ("top", 3, F.TYPE_STRING, rep),
        ("name", 4, F.TYPE_STRING, opt), ("type", 5, F.TYPE_INT32, opt),   # enum: a varint
        ("blobs", 6, F.TYPE_MESSAGE, rep, ".c3dwiretest.BlobProto"),
        ("convolution_param", 10, F.TYPE_MESSAGE, opt, ".c3dwiretest.ConvolutionParameter"),
        ("inner_product_param", 17, F.TYPE_MESSAGE, opt, ".c3dwiretest.InnerProductParameter"),
        ("pooling_param", 19, F.TYPE_MESSAGE, opt, ".c3dwiretest.PoolingParameter"))
    msg("NetParameter", ("name", 1, F.TYPE_STRING, opt),
        ("layers", 2, F.TYPE_MESSAGE, rep, ".c3dwiretest.LayerParameter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = (message_factory.GetMessageClass if hasattr(message_factory, "GetMessageClass")
           else lambda d: message_factory.MessageFactory(pool).GetPrototype(d))
    return tuple(get(pool.FindMessageTypeByName(f"c3dwiretest.{n}"))
                 for n in ("NetParameter", "LayerParameter", "BlobProto"))


CONV3D, POOL3D, VIDEO, RELU, IP = 30, 31, 33, 18, 14      # C3D's LayerType values


def c3d_blob(B, arr, with_length=True, diff=False):
    """A C3D BlobProto as Blob::ToProto writes it (all five dims); ``with_length=False``: an
    older blob without the length field (FromProto reads length 1)."""
    a = np.asarray(arr, np.float32)
    n, c, L, h, w = a.shape
    b = B(num=n, channels=c, height=h, width=w)
    if with_length:
        b.length = L
    b.data.extend(a.reshape(-1).tolist())
    if diff:
        b.diff.extend((a.reshape(-1) * 0 + 7).tolist())   # a training snapshot's gradient
    return b


def tiny_c3d(rng, L=4, H=6, W=5, cout=4, nout=5):
    """(caffemodel bytes, weights, prototxt text) of a tiny C3D net: VIDEO_DATA -> conv
    (3x3x3, pad 1) -> ReLU -> pool (MAX 2x2x2, stride 2) -> fc."""
    Net, Layer, B = c3d_messages()
    w = rng.standard_normal((cout, 3, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(cout).astype(np.float32)
    pl, ph, pw = (math.ceil((n - 2) / 2) + 1 for n in (L, H, W))
    K = cout * pl * ph * pw
    fw = rng.standard_normal((nout, K)).astype(np.float32) * 0.2
    fb = rng.standard_normal(nout).astype(np.float32)
    net = Net(name="c3d_tiny")
    net.layers.add(name="data", type=VIDEO, top=["data", "label"])
    conv = net.layers.add(name="conv1a", type=CONV3D, bottom=["data"], top=["conv1a"])
    conv.convolution_param.num_output, conv.convolution_param.kernel_size = cout, 3
    conv.convolution_param.kernel_depth, conv.convolution_param.pad = 3, 1
    conv.convolution_param.temporal_pad, conv.convolution_param.stride = 1, 1
    conv.blobs.append(c3d_blob(B, w, diff=True))
    conv.blobs.append(c3d_blob(B, b.reshape(1, 1, 1, 1, -1)))
    net.layers.add(name="relu1a", type=RELU, bottom=["conv1a"], top=["conv1a"])
    p = net.layers.add(name="pool1", type=POOL3D, bottom=["conv1a"], top=["pool1"])
    p.pooling_param.kernel_size, p.pooling_param.kernel_depth = 2, 2
    p.pooling_param.stride, p.pooling_param.temporal_stride = 2, 2
    fc = net.layers.add(name="fc6", type=IP, bottom=["pool1"], top=["fc6"])
    fc.inner_product_param.num_output = nout
    fc.blobs.append(c3d_blob(B, fw.reshape(1, 1, 1, nout, K)))
    fc.blobs.append(c3d_blob(B, fb.reshape(1, 1, 1, 1, nout), with_length=False))
    text = f'''name: "c3d_tiny"
layers {{ name: "data" type: VIDEO_DATA top: "data" top: "label"
  image_data_param {{ source: "list.txt" batch_size: 2 new_length: {L} new_height: {H} new_width: {W} }} }}
layers {{ name: "conv1a" type: CONVOLUTION3D bottom: "data" top: "conv1a" blobs_lr: 1 blobs_lr: 2
  convolution_param {{ num_output: {cout} kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 stride: 1
    temporal_stride: 1 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layers {{ name: "relu1a" type: RELU bottom: "conv1a" top: "conv1a" }}
layers {{ name: "pool1" type: POOLING3D bottom: "conv1a" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 }} }}
layers {{ name: "fc6" type: INNER_PRODUCT bottom: "pool1" top: "fc6"
  inner_product_param {{ num_output: {nout} }} }}
'''
    return net.SerializeToString(), dict(w=w, b=b, fw=fw, fb=fb), text


# ----------------------------------------------------------------------------- numpy C3D
def np_c3d_forward(x, wt):
    """convolution3d_layer.cpp (vol2col + gemm; pad 1, stride 1) -> ReLU -> pool3d_layer.cpp
    MAX (ceil, windows clipped at the input) -> inner_product_layer.cpp (x . W^T + b)."""
    x = x.astype(np.float64)
    w, b = wt["w"].astype(np.float64), wt["b"].astype(np.float64)
    n, c, L, H, W = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)])
    y = np.zeros((n, w.shape[0], L, H, W))
    for o in range(w.shape[0]):
        for ci in range(c):
            for a in range(3):
                for i in range(3):
                    for j in range(3):
                        y[:, o] += w[o, ci, a, i, j] * xp[:, ci, a:a + L, i:i + H, j:j + W]
        y[:, o] += b[o]
    y = np.maximum(y, 0)
    pl, ph, pw = (math.ceil((s - 2) / 2) + 1 for s in (L, H, W))
    p = np.full((n, w.shape[0], pl, ph, pw), -FLT_MAX)
    for a in range(pl):
        for i in range(ph):
            for j in range(pw):
                win = y[:, :, 2 * a:min(2 * a + 2, L), 2 * i:min(2 * i + 2, H), 2 * j:min(2 * j + 2, W)]
                p[:, :, a, i, j] = np.maximum(p[:, :, a, i, j], win.max(axis=(2, 3, 4)))
    return p.reshape(n, -1) @ wt["fw"].astype(np.float64).T + wt["fb"].astype(np.float64)


# ----------------------------------------------------------------------------- tests
@pytest.fixture
def c3d_files(tmp_path):
    model, wt, text = tiny_c3d(np.random.default_rng(3))
    (tmp_path / "c3d.caffemodel").write_bytes(model)
    (tmp_path / "c3d.prototxt").write_text(text)
    return tmp_path / "c3d.prototxt", tmp_path / "c3d.caffemodel", wt


def test_c3d_blobs_read_as_five_d(c3d_files):
    _, cm, wt = c3d_files
    m = read_caffemodel(cm)
    assert m.format == "V1" and m.legacy_rank == 5
    assert [lp.name for lp in m.net.layers] == ["data", "conv1a", "relu1a", "pool1", "fc6"]
    w, b = m.blobs["conv1a"]
    assert w.shape == (4, 3, 3, 3, 3) and np.array_equal(w, wt["w"])      # diff (field 7) ignored
    assert b.shape == (1, 1, 1, 1, 4) and np.array_equal(b.reshape(-1), wt["b"])
    fw, fb = m.blobs["fc6"]
    assert fw.shape == (1, 1, 1, 5, wt["fw"].shape[1]) and np.array_equal(fw.reshape(5, -1), wt["fw"])
    assert fb.shape == (1, 1, 1, 1, 5) and np.array_equal(fb.reshape(-1), wt["fb"])   # no length: 1
    # C3D's enum values, not upstream's ARGMAX / THRESHOLD / SLICE
    from protogen.caffe import pb
    names = [pb.V1LayerParameter.LayerType.Name(lp.type) for lp in m.net.layers]
    assert names == ["VIDEO_DATA", "CONVOLUTION3D", "RELU", "POOLING3D", "INNER_PRODUCT"]


def test_c3d_weights_land_on_converted_layers(c3d_files):
    proto, cm, wt = c3d_files
    g = load_model(proto, cm)
    by = {l.name: l for l in g.layers}
    assert [tuple(a.shape) for a in by["conv1a"].blobs] == [(4, 3, 3, 3, 3), (4,)]
    assert np.array_equal(by["conv1a"].blobs[0], wt["w"]) and np.array_equal(by["conv1a"].blobs[1], wt["b"])
    assert [tuple(a.shape) for a in by["fc6"].blobs] == [wt["fw"].shape, (5,)]
    assert np.array_equal(by["fc6"].blobs[0], wt["fw"]) and np.array_equal(by["fc6"].blobs[1], wt["fb"])


def test_c3d_caffemodel_converts_to_onnx_equal_to_numpy(c3d_files, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from protogen.convert import convert
    proto, cm, wt = c3d_files
    out = tmp_path / "c3d.onnx"
    convert(proto, out, weights=cm)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 6, 5)).astype(np.float32)
    (inp,) = sess.get_inputs()
    assert tuple(inp.shape)[1:] == (3, 4, 6, 5)
    got = sess.run(["fc6"], {inp.name: x})[0]
    want = np_c3d_forward(x, wt)
    assert got.reshape(want.shape).shape == (2, 5)
    assert rel_err(got.reshape(want.shape), want) <= 1e-5


def test_c3d_blob_shape_mismatch_and_corrupt_count(tmp_path):
    Net, _, B = c3d_messages()
    proto = tmp_path / "c.prototxt"
    model, _, text = tiny_c3d(np.random.default_rng(0))
    proto.write_text(text)
    # kernel_depth 2 in the caffemodel, 3 in the prototxt: C3D's CopyTrainedLayersFrom refuses
    net = Net()
    net.ParseFromString(model)
    net.layers[1].blobs[0].CopyFrom(c3d_blob(B, np.zeros((4, 3, 2, 3, 3))))
    (tmp_path / "k.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ProtogenError, match=r"conv1a.*\(4, 3, 2, 3, 3\).*\(4, 3, 3, 3, 3\)"):
        load_model(proto, tmp_path / "k.caffemodel")
    # fewer values than the five dimensions say
    net.layers[1].blobs[0].CopyFrom(c3d_blob(B, np.zeros((4, 3, 3, 3, 3))))
    del net.layers[1].blobs[0].data[-1]
    (tmp_path / "n.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ProtogenError, match=r"corrupt weights.*C3D blob shape.*\(4, 3, 3, 3, 3\)"):
        read_caffemodel(tmp_path / "n.caffemodel")


def test_mixed_blob_forms_refused(tmp_path):
    """A file whose blobs are partly C3D's and partly upstream's is refused (the two messages
    concatenated: protobuf merges their repeated ``layers``)."""
    from protogen.caffe import pb
    model, _, _ = tiny_c3d(np.random.default_rng(0))
    up = pb.NetParameter()
    v1 = up.layers.add(name="extra")
    b = v1.blobs.add(num=1, channels=1, height=1, width=2)
    b.data.extend([1.0, 2.0])
    (tmp_path / "m.caffemodel").write_bytes(model + up.SerializeToString())
    with pytest.raises(ProtogenError, match="mixes C3D's 5-D BlobProto"):
        read_caffemodel(tmp_path / "m.caffemodel")


def test_upstream_blobs_unchanged():
    """An upstream legacy blob (num 1, channels 2, height 3, width 4, data at 5) still reads as
    upstream: nothing there is a varint at field 5."""
    from protogen.caffe import pb
    from protogen.caffe.caffemodel import _is_c3d_blob, _parse_blob
    b = pb.BlobProto(num=1, channels=2, height=3, width=4)
    b.data.extend(np.arange(24, dtype=np.float32).tolist())
    raw = memoryview(b.SerializeToString())
    assert not _is_c3d_blob(raw, 0, len(raw))
    assert _parse_blob(raw, 0, len(raw), "b").shape == (1, 2, 3, 4)


# ----------------------------------------------------------------------------- V2 text
def _same_graph(a, b):
    assert [(l.name, l.type, l.bottoms, l.tops, l.params) for l in a.layers] == \
        [(l.name, l.type, l.bottoms, l.tops, l.params) for l in b.layers]
    for la, lb in zip(a.layers, b.layers):
        assert (la.blobs is None) == (lb.blobs is None), la.name
        for x, y in zip(la.blobs or (), lb.blobs or ()):
            assert x.shape == y.shape and np.array_equal(x, y), la.name


def test_c3d_upgraded_text_uses_registry_types_and_reloads_equal(c3d_files, tmp_path):
    """``convert c3d.prototxt -o out.prototxt``: C3D's V1 enum types become the registry's V2
    type strings (upgrade.py V1_TYPES), and the written pair loads as the same net."""
    from protogen.convert import convert
    proto, cm, _ = c3d_files
    out = tmp_path / "v2" / "out.prototxt"
    out.parent.mkdir()
    convert(proto, out, weights=cm)
    text = out.read_text()
    types = [ln.split('"')[1] for ln in text.splitlines() if ln.startswith("  type:")]
    assert types == ["C3DVideoData", "Convolution3D", "ReLU", "Pooling3D", "InnerProduct"]
    assert "layers {" not in text and "CONVOLUTION3D" not in text and "VIDEO_DATA" not in text
    _same_graph(load_model(proto, cm), load_model(out, out.with_suffix(".caffemodel")))


@pytest.mark.parametrize("name", ["c3d_ucf101_finetuning_test.prototxt", "conv3d_ucf101_train.prototxt"])
def test_c3d_corpus_text_round_trip(name, tmp_path):
    from tests.helpers import CORPUS, CORPUS_SKIP_REASON
    src = CORPUS / "facebookarchive_c3d" / name
    if not src.is_file():
        pytest.skip(CORPUS_SKIP_REASON)
    from protogen.caffe.loader import read_net
    from protogen.convert import convert
    out = tmp_path / "out.prototxt"
    convert(src, out)
    assert read_net(out) == read_net(src)          # V2 text == the upgraded V1 net
    assert not {"CONVOLUTION3D", "POOLING3D", "VIDEO_DATA"} & {lp.type for lp in read_net(out).layer}
    a, b = load_model(src), load_model(out)
    assert [(l.name, l.type, l.params) for l in a.layers] == [(l.name, l.type, l.params) for l in b.layers]
