"""`protogen verify` on the SSH face detector (corpus mahyarnajibi_ssh test_ssh.prototxt) passes
honestly, and the pieces that make it (protogen.verify_sets, protogen.seed_heads) can fail.

SSH's outputs ssh_boxes [R, 5] / ssh_cls_prob [R, 1] are a Concat (axis 0) of its three
Python ProposalLayers' rows, each sorted by score: verify compares them as sets (rows paired
by score, boxes within tolerance, same count) instead of element by element, runs batch 1
because the layer takes one image (and says so), judges input sensitivity on a second seeded
input, and seeds the head convolutions scaled down (SSHProposal.seeded_bottom_scales) so that
the scores are not saturated. Expected values below are built by hand (rows, swaps, shifts),
not taken from the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import CORPUS, needs_corpus

REL = "mahyarnajibi_ssh/SSH/models/test_ssh.prototxt"
H, W = 64, 64


def ssh_graph(h=H, w=W):
    """The SSH net as loaded, its Input shapes set to a quick size (no weights: verify seeds)."""
    from protogen.caffe.loader import load_model
    from protogen.ir import Graph
    from protogen.layers.io import InputParams
    g = load_model(CORPUS / REL)
    shapes = {"data": (1, 3, h, w), "im_info": (1, 3)}
    layers = [l.copy(params=InputParams(shape=tuple(shapes[t] for t in l.tops))) if l.type == "Input" else l
              for l in g.layers]
    return Graph(g.name, layers)


# ----------------------------------------------------------------------------- the whole net
@pytest.mark.slow
@needs_corpus
def test_verify_ssh_passes_as_sets():   # ~10 s (torch import, VGG-16 at 64 x 64: two float64 runs)
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from protogen.verify import MIN_SENSITIVITY, verify
    rep = verify(ssh_graph(), seed=0, batch=2, opencv=False, model_name="ssh")
    assert rep.ok, rep.format_table()
    # batch lowered to the layer's one image, said in the reference row
    assert rep.batch == 1 and rep.inputs["data"] == (1, 3, H, W)
    ref_note = next(r.note for r in rep.runtimes if r.name == "torch")
    assert "batch 1, not 2" in ref_note and "ssh_proposal" in ref_note, ref_note
    # both outputs compared as one set of proposal rows, by both float32 runtimes
    n = 8 * 8 * 2 + 4 * 4 * 2 + 2 * 2 * 2             # every anchor of the three modules
    for rt in ("torch-cpu", "ort-cpu"):
        cs = {c.blob: c for c in rep.comparisons if c.runtime == rt}
        assert set(cs) == {"ssh_boxes", "ssh_cls_prob"}
        assert f"{n} proposal rows match as a set" in cs["ssh_boxes"].note
        assert "paired with 'ssh_cls_prob'" in cs["ssh_boxes"].note
        assert "paired with 'ssh_boxes'" in cs["ssh_cls_prob"].note
    # health judged on a second input (axis 0 is rows, not batch items); scores not saturated
    hs = {h.blob: h for h in rep.health}
    for name in ("ssh_boxes", "ssh_cls_prob"):
        assert hs[name].ok and hs[name].sensitivity is not None
        assert hs[name].sensitivity >= MIN_SENSITIVITY
    assert hs["ssh_cls_prob"].max < 0.9999 and hs["ssh_cls_prob"].spread > 0.5


@needs_corpus
def test_ssh_seeded_heads_scaled():
    """seeded_weights scales exactly SSH's six head layers (the ones feeding the proposal
    layers' scores and deltas) by 0.4 / 0.12, nothing else."""
    from protogen.weights import init_weights, seeded_weights
    plain, scaled = ssh_graph(), ssh_graph()
    init_weights(plain, 0)
    seeded_weights(scaled, 0)
    want = {f"m{i}@ssh_cls_score": 0.4 for i in (1, 2, 3)} | {f"m{i}@ssh_bbox_pred": 0.12 for i in (1, 2, 3)}
    b0 = {l.name: l.blobs for l in plain.layers if l.blobs}
    for l in scaled.layers:
        if not l.blobs:
            continue
        f = np.float32(want.get(l.name, 1.0))
        for a, b in zip(b0[l.name], l.blobs):
            np.testing.assert_array_equal(b, (np.asarray(a, np.float32) * f).astype(np.float32), err_msg=l.name)


@needs_corpus
def test_set_values_of_ssh():
    from protogen import verify_sets as VS
    sets = VS.set_values(ssh_graph().resolve())
    assert sets["ssh_boxes"].kind == VS.ROIS and sets["ssh_cls_prob"].kind == VS.SCORES
    assert len(sets["ssh_boxes"].sources) == 3
    assert VS.partner(sets, "ssh_boxes") == "ssh_cls_prob"
    assert VS.partner(sets, "m1@ssh_boxes") == "m1@ssh_cls_prob"


