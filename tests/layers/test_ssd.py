"""SSD layer types (PriorBox, Normalize, DetectionOutput) against numpy transcriptions of the
C++ forward passes of weiliu89/caffe (prior_box_layer.cpp, normalize_layer.cpp,
detection_output_layer.cpp + util/bbox_util.cpp), written here loop by loop, independently of
protogen's torch and ONNX code. Every case runs through the float64 torch forward, ONNX
Runtime on the exported one-layer net, and the generated PyTorch source.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.detections import compare_detections, count_detections  # noqa: E402
from protogen.ir import Graph, Layer  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from protogen.layers.io import InputParams  # noqa: E402

F32 = np.float32


# ----------------------------------------------------------------------------- oracles
def prior_box_oracle(p: dict, layer_hw, img_hw):
    """prior_box_layer.cpp LayerSetUp + Forward_cpu, loop by loop, float32 where C++ is."""
    ars = [1.0]
    for ar in p.get("aspect_ratio", []):
        ar = F32(ar)
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if p.get("flip", True):
            ars.append(F32(1.0 / float(ar)))
    mins, maxs = p["min_size"], p.get("max_size", [])
    if "img_h" in p:
        img_h, img_w = p["img_h"], p["img_w"]
    elif "img_size" in p:
        img_h = img_w = p["img_size"]
    else:
        img_h, img_w = img_hw
    lh, lw = layer_hw
    if "step_h" in p:
        step_h, step_w = F32(p["step_h"]), F32(p["step_w"])
    elif "step" in p:
        step_h = step_w = F32(p["step"])
    else:
        step_w, step_h = F32(F32(img_w) / F32(lw)), F32(F32(img_h) / F32(lh))
    off = F32(p.get("offset", 0.5))
    out = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = F32(F32(w + off) * step_w), F32(F32(h + off) * step_h)

            def put(bw, bh):
                out.extend([F32((float(cx) - float(bw) / 2.0) / img_w), F32((float(cy) - float(bh) / 2.0) / img_h),
                            F32((float(cx) + float(bw) / 2.0) / img_w), F32((float(cy) + float(bh) / 2.0) / img_h)])
            for s, mn in enumerate(mins):
                mn = int(mn)
                put(F32(mn), F32(mn))
                if maxs:
                    mx = int(maxs[s])
                    put(F32(math.sqrt(mn * mx)), F32(math.sqrt(mn * mx)))
                for ar in ars:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    put(F32(mn * math.sqrt(ar)), F32(mn / math.sqrt(ar)))
    top = np.array(out, np.float32)
    if p.get("clip", False):
        top = np.minimum(np.maximum(top, 0.0), 1.0)
    var = p.get("variance", [0.1])
    var = np.full(top.size, var[0], np.float32) if len(var) == 1 else np.tile(np.float32(var), top.size // 4)
    return np.stack([top, var])[None]


def normalize_oracle(x, scale, across_spatial, channel_shared, eps):
    """normalize_layer.cpp Forward_cpu (norm initialised to eps, sqrt of the sum)."""
    y = np.empty_like(x)
    n, c = x.shape[:2]
    for i in range(n):
        sq = x[i] ** 2
        if across_spatial:
            norm = math.sqrt(float(sq.sum()) + eps)
            y[i] = x[i] / norm
        else:
            norm = np.sqrt(eps + sq.sum(axis=0))
            for ch in range(c):
                y[i, ch] = x[i, ch] / norm
        if channel_shared:
            y[i] *= scale.reshape(-1)[0]
        else:
            for ch in range(c):
                y[i, ch] *= scale[ch]
    return y


def _size(b):
    if b[2] < b[0] or b[3] < b[1]:
        return 0.0
    return (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(b1, b2):
    """bbox_util.cpp IntersectBBox + JaccardOverlap (normalized: no +1)."""
    if b2[0] > b1[2] or b2[2] < b1[0] or b2[1] > b1[3] or b2[3] < b1[1]:
        inter = (0.0, 0.0, 0.0, 0.0)
    else:
        inter = (max(b1[0], b2[0]), max(b1[1], b2[1]), min(b1[2], b2[2]), min(b1[3], b2[3]))
    iw, ih = inter[2] - inter[0], inter[3] - inter[1]
    if iw > 0 and ih > 0:
        s = iw * ih
        return s / (_size(b1) + _size(b2) - s)
    return 0.0


def _decode(pb, pv, code, vin, b):
    """bbox_util.cpp DecodeBBox."""
    v = (1.0, 1.0, 1.0, 1.0) if vin else pv
    if code == "CORNER":
        return [pb[k] + v[k] * b[k] for k in range(4)]
    pw, ph = pb[2] - pb[0], pb[3] - pb[1]
    if code == "CORNER_SIZE":
        return [pb[0] + v[0] * b[0] * pw, pb[1] + v[1] * b[1] * ph, pb[2] + v[2] * b[2] * pw, pb[3] + v[3] * b[3] * ph]
    cx = v[0] * b[0] * pw + (pb[0] + pb[2]) / 2.0
    cy = v[1] * b[1] * ph + (pb[1] + pb[3]) / 2.0
    w, h = math.exp(v[2] * b[2]) * pw, math.exp(v[3] * b[3]) * ph
    return [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]


def detection_output_oracle(loc, conf, prior, num_classes, share_location=True, background_label_id=0,
                            nms_threshold=0.3, top_k=-1, eta=1.0, code_type="CORNER",
                            variance_encoded_in_target=False, keep_top_k=-1, confidence_threshold=None,
                            arm_conf=None, arm_loc=None, objectness_score=0.01):
    """detection_output_layer.cpp Forward_cpu with GetLocPredictions, GetConfidenceScores,
    GetPriorBBoxes, DecodeBBoxesAll, ApplyNMSFast (GetMaxScoreIndex: stable_sort), keep_top_k;
    with arm_conf / arm_loc RefineDet's OSGetConfidenceScores and CasRegDecodeBBoxesAll."""
    thr = -3.4028234663852886e38 if confidence_threshold is None else confidence_threshold
    num = loc.shape[0]
    n_p = prior.shape[2] // 4
    n_loc = 1 if share_location else num_classes
    locf, conff, pf = loc.reshape(num, -1), conf.reshape(num, -1), prior.reshape(-1)
    priors = [pf[i * 4:i * 4 + 4].tolist() for i in range(n_p)]
    pvars = [pf[(n_p + i) * 4:(n_p + i) * 4 + 4].tolist() for i in range(n_p)]
    rows, all_idx = [], []
    decoded = []
    for i in range(num):
        dec = {}
        img_priors = priors
        if arm_loc is not None:     # CasRegDecodeBBoxesAll: priors decoded by the ARM first
            al = arm_loc.reshape(num, -1)
            img_priors = [_decode(priors[p], pvars[p], code_type, variance_encoded_in_target,
                                  al[i, p * 4:p * 4 + 4].tolist()) for p in range(n_p)]
        for c in range(n_loc):
            label = -1 if share_location else c
            if label == background_label_id:
                continue
            dec[label] = [_decode(img_priors[p], pvars[p], code_type, variance_encoded_in_target,
                                  locf[i, (p * n_loc + c) * 4:(p * n_loc + c) * 4 + 4].tolist()) for p in range(n_p)]
        decoded.append(dec)
        scores = {c: [conff[i, p * num_classes + c] for p in range(n_p)] for c in range(num_classes)}
        if arm_conf is not None:    # OSGetConfidenceScores
            ac = arm_conf.reshape(num, -1)
            for p in range(n_p):
                if ac[i, p * 2 + 1] < objectness_score:
                    for c in range(num_classes):
                        scores[c][p] = 1.0 if c == background_label_id else 0.0
        indices, num_det = {}, 0
        for c in range(num_classes):
            if c == background_label_id:
                continue
            bx = dec[-1 if share_location else c]
            pairs = sorted([(s, j) for j, s in enumerate(scores[c]) if s > thr], key=lambda t: -t[0])
            if -1 < top_k < len(pairs):
                pairs = pairs[:top_k]
            kept, adaptive = [], nms_threshold
            for _, j in pairs:
                keep = True
                for k in kept:
                    if keep:
                        keep = _jaccard(bx[j], bx[k]) <= adaptive
                    else:
                        break
                if keep:
                    kept.append(j)
                if keep and eta < 1 and adaptive > 0.5:
                    adaptive *= eta
            indices[c] = kept
            num_det += len(kept)
        if -1 < keep_top_k < num_det:
            sp = [(scores[c][j], c, j) for c in sorted(indices) for j in indices[c]]
            sp = sorted(sp, key=lambda t: -t[0])[:keep_top_k]      # ties: a documented choice
            new = {}
            for s, c, j in sp:
                new.setdefault(c, []).append(j)
            indices = new
        all_idx.append((scores, indices))
    for i, (scores, indices) in enumerate(all_idx):
        for c in sorted(indices):
            for j in indices[c]:
                b = decoded[i][-1 if share_location else c][j]
                rows.append([i, c, scores[c][j]] + list(b))
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(num)]
    return np.array(rows, np.float64).reshape(1, 1, -1, 7)


