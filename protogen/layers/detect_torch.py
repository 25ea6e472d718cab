"""Caffe's two-stage and YOLO detection layers written in plain torch.

These functions are the PyTorch reference (``torch_forward`` of the types in
:mod:`protogen.layers.rcnn` and :mod:`protogen.layers.yolo`) and, pasted verbatim, the helper
functions of the generated PyTorch source (:func:`emit`), so they use nothing but ``torch``
and builtins. Each follows the C++ (or Python) forward named in its docstring, loop order and
float32 arithmetic included: box geometry, thresholds and suppression are computed in float32
as Caffe does, whatever the dtype of the input (the float64 reference then shows only the
rounding of the surrounding layers); pooled values keep the input's dtype.

Order of equal scores: Caffe sorts with an unstable sort (std::sort, a hand-written quicksort,
numpy's argsort), so the order of exactly equal scores is unspecified there; here (and in the
ONNX lowering, through TopK) equal scores keep their enumeration order (lower index first).
"""
from __future__ import annotations

import inspect


def reorg(x, stride: int, reverse: bool):
    """YOLO v2 Reorg (darknet's reorg_cpu as the Caffe forks call it: BVLC/caffe intel branch
    and eric612 src/caffe/layers/reorg_layer.cpp, reorg_cpu(bottom, W, H, C, N, stride,
    reverse, top)). Not space-to-depth: the input buffer is read as a (N, C/s^2, H*s, W*s)
    blob and written in the (N, C, H, W) index order."""
    n, c, h, w = x.shape
    s = int(stride)
    c2 = c // (s * s)
    if not reverse:
        # top[c, h, w] = bottom_as(C/s^2, H*s, W*s)[c % C', h*s + (c // C') // s, w*s + (c // C') % s]
        v = x.reshape(n, c2, h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return v.reshape(n, c * s * s, h // s, w // s)
    # reverse: top_as(C', H*s, W*s)[...] = bottom[c, h, w] with the same index map
    v = x.reshape(n, s, s, c2, h, w).permute(0, 3, 4, 1, 5, 2)
    return v.reshape(n, c2, h * s, w * s)


def yolo_nms(xywh, thr: float):
    """eric612 yolo(v3)_detection_output_layer.cpp ApplyNms: greedy over boxes sorted by
    descending confidence, class-agnostic; box j is dropped when IoU(i, j) >= thr for a kept
    i < j. IoU of centre-size boxes in float32: overlap = min(right) - max(left), no
    intersection when an overlap is negative, union = w1*h1 + w2*h2 - intersection.
    (The boxes still alive are kept in order and shrink as they are dropped.)"""
    b = xywh.float()
    l, r = b[:, 0] - b[:, 2] / 2, b[:, 0] + b[:, 2] / 2
    t, d = b[:, 1] - b[:, 3] / 2, b[:, 1] + b[:, 3] / 2
    area = b[:, 2] * b[:, 3]
    alive = torch.arange(b.shape[0])
    keep = []
    while alive.numel():
        i, rest = int(alive[0]), alive[1:]
        keep.append(i)
        ow = torch.minimum(r[i], r[rest]) - torch.maximum(l[i], l[rest])
        oh = torch.minimum(d[i], d[rest]) - torch.maximum(t[i], t[rest])
        inter = torch.where((ow < 0) | (oh < 0), torch.zeros_like(ow), ow * oh)
        iou = inter / (area[i] + area[rest] - inter)
        alive = rest[~(iou >= thr)]
    return torch.tensor(keep, dtype=torch.long)


def yolo_rows(cands, num, thr: float, dtype):
    """Sort, NMS and the [1, 1, M, 7] output rows (image 0, label + 1, confidence, x1, y1,
    x2, y2) of the eric612 YOLO detection outputs; no detection at all gives ``num`` rows
    [i, -1, -1, -1, -1, -1, -1]. ``cands``: [K, 6] float32 (class, confidence, x, y, w, h)."""
    if cands.shape[0]:
        order = torch.sort(cands[:, 1], descending=True, stable=True).indices
        cands = cands[order]
        cands = cands[yolo_nms(cands[:, 2:6], thr)]
    if cands.shape[0] == 0:
        rows = torch.full((num, 7), -1.0)
        rows[:, 0] = torch.arange(num, dtype=rows.dtype)
        return rows.to(dtype).reshape(1, 1, num, 7)
    x, y, w, h = cands[:, 2], cands[:, 3], cands[:, 4], cands[:, 5]
    rows = torch.stack([torch.zeros_like(x), cands[:, 0] + 1, cands[:, 1],
                        x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)
    return rows.to(dtype).reshape(1, 1, -1, 7)


def yolo2_detect(xs, biases, num_classes: int, num_box: int, conf_thr: float, nms_thr: float):
    """eric612 src/caffe/layers/yolo_detection_output_layer.cpp (YoloDetectionOutput, YOLO v2
    region decode): per bottom, cell (row j, column i) and anchor n, channels n*L .. n*L+L-1
    hold tx, ty, tw, th, to and class logits; x = (i + sigmoid(tx)) / side,
    w = exp(tw) * biases[2n] / side (side = width); confidence = sigmoid(to) * the largest
    softmax class probability (first maximum), kept when >= conf_thr; one box per anchor."""
    cands = []
    for x in xs:
        x = x.float()
        n, c, h, w = x.shape
        side = float(w)
        v = x.reshape(n, num_box, c // num_box, h, w).permute(0, 3, 4, 1, 2)   # b, j, i, anchor, k
        ii = torch.arange(w, dtype=torch.float32).reshape(1, 1, w, 1)
        jj = torch.arange(h, dtype=torch.float32).reshape(1, h, 1, 1)
        bw = torch.tensor(biases[0::2][:num_box], dtype=torch.float32)
        bh = torch.tensor(biases[1::2][:num_box], dtype=torch.float32)
        cx = (ii + torch.sigmoid(v[..., 0])) / side
        cy = (jj + torch.sigmoid(v[..., 1])) / side
        ww = torch.exp(v[..., 2]) * bw / side
        hh = torch.exp(v[..., 3]) * bh / side
        prob = torch.softmax(v[..., 5:5 + num_classes], -1)
        best, cls = prob.max(-1)
        conf = torch.sigmoid(v[..., 4]) * best
        c6 = torch.stack([cls.float(), conf, cx, cy, ww, hh], -1).reshape(-1, 6)
        cands.append(c6[c6[:, 1] >= conf_thr])
    return yolo_rows(torch.cat(cands), int(xs[0].shape[0]), nms_thr, xs[0].dtype)


def yolo3_detect(xs, biases, mask, anchors_scale, num_box: int, groups: int, num_classes: int,
                 conf_thr: float, nms_thr: float):
    """eric612 src/caffe/layers/yolov3_detection_output_layer.cpp (Yolov3DetectionOutput):
    bottom t, cell s (y = s // side, x = s % side, side = width), anchor n (its bias pair is
    mask[n + t*groups]); x = (x + sigmoid(tx)) / side, w = exp(tw) * bias_w / (side *
    anchors_scale[t]); one candidate per class whose sigmoid(class) * sigmoid(obj) >
    conf_thr."""
    cands = []
    for t, x in enumerate(xs):
        x = x.float()
        n, c, h, w = x.shape
        side = float(w)
        length = 5 + num_classes
        v = x.reshape(n, num_box, length, h, w).permute(0, 3, 4, 1, 2)   # b, y, x, anchor, k
        ii = torch.arange(w, dtype=torch.float32).reshape(1, 1, w, 1)
        jj = torch.arange(h, dtype=torch.float32).reshape(1, h, 1, 1)
        m = [int(mask[k + t * groups]) for k in range(num_box)]
        bw = torch.tensor([biases[2 * k] for k in m], dtype=torch.float32)
        bh = torch.tensor([biases[2 * k + 1] for k in m], dtype=torch.float32)
        scale = float(w * int(anchors_scale[t]))
        cx = (ii + torch.sigmoid(v[..., 0])) / side
        cy = (jj + torch.sigmoid(v[..., 1])) / side
        ww = torch.exp(v[..., 2]) * bw / scale
        hh = torch.exp(v[..., 3]) * bh / scale
        conf = torch.sigmoid(v[..., 5:length]) * torch.sigmoid(v[..., 4:5])
        box = torch.stack([cx, cy, ww, hh], -1).unsqueeze(-2).expand(*conf.shape, 4)
        cls = torch.arange(num_classes, dtype=torch.float32).expand(conf.shape)
        c6 = torch.cat([cls.unsqueeze(-1), conf.unsqueeze(-1), box], -1).reshape(-1, 6)
        cands.append(c6[c6[:, 1] > conf_thr])
    return yolo_rows(torch.cat(cands), int(xs[0].shape[0]), nms_thr, xs[0].dtype)


def _round_half_away(v):
    """C's round() (halves away from zero), exact: floor(|v|) + (fraction >= 0.5); adding 0.5
    in float32 would round 0.49999997 up."""
    a = torch.abs(v)
    f = torch.floor(a)
    return torch.sign(v) * (f + (a - f >= 0.5).to(v.dtype))


def _roi_batch(r, n: int):
    """Batch index of each ROI row of ``r`` (C's int cast: truncation toward zero); Caffe
    CHECKs 0 <= index < N, so one outside the batch is a ValueError naming the first such ROI."""
    bf = torch.trunc(r[:, 0])
    bad = ~((bf >= 0) & (bf < n))
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        v = float(r[k, 0])
        b = int(v) if abs(v) < float("inf") else v
        raise ValueError(f"ROI {k}: batch index {b} is outside the batch of {n}")
    return bf.long()


def _finite_rois(v, what: str, lim: float = float("inf")):
    """ValueError naming the first ROI whose coordinates ``v`` [R, k] are not finite or not
    below ``lim`` in magnitude (where Caffe's int cast is undefined)."""
    bad = ~(torch.abs(v) < lim).all(1)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"ROI {k}: {what} {v[k].tolist()} out of range (not finite or beyond C int)")


def _rows_at(t, idx):
    """Rows of ``t`` (contiguous) viewed as [-1, last dim] at the integer tensor ``idx``:
    [*idx.shape, last], a new tensor."""
    return t.reshape(-1, t.shape[-1]).index_select(0, idx.reshape(-1)).view(*idx.shape, t.shape[-1])


def _window_max(x, b, hs, he, ws, we):
    """Max of x[b, :, hs:he, ws:we] for integer tensors b, hs, he, ws, we of one shape S with
    non-empty windows (he > hs, we > ws) -> [*S, C], from a 2-D sparse table: level (c, a) holds
    the maxima of the 2^a x 2^c blocks starting at each position, a window is the max of four
    (overlapping) such blocks. Exact: max is order-free (NaN propagates as amax does)."""
    n, ch, h, w = x.shape
    hh, ww = he - hs, we - ws
    la, lc = int(hh.max()).bit_length() - 1, int(ww.max()).bit_length() - 1
    table = x.new_empty(((lc + 1) * (la + 1), n, h, w, ch))
    table[0] = x.permute(0, 2, 3, 1)
    for c in range(lc + 1):
        if c:           # blocks twice as wide: max of two half-width blocks
            s, src, dst = 1 << (c - 1), table[(c - 1) * (la + 1)], table[c * (la + 1)]
            dst[:, :, :w - s] = torch.maximum(src[:, :, :w - s], src[:, :, s:])
            dst[:, :, w - s:] = src[:, :, w - s:]
        for a in range(1, la + 1):
            s, src, dst = 1 << (a - 1), table[c * (la + 1) + a - 1], table[c * (la + 1) + a]
            dst[:, :h - s] = torch.maximum(src[:, :h - s], src[:, s:])
            dst[:, h - s:] = src[:, h - s:]
    a = sum((hh >= (1 << k)).long() for k in range(1, la + 1)) if la else torch.zeros_like(hh)
    c = sum((ww >= (1 << k)).long() for k in range(1, lc + 1)) if lc else torch.zeros_like(ww)
    base = (c * (la + 1) + a) * n + b
    y2, x2 = he - (1 << a), we - (1 << c)
    out = _rows_at(table, (base * h + hs) * w + ws)
    torch.maximum(out, _rows_at(table, (base * h + hs) * w + x2), out=out)
    torch.maximum(out, _rows_at(table, (base * h + y2) * w + ws), out=out)
    return torch.maximum(out, _rows_at(table, (base * h + y2) * w + x2), out=out)


def roi_pool(x, rois, pooled_h: int, pooled_w: int, spatial_scale: float):
    """caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp: per ROI (batch, x1, y1, x2, y2)
    start/end = round(coord * spatial_scale) (C round, float32), roi size max(end - start + 1,
    1), bin size = size / pooled (float32), bin rows [floor(ph * bin) + start, ceil((ph + 1) *
    bin) + start) clipped to [0, H]; max over the bin, 0 for an empty bin. All ROIs and bins at
    once; a rounded corner outside C's int range (or not finite) is a ValueError."""
    n, c, h, w = x.shape
    r = rois.float().reshape(-1, 5)
    b = _roi_batch(r, n)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    q = _round_half_away(r[:, 1:5] * scale)
    _finite_rois(q, "rounded corners", 2.0 ** 31)
    q = q.long()
    x1, y1, x2, y2 = q[:, 0:1], q[:, 1:2], q[:, 2:3], q[:, 3:4]
    bin_h = torch.clamp(y2 - y1 + 1, min=1).float() / pooled_h                   # R, 1
    bin_w = torch.clamp(x2 - x1 + 1, min=1).float() / pooled_w
    ph = torch.arange(pooled_h + 1, dtype=torch.float32)
    pw = torch.arange(pooled_w + 1, dtype=torch.float32)
    hs = torch.clamp(torch.floor(ph[:-1] * bin_h).long() + y1, 0, h)[:, :, None]  # R, P, 1
    he = torch.clamp(torch.ceil(ph[1:] * bin_h).long() + y1, 0, h)[:, :, None]
    ws = torch.clamp(torch.floor(pw[:-1] * bin_w).long() + x1, 0, w)[:, None, :]  # R, 1, Q
    we = torch.clamp(torch.ceil(pw[1:] * bin_w).long() + x1, 0, w)[:, None, :]
    full = (he > hs) & (we > ws)                                                   # R, P, Q
    if r.shape[0] == 0 or not bool(full.any()):
        return x.new_zeros((r.shape[0], c, pooled_h, pooled_w))
    shape = full.shape
    hs2, ws2 = hs.expand(shape), ws.expand(shape)
    he2 = torch.where(full, he.expand(shape), hs2 + 1)
    we2 = torch.where(full, we.expand(shape), ws2 + 1)
    hs2, ws2 = torch.clamp(hs2, max=h - 1), torch.clamp(ws2, max=w - 1)
    he2, we2 = torch.clamp(he2, max=h), torch.clamp(we2, max=w)
    m = _window_max(x, b[:, None, None].expand(shape), hs2, he2, ws2, we2)         # R, P, Q, C
    return m.masked_fill_(~full[..., None], 0).permute(0, 3, 1, 2).contiguous()


def psroi_pool(x, rois, output_dim: int, group_size: int, spatial_scale: float):
    """R-FCN src/caffe/layers/psroi_pooling_layer.cu (PSROIPoolingForward): start =
    round(x1) * scale, end = (round(x2) + 1) * scale (C round, float32), roi size max(end -
    start, 0.1), bin [floor(p * bin + start), ceil((p + 1) * bin + start)) clipped to [0, H];
    output channel d of bin (i, j) averages input channel (d * G + i) * G + j; 0 when empty.
    All ROIs and bins at once; the bin sum runs in the kernel's order (rows, then columns,
    in the input's dtype). A corner that is not finite is a ValueError."""
    n, c, h, w = x.shape
    g = int(group_size)
    r = rois.float().reshape(-1, 5)
    b = _roi_batch(r, n)
    _finite_rois(r[:, 1:5], "corners")
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    q = _round_half_away(r[:, 1:5])
    x1, y1 = q[:, 0:1] * scale, q[:, 1:2] * scale
    x2, y2 = (q[:, 2:3] + 1) * scale, (q[:, 3:4] + 1) * scale
    bin_h = torch.clamp(y2 - y1, min=0.1) / g                                       # R, 1
    bin_w = torch.clamp(x2 - x1, min=0.1) / g
    p = torch.arange(g + 1, dtype=torch.float32)
    hs = torch.clamp(torch.floor(p[:-1] * bin_h + y1), 0, h).long()[:, :, None]    # R, G, 1
    he = torch.clamp(torch.ceil(p[1:] * bin_h + y1), 0, h).long()[:, :, None]
    ws = torch.clamp(torch.floor(p[:-1] * bin_w + x1), 0, w).long()[:, None, :]    # R, 1, G
    we = torch.clamp(torch.ceil(p[1:] * bin_w + x1), 0, w).long()[:, None, :]
    hh, ww = torch.clamp(he - hs, min=0), torch.clamp(we - ws, min=0)
    full = (hh > 0) & (ww > 0)                                                       # R, G, G
    # input as [N, G, G, H, W, D]: row ((b * G + i) * G + j) * H * W + y * W + x holds the D
    # channels (d * G + i) * G + j of bin (i, j)
    xg = x[:, :output_dim * g * g].reshape(n, output_dim, g, g, h, w).permute(0, 2, 3, 4, 5, 1).contiguous()
    cell = (b[:, None, None] * g + torch.arange(g)[:, None]) * g + torch.arange(g)  # R, G, G
    acc = x.new_zeros((r.shape[0], g, g, output_dim))
    for dy in range(int(hh.max()) if r.shape[0] else 0):
        yy = torch.clamp(hs + dy, max=h - 1)
        for dx in range(int(ww.max())):
            use = (dy < hh) & (dx < ww)
            v = _rows_at(xg, (cell * h + yy) * w + torch.clamp(ws + dx, max=w - 1))
            acc = acc + torch.where(use[..., None], v, torch.zeros_like(v))
    area = (hh * ww).to(x.dtype)[..., None]
    out = torch.where(full[..., None], acc / torch.clamp(area, min=1), torch.zeros_like(acc))
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align_grid(x, rois, pooled_h: int, pooled_w: int, spatial_scale: float, pad_ratio: float):
    """zhaoweicai/cascade-rcnn src/caffe/layers/roi_align_layer.cpp (Forward_cpu): bilinear
    samples at the (pooled_h + 1) x (pooled_w + 1) grid points of each ROI (not bin averages):
    corners (x1 - pad) * scale - 0.5 .. (x2 + pad) * scale - 0.5 with pad = (x2 - x1 + 1) *
    pad_ratio, float32; a malformed ROI (size <= 0) or a point outside [-0.5, size - 0.5]
    gives 0; floor/ceil neighbours and the point clipped to the map. All ROIs and points at
    once, the same float32 operations per point as the C++ loop (so a point at exactly
    size - 0.5 is sampled or not as in Caffe); a sampled point at NaN is a ValueError."""
    n, c, h, w = x.shape
    r = rois.float().reshape(-1, 5)
    b = _roi_batch(r, n)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    ratio = torch.tensor(pad_ratio, dtype=torch.float32)

    def axis(lo, hi, pooled: int):
        pad = (hi - lo + 1) * ratio
        start = (lo - pad) * scale - 0.5
        length = ((hi + pad) * scale - 0.5) - start
        return start[:, None] + torch.arange(pooled + 1, dtype=torch.float32) * (length / pooled)[:, None], length
    hf, rh = axis(r[:, 2], r[:, 4], pooled_h)                          # R, P + 1
    wf, rw = axis(r[:, 1], r[:, 3], pooled_w)                          # R, Q + 1
    hf, wf = hf[:, :, None], wf[:, None, :]
    out_h, out_w = (hf < -0.5) | (hf > h - 0.5), (wf < -0.5) | (wf > w - 0.5)
    use = ~(out_h | out_w) & ~((rh <= 0) | (rw <= 0))[:, None, None]   # R, P + 1, Q + 1
    nan = use & (torch.isnan(hf) | torch.isnan(wf))
    if bool(nan.any()):
        k = int(torch.nonzero(nan)[0, 0])
        raise ValueError(f"ROI {k}: sample point at NaN (ROI {r[k].tolist()})")
    hf = torch.where(use.any(2, keepdim=True), hf, torch.zeros_like(hf))
    wf = torch.where(use.any(1, keepdim=True), wf, torch.zeros_like(wf))

    def neighbours(f, size: int):
        f0 = torch.floor(f)
        lo = torch.clamp(f0, 0, size - 1)
        frac = torch.clamp(f, 0, size - 1) - lo
        return lo.long(), torch.clamp(f0 + 1, 0, size - 1).long(), frac, 1 - frac
    h0, h1, lh, hh = neighbours(hf, h)                                  # R, P + 1, 1
    w0, w1, lw, hw = neighbours(wf, w)                                  # R, 1, Q + 1
    rows = x.permute(0, 2, 3, 1).contiguous()                          # N, H, W, C
    base = b[:, None, None] * h

    def tap(wt, yy, xx):   # weight (float32 product, as in the C++) times the neighbour
        return _rows_at(rows, ((base + yy) * w + xx).expand(use.shape)).mul_(wt.to(x.dtype)[..., None])
    v = tap(hw * hh, h0, w0)                                           # R, P + 1, Q + 1, C
    v += tap(lw * hh, h0, w1)
    v += tap(hw * lh, h1, w0)
    v += tap(lw * lh, h1, w1)
    return v.masked_fill_(~use[..., None], 0).permute(0, 3, 1, 2).contiguous()


def rpn_boxes(scores, deltas, anchors, feat_stride: int, im_h, im_w):
    """Shifted anchors (cell (h, w) adds (w, h) * feat_stride), bbox_transform_inv with the +1
    widths (x1 = ctr - 0.5 * w', x2 = ctr + 0.5 * w') and clipping to [0, size - 1], in
    float32, in (h, w, anchor) order: py-faster-rcnn lib/rpn/proposal_layer.py and the C++
    enumerate_proposals_cpu/transform_box alike. Returns (boxes [K, 4], fg scores [K])."""
    a = anchors.shape[0]
    _, _, fh, fw = scores.shape
    sx = torch.arange(fw, dtype=torch.float32) * feat_stride
    sy = torch.arange(fh, dtype=torch.float32) * feat_stride
    shift = torch.stack([sx.expand(fh, fw), sy.unsqueeze(1).expand(fh, fw)] * 2, -1)
    anc = (anchors.reshape(1, 1, a, 4) + shift.reshape(fh, fw, 1, 4)).reshape(-1, 4)
    d = deltas[0].float().reshape(a, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
    fg = scores[0, a:].float().permute(1, 2, 0).reshape(-1)
    wid = anc[:, 2] - anc[:, 0] + 1.0
    hei = anc[:, 3] - anc[:, 1] + 1.0
    cx = anc[:, 0] + 0.5 * wid
    cy = anc[:, 1] + 0.5 * hei
    pcx = d[:, 0] * wid + cx
    pcy = d[:, 1] * hei + cy
    pw = torch.exp(d[:, 2]) * wid
    ph = torch.exp(d[:, 3]) * hei
    zero = torch.zeros((), dtype=torch.float32)
    xmax, ymax = im_w - 1.0, im_h - 1.0
    boxes = torch.stack([torch.maximum(torch.minimum(pcx - 0.5 * pw, xmax), zero),
                         torch.maximum(torch.minimum(pcy - 0.5 * ph, ymax), zero),
                         torch.maximum(torch.minimum(pcx + 0.5 * pw, xmax), zero),
                         torch.maximum(torch.minimum(pcy + 0.5 * ph, ymax), zero)], 1)
    return boxes, fg


def rpn_nms(boxes, thr: float, max_out: int, early_out: bool):
    """Greedy NMS over boxes already sorted by score: box j is dropped when IoU(i, j) > thr
    for a kept i < j; IoU with the +1 pixel convention (py-faster-rcnn nms/py_cpu_nms.py,
    gpu_nms; the C++ Proposal's nms_cpu also returns 0 for boxes that do not touch,
    ``early_out``). Stops after ``max_out`` kept boxes (<= 0: no limit)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
    alive = torch.arange(boxes.shape[0])
    keep = []
    while alive.numel():
        i, rest = int(alive[0]), alive[1:]
        keep.append(i)
        if len(keep) == max_out:
            break
        iw = torch.clamp(torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1.0, min=0.0)
        ih = torch.clamp(torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1.0, min=0.0)
        inter = iw * ih
        iou = inter / (area[i] + area[rest] - inter)
        if early_out:
            apart = (x1[i] > x2[rest]) | (y1[i] > y2[rest]) | (x2[i] < x1[rest]) | (y2[i] < y1[rest])
            iou = torch.where(apart, torch.zeros_like(iou), iou)
        alive = rest[~(iou > thr)]
    return torch.tensor(keep, dtype=torch.long)


def proposal_py(scores, deltas, im_info, anchors, feat_stride: int, pre_nms: int, post_nms: int,
                nms_thresh: float, min_size: float):
    """py-faster-rcnn lib/rpn/proposal_layer.py ProposalLayer.forward (TEST): decode and clip,
    drop boxes with a side (x2 - x1 + 1) < min_size * im_info[2], sort by fg score, keep
    pre_nms, NMS, keep post_nms; rois [R, 5] (batch index 0) and scores [R, 1]."""
    if scores.shape[0] != 1:
        raise ValueError("ProposalLayer: only single item batches are supported")
    info = im_info.float().reshape(-1)
    boxes, fg = rpn_boxes(scores, deltas, anchors, feat_stride, info[0], info[1])
    ms = torch.tensor(min_size, dtype=torch.float32) * info[2]
    ok = ((boxes[:, 2] - boxes[:, 0] + 1.0) >= ms) & ((boxes[:, 3] - boxes[:, 1] + 1.0) >= ms)
    boxes, fg = boxes[ok], fg[ok]
    order = torch.sort(fg, descending=True, stable=True).indices
    if pre_nms > 0:
        order = order[:pre_nms]
    boxes, fg = boxes[order], fg[order]
    keep = rpn_nms(boxes, nms_thresh, post_nms, False)
    boxes, fg = boxes[keep], fg[keep]
    rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
    return rois.to(scores.dtype), fg.reshape(-1, 1).to(scores.dtype)


def proposal_cpp(scores, deltas, im_info, anchors, feat_stride: int, pre_nms: int, post_nms: int,
                 nms_thresh: float, min_size: float):
    """pva-faster-rcnn caffe-fast-rcnn src/caffe/layers/proposal_layer.cpp Forward_cpu (the C++
    Proposal): decode and clip like transform_box; a box with width < min_size * im_info[3]
    or height < min_size * im_info[2] keeps its place with score 0; sort_box keeps the
    min(K, pre_nms) best, nms_cpu (IoU 0 for boxes that do not touch) keeps up to post_nms;
    rois [R, 5] (batch index 0) and scores [R]."""
    if scores.shape[0] != 1:
        raise ValueError("Proposal: only single item batches are supported")
    info = im_info.float().reshape(-1)
    boxes, fg = rpn_boxes(scores, deltas, anchors, feat_stride, info[0], info[1])
    ms = torch.tensor(min_size, dtype=torch.float32)
    ok = ((boxes[:, 2] - boxes[:, 0] + 1.0) >= ms * info[3]) & \
         ((boxes[:, 3] - boxes[:, 1] + 1.0) >= ms * info[2])
    fg = fg * ok.float()
    order = torch.sort(fg, descending=True, stable=True).indices[:pre_nms]
    boxes, fg = boxes[order], fg[order]
    keep = rpn_nms(boxes, nms_thresh, post_nms, True)
    boxes, fg = boxes[keep], fg[keep]
    rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
    return rois.to(scores.dtype), fg.to(scores.dtype)


#: helper -> helpers it calls (pasted before it)
_DEPS = {
    "yolo_rows": ("yolo_nms",),
    "yolo2_detect": ("yolo_rows",),
    "yolo3_detect": ("yolo_rows",),
    "_window_max": ("_rows_at",),
    "roi_pool": ("_round_half_away", "_roi_batch", "_finite_rois", "_window_max"),
    "psroi_pool": ("_round_half_away", "_roi_batch", "_finite_rois", "_rows_at"),
    "roi_align_grid": ("_roi_batch", "_rows_at"),
    "proposal_py": ("rpn_boxes", "rpn_nms"),
    "proposal_cpp": ("rpn_boxes", "rpn_nms"),
}


def emit(src, name: str) -> str:
    """Paste helper ``name`` (and what it calls) into the generated forward() once; returns
    the name to call."""
    for dep in _DEPS.get(name, ()):
        emit(src, dep)
    key = f"detect_torch.{name}"
    if key in src.uses:
        return name
    src.uses.add(key)
    text = inspect.getsource(globals()[name]).rstrip("\n").split("\n")
    for ln in text:
        src.line(ln)
    return name


import torch  # noqa: E402  (after the helpers: emit() pastes their source, not this import)
