"""SSH's Python ProposalLayer (protogen/layers/ssh.py) against a numpy transcription of its
TEST forward written here, through the float64/float32 PyTorch reference, ONNX Runtime and the
generated PyTorch source.

Transcribed sources (mahyarnajibi/SSH): SSH/layers/proposal_layer.py (forward, _filter_boxes;
phase TEST: no NMS, pre_nms_topN = cfg.TEST.N_DETS_PER_MODULE, min_size =
cfg.TEST.ANCHOR_MIN_SIZE), SSH/layers/generate_anchors.py (py-faster-rcnn's, transcribed in
tests/layers/test_rcnn.py), lib/utils/bbox_transform.py (bbox_transform_inv under
np.seterr(over='raise') with its FloatingPointError handler, clip_boxes), and the TEST block of
SSH/configs/default_config.yml (N_DETS_PER_MODULE 1000, ANCHOR_MIN_SIZE 0).
SSH sorts with ``argsort()[::-1]`` (numpy's unstable quicksort), so the order of exactly equal
scores is unspecified there; the transcription sorts stably (lower index first), the order
protogen defines, and the ties case also checks the rows as a set against SSH's literal sort.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.errors import ProtogenError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from tests.layers.test_rcnn import np_generate_anchors  # noqa: E402
from tests.layers.test_yolo import net, run_all  # noqa: E402

F = np.float32
SSH = "Python:SSH.layers.proposal_layer.ProposalLayer"
M1 = "{'feat_stride': 8,'scales': [1,2], 'ratios':[1,]}"      # test_ssh.prototxt's three modules
M2 = "{'feat_stride': 16,'scales': [4,8], 'ratios':[1,]}"
M3 = "{'feat_stride': 32,'scales': [16,32], 'ratios':[1,]}"


from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


# ----------------------------------------------------------------------------- transcription
def np_bbox_transform_inv(boxes, deltas):
    """lib/utils/bbox_transform.py bbox_transform_inv, with the module's np.seterr(over='raise')."""
    with np.errstate(over="raise"):
        boxes = boxes.astype(deltas.dtype, copy=False)
        widths = boxes[:, 2] - boxes[:, 0] + 1.0
        heights = boxes[:, 3] - boxes[:, 1] + 1.0
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        dx, dy, dw, dh = deltas[:, 0::4], deltas[:, 1::4], deltas[:, 2::4], deltas[:, 3::4]
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        try:
            pred_w = np.exp(dw) * widths[:, None]
            pred_h = np.exp(dh) * heights[:, None]
        except FloatingPointError:
            for i in range(dw.shape[0]):
                for j in range(dw.shape[1]):
                    if dw[i][j] > 50:
                        dw[i][j] = 5
                    if dh[i][j] > 50:
                        dh[i][j] = 5
            pred_w = np.exp(dw) * widths[:, None]
            pred_h = np.exp(dh) * heights[:, None]
        out = np.zeros(deltas.shape, deltas.dtype)
        out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
        out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
        out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
        out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


def np_clip_boxes(boxes, im_shape):
    boxes[:, 0::4] = np.maximum(np.minimum(boxes[:, 0::4], im_shape[1] - 1), 0)
    boxes[:, 1::4] = np.maximum(np.minimum(boxes[:, 1::4], im_shape[0] - 1), 0)
    boxes[:, 2::4] = np.maximum(np.minimum(boxes[:, 2::4], im_shape[1] - 1), 0)
    boxes[:, 3::4] = np.maximum(np.minimum(boxes[:, 3::4], im_shape[0] - 1), 0)
    return boxes


def np_ssh_proposal(scores, deltas, im_info, fs, scales, ratios=(1,), base=16, n_dets=1000,
                    min_size=0, literal_sort=False):
    """SSH/layers/proposal_layer.py ProposalLayer.forward, phase TEST."""
    anchors0 = np_generate_anchors(base, ratios, scales)
    a = anchors0.shape[0]
    fg = scores[:, a:, :, :]
    info = im_info[0, :]
    height, width = fg.shape[-2:]
    sx, sy = np.meshgrid(np.arange(0, width) * fs, np.arange(0, height) * fs)
    shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).transpose()
    k = shifts.shape[0]
    anchors = (anchors0.reshape((1, a, 4)) + shifts.reshape((1, k, 4)).transpose((1, 0, 2))).reshape((k * a, 4))
    d = deltas.transpose((0, 2, 3, 1)).reshape((-1, 4)).copy()
    fg = fg.transpose((0, 2, 3, 1)).reshape((-1, 1))
    proposals = np_clip_boxes(np_bbox_transform_inv(anchors, d), info[:2])
    ms = min_size * info[2]
    ws = proposals[:, 2] - proposals[:, 0] + 1
    hs = proposals[:, 3] - proposals[:, 1] + 1
    keep = np.where((ws >= ms) & (hs >= ms))[0]
    proposals, fg = proposals[keep, :], fg[keep]
    order = fg.ravel().argsort()[::-1] if literal_sort else np.argsort(-fg.ravel(), kind="stable")
    if n_dets > 0:
        order = order[:n_dets]
    proposals, fg = proposals[order, :], fg[order]
    if proposals.shape[0] == 0:
        rois = np.array([[0, 0, 0, 16, 16]], dtype=F)
    else:
        rois = np.hstack((np.zeros((proposals.shape[0], 1), F), proposals.astype(F, copy=False)))
    return rois, fg