# ----------------------------------------------------------------------------- running
def one_layer(type_name, params, inputs, blobs=None):
    kind = get_type(type_name)
    names = [f"in{i}" for i in range(len(inputs))]
    inp = Layer("input", "Input", [], names, InputParams(shape=tuple(tuple(x.shape) for x in inputs)))
    layer = Layer("layer", type_name, names, ["out"], params, blobs=blobs)
    return Graph("t", [inp, layer]), dict(zip(names, inputs))


def run_all(g, feeds):
    """{runtime: output} for the float64 torch forward, ONNX Runtime and the generated source."""
    from protogen.onnx_io import export_onnx, load_check
    from protogen.torch_codegen import graph_to_torch_source, torch_state_dict
    from protogen.torch_ref import TorchNet
    net = TorchNet.from_graph(g).double() if any(l.blobs for l in g.layers) else TorchNet(g).double()
    with torch.no_grad():
        ref = net({k: torch.from_numpy(v.astype(np.float64)) for k, v in feeds.items()})["out"].numpy()
    m = export_onnx(g)
    load_check(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(["out"], {k: v.astype(np.float32) for k, v in feeds.items()})[0]
    ctxs = []
    src = graph_to_torch_source(g, "T", _ctx_out=ctxs)
    ns = {}
    exec(compile(src, "<generated>", "exec"), ns)
    mod = ns["T"]()
    mod.load_state_dict(torch_state_dict(ctxs[0]))
    with torch.no_grad():
        src_out = mod(*[torch.from_numpy(feeds[n].astype(np.float32)) for n in mod.input_names]).numpy()
    return {"torch64": ref, "onnxruntime": onnx_out, "torch_source": src_out}


def params_of(type_name, fields):
    from protogen.layers.base import Example
    return Example(params=fields).make_params(get_type(type_name))


# ----------------------------------------------------------------------------- PriorBox
PRIOR_CASES = [
    # SSD300 conv4_3-like: min/max, ratio 2 flipped, 4 variances, explicit step
    (dict(min_size=[30.0], max_size=[60.0], aspect_ratio=[2.0], flip=True, clip=False,
          variance=[0.1, 0.1, 0.2, 0.2], step=8.0, offset=0.5), (5, 4), (40, 32)),
    # clipped at the borders: boxes larger than the image
    (dict(min_size=[50.0], aspect_ratio=[3.0], clip=True, variance=[0.1]), (3, 3), (30, 30)),
    # flip with duplicate ratios (2, 2, 0.5 -> 1, 2, 1/2), two min sizes with max sizes
    (dict(min_size=[20.0, 45.0], max_size=[40.0, 70.0], aspect_ratio=[2.0, 2.0, 0.5], flip=True,
          variance=[0.1, 0.1, 0.2, 0.2]), (2, 3), (24, 36)),
    # no flip, img_h/img_w and step_h/step_w, offset 0, non-integer min_size (truncated by Caffe)
    (dict(min_size=[16.7], aspect_ratio=[2.0, 3.0], flip=False, img_h=50, img_w=40, step_h=9.0,
          step_w=7.5, offset=0.0), (6, 5), None),
    # step from the sizes (float division), img_size
    (dict(min_size=[10.0], img_size=33), (7, 5), None),
]


@pytest.mark.parametrize("fields,layer_hw,img_hw", PRIOR_CASES)
def test_prior_box_matches_caffe_loop(fields, layer_hw, img_hw):
    want = prior_box_oracle(fields, layer_hw, img_hw)
    ins = [np.zeros((1, 2) + layer_hw, np.float32)]
    if img_hw is not None:
        ins.append(np.zeros((1, 3) + img_hw, np.float32))
    g, feeds = one_layer("PriorBox", params_of("PriorBox", fields), ins)
    assert get_type("PriorBox").shapes(g.layers[1].params, [x.shape for x in ins]) == [want.shape]
    outs = run_all(g, feeds)        # ONNX: computed in the graph (the bottoms' H/W are dynamic)
    outs["constant"] = get_type("PriorBox").priors(g.layers[1].params, [x.shape for x in ins])  # fixed size
    for name, got in outs.items():
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-7, err_msg=name)
    if fields.get("clip"):
        assert (want[0, 0] == 0).any() and (want[0, 0] == 1).any()     # the case clips


