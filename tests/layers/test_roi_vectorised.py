"""The vectorised ROI layers of protogen/layers/detect_torch.py (roi_pool, psroi_pool,
roi_align_grid: the float64/float32 PyTorch reference and the generated source) against the
per-ROI, per-bin loops they replaced, kept here verbatim as the oracles (each loop was checked
against the numpy transcriptions of the C++ in tests/layers/test_rcnn.py and test_cascade.py).

ROIPooling and ROIAlign must agree bit for bit: same float32 rounding of box corners, bin edges
and sample points (so ROIAlign keeps or drops a border row exactly as Caffe does, see
tests/layers/test_cascade.py::test_roi_align_border_row). PSROIPooling's bin sum now runs in the
R-FCN kernel's order (rows, then columns: psroi_pooling_layer.cu PSROIPoolingForward), which
the loop's torch.sum did not follow: it is exact against the loop with that order and within
round-off of the torch.sum loop. Boxes are random, zero-size, inverted, outside the image,
clipped to the border (x2 = W / scale, as BoxGroupOutput clips), a few ulps off the border, and
at exact .5 corners (C round).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from protogen.layers import detect_torch as D  # noqa: E402
from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)

F = np.float32


# ------------------------------------------------------------ the replaced loops (oracles)
def _round_half_away(v):
    a = torch.abs(v)
    f = torch.floor(a)
    return torch.sign(v) * (f + (a - f >= 0.5).to(v.dtype))


def loop_roi_pool(x, rois, pooled_h, pooled_w, spatial_scale):
    n, c, h, w = x.shape
    r = rois.float().reshape(-1, 5)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    out = x.new_zeros((r.shape[0], c, pooled_h, pooled_w))
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        if not 0 <= b < n:
            raise ValueError(f"ROI {k}: batch index {b} is outside the batch of {n}")
        x1, y1, x2, y2 = [int(_round_half_away(r[k, i] * scale)) for i in (1, 2, 3, 4)]
        rh = torch.tensor(float(max(y2 - y1 + 1, 1)), dtype=torch.float32)
        rw = torch.tensor(float(max(x2 - x1 + 1, 1)), dtype=torch.float32)
        bin_h, bin_w = rh / pooled_h, rw / pooled_w
        for ph in range(pooled_h):
            hs = min(max(int(torch.floor(ph * bin_h)) + y1, 0), h)
            he = min(max(int(torch.ceil((ph + 1) * bin_h)) + y1, 0), h)
            for pw in range(pooled_w):
                ws = min(max(int(torch.floor(pw * bin_w)) + x1, 0), w)
                we = min(max(int(torch.ceil((pw + 1) * bin_w)) + x1, 0), w)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = x[b, :, hs:he, ws:we].amax(dim=(1, 2))
    return out


def _kernel_order_sum(win):
    """Sum of win [D, h, w] over (h, w) in the CUDA kernel's order: rows, then columns."""
    acc = torch.zeros_like(win[:, 0, 0])
    for i in range(win.shape[1]):
        for j in range(win.shape[2]):
            acc = acc + win[:, i, j]
    return acc


def loop_psroi_pool(x, rois, output_dim, group_size, spatial_scale, kernel_order=False):
    n, c, h, w = x.shape
    g = int(group_size)
    r = rois.float().reshape(-1, 5)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    out = x.new_zeros((r.shape[0], output_dim, g, g))
    chans = torch.arange(output_dim) * g * g
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        if not 0 <= b < n:
            raise ValueError(f"ROI {k}: batch index {b} is outside the batch of {n}")
        x1 = _round_half_away(r[k, 1]) * scale
        y1 = _round_half_away(r[k, 2]) * scale
        x2 = (_round_half_away(r[k, 3]) + 1) * scale
        y2 = (_round_half_away(r[k, 4]) + 1) * scale
        bin_h = torch.clamp(y2 - y1, min=0.1) / g
        bin_w = torch.clamp(x2 - x1, min=0.1) / g
        for i in range(g):
            hs = min(max(int(torch.floor(i * bin_h + y1)), 0), h)
            he = min(max(int(torch.ceil((i + 1) * bin_h + y1)), 0), h)
            for j in range(g):
                ws = min(max(int(torch.floor(j * bin_w + x1)), 0), w)
                we = min(max(int(torch.ceil((j + 1) * bin_w + x1)), 0), w)
                if he > hs and we > ws:
                    win = x[b, chans + i * g + j, hs:he, ws:we]
                    s = _kernel_order_sum(win) if kernel_order else win.sum(dim=(1, 2))
                    out[k, :, i, j] = s / ((he - hs) * (we - ws))
    return out