# ----------------------------------------------------------------------------- inputs
def ssh_inputs(a, hh, ww, seed, im, delta_scale=0.5, ties=False):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((1, 2, a, hh, ww)) * 2
    if ties:
        logits = np.round(logits)          # a few distinct values: many exactly equal scores
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    deltas = (rng.standard_normal((1, 4 * a, hh, ww)) * delta_scale).astype(F)
    return prob.reshape(1, 2 * a, hh, ww).astype(F), deltas, np.asarray([im], F)


def params(param_str, **cfg):
    p = get_type(SSH).Params(module="SSH.layers.proposal_layer", layer="ProposalLayer",
                             param_str=param_str)
    from dataclasses import asdict
    return {**asdict(p), **cfg}


def check(param_str, xs, want_rois, want_scores, **cfg):
    g, names, tops = net(SSH, params(param_str, **cfg), [x.shape for x in xs], n_tops=2)
    for rt, (rois, scores) in run_all(g, names, tops, xs).items():
        assert rois.shape == want_rois.shape, (rt, rois.shape, want_rois.shape)
        assert scores.shape == want_scores.shape, (rt, scores.shape, want_scores.shape)
        np.testing.assert_allclose(rois, want_rois, rtol=1e-6, atol=1e-4, err_msg=rt)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=0, err_msg=rt)
    return g


# ----------------------------------------------------------------------------- tests
def test_anchors_of_the_three_modules():
    from protogen.layers.rcnn import anchors_py
    kind = get_type(SSH)
    for ps, scales in ((M1, (1, 2)), (M2, (4, 8)), (M3, (16, 32))):
        got = kind.anchors(kind.Params(**params(ps)))
        np.testing.assert_array_equal(got, np_generate_anchors(16, (1,), scales))
    # by hand: base box [0, 0, 15, 15], centre 7.5; ratio 1, scale s -> 7.5 -+ 0.5 * (16 s - 1)
    np.testing.assert_array_equal(anchors_py(16, (1,), (1, 2)), [[0, 0, 15, 15], [-8, -8, 23, 23]])
    # 'base_size' (an SSH param_str key py-faster-rcnn's layer lacks)
    p = kind.Params(**params("'feat_stride': 4, 'base_size': 8, 'scales': [2], 'ratios': [1]"))
    np.testing.assert_array_equal(kind.anchors(p), [[-4, -4, 11, 11]])


def test_param_str_and_default_config():
    from protogen.caffe import pb
    kind = get_type(SSH)
    lp = pb.LayerParameter(name="p", type="Python")
    lp.python_param.module, lp.python_param.layer = "SSH.layers.proposal_layer", "ProposalLayer"
    lp.python_param.param_str = M2
    assert get_type("Python").resolve(lp) is kind
    p = kind.parse(lp)
    # SSH/configs/default_config.yml TEST: N_DETS_PER_MODULE 1000, ANCHOR_MIN_SIZE 0
    assert (p.n_dets_per_module, p.anchor_min_size) == (1000, 0)
    assert "N_DETS_PER_MODULE 1000" in kind.note(p) and "ANCHOR_MIN_SIZE 0" in kind.note(p)
    for bad, why in (("'scales': [1]", "needs 'feat_stride'"), ("'feat_stride': 8, 'nms': 0.3", "'nms'"),
                     ("feat_stride: [", "not a dict literal")):
        lp.python_param.param_str = bad
        with pytest.raises(ProtogenError, match=why.replace("[", r"\[")):
            kind.parse(lp)


def test_decode_clip_and_top_n():
    """Module m1's anchors on a 9 x 11 map (198 boxes), the image smaller than the map's
    cover (boxes clipped at both borders), pre-NMS top-N 50 of a user config and the default
    1000 (all 198 kept, no NMS)."""
    xs = ssh_inputs(2, 9, 11, 0, (70, 85, 1.0), delta_scale=0.8)
    want_r, want_s = np_ssh_proposal(*xs, 8, (1, 2), n_dets=50)
    assert want_r.shape == (50, 5) and (want_r[:, 1:] == 0).any() and (want_r[:, 3] == 84).any()
    assert (np.diff(want_s.ravel()) <= 0).all()
    check(M1, xs, want_r, want_s, n_dets_per_module=50)
    want_r, want_s = np_ssh_proposal(*xs, 8, (1, 2))
    assert want_r.shape == (198, 5)
    check(M1, xs, want_r, want_s)