def test_prior_box_duplicate_ratios_counted_once():
    p = params_of("PriorBox", dict(min_size=[20.0], aspect_ratio=[2.0, 2.0, 0.5, 0.5000001], flip=True))
    assert get_type("PriorBox").num_priors(p) == 3      # 1, 2, 1/2


@pytest.mark.parametrize("fields,msg", [
    (dict(min_size=[30.0], max_size=[20.0]), "greater than min_size"),
    (dict(min_size=[30.0], variance=[0.1, 0.2]), "1 or 4"),
    (dict(min_size=[30.0], img_size=300, img_h=300, img_w=300), "not both"),
])
def test_prior_box_refuses_what_caffe_refuses(fields, msg):
    from protogen.errors import ProtogenError
    with pytest.raises(ProtogenError, match=msg):
        params_of("PriorBox", fields)


# ----------------------------------------------------------------------------- Normalize
@pytest.mark.parametrize("across,shared", [(True, True), (True, False), (False, True), (False, False)])
def test_normalize_matches_caffe_loop(across, shared):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    x[1, :, 0, 0] = 0.0                                  # a zero column: eps keeps it finite
    scale = rng.uniform(1, 20, () if shared else (4,)).astype(np.float32)
    p = params_of("Normalize", dict(across_spatial=across, channel_shared=shared, eps=1e-10))
    g, feeds = one_layer("Normalize", p, [x], blobs=[scale])
    want = normalize_oracle(x.astype(np.float64), scale.astype(np.float64), across, shared, 1e-10)
    for name, got in run_all(g, feeds).items():
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- DetectionOutput
def corner_inputs(boxes, scores, n_img=1):
    """loc/conf/prior such that CORNER decoding with variance_encoded_in_target gives ``boxes``
    exactly (priors all 0): boxes (n_img, P, 4), scores (n_img, P, C)."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    n_p = boxes.shape[1]
    prior = np.zeros((1, 2, n_p * 4), np.float32)
    prior[0, 1] = 0.1
    return [boxes.reshape(n_img, -1), scores.reshape(n_img, -1), prior]


def det_check(fields, ins, min_count=0):
    p = params_of("DetectionOutput", fields)
    xs = [x.astype(np.float64) for x in ins]
    arm = dict(zip(("arm_conf", "arm_loc"), xs[3:]))
    want = detection_output_oracle(*xs[:3], **p.kwargs(), **arm)
    g, feeds = one_layer("DetectionOutput", p, ins)
    for name, got in run_all(g, feeds).items():
        d = compare_detections(got, want, tol=2e-6 if name == "torch64" else 1e-5)
        assert d.ok, f"{name}: {d.summary()}"
        # same row order as Caffe (image, label ascending, score descending)
        np.testing.assert_allclose(got.reshape(-1, 7)[:, :2], want.reshape(-1, 7)[:, :2], err_msg=name)
    assert count_detections(want) >= min_count
    return want


def test_nms_ties_and_threshold_equality():
    # b0 == b1 (same score: the lower index wins, b1 suppressed); b3 disjoint with the same
    # score; b2 overlaps b0 with IoU exactly 0.5 == nms_threshold: kept (Caffe keeps <=)
    boxes = [[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0.5], [2, 2, 3, 3]]]
    scores = [[[0, 0.6], [0, 0.6], [0, 0.4], [0, 0.6]]]
    want = det_check(dict(num_classes=2, code_type="CORNER", variance_encoded_in_target=True,
                          nms_param=dict(nms_threshold=0.5)), corner_inputs(boxes, scores))
    assert want.reshape(-1, 7)[:, 3:].tolist() == [[0, 0, 1, 1], [2, 2, 3, 3], [0, 0, 1, 0.5]]


def test_boxes_outside_the_image_and_inverted_boxes():
    # no clipping at decode; an inverted box (xmax < xmin) has size 0 and overlaps nothing:
    # both copies kept, and it suppresses nothing
    boxes = [[[-0.5, -0.2, 0.3, 1.4], [0.8, 0.1, 0.2, 0.9], [0.8, 0.1, 0.2, 0.9], [0.2, 0.1, 0.8, 0.9],
              [1.2, 1.1, 1.9, 1.5]]]
    scores = [[[0, 0.9, 0.1], [0, 0.8, 0.2], [0, 0.7, 0.3], [0, 0.6, 0.9], [0, 0.5, 0.5]]]
    want = det_check(dict(num_classes=3, code_type="CORNER", variance_encoded_in_target=True,
                          nms_param=dict(nms_threshold=0.1)), corner_inputs(boxes, scores), min_count=8)
    r = want.reshape(-1, 7)
    assert (r[:, 3:] < 0).any() and (r[:, 3:] > 1).any()
    assert ((r[:, 5] < r[:, 3]) & (r[:, 2] > 0)).sum() == 4     # inverted boxes kept in both classes


def test_empty_detections_give_minus_one_rows_per_image():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, (2, 6, 4))
    scores = rng.uniform(0, 0.5, (2, 6, 3))
    want = det_check(dict(num_classes=3, code_type="CORNER", variance_encoded_in_target=True,
                          confidence_threshold=0.9), corner_inputs(boxes, scores, 2))
    assert want.reshape(-1, 7).tolist() == [[0] + [-1] * 6, [1] + [-1] * 6]


def test_one_image_without_detections():
    boxes = np.tile(np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32), (2, 1, 1))
    scores = np.array([[[0, 0.1], [0, 0.2]], [[0, 0.8], [0, 0.9]]], np.float32)
    want = det_check(dict(num_classes=2, code_type="CORNER", variance_encoded_in_target=True,
                          confidence_threshold=0.5), corner_inputs(boxes, scores, 2), min_count=2)
    assert set(want.reshape(-1, 7)[:, 0]) == {1}


def _random_inputs(seed, n, n_p, n_classes, n_loc):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.1, 0.9, (n_p, 2))
    wh = rng.uniform(0.1, 0.6, (n_p, 2))
    prior = np.stack([np.concatenate([c - wh / 2, c + wh / 2], 1).reshape(-1),
                      np.tile([0.1, 0.1, 0.2, 0.2], n_p)])[None].astype(np.float32)
    loc = (rng.standard_normal((n, n_p * n_loc * 4)) * 0.8).astype(np.float32)
    conf = rng.uniform(0, 1, (n, n_p * n_classes)).astype(np.float32)
    return [loc, conf, prior]


@pytest.mark.parametrize("fields", [
    dict(num_classes=4, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.45, top_k=12),
         keep_top_k=7, confidence_threshold=0.2),
    dict(num_classes=3, share_location=False, background_label_id=-1, code_type="CORNER_SIZE",
         nms_param=dict(nms_threshold=0.3, top_k=5), keep_top_k=9, confidence_threshold=0.1),
    dict(num_classes=3, background_label_id=2, code_type="CORNER", nms_param=dict(nms_threshold=0.6)),
    dict(num_classes=5, code_type="CENTER_SIZE", variance_encoded_in_target=True,
         nms_param=dict(nms_threshold=0.45, top_k=30), keep_top_k=4),
])
def test_detection_output_random(fields):
    n_loc = 1 if fields.get("share_location", True) else fields["num_classes"]
    ins = _random_inputs(7, 2, 40, fields["num_classes"], n_loc)
    want = det_check(fields, ins, min_count=4)
    keep = fields.get("keep_top_k", -1)
    if keep > -1:       # the cut applies in this case
        r = want.reshape(-1, 7)
        assert max(np.sum(r[:, 0] == i) for i in (0, 1)) == keep


def test_adaptive_eta_in_torch_and_onnx():
    """eta < 1 in every runtime (ONNX: a Loop; more cases in tests/layers/test_adaptive_nms.py)."""
    ins = _random_inputs(1, 1, 30, 3, 1)
    p = params_of("DetectionOutput", dict(num_classes=3, code_type="CENTER_SIZE",
                                          nms_param=dict(nms_threshold=0.7, eta=0.8)))
    want = detection_output_oracle(*[x.astype(np.float64) for x in ins], **p.kwargs())
    got = get_type("DetectionOutput").torch_forward(p, [torch.from_numpy(x.astype(np.float64)) for x in ins], [])[0]
    assert compare_detections(got.numpy(), want, tol=1e-9).ok
    g, feeds = one_layer("DetectionOutput", p, ins)
    for name, out in run_all(g, feeds).items():
        assert compare_detections(out, want, tol=1e-5).ok, name
    assert count_detections(want) > 0


@pytest.mark.parametrize("objectness", [0.3, 0.7])
def test_refinedet_form(objectness):
    """RefineDet's 5-bottom DetectionOutput: priors refined by arm_loc, anchors whose ARM
    objectness is below objectness_score dropped."""
    rng = np.random.default_rng(5)
    loc, conf, prior = _random_inputs(5, 2, 30, 4, 1)
    arm_conf = rng.uniform(0, 1, (2, 60)).astype(np.float32)
    arm_loc = (rng.standard_normal((2, 120)) * 0.5).astype(np.float32)
    want = det_check(dict(num_classes=4, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.45, top_k=20),
                          keep_top_k=12, confidence_threshold=0.05, objectness_score=objectness),
                     [loc, conf, prior, arm_conf, arm_loc], min_count=4)
    # without the ARM the result differs (the case exercises both refinements)
    plain = detection_output_oracle(*[x.astype(np.float64) for x in (loc, conf, prior)], num_classes=4,
                                    code_type="CENTER_SIZE", nms_threshold=0.45, top_k=20, keep_top_k=12,
                                    confidence_threshold=0.05)
    assert not compare_detections(plain, want).ok


# ----------------------------------------------------------------------------- Permute
def permute_oracle(x, order):
    """permute_layer.cpp: the listed axes first, then the unlisted ones in their order
    (LayerSetUp), and Permute() walks every top index back to the bottom's offset."""
    full = list(order) + [i for i in range(x.ndim) if i not in order]
    top_shape = [x.shape[i] for i in full]
    out = np.empty(top_shape, x.dtype)
    old_steps = [int(np.prod(x.shape[i + 1:])) for i in range(x.ndim)]
    new_steps = [int(np.prod(top_shape[i + 1:])) for i in range(x.ndim)]
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for i in range(x.size):
        old_idx, idx = 0, i
        for j in range(x.ndim):
            old_idx += (idx // new_steps[j]) * old_steps[full[j]]
            idx %= new_steps[j]
        flat_out[i] = flat_x[old_idx]
    return out


@pytest.mark.parametrize("shape,order", [((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4, 5), [0, 3, 1, 2]),
                                         ((2, 3, 4, 5), [3]), ((2, 3, 4, 5), [0, 1, 2, 3]),
                                         ((2, 3, 4, 5, 2), [4, 0, 2])])
def test_permute_any_order(shape, order):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    g, feeds = one_layer("Permute", params_of("Permute", dict(order=order)), [x])
    want = permute_oracle(x, order)
    for name, got in run_all(g, feeds).items():
        np.testing.assert_array_equal(got.astype(np.float32), want, err_msg=name)


@pytest.mark.parametrize("fields", [
    dict(num_classes=3, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.45, top_k=0)),
    dict(num_classes=3, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.45), keep_top_k=0),
    dict(num_classes=3, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.0, top_k=5), keep_top_k=3),
])
def test_zero_limits(fields):
    """top_k 0 or keep_top_k 0 leave nothing (Caffe's -1 rows); nms_threshold 0 keeps only
    disjoint boxes."""
    det_check(fields, _random_inputs(3, 2, 20, 3, 1))


