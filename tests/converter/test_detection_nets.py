"""SSD-family detectors of the shared corpus, end to end (engineer F1's part of issue 10).

Each net is loaded from its original prototxt, converted to ONNX (standard operators only)
and to PyTorch source, and run on seeded weights by the float64 PyTorch reference, ONNX
Runtime, the generated PyTorch module and OpenCV's dnn reading the ORIGINAL prototxt with
a caffemodel holding the same seeded weights. The seeded weights of the confidence heads
(convolutions named ``*conf*``) are multiplied by a factor so that the softmax is peaked
and detections exist: every case asserts that the reference found boxes. Detections are
compared as sets (protogen.detections: same count, image, label, score and box within 1e-4);
the raw head blobs (loc, conf, priors: the DetectionOutput's bottoms) within 1e-4 relative.

Also a real trained detector with its real weights (the Ultra-Light face detector) on a real
photograph shipped with an installed package.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CORPUS, needs_corpus, rel_err

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.detections import compare_detections, count_detections  # noqa: E402

pytestmark = needs_corpus
HAS_CAFFE_IMPORTER = hasattr(cv2.dnn, "readNetFromCaffe")


def seeded(g, seed: int, conf_gain: float):
    from protogen.weights import init_weights
    init_weights(g, seed)
    for l in g.layers:
        if l.blobs and l.type == "Convolution" and "conf" in l.name:
            l.blobs = [np.asarray(b, np.float32) * np.float32(conf_gain) for b in l.blobs]
    return g


def detection_layers(g):
    return [st for st in g.steps() if getattr(st.layer.kind, "is_detection_output", False)]


def run_reference(g, feeds):
    from protogen.torch_ref import TorchNet
    net = TorchNet.from_graph(g).double()
    with torch.no_grad():
        out = net({k: torch.from_numpy(v.astype(np.float64)) for k, v in feeds.items()}, all_blobs=True)
    return {k: v.numpy() for k, v in out.items()}


def run_onnx(g, feeds, wanted):
    from protogen.onnx_io import export_onnx
    m = export_onnx(g, intermediate=True)
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}, "non-standard ONNX operators"
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = [n for n in wanted if n in names]
    return dict(zip(want, sess.run(want, feeds)))


def run_source(g, feeds, output):
    from protogen.torch_codegen import graph_to_torch_source, torch_state_dict
    ctxs = []
    src = graph_to_torch_source(g, "Detector", _ctx_out=ctxs)
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)
    mod = ns["Detector"]()
    mod.load_state_dict(torch_state_dict(ctxs[0]))
    with torch.no_grad():
        out = mod(*[torch.from_numpy(feeds[n]) for n in mod.input_names])
    out = out if isinstance(out, tuple) else (out,)
    return dict(zip(mod.output_names, (o.numpy() for o in out)))[output]


def run_opencv(prototxt, g, feeds, wanted, tmp_path):
    """OpenCV dnn on the original prototxt + a caffemodel of the graph's weights."""
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import to_net_param
    model = tmp_path / "seeded.caffemodel"
    write_caffemodel(model, to_net_param(g), {l.name: l.blobs for l in g.layers if l.blobs})
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    for k, v in feeds.items():
        net.setInput(v, k)
    return dict(zip(wanted, net.forward(wanted)))


#: OpenCV's DetectionOutput (modules/dnn/src/layers/detection_output_layer.cpp, forward)
#: reads only loc, conf and priors: RefineDet's arm_conf/arm_loc bottoms are ignored, so its
#: detections are not RefineDet's; for those nets OpenCV checks the head blobs only
OPENCV_NO_REFINEDET = "OpenCV's DetectionOutput ignores RefineDet's arm_conf/arm_loc bottoms"


#: Caffe's PriorBox truncates min_size/max_size to int (prior_box_layer.cpp: ``int min_size_ =
#: min_sizes_[s]``); OpenCV's PriorBoxLayer keeps them as floats. For a net with non-integer
#: sizes (Pelee-SSD: 30.4, 60.8, ...) OpenCV's priors, hence its boxes, are not Caffe's: there
#: OpenCV is checked on loc and conf only, and its priors are asserted to differ
OPENCV_FLOAT_SIZES = "OpenCV's PriorBox does not truncate min_size/max_size to int as Caffe does"


def non_integer_prior_sizes(g) -> bool:
    return any(l.type == "PriorBox" and any(v != int(v) for v in l.params.min_size + l.params.max_size)
               for l in g.layers)


