"""Two-stage detector layers (protogen/layers/rcnn.py) against numpy transcriptions of their
C++/Python forwards written here, through the float64/float32 PyTorch reference, ONNX Runtime,
the generated PyTorch source and (ROIPooling, PSROIPooling) OpenCV's dnn.

Transcribed sources:
* ROIPooling: rbgirshick/caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp (Forward_cpu);
* PSROIPooling: daijifeng001/R-FCN src/caffe/layers/psroi_pooling_layer.cu (PSROIPoolingForward);
* Python ProposalLayer: rbgirshick/py-faster-rcnn lib/rpn/proposal_layer.py, generate_anchors.py,
  lib/fast_rcnn/bbox_transform.py, lib/nms/py_cpu_nms.py, TEST cfg of lib/fast_rcnn/config.py;
* Proposal (C++): pva-faster-rcnn caffe-fast-rcnn src/caffe/layers/proposal_layer.cpp and
  util/nms.cpp (nms_cpu).
Caffe's sorts are unstable (numpy quicksort, std::sort, sort_box), so the order of exactly
equal scores is unspecified there; the transcriptions sort stably (descending), the order
protogen defines, and the NMS-ties case checks that all runtimes follow it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.errors import ProtogenError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from tests.layers.test_yolo import net, run_all  # noqa: E402

F = np.float32
PY = "Python:rpn.proposal_layer.ProposalLayer"


from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


def c_round(v) -> int:
    """C's round() on a float32 value (halves away from zero), exactly."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


# ----------------------------------------------------------------------------- ROIPooling
def np_roi_pool(x, rois, ph, pw, scale):
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph, pw), x.dtype)
    for k, r in enumerate(rois.reshape(-1, 5)):
        b = int(r[0])
        sw, sh = c_round(F(r[1]) * F(scale)), c_round(F(r[2]) * F(scale))
        ew, eh = c_round(F(r[3]) * F(scale)), c_round(F(r[4]) * F(scale))
        bh = F(max(eh - sh + 1, 1)) / F(ph)
        bw = F(max(ew - sw + 1, 1)) / F(pw)
        for i in range(ph):
            for j in range(pw):
                hs = min(max(int(np.floor(F(i) * bh)) + sh, 0), h)
                he = min(max(int(np.ceil(F(i + 1) * bh)) + sh, 0), h)
                ws = min(max(int(np.floor(F(j) * bw)) + sw, 0), w)
                we = min(max(int(np.ceil(F(j + 1) * bw)) + sw, 0), w)
                if he > hs and we > ws:
                    out[k, :, i, j] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return out


def edge_rois(W, H):
    """ROIs in image coordinates: inside, straddling and outside the image, zero size,
    inverted (x2 < x1), and corners whose scaled value is exactly k + 0.5 (C round goes up,
    a half-to-even round would not), for batch index 0 and 1."""
    return np.asarray([
        [0, 8, 8, 8, 8],                      # zero size; 8/16 = 0.5 -> 1
        [1, 24, 40, 120, 72],                 # 1.5, 2.5 -> 2, 3 (half-even: 2, 2)
        [0, -40, -30, 50, 60],                # straddles the top-left corner
        [1, W - 20, H - 10, W + 90, H + 70],  # straddles the bottom-right corner
        [0, W + 30, H + 40, W + 90, H + 70],  # entirely outside
        [1, 90, 80, 30, 20],                  # inverted
        [0, 0, 0, W - 1, H - 1],              # the whole image
        [1, 7.99, 23.5, 56.49, 40.51],
    ], F)


def test_roi_pooling_matches_the_cpp_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9)).astype(F)
    rois = edge_rois(9 * 16, 7 * 16)
    want = np_roi_pool(x, rois, 3, 2, 1 / 16)
    assert (want == 0).any() and (want != 0).any(), "empty bins (0) and pooled bins both occur"
    g, names, tops = net("ROIPooling", dict(pooled_h=3, pooled_w=2, spatial_scale=F(1 / 16)),
                         [x.shape, rois.shape])
    for rt, (got,) in run_all(g, names, tops, [x, rois]).items():
        np.testing.assert_array_equal(got, want, err_msg=rt)


