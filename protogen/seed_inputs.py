"""Seeded inputs by their role: the one place that decides what a net input is fed when no
real data is given (verify, profile, BatchNorm calibration).

An input is standard normal unless a layer reading it declares its role through the hook
``LayerType.seed_input(params, bottom_index, shape, data_shape, rng)`` (an array, or None
for "plain data"): a two-stage detector's ``rois`` (ROIPooling/PSROIPooling/ROIAlign bottom 1:
``[R, 5]`` rows ``(batch index, x1, y1, x2, y2)`` inside the image) and ``im_info``
(Proposal bottom 2: per image ``(height, width, scale...)``). ``data_shape`` is the image
input's shape (the first 4-D input with no role). The mixins below give the layer types
those hooks (protogen.layers.rcnn). Nothing heavy is imported.
"""
from __future__ import annotations

from ._lazy import numpy as np


def seeded_feeds(steps, draw, seed: int = 0) -> dict[str, np.ndarray]:
    """One array per input value of ``steps`` (a :class:`protogen.ir.Resolved` or its
    steps): ``draw(shape, k)`` for the k-th input, or what the ``seed_input`` hook of the
    first layer reading it gives (an input's role is its reader's to say)."""
    steps = list(steps)
    inputs = [(v, tuple(s)) for st in steps if st.layer.kind.is_input
              for v, s in zip(st.outputs, st.out_shapes)]
    roles = {}
    for st in steps:
        hook = getattr(st.layer.kind, "seed_input", None)
        for i, x in enumerate(st.inputs):
            if hook is not None and x not in roles and any(x == v for v, _ in inputs):
                roles[x] = (hook, st.layer.params, i)
    data_shape = next((s for v, s in inputs if len(s) == 4 and v not in roles), None)
    feeds = {}
    for k, (v, shape) in enumerate(inputs):
        a = None
        if v in roles:
            hook, params, i = roles[v]
            a = hook(params, i, shape, data_shape, np.random.default_rng([int(seed) & 0xFFFFFFFF, 11, k]))
        feeds[v] = draw(shape, k) if a is None else np.asarray(a, np.float32).reshape(shape)
    return feeds


def seeded_rois(shape, data_shape, rng) -> np.ndarray:
    """``[R, 5]`` ROIs (batch index, x1, y1, x2, y2) in image coordinates: every image of the
    batch in turn, boxes of 20-50% of the image side, inside the image."""
    r = int(np.prod(shape)) // 5
    n, _, h, w = data_shape
    rois = np.zeros((r, 5), np.float32)
    rois[:, 0] = np.arange(r) % max(int(n), 1)
    for lo, side in ((1, w), (2, h)):
        size = rng.uniform(0.2, 0.5, r) * side
        start = rng.uniform(0, side - 1 - size)
        rois[:, lo], rois[:, lo + 2] = start, start + size
    return rois


def seeded_im_info(shape, data_shape) -> np.ndarray:
    """Per image (height, width, then 1 for every scale field): py-faster-rcnn's
    (h, w, scale), pva-faster-rcnn's C++ Proposal (h, w, scale_h, scale_w, ...)."""
    n = shape[0] if shape else 1
    k = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    row = np.ones(k, np.float32)
    row[:2] = [data_shape[2], data_shape[3]][:k]
    return np.tile(row, (n, 1))


class SeedsROIs:
    """Mixin for a layer type whose bottom 1 is ROIs (ROIPooling, PSROIPooling, ROIAlign)."""

    def seed_input(self, p, bottom_index, shape, data_shape, rng):
        if bottom_index != 1 or data_shape is None:
            return None
        return seeded_rois(shape, data_shape, rng)


class SeedsImInfo:
    """Mixin for a layer type whose bottom 2 is im_info (the Proposal layers)."""

    def seed_input(self, p, bottom_index, shape, data_shape, rng):
        if bottom_index != 2 or data_shape is None:
            return None
        return seeded_im_info(shape, data_shape)
