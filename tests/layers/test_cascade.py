"""Cascade R-CNN's layers (protogen/layers/cascade.py) against numpy transcriptions of the
fork's C++ forwards written here, through the float64/float32 PyTorch reference, ONNX Runtime
and the generated PyTorch source.

Transcribed sources (zhaoweicai/cascade-rcnn):
* BoxGroupOutput: src/caffe/layers/box_group_output_layer.cpp (LayerSetUp, Forward_cpu) and
  src/caffe/util/bbox_util.cpp (DecodeGroupBBoxes, ClipBBox, ApplyNMS, JaccardOverlap, BBoxSize);
* DecodeBBox: src/caffe/layers/decode_bbox_layer.cpp (Forward_cpu, TEST) and bbox_util.cpp
  DecodeBBoxesWithPrior;
* ScaleRoute: src/caffe/layers/scale_route_layer.cpp (Forward_cpu).
Caffe picks the max_nms_num best with std::partial_sort, which is not stable: the order of
exactly equal scores is unspecified there. The transcription sorts stably (descending), the
order protogen defines; the NMS-ties case checks that every runtime follows it.
OpenCV's dnn has none of these layer types, so it is not compared.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.errors import ProtogenError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from tests.layers.test_yolo import assert_rows, net, run_all  # noqa: E402

F = np.float32


from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


# ----------------------------------------------------------------------------- transcriptions
def np_jaccard(a, b, mode="IOU"):
    """bbox_util.cpp JaccardOverlap(BBox, BBox, iou_mode), float32."""
    if a[2] < a[0] or a[3] < a[1] or b[2] < b[0] or b[3] < b[1]:
        return F(0)
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = F(0) if (ix1 > ix2 or iy1 >= iy2) else (ix2 - ix1 + F(1)) * (iy2 - iy1 + F(1))
    s1 = (a[2] - a[0] + F(1)) * (a[3] - a[1] + F(1))
    s2 = (b[2] - b[0] + F(1)) * (b[3] - b[1] + F(1))
    union = min(s1, s2) if mode == "IOMU" else s1 if mode == "IOFU" else s1 + s2 - inter
    return F(0) if union <= 0 else F(inter / union)


def np_apply_nms(boxes, thr, mode="IOU"):
    """bbox_util.cpp ApplyNMS(bboxes, iou_thr, greedy=true, iou_mode): kept indices."""
    kp = [True] * len(boxes)
    for i in range(len(boxes)):
        if not kp[i]:
            continue
        for j in range(i + 1, len(boxes)):
            if kp[j] and np_jaccard(boxes[i], boxes[j], mode) > F(thr):
                kp[j] = False
    return [i for i in range(len(boxes)) if kp[i]]


def np_box_group_output(probs, deltas, groups, fg_thr=0.0, iou_thr=0.5, nms_type="IOU",
                        field_whr=2.0, field_xyr=2.0, max_nms_num=0, max_post_nms_num=0,
                        min_size=15.0, means=(0, 0, 0, 0), stds=(1, 1, 1, 1)):
    """BoxGroupOutputLayer::Forward_cpu: (rois (R, 5, 1, 1), rois with score (R, 6, 1, 1))."""
    means, stds = [F(v) for v in means], [F(v) for v in stds]
    bounds = [F(-1) / F(field_xyr), F(1) / F(field_xyr), F(np.log(F(1) / F(field_whr))),
              F(np.log(F(field_whr)))]
    num = probs[0].shape[0] // len(groups[0][0])
    preds = []
    for d, (fws, fhs, stride) in zip(deltas, groups):             # DecodeGroupBBoxes
        gn, _, h, w = d.shape
        pred = np.zeros_like(d)
        for i in range(gn):
            k = i % len(fws)
            for s in range(h * w):
                hh, ww = s // w, s % w
                v = [d[i, c].flat[s] * stds[c] + means[c] for c in range(4)]
                bbx = min(bounds[1], max(bounds[0], v[0]))
                bby = min(bounds[1], max(bounds[0], v[1]))
                bbw = min(bounds[3], max(bounds[2], v[2]))
                bbh = min(bounds[3], max(bounds[2], v[3]))
                bbx = bbx * F(fws[k]) + (F(ww) + F(0.5)) * F(stride)
                bby = bby * F(fhs[k]) + (F(hh) + F(0.5)) * F(stride)
                bbw, bbh = F(fws[k]) * np.exp(bbw), F(fhs[k]) * np.exp(bbh)
                bbx, bby = bbx - bbw / F(2), bby - bbh / F(2)
                pred[i, 0].flat[s], pred[i, 1].flat[s] = bbx, bby
                pred[i, 2].flat[s], pred[i, 3].flat[s] = bbx + bbw - F(1), bby + bbh - F(1)
        preds.append(pred)
    rows = []
    for i in range(num):
        boxes, scores = [], []
        for p, pred, (fws, _, stride) in zip(probs, preds, groups):
            gn = len(fws)
            _, _, h, w = p.shape
            for k in range(gn):
                for s in range(h * w):
                    fg = F(1) - p[i * gn + k, 0].flat[s]
                    if fg >= F(fg_thr):
                        b = [pred[i * gn + k, c].flat[s] for c in range(4)]
                        b = [max(F(0), b[0]), max(F(0), b[1]), min(F(w * stride), b[2]),
                             min(F(h * stride), b[3])]                               # ClipBBox
                        if b[2] - b[0] + F(1) >= F(min_size) and b[3] - b[1] + F(1) >= F(min_size):
                            boxes.append(b)
                            scores.append(fg)
        if not boxes:
            continue
        order = sorted(range(len(boxes)), key=lambda t: -scores[t])               # stable
        if max_nms_num > 0:
            order = order[:max_nms_num]
        boxes, scores = [boxes[t] for t in order], [scores[t] for t in order]
        keep = np_apply_nms(boxes, iou_thr, nms_type)
        if max_post_nms_num > 0:
            keep = keep[:max_post_nms_num]
        rows += [[i] + boxes[t] + [scores[t]] for t in keep]
    if not rows:
        return (np.asarray([0, 1, 1, 10, 10], F).reshape(1, 5, 1, 1), np.zeros((1, 6, 1, 1), F))
    out = np.asarray(rows, F).reshape(-1, 6, 1, 1)
    return out[:, :5], out


def np_decode_bbox(deltas, rois, means=(0, 0, 0, 0), stds=(1, 1, 1, 1)):
    """DecodeBBoxLayer::Forward_cpu at TEST (DecodeBBoxesWithPrior, class c = 1 of 2)."""
    d, r = deltas.reshape(len(deltas), -1), rois.reshape(len(rois), -1)
    out = np.zeros_like(r)
    for i in range(len(r)):
        pw, ph = r[i, 3] - r[i, 1] + F(1), r[i, 4] - r[i, 2] + F(1)
        cx, cy = F(0.5 * (r[i, 3] + r[i, 1])), F(0.5 * (r[i, 4] + r[i, 2]))
        bx, by, bw, bh = (d[i, 4 + c] * F(stds[c]) + F(means[c]) for c in range(4))
        tx, ty = bx * pw + cx, by * ph + cy
        tw, th = pw * np.exp(bw), ph * np.exp(bh)
        tx, ty = tx - (tw - F(1)) / F(2), ty - (th - F(1)) / F(2)
        out[i] = [r[i, 0], tx, ty, tx + tw - F(1), ty + th - F(1)]
    return out.reshape(rois.shape)


def np_scale_route(bottoms, low=None, high=None):
    """ScaleRouteLayer::Forward_cpu (the selected rows of every bottom)."""
    lo = F(low) if low is not None else F(0)
    hi = F(high) if high is not None else np.finfo(F).max
    mid = (np.sqrt(lo * hi) if low is not None and high is not None else lo if low is not None
           else hi if high is not None else F(256))
    sel, best, best_i = [], np.finfo(F).max, -1
    for i, r in enumerate(bottoms[0].reshape(len(bottoms[0]), -1)):
        size = F(0) if (r[3] < r[1] or r[4] < r[2]) else (r[3] - r[1] + F(1)) * (r[4] - r[2] + F(1))
        scale = np.sqrt(size)
        if lo <= scale < hi:
            sel.append(i)
        with np.errstate(divide="ignore"):
            dist = abs(np.log2(scale / mid))
        if dist < best:
            best, best_i = dist, i
    if not sel:
        assert best_i >= 0, "Caffe's CHECK_GE(min_mid_idx, 0)"
        sel = [best_i]
    return [b[sel] for b in bottoms]


# ----------------------------------------------------------------------------- helpers
def softmax_pairs(rng, shape, scale=2.0):
    logits = rng.standard_normal(shape) * scale
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(F)


def bgo_params(groups, **kw):
    p = dict(box_group_param=tuple((tuple(fw), tuple(fh), s) for fw, fh, s in groups))
    p.update(kw)
    return p


def run_bgo(groups, xs, n_tops=2, **kw):
    g, names, tops = net("BoxGroupOutput", bgo_params(groups, **kw), [x.shape for x in xs], n_tops)
    res = run_all(g, names, tops, xs)
    np_kw = {k: v for k, v in kw.items() if k not in ("bbox_mean", "bbox_std")}
    if kw.get("bbox_mean") and kw.get("bbox_std"):
        np_kw.update(means=kw["bbox_mean"], stds=kw["bbox_std"])
    want = np_box_group_output(xs[0::2], xs[1::2], groups, **np_kw)
    for rt, outs in res.items():
        for t, (got, w) in enumerate(zip(outs, want)):
            assert_rows(got, np.asarray(w, np.float64), f"{rt} top {t}")
    return want


FPN = [([44, 22, 32], [22, 44, 32], 4), ([88, 44, 64], [44, 88, 64], 8)]


# ----------------------------------------------------------------------------- BoxGroupOutput
def test_box_group_output_two_levels_matches_cpp():
    rng = np.random.default_rng(0)
    xs = []
    for (fw, _, s), (h, w) in zip(FPN, [(8, 10), (4, 5)]):
        xs += [softmax_pairs(rng, (len(fw), 2, h, w)), (rng.standard_normal((len(fw), 4, h, w)) * 0.6).astype(F)]
    want = run_bgo(FPN, xs, fg_thr=0.3, iou_thr=0.7, field_whr=8, field_xyr=1, max_nms_num=60,
                   min_size=5, bbox_mean=(0.0, 0.0, 0.0, 0.0), bbox_std=(0.5, 0.5, 0.3, 0.3))
    n = want[0].shape[0]
    assert 5 < n < 60, n          # boxes kept, and NMS removed some of the 60
    assert (want[1][:, 5] >= F(0.3)).all()


def test_box_group_output_batch_of_two_and_iomu():
    rng = np.random.default_rng(1)
    groups = [([32, 16], [16, 32], 8)]
    xs = [softmax_pairs(rng, (4, 2, 5, 6)), (rng.standard_normal((4, 4, 5, 6)) * 0.4).astype(F)]
    want = run_bgo(groups, xs, fg_thr=0.2, iou_thr=0.4, nms_type="IOMU", max_post_nms_num=6, min_size=2)
    ids = want[0][:, 0, 0, 0]
    assert set(ids.tolist()) == {0.0, 1.0} and (np.diff(ids) >= 0).all()
    assert (ids == 0).sum() == 6 and (ids == 1).sum() == 6


def test_box_group_output_clips_to_map_times_stride():
    """ClipBBox takes the bound W * stride (not W * stride - 1) and leaves x1 > W possible."""
    rng = np.random.default_rng(2)
    groups = [([64], [64], 16)]
    prob = softmax_pairs(rng, (1, 2, 3, 4))
    deltas = np.zeros((1, 4, 3, 4), F)
    deltas[0, 0] = 3.0          # x shifted right (bounded to 1 / field_xyr = 0.5 field)
    deltas[0, 2] = -3.0         # narrow (bounded to log(1 / whr))
    deltas[0, 1, 0, 0] = -3.0   # one box above the image
    want = run_bgo(groups, [prob, deltas], iou_thr=0.9, min_size=1, field_whr=4, field_xyr=2)
    rois = want[0][:, :, 0, 0]
    assert (rois[:, 3] == F(4 * 16)).any() and (rois[:, 1:3] >= 0).all()
    assert (rois[:, 4] <= F(3 * 16)).all()


def test_box_group_output_min_size_and_empty():
    """All boxes under min_size, or no objectness above fg_thr: Caffe's fixed row
    [0, 1, 1, 10, 10] and a zero row of 6."""
    rng = np.random.default_rng(3)
    groups = [([8, 6], [6, 8], 4)]
    xs = [softmax_pairs(rng, (2, 2, 3, 3)), np.zeros((2, 4, 3, 3), F)]
    for kw in (dict(min_size=20), dict(fg_thr=1.5, min_size=1)):
        want = run_bgo(groups, xs, **kw)
        np.testing.assert_array_equal(want[0].reshape(-1), [0, 1, 1, 10, 10])
        np.testing.assert_array_equal(want[1].reshape(-1), np.zeros(6))
    # zero-size boxes (w = h = 1 field pixel: x2 - x1 + 1 = 1) pass min_size 1 and are kept
    want = run_bgo([([1], [1], 4)], [xs[0][:1], xs[1][:1]], min_size=1, iou_thr=0.5)
    assert want[0].shape[0] == 9


def test_box_group_output_nms_ties():
    """Equal scores everywhere (one probability map), equal shapes: the NMS result depends on
    the order of ties only — lower candidate index first in every runtime."""
    groups = [([20, 20], [20, 20], 8)]        # two identical groups: duplicate boxes
    prob = np.full((2, 2, 8, 8), 0.5, F)
    deltas = np.zeros((2, 4, 8, 8), F)
    want = run_bgo(groups, [prob, deltas], iou_thr=0.4, min_size=1, field_whr=2, field_xyr=2)
    rois = want[0][:, :, 0, 0]
    assert 1 < len(rois) < 64                       # neighbours (IoU 0.43) and duplicates dropped
    assert rois[0, 1] == 0 and rois[0, 2] == 0      # candidate 0 (row 0, column 0) kept first


def test_box_group_output_params_from_prototxt():
    from protogen.caffe.prototxt import graph_from_net_param, parse_prototxt, to_prototxt
    text = """
    layer { name: "in" type: "Input" top: "p" top: "d"
      input_param { shape { dim: 3 dim: 2 dim: 4 dim: 4 } shape { dim: 3 dim: 4 dim: 4 dim: 4 } } }
    layer { name: "proposals" type: "BoxGroupOutput" bottom: "p" bottom: "d" top: "rois"
      box_group_output_param { fg_thr: 0.005 iou_thr: 0.7 nms_type: "IOU"
        box_group_param { field_w: 176 field_w: 88 field_w: 128 field_h: 88 field_h: 176
                          field_h: 128 stride: 16 }
        field_whr: 8 field_xyr: 1 max_nms_num: 3000 max_post_nms_num: 300 }
      bbox_reg_param { bbox_mean: 0 bbox_mean: 0 bbox_mean: 0 bbox_mean: 0
                       bbox_std: 0.1 bbox_std: 0.1 bbox_std: 0.2 bbox_std: 0.2 }
      propagate_down: 0 propagate_down: 0 }
    """
    g = graph_from_net_param(parse_prototxt(text))
    p = g.layers[-1].params
    assert p.box_group_param == (((176, 88, 128), (88, 176, 128), 16),)
    assert p.min_size == 15 and p.max_post_nms_num == 300 and p.bbox_std[2] == F(0.2)
    assert g.layers[-1].kind.output_shapes(p, [(3, 2, 4, 4), (3, 4, 4, 4)], 1) == [(48, 5, 1, 1)]
    back = graph_from_net_param(parse_prototxt(to_prototxt(g)))
    assert back.layers[-1].params == p
    with pytest.raises(ProtogenError, match="box_group_param"):
        get_type("BoxGroupOutput").validate(get_type("BoxGroupOutput").Params())


# ----------------------------------------------------------------------------- exact NMS
class MiniCtx:
    """Just enough of protogen.onnx_io.OnnxContext to run one lowering helper alone."""
    def __init__(self):
        self.nodes, self.inits, self.n = [], {}, 0

    def tmp(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, hint, value, dtype=np.float32):
        name = self.tmp(hint)
        self.inits[name] = np.asarray(value, dtype)
        return name

    def ints(self, hint, values):
        return self.const(hint, np.asarray(values, np.int64).reshape(-1), np.int64)

    def op(self, op_type, inputs, out=None, *, n_out=1, **attrs):
        from onnx import helper
        outs = [out or self.tmp(op_type)] if n_out == 1 else [self.tmp(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def onnx_nms(boxes, thr, mode):
    from onnx import TensorProto, helper, numpy_helper
    from protogen.layers.cascade_onnx import greedy_nms_exact
    ctx = MiniCtx()
    keep = greedy_nms_exact(ctx, "boxes", thr, mode)
    graph = helper.make_graph(ctx.nodes, "nms", [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info(keep, TensorProto.INT64, [None])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in ctx.inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"boxes": boxes})[0].tolist()


@pytest.mark.parametrize("mode", ["IOU", "IOMU", "IOFU"])
def test_exact_nms_rules(mode):
    """JaccardOverlap's corners: rows touching in one line (iy1 == iy2: no intersection,
    though the +1 sizes would give one), inverted boxes (IoU 0), duplicates, nested boxes."""
    from protogen.layers.cascade_torch import cascade_nms
    boxes = np.asarray([[0, 0, 10, 0.2], [0, 0.2, 10, 0.4], [5, 5, 4, 6], [5, 5, 4, 6],
                        [20, 20, 40, 40], [20, 20, 40, 40], [22, 22, 30, 30], [0, 0.2, 10, 0.4],
                        [50, 50, 60, 70], [55, 50, 66, 70]], F)
    want = np_apply_nms(list(boxes), 0.7, mode)
    assert 1 in want and 2 in want and 3 in want and 5 not in want      # the corner rules bite
    assert cascade_nms(torch.from_numpy(boxes), 0.7, mode).tolist() == want
    assert onnx_nms(boxes, 0.7, mode) == want
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 50, (60, 2))
    many = np.concatenate([xy, xy + rng.uniform(-2, 30, (60, 2))], 1).astype(F)
    want = np_apply_nms(list(many), 0.3, mode)
    assert 3 < len(want) < 60
    assert cascade_nms(torch.from_numpy(many), 0.3, mode).tolist() == want
    assert onnx_nms(many, 0.3, mode) == want
    assert onnx_nms(np.zeros((0, 4), F), 0.3, mode) == []


# ----------------------------------------------------------------------------- DecodeBBox
@pytest.mark.parametrize("shape4", [False, True])
def test_decode_bbox_matches_cpp(shape4):
    rng = np.random.default_rng(5)
    n = 9
    rois = np.zeros((n, 5), F)
    rois[:, 0] = [0, 0, 0, 1, 1, 1, 0, 1, 0]
    rois[:, 1:3] = rng.uniform(-30, 200, (n, 2))
    rois[:, 3:5] = rois[:, 1:3] + rng.uniform(0, 120, (n, 2))
    rois[0, 3:5] = rois[0, 1:3]              # one pixel (w = h = 1)
    rois[1, 3:5] = rois[1, 1:3] - 1          # zero size (w = h = 0)
    rois[2, 3:5] = rois[2, 1:3] - 10         # inverted
    rois[3, 1:] = [-50, -40, 900, 700]       # beyond any image: no clipping
    deltas = (rng.standard_normal((n, 8)) * 1.5).astype(F)
    if shape4:
        rois, deltas = rois.reshape(n, 5, 1, 1), deltas.reshape(n, 8, 1, 1)
    means, stds = (0.0, 0.01, 0.0, -0.02), (0.1, 0.1, 0.2, 0.2)
    g, names, tops = net("DecodeBBox", dict(bbox_mean=means, bbox_std=stds), [deltas.shape, rois.shape])
    want = np_decode_bbox(deltas, rois, means, stds)
    assert want.shape == rois.shape
    for rt, outs in run_all(g, names, tops, [deltas, rois]).items():
        assert_rows(outs[0], want.astype(np.float64), rt)


def test_decode_bbox_needs_8_channels():
    from protogen.errors import ShapeError
    with pytest.raises(ShapeError, match="8 delta channels"):
        get_type("DecodeBBox").shapes(get_type("DecodeBBox").Params(), [(4, 84), (4, 5)])


# ----------------------------------------------------------------------------- ScaleRoute
LEVELS = [dict(high_scale=112), dict(low_scale=112, high_scale=224), dict(low_scale=224, high_scale=448),
          dict(low_scale=448)]


def route(rois, params, extra=()):
    bottoms = [rois, *extra]
    g, names, tops = net("ScaleRoute", params, [b.shape for b in bottoms], len(bottoms))
    want = np_scale_route(bottoms, params.get("low_scale"), params.get("high_scale"))
    for rt, outs in run_all(g, names, tops, bottoms).items():
        for got, w in zip(outs, want):
            assert_rows(got, w.astype(np.float64), f"{rt} {params}")
    return want


def rois_of_sides(sides):
    r = np.zeros((len(sides), 5, 1, 1), F)
    r[:, 1:3, 0, 0] = np.arange(len(sides))[:, None] * 3.0
    r[:, 3:5, 0, 0] = r[:, 1:3, 0, 0] + np.asarray(sides, F).reshape(-1, 1) - 1
    return r


def test_scale_route_partitions_fpn_levels():
    rng = np.random.default_rng(6)
    sides = np.exp(rng.uniform(np.log(20), np.log(900), 40)).astype(F)
    sides[:4] = [111.9, 112, 223.99, 448]     # the bounds: low <= scale < high
    rois = rois_of_sides(sides)
    feats = rng.standard_normal((40, 3)).astype(F)
    parts = [route(rois, lv, (feats,)) for lv in LEVELS]
    got = np.concatenate([p[0] for p in parts])
    assert sorted(got[:, 1, 0, 0].tolist()) == sorted(rois[:, 1, 0, 0].tolist())   # each ROI once
    assert all(len(p[0]) > 0 for p in parts)
    assert parts[1][0][0, 1, 0, 0] == rois[1, 1, 0, 0]        # side 112 is level 3's


def test_scale_route_all_rois_on_one_level():
    """Every ROI on the first level: the others each get the single closest ROI (|log2| to
    mid = sqrt(low * high), or the bound itself); a zero-size ROI is never that one, but it
    is routed to the level without low_scale (scale 0 >= the absent bound 0)."""
    rois = rois_of_sides([30, 40, 50, 60, 70])
    rois[0, 3:5] = rois[0, 1:3] - 2           # inverted: size 0, scale 0
    assert len(route(rois, LEVELS[0])[0]) == 5
    for lv, want in zip(LEVELS[1:], [70, 70, 70]):
        got = route(rois, lv)[0]
        assert len(got) == 1 and got[0, 3, 0, 0] - got[0, 1, 0, 0] + 1 == want
    tied = rois_of_sides([50, 200])           # |log2(50 / 100)| == |log2(200 / 100)|: the first
    got = route(tied, dict(low_scale=100, high_scale=100))[0]
    assert got[0, 3, 0, 0] - got[0, 1, 0, 0] + 1 == 50


def test_scale_route_every_roi_zero_size_is_refused():
    from protogen import verify_runtimes as R
    rois = rois_of_sides([10, 20])
    rois[:, 3:5] = rois[:, 1:3] - 1
    g, names, _ = net("ScaleRoute", dict(low_scale=1), [rois.shape])
    with pytest.raises(ProtogenError, match="zero size"):
        R.run_torch(g, {"in0": rois}, False)


# ----------------------------------------------------------------------------- ROIAlign border
def test_roi_align_border_row():
    """Cascade R-CNN's ROIAlign (roi_align_layer.cpp) on an ROI clipped to the border as
    BoxGroupOutput clips it (y2 = H * stride): its last grid row lies at exactly H - 0.5 in exact
    arithmetic, and the float32 rounding of start + pooled * bin decides whether it is sampled
    or zeroed (hf > H - 0.5). Two ROIs one ulp apart in y1 take different sides; given the same
    float32 ROI every runtime takes the same side (why tests/converter/test_cascade_nets.py
    makes the RPN's proposals bit-identical in all runtimes)."""
    h, scale, pooled = 16, 0.25, 7
    end = F(h / scale) * F(scale) - F(0.5)

    def last_row_sampled(y1):
        start = F(y1) * F(scale) - F(0.5)
        bh = (end - start) / F(pooled)
        return not (start + F(pooled) * bh > F(h) - F(0.5))
    y1 = F(1.1668243)
    for _ in range(200):
        nxt = np.nextafter(y1, F(10))
        if last_row_sampled(y1) != last_row_sampled(nxt):
            break
        y1 = nxt
    else:
        pytest.fail("no flip found")
    x = np.random.default_rng(7).standard_normal((1, 3, h, 24)).astype(F) + 2
    rois = np.asarray([[0, 2, y1, 50, h / scale], [0, 2, nxt, 50, h / scale]], F)
    g, names, tops = net("ROIAlign", dict(pooled_h=pooled, pooled_w=pooled, spatial_scale=scale),
                         [x.shape, rois.shape])
    res = run_all(g, names, tops, [x, rois])
    last = res["torch64"][0][:, :, pooled]
    assert (np.abs(last).max(axis=(1, 2)) == 0).tolist() == [not last_row_sampled(y1), not last_row_sampled(nxt)]
    for rt, outs in res.items():
        assert_rows(outs[0], res["torch64"][0], rt)