def _opencv(proto: str, feeds: dict, out: str):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "n.prototxt"
        p.write_text(proto)
        cvnet = cv2.dnn.readNetFromCaffe(str(p))
        for k, v in feeds.items():
            cvnet.setInput(v, k)
        return cvnet.forward(out)


def _inputs_text(shapes: dict) -> str:
    return "".join(f'input: "{k}" input_shape {{ ' + " ".join(f"dim: {d}" for d in s) + " }\n"
                   for k, s in shapes.items())


def test_roi_pooling_opencv_agrees():
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 9)).astype(F)
    rois = edge_rois(9 * 16, 7 * 16)
    proto = ('name: "t"\n' + _inputs_text({"data": x.shape, "rois": rois.shape}) +
             'layer { name: "p" type: "ROIPooling" bottom: "data" bottom: "rois" top: "p" '
             'roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.0625 } }\n')
    got = _opencv(proto, {"data": x, "rois": rois}, "p")
    np.testing.assert_array_equal(got, np_roi_pool(x, rois, 3, 2, 1 / 16))


# ----------------------------------------------------------------------------- PSROIPooling
def np_psroi(x, rois, d, g, scale):
    n, c, h, w = x.shape
    out = np.zeros((len(rois), d, g, g), np.float64)
    for k, r in enumerate(rois.reshape(-1, 5)):
        b = int(r[0])
        sw = F(c_round(r[1])) * F(scale)
        sh = F(c_round(r[2])) * F(scale)
        ew = F(c_round(r[3]) + 1.0) * F(scale)
        eh = F(c_round(r[4]) + 1.0) * F(scale)
        rw, rh = max(F(ew - sw), F(0.1)), max(F(eh - sh), F(0.1))
        bh, bw = F(rh / F(g)), F(rw / F(g))
        for ct in range(d):
            for i in range(g):
                for j in range(g):
                    hs = min(max(int(np.floor(F(F(i) * bh + sh))), 0), h)
                    he = min(max(int(np.ceil(F(F(i + 1) * bh + sh))), 0), h)
                    ws = min(max(int(np.floor(F(F(j) * bw + sw))), 0), w)
                    we = min(max(int(np.ceil(F(F(j + 1) * bw + sw))), 0), w)
                    if he <= hs or we <= ws:
                        continue
                    ch = (ct * g + i) * g + j
                    out[k, ct, i, j] = x[b, ch, hs:he, ws:we].astype(np.float64).sum() / ((he - hs) * (we - ws))
    return out