def check_detector(rel, shape, conf_gain, tmp_path, seed=0, opencv=True):
    path = CORPUS / rel
    if not path.exists():
        pytest.skip("file missing from this corpus copy")
    g = seeded(load_model(path, input_shape=shape), seed, conf_gain)
    (det,) = detection_layers(g)
    heads = [v for v in det.inputs]
    out = det.outputs[0]
    inp = next(st for st in g.steps() if st.layer.kind.is_input)
    feeds = {inp.layer.tops[0]: np.random.default_rng(seed).standard_normal(inp.out_shapes[0]).astype(np.float32)}
    ref = run_reference(g, feeds)
    n = count_detections(ref[out])
    assert n > 0, "the seeded weights must give detections (raise conf_gain)"
    # not saturated: equal scores of 1.0 would leave the choice among ties to rounding
    assert ref[out].reshape(-1, 7)[:, 2].max() < 0.9995, "saturated scores (lower conf_gain)"
    results = {"onnxruntime": run_onnx(g, feeds, heads + [out])}
    results["torch_source"] = {out: run_source(g, feeds, out)}
    if opencv and HAS_CAFFE_IMPORTER:
        results["opencv"] = run_opencv(path, g, feeds, list(det.layer.bottoms) + [det.layer.tops[0]], tmp_path)
    refinedet = len(det.inputs) > 3
    float_sizes = non_integer_prior_sizes(g)
    prior = det.inputs[2]
    for runtime, got in results.items():
        if runtime == "opencv" and (refinedet or float_sizes):  # OPENCV_NO_REFINEDET / OPENCV_FLOAT_SIZES
            assert not compare_detections(got[out], ref[out], tol=1e-4, zero_padded=True).ok
            if float_sizes:
                assert rel_err(got.pop(prior).reshape(-1), ref[prior].reshape(-1)) > 1e-4
        else:
            # OpenCV pre-sizes its output to keep_top_k rows per image, unused rows all zero
            d = compare_detections(got[out], ref[out], tol=1e-4, zero_padded=runtime == "opencv")
            assert d.ok, f"{runtime}: {d.summary()}"
        for h in heads:
            if h in got:
                e = rel_err(got[h].reshape(-1), ref[h].reshape(-1))
                assert e <= 1e-4, f"{runtime} {h}: {e:.3g}"
    assert "opencv" not in results or all(h in results["opencv"] for h in det.layer.bottoms if h != prior)
    return ref[out], n


SMALL = [
    # (corpus file, input shape, conf gain)
    ("chuanqi305_mobilenet-ssd/voc/MobileNetSSD_deploy.prototxt", (2, 3, 96, 96), 3.0),
    ("chuanqi305_mobilenet-ssd/deploy.prototxt", (1, 3, 96, 96), 3.0),
    ("sfzhang15_sfd/models/VGGNet/WIDER_FACE/SFD/deploy.prototxt", (1, 3, 64, 64), 0.5),
    # RefineDet: 5-bottom DetectionOutput (arm_conf, arm_loc, objectness_score)
    ("mkchoi-0323_modified_refinedet/deploys/vgg16_320x320/deploy_1000.prototxt", (1, 3, 64, 64), 3.0),
]
SLOW = [
    ("xzgz_caffe-ssd/models/VGGNet/VOC0712/SSD_300x300/deploy.prototxt", None, 0.3),
    ("bvlc_caffe/branch_intel/models/intel_optimized_models/benchmark/ssd/deploy.prototxt", None, 0.3),
    ("eric612_mobilenet-yolo/models/pelee/VOC0712/SSD_304x304/deploy.prototxt", None, 3.0),
    ("mkchoi-0323_modified_refinedet/deploys/seresnext50_320x320/deploy_1000.prototxt", (1, 3, 128, 128), 0.5),
]


@pytest.mark.parametrize("rel,shape,gain", SMALL, ids=[r.split("/")[0] + "/" + r.split("/")[-1] for r, _, _ in SMALL])
def test_ssd_net_all_runtimes_agree(rel, shape, gain, tmp_path):
    check_detector(rel, shape, gain, tmp_path)


@pytest.mark.skipif(not HAS_CAFFE_IMPORTER, reason="OpenCV without its Caffe importer")
def test_emitted_prototxt_runs_in_opencv(tmp_path):
    """protogen's own Caffe form of the SSD layers (what verify hands OpenCV): OpenCV needs
    share_location, background_label_id, code_type, keep_top_k written and reads an omitted
    PriorBox clip as true; the detections equal the reference's."""
    from protogen.caffe.prototxt import to_prototxt
    rel = "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_deploy.prototxt"
    if not (CORPUS / rel).exists():
        pytest.skip("file missing from this corpus copy")
    g = seeded(load_model(CORPUS / rel, input_shape=(1, 3, 96, 96)), 0, 3.0)
    emitted = tmp_path / "emitted.prototxt"
    emitted.write_text(to_prototxt(g))
    x = np.random.default_rng(4).standard_normal((1, 3, 96, 96)).astype(np.float32)
    ref = run_reference(g, {"data": x})["detection_out"]
    got = run_opencv(emitted, g, {"data": x}, ["detection_out"], tmp_path)["detection_out"]
    assert count_detections(ref) > 0
    d = compare_detections(got, ref, zero_padded=True)
    assert d.ok, d.summary()


