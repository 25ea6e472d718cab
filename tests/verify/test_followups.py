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