def test_psroi_pooling_matches_the_cuda_kernel_and_opencv():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 18, 7, 9)).astype(F)
    rois = edge_rois(9 * 16, 7 * 16)
    want = np_psroi(x, rois, 2, 3, 1 / 16)
    assert (want == 0).any() and (want != 0).any()
    g, names, tops = net("PSROIPooling", dict(spatial_scale=F(1 / 16), output_dim=2, group_size=3),
                         [x.shape, rois.shape])
    for rt, (got,) in run_all(g, names, tops, [x, rois]).items():
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=rt)
    proto = ('name: "t"\n' + _inputs_text({"data": x.shape, "rois": rois.shape}) +
             'layer { name: "p" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "p" '
             'psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 3 } }\n')
    np.testing.assert_allclose(_opencv(proto, {"data": x, "rois": rois}, "p"), want, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- proposals
#: py-faster-rcnn's default anchors (base 16, ratios 0.5/1/2, scales 8/16/32), as the
#: published generate_anchors() prints them
PY_DEFAULT_ANCHORS = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                      [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                      [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]


def np_generate_anchors(base=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mk(ws, hs, xc, yc):
        ws, hs = np.asarray(ws)[:, None], np.asarray(hs)[:, None]
        return np.hstack((xc - 0.5 * (ws - 1), yc - 0.5 * (hs - 1), xc + 0.5 * (ws - 1), yc + 0.5 * (hs - 1)))
    w, h, xc, yc = whctrs(np.array([1, 1, base, base]) - 1)
    size_ratios = w * h / np.asarray(ratios, float)
    ws = np.round(np.sqrt(size_ratios))
    ratio_anchors = mk(ws, np.round(ws * np.asarray(ratios, float)), xc, yc)
    out = []
    for a in ratio_anchors:
        w, h, xc, yc = whctrs(a)
        out.append(mk(w * np.asarray(scales, float), h * np.asarray(scales, float), xc, yc))
    return np.vstack(out)


def test_py_anchors():
    from protogen.layers.rcnn import anchors_py
    np.testing.assert_array_equal(np_generate_anchors(), PY_DEFAULT_ANCHORS)
    np.testing.assert_array_equal(anchors_py(16, (0.5, 1, 2), (8, 16, 32)), PY_DEFAULT_ANCHORS)
    r, s = (0.333, 0.5, 0.667, 1, 1.5, 2, 3), (2, 3, 5, 9, 16, 32)   # PVANet's param_str
    np.testing.assert_array_equal(anchors_py(16, r, s), np_generate_anchors(16, r, s).astype(F))


def np_cpp_anchors(base, ratios, scales):
    """proposal_layer.cpp generate_anchors in float32 with ROUND(x) = (int)(x + 0.5)."""
    out = []
    area, centre = F(base * base), F(0.5) * F(base - F(1))
    for r in ratios:
        rw = F(int(F(np.sqrt(F(area / F(r)))) + F(0.5)))
        rh = F(int(F(rw * F(r)) + F(0.5)))
        for s in scales:
            sw, sh = F(0.5) * F(rw * F(s) - F(1)), F(0.5) * F(rh * F(s) - F(1))
            out.append([centre - sw, centre - sh, centre + sw, centre + sh])
    return np.asarray(out, F)


def np_decode(scores, deltas, anchors, fs, im_h, im_w):
    """Shifted anchors in (h, w, a) order, bbox_transform_inv, clip_boxes (float32)."""
    a = len(anchors)
    _, _, hh, ww = scores.shape
    sx, sy = np.meshgrid(np.arange(ww) * fs, np.arange(hh) * fs)
    shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
    anc = (anchors.reshape(1, a, 4) + shifts.reshape(1, -1, 4).transpose(1, 0, 2)).reshape(-1, 4).astype(F)
    d = deltas.transpose(0, 2, 3, 1).reshape(-1, 4)
    fg = scores[:, a:].transpose(0, 2, 3, 1).reshape(-1)
    wid = anc[:, 2] - anc[:, 0] + F(1)
    hei = anc[:, 3] - anc[:, 1] + F(1)
    cx, cy = anc[:, 0] + F(0.5) * wid, anc[:, 1] + F(0.5) * hei
    pcx, pcy = d[:, 0] * wid + cx, d[:, 1] * hei + cy
    pw, ph = np.exp(d[:, 2]) * wid, np.exp(d[:, 3]) * hei
    b = np.stack([pcx - F(0.5) * pw, pcy - F(0.5) * ph, pcx + F(0.5) * pw, pcy + F(0.5) * ph], 1)
    b[:, 0::2] = np.maximum(np.minimum(b[:, 0::2], F(im_w) - F(1)), F(0))
    b[:, 1::2] = np.maximum(np.minimum(b[:, 1::2], F(im_h) - F(1)), F(0))
    return b.astype(F), fg.astype(F)


def py_cpu_nms(dets, thresh):
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + F(1)) * (y2 - y1 + F(1))
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(F(0), xx2 - xx1 + F(1)) * np.maximum(F(0), yy2 - yy1 + F(1))
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= F(thresh))[0] + 1]
    return keep


def np_proposal_py(scores, deltas, im_info, anchors, fs, pre=6000, post=300, thr=0.7, min_size=16):
    boxes, fg = np_decode(scores, deltas, anchors, fs, im_info[0, 0], im_info[0, 1])
    ms = F(min_size) * im_info[0, 2]
    keep = np.where((boxes[:, 2] - boxes[:, 0] + F(1) >= ms) & (boxes[:, 3] - boxes[:, 1] + F(1) >= ms))[0]
    boxes, fg = boxes[keep], fg[keep]
    order = np.argsort(-fg, kind="stable")[:pre]
    boxes, fg = boxes[order], fg[order]
    keep = py_cpu_nms(np.hstack((boxes, fg[:, None])), thr)[:post]
    rois = np.hstack((np.zeros((len(keep), 1), F), boxes[keep]))
    return rois, fg[keep].reshape(-1, 1)


