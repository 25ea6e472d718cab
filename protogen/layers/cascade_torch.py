"""PyTorch forwards of cascade R-CNN's proposal and routing layers (the reference executor
runs them; the generated PyTorch source pastes them, so they use only torch).

Semantics: zhaoweicai/cascade-rcnn (Caffe fork) — src/caffe/layers/box_group_output_layer.cpp
(Forward_cpu), decode_bbox_layer.cpp (Forward_cpu, TEST phase), scale_route_layer.cpp
(Forward_cpu) and the helpers they call in src/caffe/util/bbox_util.cpp (DecodeGroupBBoxes,
DecodeBBoxesWithPrior, ClipBBox, BBoxSize, JaccardOverlap, ApplyNMS). Caffe computes in float32
(``Dtype`` float, ``BBox`` fields float): so do these functions, whatever the input dtype;
they return the input's dtype.
"""
from __future__ import annotations

import inspect


def cascade_iou(boxes, mode: str):
    """bbox_util.cpp JaccardOverlap(BBox, BBox, iou_mode) of every pair of rows of ``boxes``
    (float32 [K, 4] x1, y1, x2, y2), as a [K, K] matrix (row: the kept box): 0 when either box
    is inverted (x2 < x1 or y2 < y1); the intersection is 0 when ix1 > ix2 or iy1 >= iy2 (the
    y test is >=, as written there), else (ix2 - ix1 + 1) * (iy2 - iy1 + 1); sizes (x2 - x1 +
    1) * (y2 - y1 + 1); the union is s_i + s_j - inter ("IOU"), min(s_i, s_j) ("IOMU") or s_i
    ("IOFU"); 0 when it is <= 0."""
    a, b = boxes[:, None, :], boxes[None, :, :]
    zero = torch.zeros((), dtype=torch.float32)
    inv = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    bad = inv[:, None] | inv[None, :]
    ix1, iy1 = torch.maximum(a[..., 0], b[..., 0]), torch.maximum(a[..., 1], b[..., 1])
    ix2, iy2 = torch.minimum(a[..., 2], b[..., 2]), torch.minimum(a[..., 3], b[..., 3])
    inter = torch.where((ix1 > ix2) | (iy1 >= iy2), zero, (ix2 - ix1 + 1) * (iy2 - iy1 + 1))
    size = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    si, sj = size[:, None].expand_as(inter), size[None, :].expand_as(inter)
    if mode == "IOMU":
        union = torch.minimum(si, sj)
    elif mode == "IOFU":
        union = si
    else:
        union = si + sj - inter
    bad = bad | (union <= 0)
    return torch.where(bad, zero, inter / torch.where(bad, torch.ones_like(union), union))


def cascade_nms(boxes, thr: float, mode: str):
    """bbox_util.cpp ApplyNMS(bboxes, iou_thr, greedy=true, iou_mode): boxes in their given
    (score) order; box j is dropped when IoU(i, j) > thr for a kept i < j. Returns kept rows."""
    k = boxes.shape[0]
    drop = (cascade_iou(boxes, mode) > thr) & torch.ones((k, k), dtype=torch.bool).triu(1)
    keep = torch.ones(k, dtype=torch.bool)
    for i in range(k):
        if keep[i]:
            keep &= ~drop[i]
    return torch.nonzero(keep).reshape(-1)