def test_fixed_batch_of_ssh_graph():
    from protogen import verify_sets as VS
    from protogen.layers.ssh import SSHProposal
    assert SSHProposal.max_batch == 1
    if not (CORPUS / REL).exists():
        pytest.skip("needs the corpus")
    g = ssh_graph()
    assert VS.fixed_batch(g, 1) == (1, "")
    b, note = VS.fixed_batch(g, 4)
    assert b == 1 and "not 4" in note


# ----------------------------------------------------------------------------- set comparison
def _sets():
    from protogen.verify_sets import ROIS, SCORES, SetValue
    return {"boxes": SetValue(ROIS, (3, 5)), "prob": SetValue(SCORES, (3, 5))}


def _proposals():
    # two near-equal scores (0.70000 / 0.70001): float32 vs float64 can order them either way
    boxes = np.array([[0, 10, 10, 50, 60], [0, 20, 5, 80, 40], [0, 30, 30, 90, 90], [0, 0, 0, 16, 16]], np.float64)
    prob = np.array([[0.9], [0.70001], [0.70000], [0.2]])
    return boxes, prob


def test_set_compare_ignores_the_order_of_near_equal_scores():
    from protogen.verify import compare
    from protogen.verify_sets import compare as set_compare
    boxes, prob = _proposals()
    ref = {"boxes": boxes, "prob": prob}
    got = {"boxes": boxes[[0, 2, 1, 3]] + [0, 1e-4, 0, 0, 0], "prob": prob[[0, 2, 1, 3]]}
    assert compare(ref["boxes"], got["boxes"])[1] > 0.1      # element by element: "differs"
    for v in ("boxes", "prob"):
        mabs, mrel, ok, note = set_compare(_sets(), v, ref, got, 1e-4)
        assert ok, note
        assert mabs == pytest.approx(1e-4, rel=1e-6) and mrel == pytest.approx(1e-4 / 90, rel=1e-6)
        assert "4 proposal rows match as a set" in note


def test_set_compare_fails_on_real_differences():
    from protogen.verify_sets import compare as set_compare
    boxes, prob = _proposals()
    ref = {"boxes": boxes, "prob": prob}
    shifted = boxes.copy()
    shifted[2, 3] += 1.0                                      # a box off by one pixel (tol 9e-3 here)
    ok = set_compare(_sets(), "boxes", ref, {"boxes": shifted, "prob": prob}, 1e-4)
    assert not ok[2] and "box differs" in ok[3]
    score = prob.copy()
    score[0] = 0.8                                            # a score off by 0.1
    assert not set_compare(_sets(), "prob", ref, {"boxes": boxes, "prob": score}, 1e-4)[2]
    fewer = set_compare(_sets(), "boxes", ref, {"boxes": boxes[:3], "prob": prob[:3]}, 1e-4)
    assert not fewer[2] and math.isnan(fewer[1]) and "3 detections, expected 4" in fewer[3]
    # the same box paired with another box's score is not the same row
    swapped = {"boxes": boxes, "prob": prob[[1, 0, 2, 3]]}
    assert not set_compare(_sets(), "boxes", ref, swapped, 1e-4)[2]


def test_set_compare_without_a_partner():
    from protogen.verify_sets import ROIS, SCORES, SetValue
    from protogen.verify_sets import compare as set_compare
    boxes, prob = _proposals()
    only_boxes = {"boxes": SetValue(ROIS, (1,))}
    mabs, _, ok, note = set_compare(only_boxes, "boxes", {"boxes": boxes}, {"boxes": boxes[::-1]}, 1e-4)
    assert ok and mabs == 0 and "by box alone" in note
    only_prob = {"prob": SetValue(SCORES, (1,))}
    assert set_compare(only_prob, "prob", {"prob": prob}, {"prob": prob[::-1]}, 1e-4)[2]
    worse = prob[::-1].copy()
    worse[0] += 1e-3
    assert not set_compare(only_prob, "prob", {"prob": prob}, {"prob": worse}, 1e-4)[2]


def test_health_on_a_second_input():
    from protogen.verify import health
    a = np.linspace(0.1, 0.9, 20).reshape(10, 2)
    same = health("x", a, a.copy())
    assert not same.ok and "a second input changes it by 0" in same.note
    assert health("x", a, a + 0.01).ok
    assert health("x", a, a[:5]).sensitivity == math.inf      # the row count changed