def np_nms_cpu(boxes, thr, max_out):
    """util/nms.cpp nms_cpu + iou (0 for boxes that do not touch) over sorted boxes."""
    dead = np.zeros(len(boxes), bool)
    keep = []
    for i in range(len(boxes)):
        if dead[i]:
            continue
        keep.append(i)
        if len(keep) == max_out:
            break
        for j in range(i + 1, len(boxes)):
            A, B = boxes[i], boxes[j]
            if A[0] > B[2] or A[1] > B[3] or A[2] < B[0] or A[3] < B[1]:
                iou = F(0)
            else:
                w = max(F(0), F(min(A[2], B[2]) - max(A[0], B[0]) + F(1)))
                h = max(F(0), F(min(A[3], B[3]) - max(A[1], B[1]) + F(1)))
                area = F(w * h)
                aa = F((A[2] - A[0] + F(1)) * (A[3] - A[1] + F(1)))
                ba = F((B[2] - B[0] + F(1)) * (B[3] - B[1] + F(1)))
                iou = F(area / F(aa + ba - area))
            if not dead[j] and iou > F(thr):
                dead[j] = True
    return keep


def np_proposal_cpp(scores, deltas, im_info, anchors, fs, pre, post, thr, min_size):
    info = im_info.reshape(-1)
    boxes, fg = np_decode(scores, deltas, anchors, fs, info[0], info[1])
    ok = (boxes[:, 2] - boxes[:, 0] + F(1) >= F(min_size) * info[3]) & \
         (boxes[:, 3] - boxes[:, 1] + F(1) >= F(min_size) * info[2])
    fg = fg * ok.astype(F)
    order = np.argsort(-fg, kind="stable")[:min(len(fg), pre)]
    boxes, fg = boxes[order], fg[order]
    keep = np_nms_cpu(boxes, thr, post)
    return np.hstack((np.zeros((len(keep), 1), F), boxes[keep])), fg[keep]


def rpn_inputs(a, hh, ww, seed, im=None, delta_scale=0.3, tie=False):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((1, 2, a, hh, ww)) * 2
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if tie:
        prob[:] = 0.5
    deltas = (rng.standard_normal((1, 4 * a, hh, ww)) * delta_scale).astype(F)
    return prob.reshape(1, 2 * a, hh, ww).astype(F), deltas, im


def _proposal_check(type_name, params, xs, want_rois, want_scores):
    g, names, tops = net(type_name, params, [x.shape for x in xs], n_tops=2)
    for rt, (rois, scores) in run_all(g, names, tops, xs).items():
        assert rois.shape == want_rois.shape, (rt, rois.shape, want_rois.shape)
        np.testing.assert_allclose(rois, want_rois, rtol=1e-5, atol=1e-3, err_msg=rt)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=0, err_msg=rt)


PY_PARAMS = dict(module="rpn.proposal_layer", layer="ProposalLayer",
                 param_str="'feat_stride': 16, 'scales': [2, 4], 'ratios': [0.5, 1, 2]")


@pytest.mark.parametrize("case", ["random", "ties", "filtered"])
def test_python_proposal_matches_proposal_layer_py(case):
    im = np.asarray([[96, 110, 1.0]], F) if case != "filtered" else np.asarray([[96, 110, 2.5]], F)
    s, d, im = rpn_inputs(6, 6, 7, 3, im, tie=case == "ties")
    anchors = np_generate_anchors(16, (0.5, 1, 2), (2, 4))
    want_r, want_s = np_proposal_py(s, d, im, anchors, 16)
    assert 0 < len(want_r) < 300, len(want_r)
    if case == "ties":
        assert (want_s == 0.5).all()
    _proposal_check(PY, PY_PARAMS, [s, d, im], want_r, want_s)


CPP_PARAMS = dict(feat_stride=16, base_size=16, min_size=16, ratio=(0.5, 0.667, 1.0, 1.5, 2.0),
                  scale=(2, 3), pre_nms_topn=120, post_nms_topn=25, nms_thresh=F(0.7))


