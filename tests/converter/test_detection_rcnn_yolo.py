"""Two-stage and YOLO detectors of the shared corpus, converted: ONNX (standard operators, run
by ONNX Runtime), PyTorch source (generated module) and the float64 PyTorch reference agree on
seeded weights, and OpenCV's dnn agrees where it implements the layers (run on the original
prototxt with the seeded weights in a caffemodel).

* Fast R-CNN (ROIPooling, ROIs as an input): every runtime including OpenCV, on the outputs.
* Faster R-CNN with the C++ Proposal (PVANet) or py-faster-rcnn's Python ProposalLayer (the
  intel VGG16 deploy): torch == ORT == generated source on rois and the heads. OpenCV's
  Proposal is not Caffe's algorithm (opencv modules/dnn/src/layers/proposal_layer.cpp builds it
  from PriorBox + DetectionOutput: CENTER_SIZE decoding without the +1 widths, no min_size
  filter, SSD NMS), so OpenCV is compared on the RPN head blobs it feeds the Proposal only.
* YOLO v2 (Reorg + YoloDetectionOutput) and v3 (Yolov3DetectionOutput): detection rows equal in
  every runtime (count > 0 asserted: the seeded weights give detections); OpenCV has no
  YOLO detection-output layer, so it is compared on the raw head blobs (the prototxt without
  the detection layer).
* Refused, with the reason checked: none left (SSH converts: tests/converter/test_ssh_net.py;
  cascade R-CNN converts: tests/converter/test_cascade_nets.py).
Inputs are small so that the nets run in seconds to tens of seconds (slow-marked).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CORPUS, needs_corpus

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytestmark = needs_corpus

F = np.float32


from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


def load(rel, shapes: dict):
    """The net with its Input shapes replaced by ``shapes`` and seeded weights."""
    from protogen.caffe.loader import load_model
    from protogen.ir import Graph
    from protogen.layers.io import InputParams
    from protogen.weights import calibrate_batchnorm, init_weights
    g = load_model(CORPUS / rel)
    layers = []
    for l in g.layers:
        if l.type == "Input":
            old = l.kind.output_shapes(l.params, [], len(l.tops))
            l = l.copy(params=InputParams(shape=tuple(tuple(shapes.get(t, s)) for t, s in zip(l.tops, old))))
        layers.append(l)
    g = Graph(g.name, layers)
    init_weights(g, 0)
    if any(l.type == "BatchNorm" for l in g.layers):
        calibrate_batchnorm(g, 0, 1)
    return g


def runtimes(g, feeds, blobs=()):
    """{runtime: {name: array}} for the float64 reference, ONNX Runtime and the generated
    PyTorch source; ``blobs``: intermediate values compared too (reference and ORT)."""
    from protogen import verify_runtimes as R
    from protogen.onnx_io import export_onnx
    from protogen.torch_codegen import SourceContext, graph_to_torch_source, torch_state_dict
    every = bool(blobs)
    ref = R.run_torch(g, {k: v.astype(np.float64) for k, v in feeds.items()}, every, double=True)
    m = export_onnx(g, None, intermediate=every)
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node), "standard ONNX operators only"
    got = R.run_ort(m, feeds, "cpu")
    ctxs: list[SourceContext] = []
    src = graph_to_torch_source(g, "Net", _ctx_out=ctxs)
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)
    mod = ns["Net"]()
    mod.load_state_dict(torch_state_dict(ctxs[0]))
    with torch.no_grad():
        out = mod(*[torch.from_numpy(feeds[n]) for n in mod.input_names])
    out = out if isinstance(out, tuple) else (out,)
    source = {k: v.numpy() for k, v in zip(mod.output_names, out)}
    keep = set(g.outputs()) | set(blobs)
    return {"reference": {k: v for k, v in ref.items() if k in keep},
            "ort": {k: v for k, v in got.items() if k in keep}, "source": source}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) if b.size else 0.0


def assert_agree(res, names, tol=1e-4):
    ref = res["reference"]
    for rt, vals in res.items():
        for n in names:
            if n in vals:
                assert rel_err(vals[n], ref[n]) <= tol, f"{rt} {n}: {rel_err(vals[n], ref[n]):.3g}"


def opencv_net(rel, g, drop_types=()):
    """OpenCV's Caffe importer on the corpus prototxt (without layers of ``drop_types``) and
    the seeded weights written as a caffemodel."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without its Caffe importer")
    import tempfile
    from pathlib import Path
    from google.protobuf import text_format
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import parse_prototxt
    from protogen.verify_runtimes import opencv_exact
    text = (CORPUS / rel).read_text()
    if drop_types:
        msg = parse_prototxt(text)
        keep = [lp for lp in msg.layer if lp.type not in drop_types]
        del msg.layer[:]
        msg.layer.extend(keep)
        text = text_format.MessageToString(msg)
    blobs = {l.name: [np.asarray(b, F) for b in l.blobs] for l in g.layers if l.blobs}
    from protogen.caffe import pb
    meta = pb.NetParameter()
    for l in g.layers:
        if l.blobs:
            q = meta.layer.add()
            q.name, q.type = l.name, l.type
    d = tempfile.mkdtemp()
    p, w = Path(d) / "net.prototxt", Path(d) / "net.caffemodel"
    p.write_text(text)
    write_caffemodel(w, meta, blobs)
    net = cv2.dnn.readNetFromCaffe(str(p), str(w))
    opencv_exact(net)
    return net