def loop_roi_align(x, rois, pooled_h, pooled_w, spatial_scale, pad_ratio):
    n, c, h, w = x.shape
    r = rois.float().reshape(-1, 5)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    ratio = torch.tensor(pad_ratio, dtype=torch.float32)
    out = x.new_zeros((r.shape[0], c, pooled_h + 1, pooled_w + 1))
    for k in range(r.shape[0]):
        b = int(r[k, 0])
        if not 0 <= b < n:
            raise ValueError(f"ROI {k}: batch index {b} is outside the batch of {n}")
        pw_ = (r[k, 3] - r[k, 1] + 1) * ratio
        ph_ = (r[k, 4] - r[k, 2] + 1) * ratio
        x1, y1 = (r[k, 1] - pw_) * scale - 0.5, (r[k, 2] - ph_) * scale - 0.5
        x2, y2 = (r[k, 3] + pw_) * scale - 0.5, (r[k, 4] + ph_) * scale - 0.5
        rh, rw = y2 - y1, x2 - x1
        if rh <= 0 or rw <= 0:
            continue
        bh, bw = rh / pooled_h, rw / pooled_w
        for i in range(pooled_h + 1):
            hf = y1 + i * bh
            for j in range(pooled_w + 1):
                wf = x1 + j * bw
                if hf < -0.5 or hf > h - 0.5 or wf < -0.5 or wf > w - 0.5:
                    continue
                h0, w0 = int(torch.floor(hf)), int(torch.floor(wf))
                h1, w1 = min(max(h0 + 1, 0), h - 1), min(max(w0 + 1, 0), w - 1)
                h0, w0 = min(max(h0, 0), h - 1), min(max(w0, 0), w - 1)
                hc = torch.clamp(hf, 0, h - 1)
                wc = torch.clamp(wf, 0, w - 1)
                lh, lw = hc - h0, wc - w0
                hh, hw = 1 - lh, 1 - lw
                v = x[b]
                out[k, :, i, j] = (hw * hh) * v[:, h0, w0] + (lw * hh) * v[:, h0, w1] + \
                    (hw * lh) * v[:, h1, w0] + (lw * lh) * v[:, h1, w1]
    return out


# ------------------------------------------------------------------------- random boxes
SCALES = [1.0, 0.5, 0.25, 0.125, 0.0625, float(F(1 / 3))]


def _ulps(v, k):
    v = F(v)
    for _ in range(abs(k)):
        v = np.nextafter(v, F(np.inf) if k > 0 else F(-np.inf))
    return float(v)


@st.composite
def roi_case(draw):
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 13))
    scale = draw(st.sampled_from(SCALES))
    big_w, big_h = w / scale, h / scale
    rows = []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(["random", "zero", "clipped", "outside", "inverted", "half", "ulp"]))
        coord = st.floats(float(F(-big_w)), float(F(2 * big_w)), width=32)
        cy = st.floats(float(F(-big_h)), float(F(2 * big_h)), width=32)
        x1, y1, x2, y2 = draw(coord), draw(cy), draw(coord), draw(cy)
        if kind == "random":
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
        elif kind == "zero":
            x2, y2 = x1, y1
        elif kind == "clipped":      # BoxGroupOutput clips to map size * stride
            x1, y1 = abs(x1) % big_w, abs(y1) % big_h
            x2, y2 = big_w, big_h
        elif kind == "outside":
            x1, y1 = big_w + abs(x1), big_h + abs(y1)
            x2, y2 = x1 + abs(x2), y1 + abs(y2)
        elif kind == "inverted":
            x1, x2 = max(x1, x2), min(x1, x2)
        elif kind == "half":         # corners whose scaled value is k + 0.5
            x1, y1, x2, y2 = [(math.floor(v * scale) + 0.5) / scale for v in (x1, y1, x2, y2)]
        else:                        # a clipped box a few ulps off the border
            x1, y1 = abs(x1) % big_w, abs(y1) % big_h
            x2 = _ulps(big_w, draw(st.integers(-3, 3)))
            y2 = _ulps(big_h, draw(st.integers(-3, 3)))
            y1 = _ulps(y1, draw(st.integers(-40, 40)))
        rows.append([draw(st.integers(0, n - 1)), x1, y1, x2, y2])
    seed = draw(st.integers(0, 2 ** 16))
    return n, h, w, scale, np.asarray(rows, F).reshape(-1, 5), seed


def _maps(n, c, h, w, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)) + 1.0
    return torch.from_numpy(x), torch.from_numpy(x.astype(F))


def _same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want), float((got - want).abs().max())


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(roi_case(), st.integers(1, 4), st.integers(1, 4))
def test_roi_pool_is_the_loop_bit_for_bit(case, ph, pw):
    n, h, w, scale, rois, seed = case
    for x in _maps(n, 3, h, w, seed):
        r = torch.from_numpy(rois)
        _same(D.roi_pool(x, r, ph, pw, scale), loop_roi_pool(x, r, ph, pw, scale))


@SETTINGS
@given(roi_case(), st.integers(1, 4), st.sampled_from([0.0, 0.1, 0.25, 1.0]))
def test_roi_align_is_the_loop_bit_for_bit(case, pooled, pad_ratio):
    n, h, w, scale, rois, seed = case
    for x in _maps(n, 3, h, w, seed):
        r = torch.from_numpy(rois)
        _same(D.roi_align_grid(x, r, pooled, pooled + 1, scale, pad_ratio),
              loop_roi_align(x, r, pooled, pooled + 1, scale, pad_ratio))