@pytest.mark.parametrize("case", ["random", "filtered", "ties"])
def test_cpp_proposal_matches_proposal_layer_cpp(case):
    im = np.asarray([[150, 170, 1.0, 1.0, 1.0, 1.0]], F)
    if case == "filtered":   # min size 16 * 6 px: most boxes keep score 0 and still compete
        im[0, 2:4] = 6.0
    s, d, im = rpn_inputs(10, 8, 9, 4, im, delta_scale=0.5, tie=case == "ties")
    anchors = np_cpp_anchors(16, CPP_PARAMS["ratio"], CPP_PARAMS["scale"])
    from protogen.layers.rcnn import anchors_cpp
    np.testing.assert_array_equal(anchors_cpp(16, CPP_PARAMS["ratio"], CPP_PARAMS["scale"]), anchors)
    want_r, want_s = np_proposal_cpp(s, d, im, anchors, 16, 120, 25, 0.7, 16)
    assert len(want_r) > 0
    if case == "filtered":
        assert (want_s == 0).any() and (want_s > 0).any()
    _proposal_check("Proposal", CPP_PARAMS, [s, d, im], want_r, want_s)


def test_param_str_and_python_layer_dispatch():
    from protogen.caffe.prototxt import graph_from_net_param, parse_prototxt, to_prototxt
    from protogen.errors import UnsupportedError
    from protogen.layers.rcnn import parse_param_str
    assert parse_param_str("'feat_stride': 16") == {"feat_stride": 16}
    assert parse_param_str("{'feat_stride': 8, 'scales': [1, 2]}")["scales"] == [1, 2]
    with pytest.raises(ProtogenError, match="dict literal"):
        parse_param_str("feat_stride: 16")
    text = ('name: "t" layer { name: "in" type: "Input" top: "s" top: "d" top: "im" input_param {\n'
            '  shape { dim: 1 dim: 18 dim: 4 dim: 5 } shape { dim: 1 dim: 36 dim: 4 dim: 5 }\n'
            '  shape { dim: 1 dim: 3 } } }\n'
            "layer { name: 'proposal' type: 'Python' bottom: 's' bottom: 'd' bottom: 'im' top: 'rois'\n"
            "  python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: \"'feat_stride': 16\" } }\n")
    g = graph_from_net_param(parse_prototxt(text))
    lay = g.layers[-1]
    assert lay.type == PY and g.blob_shapes()["rois"] == (300, 5)
    back = graph_from_net_param(parse_prototxt(to_prototxt(g)))
    assert back.layers[-1].type == PY and back.layers[-1].params == lay.params
    assert 'type: "Python"' in to_prototxt(g)
    # a Python module protogen has no transcription of is refused, naming the module
    with pytest.raises(UnsupportedError, match="mylab.layers.proposal_layer"):
        graph_from_net_param(parse_prototxt(text.replace("'rpn.proposal_layer'", "'mylab.layers.proposal_layer'")))
    with pytest.raises(ProtogenError, match="num_classes"):
        graph_from_net_param(parse_prototxt(text.replace("'feat_stride': 16", "'feat_stride': 16, 'num_classes': 21")))


def test_proposal_needs_single_image_and_anchors():
    with pytest.raises(ProtogenError, match="ratio and scale"):
        get_type("Proposal").validate(get_type("Proposal").Params())
    s, d, im = rpn_inputs(9, 3, 4, 0, np.asarray([[64, 64, 1.0]], F))
    s2, d2 = np.concatenate([s, s]), np.concatenate([d, d])
    from protogen.layers.detect_torch import proposal_py
    with pytest.raises(ValueError, match="single item"):
        proposal_py(torch.from_numpy(s2), torch.from_numpy(d2), torch.from_numpy(im),
                    torch.from_numpy(np_generate_anchors().astype(F)), 16, 6000, 300, 0.7, 16.0)


@pytest.mark.parametrize("kind", ["ROIPooling", "PSROIPooling"])
def test_roi_batch_index_out_of_range_is_an_error(kind):
    """roi_pooling_layer.cpp CHECKs 0 <= batch index < N; the reference refuses too (no
    silent wrap-around to the last image)."""
    x = np.zeros((1, 8, 4, 4), F)
    rois = np.asarray([[1, 0, 0, 8, 8]], F)
    p = dict(pooled_h=2, pooled_w=2, spatial_scale=0.25) if kind == "ROIPooling" else \
        dict(spatial_scale=0.25, output_dim=2, group_size=2)
    out = get_type(kind).torch_forward
    with pytest.raises(ProtogenError, match="batch index 1"):
        out(get_type(kind).Params(**p), [torch.from_numpy(x), torch.from_numpy(rois)], [])