def box_group_output(probs, deltas, fields, strides, means, stds, xyr: float, whr: float,
                     fg_thr: float, iou_thr: float, nms_type: str, max_nms: int, max_post: int,
                     min_size: float):
    """BoxGroupOutputLayer::Forward_cpu. Bottom pair j: probs (N * G_j, C, H, W), whose
    channel 0 is the background probability (objectness 1 - p), and deltas (N * G_j, 4, H, W);
    group k of pair j has a receptive field fields[j] = (field_w, field_h) and the pair a
    stride. DecodeGroupBBoxes: delta * std + mean, x/y bounded to [-1/xyr, 1/xyr], w/h to
    [log(1/whr), log(whr)]; centre delta * field + (cell + 0.5) * stride, size field * exp;
    x1 = cx - w / 2, x2 = x1 + w - 1. Per image: candidates with objectness >= fg_thr in
    (pair, group, row, column) order, ClipBBox to [0, W * stride] x [0, H * stride] (x1, y1
    raised to 0, x2, y2 lowered to the map size times stride; not to size - 1), kept when
    x2 - x1 + 1 >= min_size and y2 - y1 + 1 >= min_size; the max_nms_num best by score
    (std::partial_sort, not stable: equal scores are taken lower index first here), greedy NMS
    (ApplyNMS), then the first max_post_nms_num (0: no limit). Rows [image, x1, y1, x2, y2]
    (+ score: the second top, (R, 6, 1, 1)) as (R, 5, 1, 1); no box at all in the batch gives the fixed
    row [0, 1, 1, 10, 10] (and a zero row of 6)."""
    f32 = torch.float32
    mean = torch.tensor(means, dtype=f32)
    std = torch.tensor(stds, dtype=f32)
    one = torch.ones((), dtype=f32)
    lo_xy, hi_xy = -one / torch.tensor(xyr, dtype=f32), one / torch.tensor(xyr, dtype=f32)
    lo_wh = torch.log(one / torch.tensor(whr, dtype=f32))
    hi_wh = torch.log(torch.tensor(whr, dtype=f32))
    num = probs[0].shape[0] // len(fields[0][0])
    rows = []
    for i in range(num):
        boxes, scores = [], []
        for p, d, (fw, fh), stride in zip(probs, deltas, fields, strides):
            g = len(fw)
            _, _, h, w = d.shape
            fg = 1 - p[i * g:(i + 1) * g, 0].to(f32)                                   # G, H, W
            dd = d[i * g:(i + 1) * g].to(f32)
            v = [dd[:, c] * std[c] + mean[c] for c in range(4)]
            bx, by = torch.clamp(v[0], lo_xy, hi_xy), torch.clamp(v[1], lo_xy, hi_xy)
            bw, bh = torch.clamp(v[2], lo_wh, hi_wh), torch.clamp(v[3], lo_wh, hi_wh)
            ws = torch.tensor([float(a) for a in fw], dtype=f32).reshape(-1, 1, 1)
            hs = torch.tensor([float(a) for a in fh], dtype=f32).reshape(-1, 1, 1)
            s = torch.tensor(float(stride), dtype=f32)
            cx = ((torch.arange(w, dtype=f32) + 0.5) * s).reshape(1, 1, w)
            cy = ((torch.arange(h, dtype=f32) + 0.5) * s).reshape(1, h, 1)
            bx, by = bx * ws + cx, by * hs + cy
            bw, bh = ws * torch.exp(bw), hs * torch.exp(bh)
            x1, y1 = bx - bw / 2, by - bh / 2
            x2, y2 = x1 + bw - 1, y1 + bh - 1
            zero = torch.zeros((), dtype=f32)
            x1, y1 = torch.maximum(zero, x1), torch.maximum(zero, y1)
            x2 = torch.minimum(torch.tensor(float(w * stride), dtype=f32), x2)
            y2 = torch.minimum(torch.tensor(float(h * stride), dtype=f32), y2)
            ok = (fg >= fg_thr) & (x2 - x1 + 1 >= min_size) & (y2 - y1 + 1 >= min_size)
            boxes.append(torch.stack([x1, y1, x2, y2], -1)[ok])
            scores.append(fg[ok])
        b, sc = torch.cat(boxes), torch.cat(scores)
        order = torch.sort(sc, descending=True, stable=True).indices
        if max_nms > 0:
            order = order[:max_nms]
        b, sc = b[order], sc[order]
        keep = cascade_nms(b, iou_thr, nms_type)
        if max_post > 0:
            keep = keep[:max_post]
        b, sc = b[keep], sc[keep]
        rows.append(torch.cat([torch.full_like(sc[:, None], float(i)), b, sc[:, None]], 1))
    out = torch.cat(rows)
    if out.shape[0] == 0:
        out = torch.tensor([[0.0, 1.0, 1.0, 10.0, 10.0, 0.0]], dtype=f32)
        zeros = torch.zeros((1, 6, 1, 1), dtype=probs[0].dtype)
        return out[:, :5].reshape(1, 5, 1, 1).to(probs[0].dtype), zeros
    out = out.reshape(-1, 6, 1, 1).to(probs[0].dtype)
    return out[:, :5], out