def test_one_onnx_model_for_every_input_size():
    """The priors are computed in the graph when H/W are dynamic: one exported MobileNet-SSD
    runs at two input sizes, each equal to the reference built for that size."""
    from protogen.onnx_io import export_onnx, load_check
    rel = "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_deploy.prototxt"
    if not (CORPUS / rel).exists():
        pytest.skip("file missing from this corpus copy")
    m = export_onnx(seeded(load_model(CORPUS / rel, input_shape=(1, 3, 96, 96)), 0, 3.0))
    load_check(m)
    assert [d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim] == ["N", "", "H", "W"]
    assert [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [1, 1, "N", 7]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for hw in [(96, 96), (128, 160)]:
        x = np.random.default_rng(1).standard_normal((2, 3) + hw).astype(np.float32)
        ref = run_reference(seeded(load_model(CORPUS / rel, input_shape=(2, 3) + hw), 0, 3.0), {"data": x})
        assert count_detections(ref["detection_out"]) > 0
        d = compare_detections(sess.run(["detection_out"], {"data": x})[0], ref["detection_out"])
        assert d.ok, f"{hw}: {d.summary()}"


#: nets whose OpenCV run differs before the detection head, for a reason outside it: OpenCV's
#: Caffe importer builds Axpy as Scale(bottom[2], bottom[0]) + bottom[1], i.e. a*Y + X, where
#: the SENet fork's Axpy computes top = bottom[0] * bottom[1] + bottom[2] (a*X + Y); measured
#: at RefineDet SE-ResNeXt's first Axpy (conv2_1): OpenCV == a*Y + X to 9e-7, reference ==
#: a*X + Y exactly
OPENCV_WRONG = {
    "mkchoi-0323_modified_refinedet/deploys/seresnext50_320x320/deploy_1000.prototxt":
        "OpenCV's Axpy computes a*bottom[2] + bottom[1]",
}


@pytest.mark.slow
@pytest.mark.parametrize("rel,shape,gain", SLOW, ids=[r.split("/")[0] for r, _, _ in SLOW])
def test_ssd_net_all_runtimes_agree_full_size(rel, shape, gain, tmp_path):
    check_detector(rel, shape, gain, tmp_path, opencv=rel not in OPENCV_WRONG)


# ----------------------------------------------------------------------------- a real detector
# The Ultra-Light face detector (Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB, its
# caffe/model RFB-320 and Slim-320 with their trained weights) ends in raw regressions
# ("boxes", (1, 4420, 4)) and class probabilities ("scores", (1, 4420, 2)); its repository
# decodes them in Python (caffe/ultra_face_opencvdnn_inference.py). The decoding below follows
# that script: priors from strides 8/16/32/64 and min boxes per level, centre/size variances
# 0.1/0.2, score > 0.7, greedy NMS at IoU 0.3 over the 200 best candidates.
FACE_MIN_BOXES = [[10.0, 16.0, 24.0], [32.0, 48.0], [64.0, 96.0], [128.0, 192.0, 256.0]]
FACE_STRIDES = [8.0, 16.0, 32.0, 64.0]


def face_priors(w: int, h: int) -> np.ndarray:
    import math
    priors = []
    for k, stride in enumerate(FACE_STRIDES):
        fw, fh = int(math.ceil(w / stride)), int(math.ceil(h / stride))
        for j in range(fh):
            for i in range(fw):
                for m in FACE_MIN_BOXES[k]:
                    priors.append([(i + 0.5) / (w / stride), (j + 0.5) / (h / stride), m / w, m / h])
    return np.clip(np.array(priors), 0.0, 1.0)


def face_decode(boxes, scores, priors, threshold=0.7, iou=0.3, candidates=200):
    loc = np.asarray(boxes, np.float64).reshape(-1, 4)
    conf = np.asarray(scores, np.float64).reshape(-1, 2)[:, 1]
    c = loc[:, :2] * 0.1 * priors[:, 2:] + priors[:, :2]
    s = np.exp(loc[:, 2:] * 0.2) * priors[:, 2:]
    corners = np.concatenate([c - s / 2, c + s / 2], 1)
    keep = np.nonzero(conf > threshold)[0]
    order = keep[np.argsort(conf[keep], kind="stable")][-candidates:]
    picked = []
    while len(order):
        best = order[-1]
        picked.append(best)
        order = order[:-1]
        lt = np.maximum(corners[order, :2], corners[best, :2])
        rb = np.minimum(corners[order, 2:], corners[best, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), 1)
        area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), -1)  # noqa: E731
        order = order[inter / (area(corners[order]) + area(corners[best]) - inter + 1e-5) <= iou]
    return corners[picked], conf[picked]


