"""The SSH face detector of the shared corpus (mahyarnajibi/SSH SSH/models/test_ssh.prototxt:
VGG-16, three detection modules, each ending in SSH's Python ProposalLayer) converted: ONNX
(standard operators, run by ONNX Runtime), the generated PyTorch source and the float64
PyTorch reference give the same proposals on seeded weights.

The outputs ssh_boxes [R, 5] and ssh_cls_prob [R, 1] (the three modules' proposals, sorted by
score within each module, no NMS: SSH/test.py applies it outside the net) are compared as
detection sets (protogen.detections: the same count, rows paired by score, boxes within
1e-4 of the image size), so that float32 round-off reordering two nearly equal scores is no
difference; the raw head blobs within 1e-4 relative. The seeded head convolutions are scaled
down so that the scores spread over (0, 1) and the boxes stay mostly inside the image (the
plain seeded weights saturate the softmax and blow every box up to the whole image).

OpenCV's dnn cannot run Python layers (its Caffe importer refuses the ProposalLayer: "Can't
create layer ... of type Python"), so it is compared on the head blobs that feed the three
proposal layers (the prototxt without them and the two Concat layers after them).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CORPUS, needs_corpus

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytestmark = needs_corpus

from tests.converter.test_detection_rcnn_yolo import load, rel_err, runtimes, seeded  # noqa: E402
from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)

F = np.float32
REL = "mahyarnajibi_ssh/SSH/models/test_ssh.prototxt"
SSH = "Python:SSH.layers.proposal_layer.ProposalLayer"
H, W = 96, 128
HEADS = [f"m{i}@ssh_{k}_output" for i in (1, 2, 3) for k in ("cls_prob_reshape", "bbox_pred")]


def rows(rois, scores):
    """Proposals as detection rows (image, label 1, score, x1, y1, x2, y2)."""
    r = np.asarray(rois, np.float64).reshape(-1, 5)
    s = np.asarray(scores, np.float64).reshape(-1)
    return np.column_stack([r[:, 0], np.ones(len(r)), s, r[:, 1:]])


def ssh_net():
    from protogen.seed_heads import scale_seeded_heads
    # the head convolutions scaled as protogen's seeded weights do (SSHProposal.seeded_bottom_scales:
    # ssh_cls_score x 0.4, ssh_bbox_pred x 0.12)
    return scale_seeded_heads(load(REL, {"data": (1, 3, H, W), "im_info": (1, 3)}))


def test_ssh_converts_and_agrees():   # ~4 s on an idle machine (VGG-16 at 96 x 128)
    from protogen.detections import compare_detections
    g = ssh_net()
    assert sum(l.type == SSH for l in g.layers) == 3
    feeds = {"data": seeded((1, 3, H, W)), "im_info": np.asarray([[H, W, 1.0]], F)}
    res = runtimes(g, feeds, blobs=HEADS)
    ref = res["reference"]
    # no NMS and ANCHOR_MIN_SIZE 0 (SSH's default TEST config): every anchor of every module
    # is a proposal, m1 (stride 8) 12 x 16 x 2, m2 6 x 8 x 2, m3 3 x 4 x 2
    n = 12 * 16 * 2 + 6 * 8 * 2 + 3 * 4 * 2
    want = rows(ref["ssh_boxes"], ref["ssh_cls_prob"])
    assert len(want) == n > 0, "the seeded weights give proposals"
    s = want[:, 2]
    assert (s > 0.05).sum() > 50 and len(np.unique(s)) > 0.9 * n, "scores spread over (0, 1)"
    inside = (want[:, 3] > 0) & (want[:, 5] < W - 1) & (want[:, 4] > 0) & (want[:, 6] < H - 1)
    assert inside.sum() > n // 4, "boxes inside the image, not all clipped"
    for rt in ("ort", "source"):
        d = compare_detections(rows(res[rt]["ssh_boxes"], res[rt]["ssh_cls_prob"]), want, tol=1e-4)
        assert d.ok, f"{rt}: {d.summary()}"
    for name in HEADS:
        assert rel_err(res["ort"][name], ref[name]) <= 1e-4, name


def test_ssh_heads_in_opencv():   # ~3 s
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    import tempfile
    from pathlib import Path
    from google.protobuf import text_format
    from protogen.caffe import pb
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import parse_prototxt
    from protogen import verify_runtimes as R
    from protogen.verify_runtimes import opencv_exact
    text = (CORPUS / REL).read_text()
    g = ssh_net()
    d = Path(tempfile.mkdtemp())
    # OpenCV refuses the Python layer itself (when the layer is created)
    with pytest.raises(cv2.error, match='of type "Python"'):
        cv2.dnn.readNetFromCaffe(str(CORPUS / REL)).getLayer("m1@ssh_proposal")
    msg = parse_prototxt(text)
    keep = [lp for lp in msg.layer if lp.type != "Python" and lp.name not in ("ssh_cls_prob", "ssh_boxes")]
    del msg.layer[:]
    msg.layer.extend(keep)
    (d / "net.prototxt").write_text(text_format.MessageToString(msg))
    meta = pb.NetParameter()
    for l in g.layers:
        if l.blobs:
            q = meta.layer.add()
            q.name, q.type = l.name, l.type
    write_caffemodel(d / "net.caffemodel", meta, {l.name: [np.asarray(b, F) for b in l.blobs]
                                                   for l in g.layers if l.blobs})
    net = cv2.dnn.readNetFromCaffe(str(d / "net.prototxt"), str(d / "net.caffemodel"))
    opencv_exact(net)
    feeds = {"data": seeded((1, 3, H, W)), "im_info": np.asarray([[H, W, 1.0]], F)}
    net.setInput(feeds["data"], "data")
    # OpenCV names outputs by layer: the producer's name, or (for SSH's convolutions, as this
    # OpenCV lists them) the top's
    names = set(net.getLayerNames())
    producer = {t: lp.name for lp in keep for t in lp.top}
    cv = dict(zip(HEADS, net.forward([producer[t] if producer[t] in names else t for t in HEADS])))
    ref = R.run_torch(g, {k: v.astype(np.float64) for k, v in feeds.items()}, True, double=True)
    for name in HEADS:
        assert rel_err(cv[name], ref[name]) <= 1e-4, name


def test_convert_cli_writes_onnx_and_torch(tmp_path):
    """`protogen convert` on SSH at its own 224 x 224 input: an ONNX file with standard
    operators only and PyTorch source holding the SSH proposal helper."""
    from protogen.convert import convert
    convert(CORPUS / REL, tmp_path / "ssh.onnx")
    convert(CORPUS / REL, tmp_path / "ssh.py")
    import onnx
    m = onnx.load(str(tmp_path / "ssh.onnx"))
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    ops = {n.op_type for n in m.graph.node}
    assert {"TopK", "Compress"} <= ops and "NonMaxSuppression" not in ops   # no NMS at TEST time
    src = (tmp_path / "ssh.py").read_text()
    assert "def ssh_proposal" in src and "def ssh_deltas" in src and "def rpn_boxes" in src