def opencv_defect(g) -> list[str]:
    """Documented OpenCV defects (protogen.opencv_defects) that apply to layers of ``g``."""
    from protogen.opencv_defects import find
    return [d.name for st in g.steps() if (d := find(st.layer, st.in_shapes))]


def opencv_run(net, feeds, names):
    for k, v in feeds.items():
        net.setInput(v, k)
    outs = net.forward(list(names))
    return dict(zip(names, outs))


def seeded(shape, seed=0):
    from protogen.weights import seeded_input
    return seeded_input(shape, seed).astype(F)


# ----------------------------------------------------------------------------- Fast R-CNN
FAST_RCNN = ["rbgirshick_fast-rcnn/models/CaffeNet/test.prototxt",
             "rbgirshick_fast-rcnn/models/VGG_CNN_M_1024/compressed/test.prototxt"]


@pytest.mark.slow
@pytest.mark.parametrize("rel", FAST_RCNN)
def test_fast_rcnn_roi_pooling_all_runtimes(rel):
    h, w = 160, 224
    rois = np.asarray([[0, 10, 12, 120, 90], [0, 0, 0, w - 1, h - 1], [0, 150, 100, 150, 100],
                       [0, -30, -20, 60, 70], [0, 200, 140, 400, 300], [0, 40.5, 24.5, 88, 56]], F)
    g = load(rel, {"data": (1, 3, h, w), "rois": rois.shape})
    feeds = {"data": seeded((1, 3, h, w)), "rois": rois}
    res = runtimes(g, feeds)
    assert res["reference"]["cls_prob"].shape[0] == len(rois)
    assert_agree(res, ["cls_prob", "bbox_pred"])
    if opencv_defect(g):
        return   # e.g. VGG_CNN_M_1024's LRN k: 2, which OpenCV ignores (protogen.opencv_defects)
    cv = opencv_run(opencv_net(rel, g), feeds, ["cls_prob", "bbox_pred"])
    for n in ("cls_prob", "bbox_pred"):
        assert rel_err(cv[n].reshape(res["reference"][n].shape), res["reference"][n]) <= 1e-4, n


# ----------------------------------------------------------------------------- Faster R-CNN
@pytest.mark.slow
def test_pvanet_cpp_proposal():
    rel = "sanghoon_pva-faster-rcnn/models/pvanet_obsolete/comp/test.pt"
    h, w = 192, 256
    g = load(rel, {"data": (1, 3, h, w), "im_info": (1, 6)})
    feeds = {"data": seeded((1, 3, h, w)), "im_info": np.asarray([[h, w, 1, 1, 1, 1]], F)}
    res = runtimes(g, feeds, blobs=("rois", "scores", "rpn_cls_score", "rpn_bbox_pred"))
    r = res["reference"]["rois"]
    assert 0 < r.shape[0] <= 200 and r.shape == res["ort"]["rois"].shape
    assert_agree(res, ["rois", "scores", "cls_prob", "bbox_pred", "rpn_cls_score", "rpn_bbox_pred"])
    # the raw RPN head (the seeded weights saturate the softmax after it, where a 1e-7
    # difference of two logits of size ~100 is already visible)
    cv = opencv_run(opencv_net(rel, g), feeds, ["rpn_cls_score", "rpn_bbox_pred"])
    for n in ("rpn_cls_score", "rpn_bbox_pred"):
        assert rel_err(cv[n], res["reference"][n]) <= 1e-4, n