def real_photo():
    """A real photograph shipped with an installed package: matplotlib's sample image of
    Grace Hopper (a portrait, 600x512, JPEG)."""
    mpl_cbook = pytest.importorskip("matplotlib.cbook")
    path = mpl_cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.imread(str(path))
    if img is None:
        pytest.skip("matplotlib's sample image could not be read")
    return img


@pytest.mark.parametrize("name", ["RFB-320", "slim-320"])
def test_real_face_detector_same_faces_in_every_runtime(name, tmp_path):
    proto = CORPUS / "linzaer_ultra-light-face" / f"{name}.prototxt"
    model = CORPUS / "linzaer_ultra-light-face" / f"{name}.caffemodel"
    if not (proto.exists() and model.exists()):
        pytest.skip("file missing from this corpus copy")
    g = load_model(proto, model)
    img = real_photo()
    rgb = cv2.cvtColor(cv2.resize(img, (320, 240)), cv2.COLOR_BGR2RGB).astype(np.float32)
    x = ((rgb - 127.0) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
    feeds = {"input": x}
    ref = run_reference(g, feeds)
    outs = {"onnxruntime": run_onnx(g, feeds, ["boxes", "scores"])}
    src_boxes = run_source(g, feeds, "boxes")
    outs["torch_source"] = {"boxes": src_boxes, "scores": run_source(g, feeds, "scores")}
    if HAS_CAFFE_IMPORTER:      # OpenCV on the original files, on the same input tensor
        # (the repository's script passes mean=127 to blobFromImage, which OpenCV reads as
        # Scalar(127, 0, 0): only the first channel is centred; the net was trained on
        # (x - 127) / 128 for every channel, which is what every runtime gets here)
        net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
        if hasattr(net, "enableWinograd"):
            net.enableWinograd(False)
        net.setInput(x)
        outs["opencv"] = dict(zip(["boxes", "scores"], net.forward(["boxes", "scores"])))
    priors = face_priors(320, 240)
    want_boxes, want_scores = face_decode(ref["boxes"], ref["scores"], priors)
    assert len(want_boxes) >= 1, "the detector finds the face in the photograph"
    # the face is in the upper middle of the portrait
    cx, cy = (want_boxes[0, 0] + want_boxes[0, 2]) / 2, (want_boxes[0, 1] + want_boxes[0, 3]) / 2
    assert 0.3 < cx < 0.7 and 0.1 < cy < 0.6, want_boxes[0]
    for runtime, got in outs.items():
        for k in ("boxes", "scores"):
            e = rel_err(np.reshape(got[k], -1), ref[k].reshape(-1))
            assert e <= 1e-4, f"{runtime} {k}: {e:.3g}"
        b, s = face_decode(got["boxes"], got["scores"], priors)
        assert len(b) == len(want_boxes), runtime
        np.testing.assert_allclose(b, want_boxes, atol=1e-4, err_msg=runtime)
        np.testing.assert_allclose(s, want_scores, atol=1e-4, err_msg=runtime)


def test_verify_compares_detections_as_sets():
    """protogen verify on MobileNet-SSD: detection_out (a type with is_detection_output) is
    compared as detections in every runtime, OpenCV's zero-padded output included."""
    from protogen.verify import verify
    rel = "chuanqi305_mobilenet-ssd/voc/MobileNetSSD_deploy.prototxt"
    if not (CORPUS / rel).exists():
        pytest.skip("file missing from this corpus copy")
    rep = verify(load_model(CORPUS / rel, input_shape=(1, 3, 96, 96)), seed=0, batch=2, model_name=rel)
    assert rep.ok, rep.format_table()
    det = [c for c in rep.comparisons if c.blob == "detection_out"]
    want = {"ort-cpu"} | ({"opencv-caffe"} if HAS_CAFFE_IMPORTER else set())
    assert want <= {c.runtime for c in det}
    assert all(c.ok and "detections match" in c.note and "weak" not in c.note for c in det), det