# ----------------------------------------------------------------------------- ROIAlign
def np_roi_align(x, rois, ph, pw, scale, pad_ratio):
    """cascade-rcnn roi_align_layer.cpp Forward_cpu: bilinear samples at grid points."""
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph + 1, pw + 1), np.float64)
    for k, r in enumerate(rois.reshape(-1, 5)):
        b = int(r[0])
        pad_w, pad_h = F((r[3] - r[1] + F(1)) * F(pad_ratio)), F((r[4] - r[2] + F(1)) * F(pad_ratio))
        sw, sh = F(F((r[1] - pad_w) * F(scale)) - F(0.5)), F(F((r[2] - pad_h) * F(scale)) - F(0.5))
        ew, eh = F(F((r[3] + pad_w) * F(scale)) - F(0.5)), F(F((r[4] + pad_h) * F(scale)) - F(0.5))
        rh, rw = F(eh - sh), F(ew - sw)
        bh, bw = F(rh / F(ph)), F(rw / F(pw))
        for i in range(ph + 1):
            for j in range(pw + 1):
                if rh <= 0 or rw <= 0:
                    continue
                hf, wf = F(sh + F(i) * bh), F(sw + F(j) * bw)
                if hf < -0.5 or hf > h - 0.5 or wf < -0.5 or wf > w - 0.5:
                    continue
                h0, w0 = int(np.floor(hf)), int(np.floor(wf))
                h1, w1 = h0 + 1, w0 + 1
                hf, wf = min(max(hf, F(0)), F(h - 1)), min(max(wf, F(0)), F(w - 1))
                h0, w0 = min(max(h0, 0), h - 1), min(max(w0, 0), w - 1)
                h1, w1 = min(max(h1, 0), h - 1), min(max(w1, 0), w - 1)
                lh, lw = F(hf - h0), F(wf - w0)
                hh, hw = F(1) - lh, F(1) - lw
                v = x[b].astype(np.float64)
                out[k, :, i, j] = hw * hh * v[:, h0, w0] + lw * hh * v[:, h0, w1] + \
                    hw * lh * v[:, h1, w0] + lw * lh * v[:, h1, w1]
    return out


@pytest.mark.parametrize("pad_ratio", [0.0, 0.25])
def test_roi_align_matches_cascade_rcnn(pad_ratio):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 9)).astype(F)
    rois = edge_rois(9 * 16, 7 * 16)
    want = np_roi_align(x, rois, 3, 2, 1 / 16, pad_ratio)
    assert (want == 0).any() and (want != 0).any(), "zero (outside / malformed) and sampled points"
    g, names, tops = net("ROIAlign", dict(pooled_h=3, pooled_w=2, spatial_scale=1 / 16, pad_ratio=pad_ratio),
                         [x.shape, rois.shape])
    for rt, (got,) in run_all(g, names, tops, [x, rois]).items():
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=rt)


def test_opencv_proposal_is_not_caffes():
    """The reason Proposal.opencv_limit gives is real: OpenCV's Proposal returns
    post_nms_topn rows where Caffe's layer returns what survives min_size and NMS."""
    s, d, im = rpn_inputs(10, 8, 9, 4, np.asarray([[150, 170, 1.0, 1.0]], F), delta_scale=0.5)
    p = dict(CPP_PARAMS, post_nms_topn=200)
    want_r, _ = np_proposal_cpp(s, d, im, np_cpp_anchors(16, p["ratio"], p["scale"]), 16, 120, 200, 0.7, 16)
    assert 0 < len(want_r) < 200
    proto = ('name: "t"\n' + _inputs_text({"s": s.shape, "d": d.shape, "im": im.shape}) +
             'layer { name: "p" type: "Proposal" bottom: "s" bottom: "d" bottom: "im" top: "rois" '
             'proposal_param { feat_stride: 16 base_size: 16 min_size: 16 ' +
             " ".join(f"ratio: {r}" for r in p["ratio"]) + " " + " ".join(f"scale: {c}" for c in p["scale"]) +
             ' pre_nms_topn: 120 post_nms_topn: 200 nms_thresh: 0.7 } }\n')
    got = _opencv(proto, {"s": s, "d": d, "im": im}, "p")
    assert got.shape[0] == 200 != len(want_r)
    assert get_type("Proposal").opencv_limit(get_type("Proposal").Params(**p))