def test_min_size_filter_of_a_user_config():
    """ANCHOR_MIN_SIZE 12 (a user's config), im_info scale 1.5: boxes with a side < 18 dropped."""
    xs = ssh_inputs(2, 6, 7, 1, (50, 58, 1.5), delta_scale=1.0)
    want_r, want_s = np_ssh_proposal(*xs, 8, (1, 2), min_size=12)
    assert 0 < len(want_r) < 6 * 7 * 2
    check(M1, xs, want_r, want_s, anchor_min_size=12.0)


def test_empty_output():
    """Every box dropped: rois is SSH's one row [0, 0, 0, 16, 16], scores [0, 1]."""
    xs = ssh_inputs(2, 4, 5, 2, (40, 44, 1.0))
    want_r, want_s = np_ssh_proposal(*xs, 8, (1, 2), min_size=1000)
    assert want_r.tolist() == [[0, 0, 0, 16, 16]] and want_s.shape == (0, 1)
    check(M1, xs, want_r, want_s, anchor_min_size=1000.0)


@pytest.mark.parametrize("n_dets", [0, 1000, 30])
def test_ties(n_dets):
    """Many exactly equal scores: the stable order (lower (h, w, anchor) index first) in every
    runtime; as a set of rows, the same as SSH's literal argsort()[::-1] where no tie straddles
    the top-N cut (n_dets 0 means all, as in SSH)."""
    xs = ssh_inputs(2, 5, 6, 3, (60, 52, 1.0), ties=True)
    want_r, want_s = np_ssh_proposal(*xs, 8, (1, 2), n_dets=n_dets)
    assert len(np.unique(want_s)) < len(want_s) // 3, "many ties"
    check(M1, xs, want_r, want_s, n_dets_per_module=n_dets)
    lit_r, lit_s = np_ssh_proposal(*xs, 8, (1, 2), n_dets=n_dets, literal_sort=True)
    # rows above the score at the cut are the same set; at the cut SSH's choice among equal
    # scores is unspecified (protogen takes the lower indices)
    cut = want_s.min()
    both = [np.hstack(v)[(v[1] > cut).ravel()] for v in ((want_r, want_s), (lit_r, lit_s))]
    assert len(both[0]) > 10 and (n_dets != 30 or len(both[0]) < 30), "the cut falls inside a tie"
    np.testing.assert_array_equal(*(b[np.lexsort(b.T)] for b in both))
    assert len(lit_s) == len(want_s) and (lit_s == cut).sum() == (want_s == cut).sum()


@pytest.mark.parametrize("case", ["overflow", "large_no_overflow"])
def test_bbox_transform_overflow_rule(case):
    """exp(dw) * width overflowing float32 anywhere makes SSH's handler set every dw and dh
    > 50 to 5 ("overflow"); a dw of 60 alone does not overflow and is decoded as given
    (a huge box, clipped to the image, not an exp(5) wide one)."""
    s, d, im = ssh_inputs(2, 4, 5, 4, (2500, 2600, 1.0))   # room for exp(5) * 32 wide boxes
    d[0, 2, 1, 1] = 60.0                 # anchor 0, dw, cell (1, 1)
    d[0, 7, 2, 3] = 55.0                 # anchor 1, dh, cell (2, 3)
    if case == "overflow":
        d[0, 6, 3, 4] = 95.0             # anchor 1, dw: exp(95) overflows float32
    want_r, want_s = np_ssh_proposal(s, d, im, 8, (1, 2))
    dd = d.copy()
    dd[0, 2, 1, 1] = dd[0, 7, 2, 3] = 5.0
    if case == "overflow":
        dd[0, 6, 3, 4] = 5.0
    replaced = np_ssh_proposal(s, dd, im, 8, (1, 2))[0]
    if case == "overflow":       # the handler ran: every dw/dh > 50 became 5
        np.testing.assert_array_equal(replaced, want_r)
    else:                        # no overflow: the large deltas are used as given
        assert not np.array_equal(replaced, want_r)
    check(M1, [s, d, im], want_r, want_s)


def test_with_test_cfg_sets_every_ssh_layer():
    from protogen.caffe.loader import load_model
    from protogen.layers.ssh import with_test_cfg
    from tests.helpers import CORPUS, needs_corpus  # noqa: F401
    path = CORPUS / "mahyarnajibi_ssh/SSH/models/test_ssh.prototxt"
    if not path.exists():
        pytest.skip("needs ../shared/corpus")
    g = with_test_cfg(load_model(path), n_dets_per_module=300, anchor_min_size=2)
    ps = [l.params for l in g.layers if l.type == SSH]
    assert len(ps) == 3 and all((p.n_dets_per_module, p.anchor_min_size) == (300, 2.0) for p in ps)
    shapes = {s.layer.name: s.out_shapes for s in g.resolve().steps}
    assert shapes["m1@ssh_proposal"][0] == (300, 5)
    said = [n for n in g.notes if "SSH ProposalLayer" in n]
    assert len(said) == 1 and "N_DETS_PER_MODULE 300" in said[0] and "ANCHOR_MIN_SIZE 2" in said[0]