def decode_bbox(deltas, rois, means, stds):
    """DecodeBBoxLayer::Forward_cpu at TEST (DecodeBBoxesWithPrior, class-agnostic deltas of 8
    channels: the second group of 4 is used): w = x2 - x1 + 1, cx = (x1 + x2) / 2; delta * std
    + mean; cx' = dx * w + cx, w' = w * exp(dw), x1' = cx' - (w' - 1) / 2, x2' = x1' + w' - 1;
    no clipping; the batch index is copied; the output has the ROIs' shape."""
    f32 = torch.float32
    r = rois.to(f32).reshape(rois.shape[0], -1)
    d = deltas.to(f32).reshape(deltas.shape[0], -1)[:, 4:8]
    mean = torch.tensor(means, dtype=f32)
    std = torch.tensor(stds, dtype=f32)
    pw, ph = r[:, 3] - r[:, 1] + 1, r[:, 4] - r[:, 2] + 1
    cx, cy = (r[:, 3] + r[:, 1]) * 0.5, (r[:, 4] + r[:, 2]) * 0.5
    v = [d[:, c] * std[c] + mean[c] for c in range(4)]
    tx, ty = v[0] * pw + cx, v[1] * ph + cy
    tw, th = pw * torch.exp(v[2]), ph * torch.exp(v[3])
    tx, ty = tx - (tw - 1) / 2, ty - (th - 1) / 2
    out = torch.stack([r[:, 0], tx, ty, tx + tw - 1, ty + th - 1], 1)
    return out.reshape(rois.shape).to(rois.dtype)


def scale_route(xs, low: float, high: float, mid: float):
    """ScaleRouteLayer::Forward_cpu: ROI scale sqrt(BBoxSize) (BBoxSize: (x2 - x1 + 1) *
    (y2 - y1 + 1), 0 for an inverted box), rows with low <= scale < high are copied from every
    bottom, in order; when none is, the single row whose |log2(scale / mid)| is smallest (the
    first of equals; a zero-size ROI never: its distance is infinite). Caffe stops (CHECK) when
    every ROI has zero size; so does this."""
    f32 = torch.float32
    r = xs[0].to(f32).reshape(xs[0].shape[0], -1)
    x1, y1, x2, y2 = r[:, 1], r[:, 2], r[:, 3], r[:, 4]
    bad = (x2 < x1) | (y2 < y1)
    size = torch.where(bad, torch.zeros_like(x1), (x2 - x1 + 1) * (y2 - y1 + 1))
    scale = torch.sqrt(size)
    sel = torch.nonzero((scale >= low) & (scale < high)).reshape(-1)
    if sel.numel() == 0:
        dist = torch.abs(torch.log2(scale / mid))
        if not bool(torch.isfinite(dist).any()):
            raise ValueError("ScaleRoute: every ROI has zero size (Caffe's CHECK_GE(min_mid_idx, 0) fails)")
        sel = torch.argmin(dist).reshape(1)
    return [x[sel] for x in xs]


#: helper -> helpers it calls (pasted before it)
_DEPS = {"cascade_nms": ("cascade_iou",), "box_group_output": ("cascade_nms",)}


def emit(src, name: str) -> str:
    """Paste helper ``name`` (and what it calls) into the generated forward() once; returns
    the name to call."""
    for dep in _DEPS.get(name, ()):
        emit(src, dep)
    key = f"cascade_torch.{name}"
    if key in src.uses:
        return name
    src.uses.add(key)
    for ln in inspect.getsource(globals()[name]).rstrip("\n").split("\n"):
        src.line(ln)
    return name


import torch  # noqa: E402  (after the helpers: emit() pastes their source, not this import)
