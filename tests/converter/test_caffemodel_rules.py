"""What Caffe does with what a caffemodel lacks or repeats (Net::CopyTrainedLayersFrom and
Net::AppendParam in BVLC/caffe src/caffe/net.cpp; the fillers of include/caffe/filler.hpp and
each layer's LayerSetUp). Expected values are worked out by hand from those sources."""
from __future__ import annotations

import numpy as np
import pytest

from protogen.caffe.caffemodel import write_caffemodel
from protogen.caffe.loader import load_model, read_net

NET = '''name: "rules"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 1 bias_filler { type: "constant" value: 0.1 } } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "up4" type: "Deconvolution" bottom: "conv" top: "up4"
  convolution_param { num_output: 2 group: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false
                      weight_filler { type: "bilinear" } } }
layer { name: "up3" type: "Deconvolution" bottom: "conv" top: "up3"
  convolution_param { num_output: 2 group: 2 kernel_size: 3 stride: 2 bias_term: false
                      weight_filler { type: "bilinear" } } }
'''


def _model(tmp_path, text, blobs):
    p = tmp_path / "n.prototxt"
    p.write_text(text)
    w = tmp_path / "n.caffemodel"
    write_caffemodel(w, read_net(p), blobs)
    return p, w


def test_layers_without_blobs_keep_caffes_initial_values(tmp_path):
    conv_w = np.arange(4, dtype=np.float32).reshape(2, 2, 1, 1)
    p, w = _model(tmp_path, NET, {"conv": [conv_w, np.array([5, 6], np.float32)]})
    g = load_model(p, w)
    np.testing.assert_array_equal(g.layer("conv").blobs[0], conv_w)        # from the caffemodel
    np.testing.assert_array_equal(g.layer("prelu").blobs[0], [0.25, 0.25])  # prelu_layer.cpp default
    np.testing.assert_array_equal(g.layer("scale").blobs[0], [1, 1])        # scale_layer.cpp default
    np.testing.assert_array_equal(g.layer("scale").blobs[1], [0, 0])        # bias_filler default 0
    # bilinear filler, k = 4: f = 2, c = 3/4, 1-D taps 1 - |x/2 - 3/4| for x = 0..3
    t4 = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    np.testing.assert_allclose(g.layer("up4").blobs[0], np.broadcast_to(np.outer(t4, t4), (2, 1, 4, 4)))
    # k = 3: f = 2, c = 2/4, taps 1 - |x/2 - 1/2| for x = 0..2
    t3 = np.array([0.5, 1.0, 0.5], np.float32)
    np.testing.assert_allclose(g.layer("up3").blobs[0], np.broadcast_to(np.outer(t3, t3), (2, 1, 3, 3)))
    assert any("keep Caffe's initial values" in n and "'prelu'" in n for n in g.notes)


def test_constant_filler_of_a_missing_layer_is_used(tmp_path):
    p, w = _model(tmp_path, NET, {})
    g = load_model(p, w)
    np.testing.assert_array_equal(g.layer("conv").blobs[0], np.zeros((2, 2, 1, 1)))  # constant 0
    np.testing.assert_allclose(g.layer("conv").blobs[1], [0.1, 0.1])                 # its filler


REPEATED = '''name: "rep"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "c" type: "Convolution" bottom: "data" top: "b"
  convolution_param { num_output: 2 kernel_size: 1 bias_filler { type: "constant" value: 2 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
'''


def test_layers_sharing_a_name_load_as_caffe_loads_them(tmp_path):
    wc = np.full((2, 2, 1, 1), 3, np.float32)
    p, w = _model(tmp_path, REPEATED, {"c": [wc, np.ones(2, np.float32)]})
    g = load_model(p, w)
    names = [l.name for l in g.layers]
    assert names == ["data", "c", "c_2", "sum"]
    # the first 'c' takes the caffemodel's blobs; the second keeps its fillers (0 and 2)
    np.testing.assert_array_equal(g.layer("c").blobs[0], wc)
    np.testing.assert_array_equal(g.layer("c_2").blobs[0], np.zeros((2, 2, 1, 1)))
    np.testing.assert_array_equal(g.layer("c_2").blobs[1], [2, 2])
    assert any("'c' is used 2 times" in n for n in g.notes)


SHARED = '''name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" } param { name: "bias_a" }
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" param { name: "w" } param { name: "bias_b" }
  convolution_param { num_output: 2 kernel_size: 1 } }
'''


