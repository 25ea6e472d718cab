"""Output health: a net whose output is constant by construction (a softmax over one class,
e.g. `--num-classes 1`) is judged by the logits feeding it, which every runtime must then
match; an output that is degenerate for any other reason still fails."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from protogen import verify as V  # noqa: E402
from protogen.cli import main  # noqa: E402
from protogen.dsl import Net  # noqa: E402


def _one_class_net(classes: int = 1):
    n = Net("one_class")
    x = n.input("data", (1, 3, 8, 8))
    y = n.relu(n.conv(x, 8, 3, pad=1))
    n.classifier_outputs(n.fc(n.global_pool(y), classes, name="fc"))
    return n.graph


def test_softmax_over_one_class_is_judged_by_its_logits():
    rep = V.verify(_one_class_net(1), opencv=False)
    assert rep.ok, rep.format_table()
    prob = next(h for h in rep.health if h.blob == "prob")
    assert prob.spread == 0 and "constant by construction" in prob.note and "'fc'" in prob.note
    logits = next(h for h in rep.health if h.blob == "fc")
    assert logits.ok and logits.sensitivity > V.MIN_SENSITIVITY
    # the runtimes are compared on the logits too
    assert {c.blob for c in rep.comparisons if c.runtime == "ort-cpu"} == {"prob", "fc"}


def test_two_classes_need_no_special_case():
    rep = V.verify(_one_class_net(2), opencv=False)
    assert rep.ok and [h.blob for h in rep.health] == ["prob"], rep.format_table()


def test_a_dead_output_is_still_degenerate():
    # zero classifier weights: the softmax is uniform for every input, but the Softmax layer
    # itself does depend on its input, so nothing excuses it
    from protogen.weights import init_weights
    g = _one_class_net(3)
    init_weights(g, 0)
    for l in g.layers:
        if l.name == "fc":
            l.blobs = [np.zeros_like(b) for b in l.blobs]
    rep = V.verify(g, weights_loaded=True, opencv=False)
    assert not rep.ok and any("degenerate" in f for f in rep.failures), rep.format_table()


def test_cli_num_classes_1(capsys):
    rc = main(["verify", "mobilenet_v1", "--width", "0.25", "--input-size", "64",
               "--num-classes", "1", "--no-opencv"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "constant by construction" in out and "PASS" in out


def test_no_opencv_onnx_row_where_it_cannot_run():
    # issue 13: the always-skipped opencv-onnx row; with OpenCV 4 (the pinned one) it is not shown
    from protogen import verify_runtimes as R
    rep = V.verify(_one_class_net(3), opencv=True)
    names = [r.name for r in rep.runtimes]
    assert ("opencv-onnx" in names) == R.opencv_can_run_onnx(), names
    if R.opencv_version() is not None and R.opencv_version()[0] < 5:
        assert "opencv-caffe" in names and "opencv-onnx" not in rep.format_table()
