"""YOLO fork layers (protogen/layers/yolo.py) against numpy transcriptions of the forks' C++
loops written here, through every runtime: the PyTorch reference (float64 and float32), ONNX
Runtime on the exported graph, the generated PyTorch source, and OpenCV's dnn (Reorg).

Transcribed sources:
* Reorg: reorg_cpu(bottom, W, H, C, N, stride, reverse, top) of the Caffe YOLO forks
  (BVLC/caffe intel branch include/caffe/layers/reorg_layer.hpp, eric612/Caffe-YOLOv3-Windows);
* YoloDetectionOutput: eric612/MobileNet-YOLO src/caffe/layers/yolo_detection_output_layer.cpp;
* Yolov3DetectionOutput: eric612/MobileNet-YOLO src/caffe/layers/yolov3_detection_output_layer.cpp.
Caffe sorts detections with std::sort (order of equal confidences unspecified); the
transcriptions use a stable sort, the order protogen defines.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.ir import Graph, Layer  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from protogen.layers.io import InputParams  # noqa: E402

F = np.float32


from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


def net(type_name, params, shapes, n_tops=1):
    names = [f"in{i}" for i in range(len(shapes))]
    tops = [f"out{i}" for i in range(n_tops)]
    inp = Layer("input", "Input", [], names, InputParams(shape=tuple(tuple(s) for s in shapes)))
    kind = get_type(type_name)
    lay = Layer("layer", type_name, names, tops, kind.Params(**params))
    return Graph("t", [inp, lay]), names, tops


def run_all(g, names, tops, xs):
    """{runtime: [outputs]} for the float64 and float32 reference, ORT and the generated source."""
    from protogen import verify_runtimes as R
    from protogen.torch_codegen import SourceContext, graph_to_torch_source, torch_state_dict
    feeds = dict(zip(names, xs))
    res = {"torch64": R.run_torch(g, {k: v.astype(np.float64) for k, v in feeds.items()}, False, double=True),
           "torch32": R.run_torch(g, feeds, False),
           "ort": R.run_ort(R.onnx_model(g, False), feeds, "cpu")}
    ctxs: list[SourceContext] = []
    src = graph_to_torch_source(g, "M", _ctx_out=ctxs)
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)
    m = ns["M"]()
    m.load_state_dict(torch_state_dict(ctxs[0]))
    with torch.no_grad():
        out = m(*[torch.from_numpy(feeds[n]) for n in m.input_names])
    out = out if isinstance(out, tuple) else (out,)
    res["source"] = {k: v.numpy() for k, v in zip(m.output_names, out)}
    return {k: [np.asarray(v[t], np.float64) for t in tops] for k, v in res.items()}


def assert_rows(got, want, what, rtol=1e-5):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    assert float(np.abs(got - want).max()) <= rtol * scale, (what, got, want)


# ----------------------------------------------------------------------------- Reorg
def np_reorg(x, stride, reverse):
    """reorg_cpu(bottom, b_w=W, b_h=H, b_c=C, b_n=N, stride, forward=reverse, top)."""
    n, c, h, w = x.shape
    flat_in = x.reshape(-1)
    out = np.zeros(x.size, x.dtype)
    t_c, t_w, t_h = c // (stride * stride), w * stride, h * stride
    for b in range(n):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    bottom_index = i + w * (j + h * (k + c * b))
                    c2, off = k % t_c, k // t_c
                    w2, h2 = i * stride + off % stride, j * stride + off // stride
                    top_index = w2 + t_w * (h2 + t_h * (c2 + t_c * b))
                    if reverse:
                        out[top_index] = flat_in[bottom_index]
                    else:
                        out[bottom_index] = flat_in[top_index]
    if reverse:
        return out.reshape(n, t_c, t_h, t_w)
    return out.reshape(n, c * stride * stride, h // stride, w // stride)


@pytest.mark.parametrize("shape,stride,reverse", [((2, 8, 4, 6), 2, False), ((1, 18, 6, 3), 3, False),
                                                  ((1, 12, 2, 3), 2, True)])
def test_reorg_matches_reorg_cpu(shape, stride, reverse):
    x = np.random.default_rng(0).standard_normal(shape).astype(F)
    want = np_reorg(x, stride, reverse)
    g, names, tops = net("Reorg", dict(stride=stride, reverse=reverse), [shape])
    for rt, (got,) in run_all(g, names, tops, [x]).items():
        np.testing.assert_array_equal(got, want, err_msg=rt)


def test_reorg_is_not_space_to_depth():
    """The fork's order differs from ONNX DepthToSpace/SpaceToDepth (a converter that maps
    Reorg to SpaceToDepth computes something else)."""
    x = np.arange(1 * 4 * 4 * 4, dtype=F).reshape(1, 4, 4, 4)
    s2d = x.reshape(1, 4, 2, 2, 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(1, 16, 2, 2)
    assert not np.array_equal(np_reorg(x, 2, False), s2d)


def test_reorg_opencv_agrees():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    import tempfile
    from pathlib import Path
    x = np.random.default_rng(1).standard_normal((1, 8, 4, 6)).astype(F)
    proto = ('name: "t" input: "data" input_shape { dim: 1 dim: 8 dim: 4 dim: 6 }\n'
             'layer { name: "r" type: "Reorg" bottom: "data" top: "r" reorg_param { stride: 2 } }\n')
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "n.prototxt"
        p.write_text(proto)
        cvnet = cv2.dnn.readNetFromCaffe(str(p))
        cvnet.setInput(x, "data")
        y = cvnet.forward("r")
    np.testing.assert_array_equal(y, np_reorg(x, 2, False))


def test_reorg_refuses_indivisible_sizes():
    from protogen.errors import ShapeError
    with pytest.raises(ShapeError, match="multiple of the stride"):
        get_type("Reorg").shapes(get_type("Reorg").Params(stride=2), [(1, 8, 5, 6)])
    with pytest.raises(ShapeError, match="stride\\^2"):
        get_type("Reorg").shapes(get_type("Reorg").Params(stride=2), [(1, 6, 4, 6)])


# ----------------------------------------------------------------------------- YOLO outputs
def sig(v):
    return F(1) / (F(1) + np.exp(F(-v)))


def apply_nms(boxes, thr):
    """ApplyNms: i over boxes (skip suppressed), j > i not suppressed, iou >= thr drops j."""
    dead = set()
    for i in range(len(boxes) - 1):
        if i in dead:
            continue
        for j in range(i + 1, len(boxes)):
            if j in dead:
                continue
            a, b = boxes[i][2:6], boxes[j][2:6]

            def overlap(x1, w1, x2, w2):
                left = max(F(x1 - w1 / F(2)), F(x2 - w2 / F(2)))
                right = min(F(x1 + w1 / F(2)), F(x2 + w2 / F(2)))
                return F(right - left)
            ow, oh = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
            inter = F(0) if (ow < 0 or oh < 0) else F(ow * oh)
            iou = F(inter / F(a[2] * a[3] + b[2] * b[3] - inter))
            if iou >= F(thr):
                dead.add(j)
    return [i for i in range(len(boxes)) if i not in dead]


def rows_of(preds, thr, num):
    """Sort (stable), NMS, top rows; the fake rows when nothing is kept."""
    preds = sorted(preds, key=lambda p: -p[1])
    keep = apply_nms(preds, thr) if preds else []
    if not keep:
        out = np.full((num, 7), -1, np.float64)
        out[:, 0] = np.arange(num)
        return out.reshape(1, 1, num, 7)
    out = []
    for i in keep:
        cls, conf, x, y, w, h = preds[i]
        out.append([0, cls + 1, conf, x - w / 2., y - h / 2., x + w / 2., y + h / 2.])
    return np.asarray(out, np.float64).reshape(1, 1, -1, 7)


def np_yolo2(bottoms, biases, nc, nb, thr, nms):
    preds = []
    for x in bottoms:
        n, c, h, w = x.shape
        side = w
        swap = x.transpose(0, 2, 3, 1).reshape(n, h * w, nb, c // nb)
        for b in range(n):
            for j in range(side):
                for i in range(side):
                    for a in range(nb):
                        v = swap[b, j * side + i, a]
                        px = F((i + sig(v[0])) / F(side))
                        py = F((j + sig(v[1])) / F(side))
                        pw = F(np.exp(v[2]) * F(biases[2 * a]) / F(side))
                        ph = F(np.exp(v[3]) * F(biases[2 * a + 1]) / F(side))
                        logits = v[5:5 + nc]
                        e = np.exp(logits - logits.max())
                        p = e / e.sum(dtype=F)
                        k = 0
                        for q in range(nc):
                            if p[q] > p[k]:
                                k = q
                        conf = F(sig(v[4]) * p[k])
                        if conf >= F(thr):
                            preds.append((k, conf, px, py, pw, ph))
    return rows_of(preds, nms, bottoms[0].shape[0]), len(preds)


def np_yolo3(bottoms, biases, mask, scales, nb, groups, nc, thr, nms):
    preds = []
    for t, x in enumerate(bottoms):
        n, c, h, w = x.shape
        side, stride, length = w, w * w, 5 + nc
        flat = x.reshape(n, -1)
        for b in range(n):
            for s in range(side * side):
                for a in range(nb):
                    index = a * length * stride + s
                    val = [flat[b, index + k * stride] for k in range(length)]
                    y2, x2 = s // side, s % side
                    m = mask[a + t * groups]
                    px = F((x2 + sig(val[0])) / F(side))
                    py = F((y2 + sig(val[1])) / F(side))
                    pw = F(np.exp(val[2]) * F(biases[2 * m]) / F(side * scales[t]))
                    ph = F(np.exp(val[3]) * F(biases[2 * m + 1]) / F(side * scales[t]))
                    obj = sig(val[4])
                    for k in range(nc):
                        conf = F(sig(val[5 + k]) * obj)
                        if conf > F(thr):
                            preds.append((k, conf, px, py, pw, ph))
    return rows_of(preds, nms, bottoms[0].shape[0]), len(preds)


V2 = dict(num_classes=3, num_box=2, confidence_threshold=0.2, nms_threshold=0.45,
          biases=(1.0, 1.5, 2.5, 2.0))


def _logits(shape, seed, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(F)


def _check(type_name, params, xs, want):
    g, names, tops = net(type_name, params, [x.shape for x in xs])
    for rt, (got,) in run_all(g, names, tops, xs).items():
        assert_rows(got, want, rt)


def test_yolo2_matches_the_cpp_loop():
    x = _logits((1, 16, 5, 5), 0)
    want, n_cand = np_yolo2([x], V2["biases"], 3, 2, 0.2, 0.45)
    assert want.shape[2] > 1 and n_cand > want.shape[2], "detections and suppressed boxes both occur"
    _check("YoloDetectionOutput", V2, [x], want)


def test_yolo2_two_bottoms_and_batch():
    """Two maps pooled into one list; batch 2: every row says image 0, as the C++ writes."""
    xs = [_logits((2, 16, 4, 4), 1), _logits((2, 16, 2, 2), 2)]
    want, _ = np_yolo2(xs, V2["biases"], 3, 2, 0.2, 0.45)
    assert want.shape[2] > 1 and (want[..., 0] == 0).all()
    _check("YoloDetectionOutput", V2, xs, want)


def test_yolo2_ties_duplicate_maps():
    """The same map twice: every box appears twice with an equal confidence (a tie); NMS
    (IoU 1 >= threshold) keeps one of each pair, so the rows equal the single-map rows."""
    x = _logits((1, 16, 5, 5), 0)
    single, _ = np_yolo2([x], V2["biases"], 3, 2, 0.2, 0.45)
    want, _ = np_yolo2([x, x], V2["biases"], 3, 2, 0.2, 0.45)
    np.testing.assert_array_equal(want, single)
    _check("YoloDetectionOutput", V2, [x, x], want)


def test_yolo2_no_detection_gives_fake_rows():
    x = _logits((2, 16, 3, 3), 3, scale=0.1)
    p = dict(V2, confidence_threshold=0.9)
    want, n = np_yolo2([x], p["biases"], 3, 2, 0.9, 0.45)
    assert n == 0 and want.shape == (1, 1, 2, 7) and (want[0, 0, :, 1:] == -1).all()
    _check("YoloDetectionOutput", p, [x], want)


V3 = dict(num_classes=2, num_box=2, confidence_threshold=0.3, nms_threshold=0.5,
          biases=(10, 14, 23, 27, 37, 58, 81, 82), anchors_scale=(32, 16), mask_group_num=2,
          mask=(2, 3, 0, 1))


def test_yolo3_matches_the_cpp_loop():
    xs = [_logits((1, 14, 3, 3), 4), _logits((1, 14, 6, 6), 5)]
    want, n_cand = np_yolo3(xs, V3["biases"], V3["mask"], V3["anchors_scale"], 2, 2, 2, 0.3, 0.5)
    assert want.shape[2] > 1 and n_cand > want.shape[2]
    _check("Yolov3DetectionOutput", V3, xs, want)


def test_yolo3_empty_and_threshold_is_strict():
    xs = [_logits((2, 14, 3, 3), 6, 0.1), _logits((2, 14, 6, 6), 7, 0.1)]
    p = dict(V3, confidence_threshold=0.95)
    want, n = np_yolo3(xs, p["biases"], p["mask"], p["anchors_scale"], 2, 2, 2, 0.95, 0.5)
    assert n == 0 and want.shape == (1, 1, 2, 7)
    _check("Yolov3DetectionOutput", p, xs, want)


def test_yolo_shape_checks():
    from protogen.errors import ProtogenError, ShapeError
    k = get_type("Yolov3DetectionOutput")
    with pytest.raises(ShapeError, match="square"):
        k.shapes(k.Params(**V3), [(1, 14, 3, 4), (1, 14, 6, 8)])
    with pytest.raises(ShapeError, match="mask_group_num"):
        k.shapes(k.Params(**V3), [(1, 14, 3, 3)])
    with pytest.raises(ProtogenError, match="biases"):
        get_type("YoloDetectionOutput").validate(get_type("YoloDetectionOutput").Params(num_box=5, biases=(1, 2)))