@pytest.mark.parametrize("stored", [("a",), ("b",), ("a", "b"), ("b", "a")])
def test_weights_shared_by_param_name(tmp_path, stored):
    vals = {"a": np.full((2, 2, 1, 1), 1, np.float32), "b": np.full((2, 2, 1, 1), 7, np.float32)}
    bias = {"a": np.array([1, 2], np.float32), "b": np.array([3, 4], np.float32)}
    blobs = {k: [vals[k], bias[k]] for k in stored}
    p = tmp_path / "n.prototxt"
    p.write_text(SHARED)
    w = tmp_path / "n.caffemodel"
    net = read_net(p)
    order = {n: i for i, n in enumerate(stored)}
    layers = sorted(net.layer, key=lambda lp: order.get(lp.name, -1))   # caffemodel layer order
    del net.layer[:]
    net.layer.extend(layers)
    write_caffemodel(w, net, blobs)
    g = load_model(p, w)
    # one blob in Caffe: each copy overwrites it, so the last stored copy is everyone's value
    want = vals[stored[-1]]
    np.testing.assert_array_equal(g.layer("a").blobs[0], want)
    np.testing.assert_array_equal(g.layer("b").blobs[0], want)
    # unshared biases: each layer its own (missing ones keep the constant-0 default)
    for k in "ab":
        np.testing.assert_array_equal(g.layer(k).blobs[1], bias[k] if k in stored else [0, 0])


POOL = '''name: "pool"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool" top: "up"
  convolution_param { num_output: 1 kernel_size: 2 stride: 2 bias_term: false } }
'''


def test_caffemodel_layer_params_never_override_the_prototxt(tmp_path):
    """A caffemodel written by OpenCV's schema stores pooling ``ceil_mode: true`` as field 13
    = 1, which upstream reads as round_mode FLOOR; and SegNet's upsample_param (137) lands on
    upstream's embed_param. Neither may change the net: the prototxt's parameters win."""
    p = tmp_path / "pool.prototxt"
    p.write_text(POOL)
    net = read_net(p)
    net.layer[1].pooling_param.round_mode = 1             # what OpenCV's ceil_mode: true reads as
    w = tmp_path / "pool.caffemodel"
    write_caffemodel(w, net, {"up": [np.ones((1, 1, 2, 2), np.float32)]})
    g = load_model(p, w)
    # 6x6, kernel 3, stride 2: ceil((6-3)/2)+1 = 3 (the prototxt's CEIL), not 2 (FLOOR)
    assert g.steps()[1].out_shapes == [(1, 1, 3, 3)]
    np.testing.assert_array_equal(g.layer("up").blobs[0], np.ones((1, 1, 2, 2)))


def test_unparsable_fork_layer_params_in_a_caffemodel_are_skipped(tmp_path):
    from protogen.caffe.caffemodel import read_caffemodel
    from protogen.wire import len_field
    p = tmp_path / "pool.prototxt"
    p.write_text(POOL)
    from protogen.caffe import pb
    from protogen.caffe.caffemodel import _blob_bytes
    # the 'up' layer gets an extra field 137 holding bytes that are not a valid EmbedParameter
    # (wire type 7 does not exist), as a fork's parameter at that number might be
    bad = len_field(137, 2) + b"\x0f\x00"
    with pytest.raises(Exception):
        pb.LayerParameter.FromString(bad)
    net2 = read_net(p)
    w2 = tmp_path / "y.caffemodel"
    layer_no = pb.NetParameter.DESCRIPTOR.fields_by_name["layer"].number
    body = b""
    for lp in net2.layer:
        meta = lp.SerializeToString() + (bad if lp.name == "up" else b"")
        if lp.name == "up":
            blob = np.full((1, 1, 2, 2), 2, np.float32)
            bh, a = _blob_bytes(blob)
            meta += len_field(7, len(bh) + a.nbytes) + bh + a.tobytes()
        body += len_field(layer_no, len(meta)) + meta
    hdr = pb.NetParameter(name=net2.name).SerializeToString()
    w2.write_bytes(hdr + body)
    m = read_caffemodel(w2)
    assert [lp.name for lp in m.net.layer] == ["data", "pool", "up"]
    g = load_model(p, w2)
    np.testing.assert_array_equal(g.layer("up").blobs[0], np.full((1, 1, 2, 2), 2))
