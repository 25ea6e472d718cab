"""YOLO v2 ``Region`` (openvinotoolkit/training_toolbox_caffe src/caffe/layers/region_layer.cpp,
region_param 214: coords, classes, num).

Oracles, both independent of protogen's code:
* a numpy transcription of the C++ Forward_cpu written here, loop by loop (entry_index,
  activate_array over 2*w*h then w*h values, the darknet softmax with its running max and
  sum, reading the un-activated bottom);
* OpenCV's own Region layer (darknet's decode, read from a Darknet cfg): its rows hold
  (x + sigmoid(tx)) / cols, (y + sigmoid(ty)) / rows, exp(tw) * anchor / cols, ...,
  sigmoid(to) and sigmoid(to) * softmax(classes): the same activations, which are
  recomputed here from the Caffe layer's output (OpenCV's Caffe importer does not read this
  Caffe form: the type's opencv_limit says so).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.errors import ProtogenError, ShapeError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from tests.layers.test_ssd import one_layer, params_of, run_all  # noqa: E402

F32 = np.float32


def region_oracle(x, coords, classes, num):
    """region_layer.cpp Forward_cpu, transcribed: the blob as a flat buffer."""
    batch, channels, width, height = x.shape           # the C++ reads shape(2) as "width"
    bottom = x.reshape(-1).astype(np.float64)
    top = bottom.copy()
    inputs = height * width * num * (classes + coords + 1)

    def entry_index(b, location, entry):
        n, loc = location // (width * height), location % (width * height)
        return b * inputs + n * width * height * (coords + classes + 1) + entry * width * height + loc

    def logistic(v):
        return 1.0 / (1.0 + math.exp(-v))
    for b in range(batch):
        for n in range(num):
            i0 = entry_index(b, n * width * height, 0)
            for i in range(i0, i0 + 2 * width * height):
                top[i] = logistic(top[i])
            i0 = entry_index(b, n * width * height, coords)
            for i in range(i0, i0 + width * height):
                top[i] = logistic(top[i])
    # softmax_cpu(bottom + index, classes, batch*num, inputs/num, w*h, 1, w*h, top + index)
    index = entry_index(0, 0, coords + 1)
    for bb in range(batch * num):
        for g in range(width * height):
            base = index + bb * (inputs // num) + g
            vals = [bottom[base + i * width * height] for i in range(classes)]
            largest = -3.4028234663852886e38
            for v in vals:
                largest = max(largest, v)
            e = [math.exp(v - largest) for v in vals]
            s = sum(e)
            for i in range(classes):
                top[base + i * width * height] = e[i] / s
    return top.reshape(x.shape)


CASES = [
    (dict(coords=4, classes=20, num=5), (2, 125, 4, 4)),     # VOC YOLO v2 head
    (dict(coords=4, classes=3, num=2), (1, 16, 3, 5)),       # non-square map
    (dict(coords=6, classes=2, num=3), (2, 27, 2, 3)),       # extra coordinates pass through
    (dict(coords=4, classes=1, num=2), (1, 12, 3, 3)),       # one class: softmax gives 1
]


@pytest.mark.parametrize("fields,shape", CASES)
def test_region_matches_the_cpp_loop(fields, shape):
    x = (np.random.default_rng(3).standard_normal(shape) * 3).astype(F32)
    want = region_oracle(x, **fields)
    g, feeds = one_layer("Region", params_of("Region", fields), [x])
    for rt, got in run_all(g, feeds).items():
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=rt)
    if fields["classes"] == 1:
        L = fields["coords"] + 2
        assert np.all(want.reshape(shape[0], fields["num"], L, -1)[:, :, -1] == 1.0)


def test_region_prototxt_read_and_refusals(tmp_path):
    from protogen.caffe.loader import load_model
    text = ('name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 125 dim: 13 dim: 13 }\n'
            'layer { name: "region" type: "Region" bottom: "data" top: "out" '
            'region_param { classes: 20 coords: 4 num: 5 } }\n')
    f = tmp_path / "r.prototxt"
    f.write_text(text)
    g = load_model(f)
    (layer,) = [l for l in g.layers if l.type == "Region"]
    assert (layer.params.classes, layer.params.coords, layer.params.num) == (20, 4, 5)
    f.write_text(text.replace("num: 5", "num: 4"))
    with pytest.raises(ShapeError, match="125 channels"):
        load_model(f)
    # another fork's Region (BirdeeChen/caffe_yolo_v2: boxes_of_each_grid) is refused, not guessed
    f.write_text(text.replace("num: 5", "boxes_of_each_grid: 5"))
    with pytest.raises(ProtogenError, match="boxes_of_each_grid"):
        load_model(f)
    with pytest.raises(ProtogenError, match="coords"):
        params_of("Region", dict(coords=1, classes=2, num=1))


def test_region_against_opencv_darknet_region(tmp_path):
    """OpenCV's darknet Region decodes what the Caffe layer activates: the same sigmoid and
    softmax values, found again in its rows."""
    cv2 = pytest.importorskip("cv2")
    coords, classes, num, side = 4, 3, 2, 5
    anchors = [1.0, 1.5, 2.5, 2.0]
    cfg = tmp_path / "region.cfg"
    cfg.write_text(f"[net]\nbatch=1\nwidth={side}\nheight={side}\nchannels={num * (coords + 1 + classes)}\n\n"
                   f"[region]\nanchors={','.join(map(str, anchors))}\nbias_match=1\nclasses={classes}\n"
                   f"coords={coords}\nnum={num}\nsoftmax=1\nthresh=0\nnms_threshold=0\n")
    net = cv2.dnn.readNetFromDarknet(str(cfg))
    x = (np.random.default_rng(5).standard_normal((1, num * (coords + 1 + classes), side, side)) * 2).astype(F32)
    # tiny boxes (tw, th ~ -6): no two overlap, so the NMS that OpenCV's importer switches on
    # (its default IoU threshold) suppresses nothing and every row is comparable
    t = x.reshape(num, coords + 1 + classes, side, side)
    t[:, 2:4] = t[:, 2:4] * F32(0.1) - F32(6.0)
    net.setInput(x)
    cv = net.forward()                                   # (side*side*num, 4 + 1 + classes)
    g, feeds = one_layer("Region", params_of("Region", dict(coords=coords, classes=classes, num=num)), [x])
    y = run_all(g, feeds)["onnxruntime"].reshape(num, coords + 1 + classes, side, side)
    rows = []
    for r in range(side):
        for c in range(side):
            for a in range(num):
                obj = y[a, coords, r, c]
                rows.append([(c + y[a, 0, r, c]) / side, (r + y[a, 1, r, c]) / side,
                             math.exp(y[a, 2, r, c]) * anchors[2 * a] / side,
                             math.exp(y[a, 3, r, c]) * anchors[2 * a + 1] / side, obj]
                            + [obj * y[a, coords + 1 + k, r, c] for k in range(classes)])
    assert cv.shape == (side * side * num, 5 + classes)
    np.testing.assert_allclose(cv, np.array(rows), rtol=1e-5, atol=1e-7)


def test_region_shape_and_registry():
    kind = get_type("Region")
    p = params_of("Region", dict(coords=4, classes=20, num=5))
    assert kind.output_shapes(p, [(3, 125, 7, 9)], 1) == [(3, 125, 7, 9)]
