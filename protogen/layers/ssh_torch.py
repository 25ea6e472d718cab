"""SSH's Python ProposalLayer (TEST phase) written in plain torch: the PyTorch reference of
:class:`protogen.layers.ssh.SSHProposal` and, pasted verbatim (:func:`emit`), the helper of the
generated PyTorch source. Box decoding is :func:`protogen.layers.detect_torch.rpn_boxes`
(py-faster-rcnn's bbox_transform_inv + clip_boxes, float32), which SSH's copies of those
functions compute alike; what SSH adds is the overflow rule of its bbox_transform_inv
(:func:`ssh_deltas`) and a TEST forward without NMS (:func:`ssh_proposal`).
"""
from __future__ import annotations

import inspect


def ssh_deltas(deltas, anchors):
    """mahyarnajibi/SSH lib/utils/bbox_transform.py bbox_transform_inv runs under
    ``np.seterr(over='raise')``: when exp(dw) * width or exp(dh) * height overflows float32
    for any box of the blob, its handler sets every dw > 50 and every dh > 50 of the blob to 5
    and decodes again. Returns the deltas [1, 4A, H, W] (float32) that the decoding then
    uses. The width of a shifted anchor is its base anchor's (the shifts are exact)."""
    d = deltas.float()
    n, c, h, w = d.shape
    a = anchors.shape[0]
    v = d.reshape(n, a, 4, h, w)
    wid = (anchors[:, 2] - anchors[:, 0] + 1.0).float().reshape(1, a, 1, 1)
    hei = (anchors[:, 3] - anchors[:, 1] + 1.0).float().reshape(1, a, 1, 1)
    dw, dh = v[:, :, 2], v[:, :, 3]
    over = (torch.isfinite(dw) & torch.isinf(torch.exp(dw) * wid)).any() | \
        (torch.isfinite(dh) & torch.isinf(torch.exp(dh) * hei)).any()
    if not bool(over):
        return d
    five = torch.full_like(dw, 5.0)
    v = torch.stack([v[:, :, 0], v[:, :, 1], torch.where(dw > 50, five, dw),
                     torch.where(dh > 50, five, dh)], 2)
    return v.reshape(n, c, h, w)


def ssh_proposal(scores, deltas, im_info, anchors, feat_stride: int, n_dets: int, min_size: float):
    """mahyarnajibi/SSH SSH/layers/proposal_layer.py ProposalLayer.forward in the TEST phase:
    fg scores (channels A..2A-1) and deltas in (h, w, anchor) order, decode and clip
    (float32), drop boxes with a side (x2 - x1 + 1) < min_size * im_info[2]
    (cfg.TEST.ANCHOR_MIN_SIZE), sort by fg score, keep the first ``n_dets``
    (cfg.TEST.N_DETS_PER_MODULE; <= 0: all); no NMS (SSH/test.py applies it outside the net).
    rois [R, 5] (batch index 0) and scores [R, 1]; with no box left rois is the one row
    [0, 0, 0, 16, 16] and scores [0, 1]."""
    if scores.shape[0] != 1:
        raise ValueError("SSH ProposalLayer: only single item batches are supported")
    info = im_info.float().reshape(-1)
    d = ssh_deltas(deltas, anchors)
    boxes, fg = rpn_boxes(scores, d, anchors, feat_stride, info[0], info[1])
    ms = torch.tensor(min_size, dtype=torch.float32) * info[2]
    ok = ((boxes[:, 2] - boxes[:, 0] + 1.0) >= ms) & ((boxes[:, 3] - boxes[:, 1] + 1.0) >= ms)
    boxes, fg = boxes[ok], fg[ok]
    order = torch.sort(fg, descending=True, stable=True).indices
    if n_dets > 0:
        order = order[:n_dets]
    boxes, fg = boxes[order], fg[order]
    if boxes.shape[0] == 0:
        rois = torch.tensor([[0.0, 0.0, 0.0, 16.0, 16.0]])
    else:
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], 1)
    return rois.to(scores.dtype), fg.reshape(-1, 1).to(scores.dtype)


_DEPS = {"ssh_proposal": ("ssh_deltas",)}


def emit(src, name: str) -> str:
    """Paste helper ``name`` (with what it calls, and detect_torch.rpn_boxes) into the
    generated forward() once; returns the name to call."""
    from . import detect_torch
    detect_torch.emit(src, "rpn_boxes")
    for dep in _DEPS.get(name, ()):
        emit(src, dep)
    key = f"ssh_torch.{name}"
    if key not in src.uses:
        src.uses.add(key)
        for ln in inspect.getsource(globals()[name]).rstrip("\n").split("\n"):
            src.line(ln)
    return name


import torch  # noqa: E402  (after the helpers: emit() pastes their source, not this import)
from .detect_torch import rpn_boxes  # noqa: E402
