"""DetectionOutput with nms_param.eta < 1 (adaptive NMS) in ONNX: a standard-operator Loop
(protogen.layers.ssd_onnx.adaptive_nms) against a float32 numpy transcription of weiliu89/caffe
src/caffe/util/bbox_util.cpp ApplyNMSFast (GetMaxScoreIndex: score > threshold, stable sort,
top_k; ``float adaptive_threshold`` shrunk by ``*= eta`` after each kept box while > 0.5;
JaccardOverlap of NormalizedBBox), written here; ORT == float64 torch reference == generated
source == the transcription. OpenCV's dnn ignores eta (it gives the fixed-threshold result:
a named defect, protogen.opencv_defects 'detection-output-ignores-eta'), shown here too.

Boxes enter exactly: CORNER coding with variance_encoded_in_target and zero priors decodes a
box to its loc values (tests.layers.test_ssd.corner_inputs).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.detections import compare_detections, count_detections  # noqa: E402
from tests.layers.test_ssd import _opencv_net, corner_inputs, one_layer, params_of, run_all  # noqa: E402

F32 = np.float32
FLT_MAX = F32(3.4028234663852886e38)


def _size(b):
    return F32(0) if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(b1, b2):
    """IntersectBBox + JaccardOverlap (normalized), float32 as the C++ floats."""
    if b2[0] > b1[2] or b2[2] < b1[0] or b2[1] > b1[3] or b2[3] < b1[1]:
        return F32(0)
    iw = min(b1[2], b2[2]) - max(b1[0], b2[0])
    ih = min(b1[3], b2[3]) - max(b1[1], b2[1])
    if iw > 0 and ih > 0:
        s = iw * ih
        return s / (_size(b1) + _size(b2) - s)
    return F32(0)


def apply_nms_fast(boxes, scores, score_thr, nms_thr, eta, top_k):
    """ApplyNMSFast: indices kept, in order."""
    pairs = [(s, j) for j, s in enumerate(scores) if s > score_thr]
    pairs.sort(key=lambda t: -t[0])                      # std::stable_sort, descending
    if -1 < top_k < len(pairs):
        pairs = pairs[:top_k]
    adaptive, kept = F32(nms_thr), []
    for _, idx in pairs:
        keep = True
        for k in kept:
            if not keep:
                break
            keep = bool(_jaccard(boxes[idx], boxes[k]) <= adaptive)
        if keep:
            kept.append(idx)
        if keep and eta < 1 and adaptive > 0.5:
            adaptive = F32(adaptive * F32(eta))
    return kept


def oracle(boxes, scores, num_classes, background_label_id=0, nms_threshold=0.3, eta=1.0, top_k=-1,
           confidence_threshold=None, keep_top_k=-1):
    """Forward_cpu for shared locations on already decoded boxes (n, P, 4), scores (n, P, C)."""
    boxes, scores = np.asarray(boxes, F32), np.asarray(scores, F32)
    thr = -FLT_MAX if confidence_threshold is None else F32(confidence_threshold)
    rows = []
    for i in range(boxes.shape[0]):
        idx = {c: apply_nms_fast(boxes[i], scores[i, :, c], thr, F32(nms_threshold), F32(eta), top_k)
               for c in range(num_classes) if c != background_label_id}
        n_det = sum(len(v) for v in idx.values())
        if -1 < keep_top_k < n_det:
            sp = sorted([(scores[i, j, c], c, j) for c in sorted(idx) for j in idx[c]], key=lambda t: -t[0])
            idx = {}
            for _, c, j in sp[:keep_top_k]:
                idx.setdefault(c, []).append(j)
        for c in sorted(idx):
            rows += [[i, c, scores[i, j, c]] + list(boxes[i, j]) for j in idx[c]]
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(boxes.shape[0])]
    return np.array(rows, np.float64).reshape(1, 1, -1, 7)


def check(boxes, scores, fields, min_count=1, unit_variances=False):
    """Every runtime against the transcription; returns the reference rows. With
    ``unit_variances`` the prior blob carries variances 1 instead of variance_encoded_in_target
    (OpenCV asserts a one-channel prior blob for the latter)."""
    nms = {k: fields.pop(k) for k in ("nms_threshold", "eta", "top_k") if k in fields}
    p = params_of("DetectionOutput", dict(code_type="CORNER", variance_encoded_in_target=not unit_variances,
                                          nms_param=nms, **fields))
    want = oracle(boxes, scores, **{k: v for k, v in p.kwargs().items() if k in (
        "num_classes", "background_label_id", "nms_threshold", "eta", "top_k", "keep_top_k")},
        confidence_threshold=p.confidence_threshold)
    ins = corner_inputs(boxes, scores, len(boxes))
    if unit_variances:
        ins[2][0, 1] = 1.0
    g, feeds = one_layer("DetectionOutput", p, ins)
    for rt, got in run_all(g, feeds).items():
        d = compare_detections(got, want, tol=1e-6)
        assert d.ok, f"{rt}: {d.summary()}"
        np.testing.assert_array_equal(got.reshape(-1, 7)[:, :2], want.reshape(-1, 7)[:, :2], err_msg=rt)
    assert count_detections(want) >= min_count
    return want, g, feeds


# eta 0.9: A kept (threshold 0.7 -> 0.63); B: IoU(A, B) = 0.65 > 0.63, dropped; C disjoint,
# kept (-> 0.567); D: IoU(C, D) = 0.6 > 0.567, dropped; E: IoU(C, E) = 0.55, kept (-> 0.5103);
# F: IoU(C, F) = 0.52 > 0.5103, dropped. Fixed NMS (0.7) keeps A, B, C, D instead (E and F
# overlap D by 0.92 and 0.87).
ADAPTIVE = [[0, 0, 1, 1], [0, 0, 1, 0.65], [2, 2, 3, 3], [2, 2, 3, 2.6], [2, 2, 3, 2.55],
            [2, 2, 3, 2.52]]


def test_the_threshold_shrinks_after_each_kept_box():
    scores = [[[0, s] for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]]
    want, _, _ = check([ADAPTIVE], scores, dict(num_classes=2, nms_threshold=0.7, eta=0.9))
    kept = want.reshape(-1, 7)[:, 2].round(3).tolist()
    assert kept == [0.9, 0.7, 0.5]                               # A, C, E
    fixed = oracle([ADAPTIVE], scores, 2, nms_threshold=0.7, eta=1.0)
    assert fixed.reshape(-1, 7)[:, 2].round(3).tolist() == [0.9, 0.8, 0.7, 0.6]


def test_shrinking_stops_at_one_half_and_ties_keep_enumeration_order():
    # eta 0.5: 0.7 -> 0.35 after A, then no more shrinking (0.35 <= 0.5); equal scores: lower index first
    boxes = [ADAPTIVE + [[0, 0, 1, 1], [2, 2, 3, 2.3]]]
    scores = [[[0, s] for s in (0.9, 0.9, 0.7, 0.7, 0.5, 0.4, 0.9, 0.3)]]
    want, _, _ = check(boxes, scores, dict(num_classes=2, nms_threshold=0.7, eta=0.5))
    assert want.reshape(-1, 7)[:, 2].round(3).tolist() == [0.9, 0.7, 0.3]   # A, C, the 0.3 box


@pytest.mark.parametrize("fields", [
    dict(num_classes=4, nms_threshold=0.8, eta=0.85, top_k=15, confidence_threshold=0.15, keep_top_k=10),
    dict(num_classes=3, background_label_id=-1, nms_threshold=0.6, eta=0.9),
    dict(num_classes=3, nms_threshold=0.9, eta=0.7, keep_top_k=3),
])
def test_random_boxes_two_images(fields):
    rng = np.random.default_rng(11)
    c = rng.uniform(0.2, 0.8, (2, 40, 2))
    wh = rng.uniform(0.1, 0.5, (2, 40, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], -1).astype(F32)
    boxes[1, :3, 2] = boxes[1, :3, 0] - 0.05                 # inverted boxes: size 0, overlap 0
    scores = rng.uniform(0, 1, (2, 40, fields["num_classes"])).astype(F32)
    check(boxes, scores, dict(fields), min_count=3)


def test_no_detection_gives_the_minus_one_rows():
    boxes = [ADAPTIVE, ADAPTIVE]
    scores = np.full((2, 6, 2), 0.1, F32)
    want, _, _ = check(boxes, scores, dict(num_classes=2, nms_threshold=0.7, eta=0.9,
                                           confidence_threshold=0.5), min_count=0)
    assert want.reshape(-1, 7)[:, 1].tolist() == [-1, -1]


def test_onnx_uses_a_loop_of_standard_operators():
    from protogen.onnx_io import export_onnx
    p = params_of("DetectionOutput", dict(num_classes=2, code_type="CORNER",
                                          nms_param=dict(eta=0.9, nms_threshold=0.7)))
    g, _ = one_layer("DetectionOutput", p, corner_inputs([ADAPTIVE], [[[0, 0.5]] * 6]))
    m = export_onnx(g)
    ops = {n.op_type for n in m.graph.node}
    assert "Loop" in ops and "NonMaxSuppression" not in ops
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)


def test_opencv_ignores_eta(tmp_path):
    """OpenCV's DetectionOutput calls its NMS with eta = 1 (modules/dnn/src/layers/
    detection_output_layer.cpp): it gives the fixed-threshold result, a defect that
    protogen.opencv_defects names ('detection-output-ignores-eta') so verify reports it."""
    from protogen import opencv_defects
    scores = [[[0, s] for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]]
    want, g, feeds = check([ADAPTIVE], scores, dict(num_classes=2, nms_threshold=0.7, eta=0.9, keep_top_k=10),
                           unit_variances=True)
    assert want.shape[2] == 3
    net = _opencv_net(tmp_path, g)
    assert "eta: 0.9" in (tmp_path / "net.prototxt").read_text()
    for k, v in feeds.items():
        net.setInput(v, k)
    got = net.forward()
    fixed = oracle([ADAPTIVE], scores, 2, nms_threshold=0.7, eta=1.0, keep_top_k=10)
    assert compare_detections(got, fixed, tol=1e-6, zero_padded=True).ok     # eta ignored
    assert not compare_detections(got, want, tol=1e-6, zero_padded=True).ok
    d = opencv_defects.find(g.layers[1], [x.shape for x in feeds.values()])
    assert d is not None and d.name == "detection-output-ignores-eta"