@pytest.mark.slow
def test_faster_rcnn_python_proposal():
    rel = "bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/faster-rcnn/deploy.prototxt"
    h, w = 96, 128
    g = load(rel, {"data": (1, 3, h, w), "im_info": (1, 3)})
    kinds = {l.type for l in g.layers}
    assert "Python:rpn.proposal_layer.ProposalLayer" in kinds and "ROIPooling" in kinds
    feeds = {"data": seeded((1, 3, h, w)), "im_info": np.asarray([[h, w, 1.0]], F)}
    res = runtimes(g, feeds, blobs=("rois",))
    r = res["reference"]["rois"]
    assert 0 < r.shape[0] <= 300
    assert_agree(res, ["rois", "cls_prob", "bbox_pred"])


# ----------------------------------------------------------------------------- YOLO
def _detections(res, out):
    rows = res["reference"][out]
    assert rows.shape[2] > 0 and (rows[0, 0, :, 1] > 0).all(), "the seeded weights give detections"
    for rt in ("ort", "source"):
        assert res[rt][out].shape == rows.shape, (rt, res[rt][out].shape, rows.shape)
        np.testing.assert_array_equal(res[rt][out][0, 0, :, 1], rows[0, 0, :, 1])   # labels
    assert_agree(res, [out])
    return rows


@pytest.mark.slow
def test_yolo_v2_darknet19():
    rel = "eric612_mobilenet-yolo/models/darknet/darknet19_deploy.prototxt"
    g = load(rel, {"data": (1, 3, 96, 96)})
    feeds = {"data": seeded((1, 3, 96, 96))}
    res = runtimes(g, feeds, blobs=("conv23_indoor", "reorg1"))
    _detections(res, "detection_out")
    assert_agree(res, ["conv23_indoor", "reorg1"])
    net = opencv_net(rel, g, drop_types=("YoloDetectionOutput",))
    cv = opencv_run(net, feeds, ["reorg1", "conv23_indoor"])
    for n in ("reorg1", "conv23_indoor"):
        assert rel_err(cv[n], res["reference"][n]) <= 1e-4, n


def test_yolo_v3_mobilenet_lite():   # ~4 s
    rel = "eric612_mobilenet-yolo/models/yolov3/mobilenet_yolov3_lite_deploy.prototxt"
    g = load(rel, {"data": (1, 3, 160, 160)})
    feeds = {"data": seeded((1, 3, 160, 160))}
    res = runtimes(g, feeds, blobs=("conv20", "conv21"))
    _detections(res, "detection_out")
    assert_agree(res, ["conv20", "conv21"])


@pytest.mark.slow
def test_yolo_v3_spp():
    rel = "eric612_mobilenet-yolo/models/darknet_yolov3/yolov3-spp.prototxt"
    g = load(rel, {"data": (1, 3, 96, 96)})
    feeds = {"data": seeded((1, 3, 96, 96))}
    res = runtimes(g, feeds)
    _detections(res, "layer114-yolo")


# ----------------------------------------------------------------------------- refused
REFUSED = {
}


@pytest.mark.parametrize("rel", sorted(REFUSED))
def test_refused_with_reason(rel):
    from protogen.caffe.loader import load_model
    from protogen.errors import UnsupportedError
    with pytest.raises(UnsupportedError) as e:
        load_model(CORPUS / rel)
    assert REFUSED[rel] in str(e.value)


def test_convert_cli_writes_onnx_and_torch(tmp_path):
    """`protogen convert` on a detector: ONNX and PyTorch source files appear (the small
    YOLO v3 lite net at its own 320x320 input)."""
    from protogen.convert import convert
    rel = "eric612_mobilenet-yolo/models/yolov3/mobilenet_yolov3_lite_deploy.prototxt"
    convert(CORPUS / rel, tmp_path / "y.onnx")
    convert(CORPUS / rel, tmp_path / "y.py")
    import onnx
    m = onnx.load(str(tmp_path / "y.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert {"NonMaxSuppression", "TopK"} <= ops
    assert "def yolo3_detect" in (tmp_path / "y.py").read_text()
