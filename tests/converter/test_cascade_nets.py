"""Cascade R-CNN's corpus nets (zhaoweicai/cascade-rcnn examples) converted: ONNX (standard
operators only, run by ONNX Runtime), PyTorch source (the generated module) and the float64
PyTorch reference agree on seeded weights.

* res50-9s-600-rfcn-cascade (VOC): BoxGroupOutput -> PSROIPooling -> DecodeBBox, three stages;
* res50-15s-800-fpn-cascade (COCO): four BoxGroupOutput levels, ScaleRoute to the FPN levels,
  ROIAlign, DecodeBBox, three stages.

Seeded weights: the detection heads (the RPN's cls/bbox convolutions, the R-FCN/FPN cls and
bbox heads) are re-seeded with a scale measured on the input so that their outputs are
moderate (deltas of std ~0.3, logits of std ~2; the RPN's background logits raised by
``BG_BIAS`` so that a small share of anchors pass fg_thr). Otherwise the plain seeded net
gives deltas of ~500, every box the whole image or exp() overflowing, and Caffe itself would
stop in ScaleRoute (every ROI of zero size). The tests assert that proposals are not empty
(count > 0) and not Caffe's "no box" dummy row.

RPN_DELTAS: the RPN's box head gives constant deltas (zero weights, seeded dx/dy biases,
dw = dh = 0), so that every runtime computes bit-identical proposals. Cascade R-CNN's ROIAlign
(roi_align_layer.cpp) samples its last grid row at exactly size - 0.5 for an ROI that
BoxGroupOutput clipped to the image border (y2 = H * stride), and whether that row is sampled
or zeroed (``hf > height - 0.5``) is decided by the float32 rounding of start + pooled * bin,
i.e. by the last bit of the ROI's other corner: proposals that differ by round-off (ORT's
float32 convolutions against the float64 reference) take different sides and differ by a
whole row of features. This is Caffe's own discontinuity, not a conversion error; it is shown
in tests/layers/test_cascade.py (test_roi_align_border_row).

OpenCV's dnn implements none of BoxGroupOutput, DecodeBBox, ScaleRoute (it refuses the
prototxt), so it is not compared. Inputs are small; both nets take tens of seconds (slow).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.converter.test_detection_rcnn_yolo import assert_agree, load, runtimes, seeded
from tests.helpers import CORPUS, needs_corpus

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytestmark = needs_corpus

from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)

RFCN = "zhaoweicai_cascade-rcnn/examples/voc/res50-9s-600-rfcn-cascade/deploy.prototxt"
FPN = "zhaoweicai_cascade-rcnn/examples/coco/res50-15s-800-fpn-cascade/deploy.prototxt"
HEADS = re.compile(r"^(rpn\w*_(cls|bbox)|rfcn_(cls|bbox)\w*|(cls|bbox)_pred\w*)$")
BG_BIAS = 6.5


def tame_heads(g, feeds):
    """Re-seed the head layers (see the module docstring). A first reference pass with zero
    box deltas measures the rms of each head's input."""
    from protogen import verify_runtimes as R
    heads = [l for l in g.layers if l.blobs and HEADS.match(l.name)]
    assert heads
    for l in heads:
        if "bbox" in l.name:
            l.blobs = [np.zeros_like(b) for b in l.blobs]
    ref = R.run_torch(g, {k: v.astype(np.float64) for k, v in feeds.items()}, True, double=True)
    rng = np.random.default_rng(0)
    for l in heads:
        x = ref[l.bottoms[0]]
        rms = float(np.sqrt(np.mean(np.square(x))))
        w = l.blobs[0]
        std = 0.3 if "bbox" in l.name else 2.0
        bias = np.zeros(w.shape[0], np.float32)
        scale = std / (np.sqrt(w[0].size) * rms)
        if l.name.startswith("rpn") and "cls" in l.name:
            bias[0::2] = BG_BIAS            # (bg, fg) channel pairs: mostly background
        if l.name.startswith("rpn") and "bbox" in l.name:
            # constant deltas (dx, dy per anchor; dw = dh = 0): see RPN_DELTAS
            scale = 0.0
            bias.reshape(-1, 4)[:, :2] = rng.uniform(-0.4, 0.4, (w.shape[0] // 4, 2))
        l.blobs = [(rng.standard_normal(w.shape) * scale).astype(np.float32), bias][:len(l.blobs)]


def check(rel, h, w, rois, stages):
    from protogen.caffe.loader import load_model
    assert {"BoxGroupOutput", "DecodeBBox"} <= {l.type for l in load_model(CORPUS / rel).layers}
    g = load(rel, {"data": (1, 3, h, w)})
    feeds = {"data": seeded((1, 3, h, w))}
    tame_heads(g, feeds)
    res = runtimes(g, feeds, blobs=tuple(rois))
    ref = res["reference"]
    first = ref[rois[0]].reshape(-1, 5)
    assert first.shape[0] > 1, "the seeded weights give proposals"
    assert not np.array_equal(first[0], [0, 1, 1, 10, 10]), "not Caffe's no-box row"
    assert (first[:, 3] >= first[:, 1]).all() and (first[:, 1:3] >= 0).all()
    for rt in ("ort", "source"):
        for n in stages:
            assert res[rt][n].shape == ref[n].shape, (rt, n, res[rt][n].shape, ref[n].shape)
    assert_agree(res, list(rois) + list(stages))
    return res


@pytest.mark.slow
def test_rfcn_cascade():
    res = check(RFCN, 96, 128, ["proposals", "proposals_2nd", "proposals_3rd"],
                ["output_bbox_1st", "output_bbox_2nd", "output_bbox_3rd", "cls_prob_1st",
                 "cls_prob_2nd_avg", "cls_prob_3rd_avg"])
    n = res["reference"]["proposals"].shape[0]
    assert n <= 300 and res["reference"]["output_bbox_3rd"].shape == (n, 5, 1, 1)


@pytest.mark.slow
def test_fpn_cascade():
    res = check(FPN, 64, 96, ["proposals", "proposals_to_all", "proposals_to_all_2nd",
                              "proposals_to_fpn2", "proposals_to_fpn5"],
                ["output_bbox_1st", "output_bbox_2nd", "output_bbox_3rd", "cls_prob_1st",
                 "cls_prob_2nd_avg", "cls_prob_3rd_avg"])
    ref = res["reference"]
    # ScaleRoute re-orders the ROIs by level: each proposal once, plus the single closest ROI
    # for each level no ROI falls in (Caffe's fallback)
    a = {tuple(r) for r in ref["proposals"].reshape(-1, 5).tolist()}
    b = [tuple(r) for r in ref["proposals_to_all"].reshape(-1, 5).tolist()]
    assert set(b) == a and len(b) - len(a) <= 3


@pytest.mark.slow
def test_converts_to_onnx_and_torch_source(tmp_path):   # ~20 s
    """`protogen convert` writes both forms of the two nets (at their own input sizes)."""
    import onnx
    from protogen.convert import convert
    for rel, name in ((RFCN, "rfcn"), (FPN, "fpn")):
        convert(CORPUS / rel, tmp_path / f"{name}.onnx")
        convert(CORPUS / rel, tmp_path / f"{name}.py")
        m = onnx.load(str(tmp_path / f"{name}.onnx"), load_external_data=False)
        ops = {n.op_type for n in m.graph.node}
        assert {"Loop", "TopK", "Compress"} <= ops and all(n.domain in ("", "ai.onnx") for n in m.graph.node)
        src = (tmp_path / f"{name}.py").read_text()
        assert "def box_group_output" in src and "def decode_bbox" in src
        assert ("def scale_route" in src) == (name == "fpn")


@pytest.mark.parametrize("rel", [RFCN, FPN])
def test_opencv_cannot_read_the_nets(rel):
    """Why OpenCV is not compared (1): its Caffe importer cannot read the cascade parameter
    messages, which its caffe.proto lacks."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    with pytest.raises(cv2.error):
        cv2.dnn.readNetFromCaffe(str(CORPUS / rel))


@pytest.mark.parametrize("kind,shapes", [("BoxGroupOutput", [(3, 2, 4, 4), (3, 4, 4, 4)]),
                                         ("DecodeBBox", [(4, 8), (4, 5)]), ("ScaleRoute", [(4, 5)])])
def test_opencv_has_no_cascade_layer_types(kind, shapes, tmp_path):
    """Why OpenCV is not compared (2): without their parameters, it has none of the types
    (its importer creates layers on the first forward)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    names = [f"in{i}" for i in range(len(shapes))]
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    tops = " ".join('top: "%s"' % n for n in names)
    bottoms = " ".join('bottom: "%s"' % n for n in names)
    text = (f'layer {{ name: "in" type: "Input" {tops} input_param {{ {dims} }} }}\n'
            f'layer {{ name: "x" type: "{kind}" {bottoms} top: "out" }}\n')
    (tmp_path / "net.prototxt").write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "net.prototxt"))
    for n, s in zip(names, shapes):
        net.setInput(np.ones(s, np.float32), n)
    with pytest.raises(cv2.error, match=kind):
        net.forward("out")