@pytest.mark.parametrize("shared", [True, False])
def test_normalize_scale_blob_round_trip(shared, tmp_path):
    """The scale blob keeps Caffe's shape through a caffemodel: [] for channel_shared
    (Blob(vector<int>(0)) in normalize_layer.cpp; Caffe's ShapeEquals refuses [1]), [C]
    otherwise; protogen reads it back and OpenCV computes the same output (OpenCV 4 cannot
    create a 0-d blob: it refuses the Caffe-shaped channel-shared scale, a limit of OpenCV)."""
    from protogen.caffe import pb
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.loader import load_model
    from protogen.caffe.prototxt import to_net_param, to_prototxt
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 5)).astype(np.float32)
    scale = np.asarray(7.5, np.float32) if shared else np.arange(1, 5, dtype=np.float32)
    g, feeds = one_layer("Normalize", params_of("Normalize", dict(across_spatial=False, channel_shared=shared)),
                         [x], blobs=[scale])
    proto, model = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    proto.write_text(to_prototxt(g))
    write_caffemodel(model, to_net_param(g), {l.name: l.blobs for l in g.layers if l.blobs})
    m = pb.NetParameter()
    m.ParseFromString(model.read_bytes())
    (blob,) = [b for l in m.layer for b in l.blobs]
    assert blob.HasField("shape") and list(blob.shape.dim) == ([] if shared else [4])
    back = load_model(proto, model)
    assert np.asarray(back.layers[1].blobs[0]).shape == (() if shared else (4,))
    want = normalize_oracle(x.astype(np.float64), scale.astype(np.float64), False, shared, 1e-10)
    cv2 = pytest.importorskip("cv2")
    if hasattr(cv2.dnn, "readNetFromCaffe"):
        try:
            net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
        except cv2.error as e:
            assert shared and "_sizes in function 'create'" in str(e), e
            return
        net.setInput(x, "in0")
        np.testing.assert_allclose(net.forward(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- OpenCV defects
def _opencv_net(tmp_path, g):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    from protogen.caffe.prototxt import to_prototxt
    proto = tmp_path / "net.prototxt"
    proto.write_text(to_prototxt(g))
    return cv2.dnn.readNetFromCaffe(str(proto))


def test_opencv_prior_box_float_sizes(tmp_path):
    """protogen.opencv_defects 'prior-box-float-sizes': OpenCV's priors for min_size 30.4 /
    max_size 60.8 are those of the untruncated sizes, not Caffe's (30, 60)."""
    from protogen import opencv_defects
    fields = dict(min_size=[30.4], max_size=[60.8], aspect_ratio=[2.0], variance=[0.1, 0.1, 0.2, 0.2])
    ins = [np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 3, 32, 32), np.float32)]
    p = params_of("PriorBox", fields)
    g, feeds = one_layer("PriorBox", p, ins)
    net = _opencv_net(tmp_path, g)
    for k, v in feeds.items():
        net.setInput(v, k)
    got = net.forward()
    caffe = prior_box_oracle(fields, (4, 4), (32, 32))
    assert np.abs(got - caffe).max() > 1e-3                       # OpenCV is not Caffe here

    def untruncated(mn, mx, ar):                                  # the same loop, float sizes
        out = []
        for h in range(4):
            for w in range(4):
                cx, cy = (w + 0.5) * 8, (h + 0.5) * 8
                for bw, bh in ((mn, mn), (math.sqrt(mn * mx),) * 2, (mn * math.sqrt(ar), mn / math.sqrt(ar)),
                               (mn / math.sqrt(ar), mn * math.sqrt(ar))):
                    out += [(cx - bw / 2) / 32, (cy - bh / 2) / 32, (cx + bw / 2) / 32, (cy + bh / 2) / 32]
        return np.array(out)
    np.testing.assert_allclose(got[0, 0], untruncated(30.4, 60.8, 2.0), atol=1e-6)
    d = opencv_defects.find(g.layers[1], [x.shape for x in ins])
    assert d is not None and d.name == "prior-box-float-sizes"
    assert opencv_defects.find(g.layers[1].copy(params=params_of("PriorBox", dict(min_size=[30.0]))), []) is None


