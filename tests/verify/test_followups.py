"""Follow-up fixes to verify: OpenCV's reused buffers with --blobs all, detector-aware
seeded inputs."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from protogen import verify as V  # noqa: E402
from protogen import verify_runtimes as R  # noqa: E402
from protogen import zoo  # noqa: E402
from protogen.cli import main  # noqa: E402
from tests.helpers import CORPUS, needs_corpus  # noqa: E402

needs_opencv_caffe = pytest.mark.skipif(not V.opencv_has_caffe(), reason="needs OpenCV 4.x (Caffe importer)")


# ----------------------------------------------------------------------------- 1. reused buffers
@pytest.mark.slow
@needs_opencv_caffe
def test_shufflenet_v2_blobs_all_passes(capsys):
    # OpenCV hands back a reused buffer for the second top of each unit's Slice: before the
    # fix, --blobs all failed on 13 'stageN/unitK/split_1' blobs
    rc = main(["verify", "shufflenet_v2", "--blobs", "all", "--input-size", "64"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "not observable" in out and "split_1" in out


def _corrupting(monkeypatch, blobs):
    real = R.run_opencv_caffe

    def run(*a, **k):
        got = real(*a, **k)
        for b in blobs:
            if b in got:
                got[b] = got[b] * 1.5 + 1.0
        return got
    monkeypatch.setattr(R, "run_opencv_caffe", run)


@needs_opencv_caffe
def test_unreadable_intermediate_not_compared_but_output_still_fails(monkeypatch):
    net = zoo.build("mobilenet_v1", width=0.25, input_size=64)
    # an intermediate OpenCV hands back wrong while the layers reading it are right: what
    # OpenCV exposes is not what it computed with, so it is reported, not compared
    _corrupting(monkeypatch, ["conv1"])
    rep = V.verify(net.graph, blobs="all")
    assert rep.ok, rep.format_table()
    assert rep.unobservable == {"opencv-caffe": ["conv1"]}
    assert not any(c.blob == "conv1" for c in rep.comparisons if c.runtime == "opencv-caffe")
    assert "not observable" in rep.format_table()
    # a net output that differs is never excused
    _corrupting(monkeypatch, ["prob"])
    rep = V.verify(net.graph, blobs="all")
    assert not rep.ok
    assert any(f.startswith("opencv-caffe: 'prob'") for f in rep.failures), rep.failures
    # and torch/ORT are never excused (only OpenCV reuses buffers)
    assert "torch-cpu" not in rep.unobservable and "ort-cpu" not in rep.unobservable


# ----------------------------------------------------------------------------- 3. portable ReLU6
def _caffe_chain_f32(x, steps):
    """numpy float32 transcription of Caffe's ReLU (max(x, 0); BVLC/caffe
    src/caffe/layers/relu_layer.cpp) and Power ((shift + scale * x) ^ power;
    src/caffe/layers/power_layer.cpp) forwards."""
    import numpy as np
    x = np.asarray(x, np.float32)
    for type_, p in steps:
        if type_ == "ReLU":
            x = np.maximum(x, np.float32(0))
        else:
            assert type_ == "Power" and p.power == 1.0
            x = (np.float32(p.shift) + np.float32(p.scale) * x).astype(np.float32)
    return x


def test_clip_chain_is_relu6_to_float32_rounding():
    import numpy as np
    from protogen.layers.act import clip_chain
    steps = clip_chain(0.0, 6.0)
    assert {t for t, _ in steps} <= {"ReLU", "Power"}
    x = np.concatenate([np.linspace(-20, 20, 20001), [0.0, 6.0, -0.0, 1e-30, 5.999999, 6.000001]])
    x = x.astype(np.float32)
    got = _caffe_chain_f32(x, steps)
    want = np.clip(x, 0, 6)                 # relu6, by definition
    # the bounds exactly; within them one rounding of 6 - t (<= ulp(6) / 2)
    assert np.array_equal(got[x <= 0], want[x <= 0]) and np.array_equal(got[x >= 6], want[x >= 6])
    assert np.max(np.abs(got - want)) <= np.spacing(np.float32(6)) / 2
    assert np.array_equal(got[x >= 3], want[x >= 3])     # Sterbenz: 6 - t exact for t in [3, 6]


def test_portable_mobilenet_v2_has_no_relu6_and_opencv_agrees(tmp_path, capsys):
    import numpy as np
    from protogen.dialect import DEFAULT, PORTABLE
    assert main(["emit", "mobilenet_v2", "--dialect", "portable", "--input-size", "64"]) == 0
    text = capsys.readouterr().out
    assert 'type: "ReLU6"' not in text and 'type: "Clip"' not in text
    assert text.count('type: "Power"') >= 2 * 30       # two per ReLU6 of the 35
    if not V.opencv_has_caffe():
        pytest.skip("needs OpenCV 4.x (Caffe importer)")
    net = zoo.build("mobilenet_v2", input_size=64)
    from protogen.weights import seeded_weights
    seeded_weights(net.graph, 0, batch=2)
    g = V.deploy_view(net.graph, 2)
    feeds = V.seeded_inputs(g.resolve().steps, 0)
    out = {}
    for d in (DEFAULT, PORTABLE):
        (tmp_path / d.name).mkdir()
        out[d.name] = R.run_opencv_caffe(g, d, feeds, ["prob"], tmp_path / d.name)["prob"]
    a, b = out["default"], out["portable"]
    assert a.shape == (2, 1000) and np.ptp(a) > 1e-4
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= 1e-5


def test_caffe_ssa_aligns_a_relu6_chain_written_in_place():
    # portable ReLU6 on blob "conv1" is 4 in-place Caffe layers: the IR's conv1@k values
    # still map to the layers that wrote them (the chain's last layer for the ReLU6's value)
    from protogen.caffe.prototxt import to_net_param
    from protogen.dialect import PORTABLE
    from protogen.ir import DEPLOY
    g = V.deploy_view(zoo.build("mobilenet_v2", width=0.35, input_size=64).graph, 1)
    np_ = to_net_param(g, DEPLOY, PORTABLE)
    writers = [lp.name for lp in np_.layer if "conv1" in lp.top]
    assert writers[-4:] == ["conv1/relu6/0", "conv1/relu6/1", "conv1/relu6/2", "conv1/relu6"]
    r = g.resolve()
    ssa = R.caffe_ssa(np_, r)
    for v in r.versions("conv1"):
        assert ssa[v] == (r.producer[v].layer.name, 0), v
    # the chain is in place (OpenCV refuses a second writer of a blob that is not in place)
    assert all(list(lp.bottom) == ["conv1"] for lp in np_.layer if lp.name.startswith("conv1/relu6"))


# ----------------------------------------------------------------------------- 5. detector inputs
FAST_RCNN = "rbgirshick_fast-rcnn/models/CaffeNet/test.prototxt"


@needs_corpus
def test_seeded_inputs_follow_their_role():
    import numpy as np
    from protogen.caffe.loader import load_model
    from protogen.weights import seeded_input
    g = V.deploy_view(load_model(CORPUS / FAST_RCNN), 2)
    feeds = V.seeded_inputs(g.resolve(), 3)
    data, rois = feeds["data"], feeds["rois"]
    # the image stays the plain seeded input (input k drawn with seed + k)
    assert np.array_equal(data, seeded_input(data.shape, 3))
    # rois: [R, 5] (batch index, x1, y1, x2, y2): whole batch indices inside the batch, every
    # image used, boxes of positive size inside the image (ROIPooling declares bottom 1 ROIs)
    n, _, h, w = data.shape
    assert rois.shape == (2, 5)
    assert set(rois[:, 0].tolist()) == set(range(n))
    assert np.all((rois[:, 1] >= 0) & (rois[:, 3] <= w - 1) & (rois[:, 3] - rois[:, 1] >= 0.2 * w - 1))
    assert np.all((rois[:, 2] >= 0) & (rois[:, 4] <= h - 1) & (rois[:, 4] - rois[:, 2] >= 0.2 * h - 1))


def test_im_info_rows_are_height_width_scales():
    import numpy as np
    from protogen.layers import get_type
    rng = np.random.default_rng(0)
    for t, shape, row in (("Proposal", (1, 6), [64, 96, 1, 1, 1, 1]),
                          ("Python:rpn.proposal_layer.ProposalLayer", (2, 3), [64, 96, 1])):
        kind = get_type(t)
        a = kind.seed_input(None, 2, shape, (shape[0], 3, 64, 96), rng)
        assert a.shape == shape and np.array_equal(a, np.tile(np.asarray(row, np.float32), (shape[0], 1)))
        assert kind.seed_input(None, 0, shape, (1, 3, 64, 96), rng) is None   # scores: plain data


@pytest.mark.slow
@needs_corpus
@pytest.mark.parametrize("seed", [1, 2])
def test_fast_rcnn_verify_passes(capsys, seed):
    # before: ROIs drawn standard normal, batch index 2 or -1 for these seeds -> the reference
    # refused them ("batch index ... is outside the batch")
    rc = main(["verify", str(CORPUS / FAST_RCNN), "--seed", str(seed), "--json"])
    import json
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0, rep["failures"]
    assert {h["blob"] for h in rep["health"]} == {"cls_prob", "bbox_pred"}
    assert all(h["ok"] and h["spread"] > 0.1 and h["sensitivity"] > 0.01 for h in rep["health"])
    ran = {r["name"]: r["status"] for r in rep["runtimes"]}
    assert ran["ort-cpu"] == "ran"