@SETTINGS
@given(roi_case(), st.integers(1, 3), st.integers(1, 3))
def test_psroi_pool_is_the_loop_in_kernel_order(case, g, d):
    n, h, w, scale, rois, seed = case
    for x in _maps(n, d * g * g, h, w, seed):
        r = torch.from_numpy(rois)
        got = D.psroi_pool(x, r, d, g, scale)
        _same(got, loop_psroi_pool(x, r, d, g, scale, kernel_order=True))
        old = loop_psroi_pool(x, r, d, g, scale)
        tol = 1e-5 if x.dtype == torch.float32 else 1e-13
        torch.testing.assert_close(got, old, rtol=tol, atol=tol)


def test_border_row_flip_is_kept():
    """Clipped ROIs (y2 = H / scale) whose y1 steps by one float32 ulp, across Caffe's
    discontinuity (the last grid row, at exactly H - 0.5 in exact arithmetic, is sampled or
    zeroed by the float32 rounding): the vectorised ROIAlign keeps the loop's choice on each side
    of every flip, and the choice does flip."""
    h, scale, pooled = 16, 0.25, 7
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 3, h, 24)) + 2)
    y1 = [F(1.1668243)]
    for _ in range(300):
        y1.append(np.nextafter(y1[-1], F(10)))
    rois = torch.from_numpy(np.asarray([[0, 2, v, 50, h / scale] for v in y1], F))
    got = D.roi_align_grid(x, rois, pooled, pooled, scale, 0.0)
    zeroed = (got[:, :, pooled].abs().amax(dim=(1, 2)) == 0).tolist()
    flips = [k for k in range(len(y1) - 1) if zeroed[k] != zeroed[k + 1]]
    assert flips, "no ulp step flips the last row"
    near = sorted({k + d for k in flips[:4] for d in (-1, 0, 1, 2) if 0 <= k + d < len(y1)})
    _same(got[near], loop_roi_align(x, rois[near], pooled, pooled, scale, 0.0))


@pytest.mark.parametrize("fn,args", [(D.roi_pool, (2, 2, 0.25)), (D.psroi_pool, (2, 2, 0.25)),
                                     (D.roi_align_grid, (2, 2, 0.25, 0.0))])
def test_refusals(fn, args):
    """A batch index outside the batch is Caffe's CHECK failure; a ROIPooling/PSROIPooling
    corner that is not finite (Caffe's int cast of it is undefined), or an ROIAlign sample
    point at NaN, is refused too (the loops failed there with an OverflowError or ValueError)."""
    x = torch.zeros((1, 8, 4, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="ROI 1: batch index 1 is outside the batch of 1"):
        fn(x, torch.tensor([[0, 0, 0, 8, 8], [1, 0, 0, 8, 8]], dtype=torch.float32), *args)
    with pytest.raises(ValueError, match="ROI 1: .*(out of range|NaN)"):
        fn(x, torch.tensor([[0, 0, 0, 8, 8], [0, 0, float("nan"), 8, 8]], dtype=torch.float32), *args)
    if fn is not D.roi_align_grid:
        with pytest.raises(ValueError, match="ROI 0: .*out of range"):
            fn(x, torch.tensor([[0, 0, 0, float("inf"), 8]], dtype=torch.float32), *args)
    else:   # an infinite corner: 0 * inf puts the first point at NaN (the loop failed there too)
        r = torch.tensor([[0, 0, 0, 8, float("inf")]], dtype=torch.float32)
        with pytest.raises(ValueError, match="NaN"):
            fn(x, r, *args)
        with pytest.raises(ValueError, match="NaN"):
            loop_roi_align(x, r, *args)
        # ... but not where the point's column is outside the map: zeros, as in the loop
        r = torch.tensor([[0, 40, 0, 50, float("inf")]], dtype=torch.float32)
        _same(fn(x + 1, r, *args), loop_roi_align(x + 1, r, *args))


def test_no_rois_and_empty_bins():
    x = torch.ones((1, 4, 3, 3), dtype=torch.float64)
    none = torch.zeros((0, 5), dtype=torch.float32)
    assert D.roi_pool(x, none, 2, 2, 1.0).shape == (0, 4, 2, 2)
    assert D.psroi_pool(x, none, 1, 2, 1.0).shape == (0, 1, 2, 2)
    assert D.roi_align_grid(x, none, 2, 2, 1.0, 0.0).shape == (0, 4, 3, 3)
    far = torch.tensor([[0, 50, 50, 60, 60]], dtype=torch.float32)
    assert D.roi_pool(x, far, 2, 2, 1.0).abs().max() == 0
    assert D.psroi_pool(x, far, 1, 2, 1.0).abs().max() == 0