def test_opencv_ignores_refinedet_bottoms(tmp_path):
    """protogen.opencv_defects 'detection-output-refinedet': with arm_conf/arm_loc given,
    OpenCV's detections equal the plain 3-bottom ones, not RefineDet's."""
    from protogen import opencv_defects
    loc, conf, prior = _random_inputs(5, 1, 30, 4, 1)
    rng = np.random.default_rng(5)
    arm_conf = rng.uniform(0, 1, (1, 60)).astype(np.float32)
    arm_loc = (rng.standard_normal((1, 120)) * 0.5).astype(np.float32)
    fields = dict(num_classes=4, code_type="CENTER_SIZE", nms_param=dict(nms_threshold=0.45, top_k=20),
                  keep_top_k=12, confidence_threshold=0.05, objectness_score=0.5)
    p = params_of("DetectionOutput", fields)
    g, feeds = one_layer("DetectionOutput", p, [loc, conf, prior, arm_conf, arm_loc])
    net = _opencv_net(tmp_path, g)
    for k, v in feeds.items():
        net.setInput(v, k)
    got = net.forward()
    xs = [x.astype(np.float64) for x in (loc, conf, prior, arm_conf, arm_loc)]
    refinedet = detection_output_oracle(*xs[:3], **p.kwargs(), arm_conf=xs[3], arm_loc=xs[4])
    plain = detection_output_oracle(*xs[:3], **p.kwargs())
    assert count_detections(refinedet) > 0
    assert not compare_detections(got, refinedet, zero_padded=True).ok
    assert compare_detections(got, plain, zero_padded=True).ok
    d = opencv_defects.find(g.layers[1], [x.shape for x in feeds.values()])
    assert d is not None and d.name == "detection-output-refinedet"
