"""MAX Pooling's second top, the mask (SegNet / ENet feed it to Upsample).

semantics: BVLC/caffe src/caffe/layers/pooling_layer.cpp (MAX): each window is clipped to the
image ([max(hs, 0), min(hs + k, H)) with hs = i * stride - pad), the first maximum in row-major
order wins (strict >), and the mask holds its flat index h * W + w in the unpadded plane, as a
float. Ties between equal values inside one window are the only place where runtimes may
choose another index.

Every backend pads explicitly (with -FLT_MAX, so padding never wins) and pools without
padding, then maps the padded plane's index (hp, wp) back to (hp - pad_h) * W + (wp - pad_w).
"""
from __future__ import annotations

from .._lazy import numpy as np

from ..errors import ProtogenError
from .pool import FLT_MAX, window_overhang


def _geometry(kind, p, shape):
    if p.pool != "MAX":
        raise ProtogenError(f"only MAX pooling has a mask top, not {p.pool}")
    _, _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kind.geometry(p, shape)
    eh, ew = window_overhang(h, kh, ph, sh, ho), window_overhang(w, kw, pw, sw, wo)
    return (kh, kw), (sh, sw), (ph, pw), (eh, ew), (ho, wo)


def mask_onnx(kind, ctx, step) -> None:
    p = step.layer.params
    x_ssa = step.inputs[0]
    n, c, h, w = step.in_shapes[0]
    (kh, kw), (sh, sw), (ph, pw), (eh, ew), (ho, wo) = _geometry(kind, p, step.in_shapes[0])
    ctx.static(x_ssa, 2)            # the index arithmetic bakes H and W
    ctx.static(x_ssa, 3)
    x = ctx.name(x_ssa)
    if ph or pw or eh or ew:
        x = ctx.op("Pad", [x, ctx.ints("pads", [0, 0, ph, pw, 0, 0, ph + eh, pw + ew]),
                           ctx.const("pad_value", np.float32(-FLT_MAX))], mode="constant")
    hp, wp = h + 2 * ph + eh, w + 2 * pw + ew
    y, idx = ctx.op("MaxPool", [x], outs=[step.outputs[0], ctx.tmp("indices")],
                    kernel_shape=[kh, kw], strides=[sh, sw])
    plane = ctx.op("Mod", [idx, ctx.ints("plane", [hp * wp])])          # drop n, c
    row = ctx.op("Sub", [ctx.op("Div", [plane, ctx.ints("wp", [wp])]), ctx.ints("ph", [ph])])
    col = ctx.op("Sub", [ctx.op("Mod", [plane, ctx.ints("wp", [wp])]), ctx.ints("pw", [pw])])
    flat = ctx.op("Add", [ctx.op("Mul", [row, ctx.ints("w", [w])]), col])
    ctx.op("Cast", [flat], step.outputs[1], to=1)                      # FLOAT, as Caffe stores it


def mask_torch(kind, p, x):
    """Caffe's loops on tensors: window maxima with their first row-major index."""
    import torch
    import torch.nn.functional as F
    n, c, h, w = (int(d) for d in x.shape)
    (kh, kw), (sh, sw), (ph, pw), (eh, ew), (ho, wo) = _geometry(kind, p, (n, c, h, w))
    lo = float(torch.finfo(torch.float32).min)
    xp = F.pad(x, (pw, pw + ew, ph, ph + eh), value=lo)
    # every window's values in row-major order: (n, c, ho, wo, kh*kw)
    win = xp.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :ho, :wo].reshape(n, c, ho, wo, kh * kw)
    first = torch.argmax((win == win.amax(-1, keepdim=True)).to(torch.int8), dim=-1)   # first max
    y = torch.gather(win, -1, first.unsqueeze(-1)).squeeze(-1)
    hh = torch.arange(ho).reshape(1, 1, ho, 1) * sh - ph + first // kw
    ww = torch.arange(wo).reshape(1, 1, 1, wo) * sw - pw + first % kw
    return [y, (hh * w + ww).to(x.dtype)]


def mask_source(kind, p, src, step) -> None:
    _, _, h, w = step.in_shapes[0]
    (kh, kw), (sh, sw), (ph, pw), (eh, ew), (ho, wo) = _geometry(kind, p, step.in_shapes[0])
    hp, wp = h + 2 * ph + eh, w + 2 * pw + ew
    y, m = src.ys()
    x = src.x()
    if ph or pw or eh or ew:
        src.uses.add("FLT_MAX")
        x = f"F.pad({x}, ({pw}, {pw + ew}, {ph}, {ph + eh}), value=-FLT_MAX)"
    src.line(f"{y}, _i = F.max_pool2d({x}, ({kh}, {kw}), ({sh}, {sw}), return_indices=True)", True)
    row = f"(_i // {wp} - {ph})" if ph else f"(_i // {wp})"
    col = f"_i % {wp} - {pw}" if pw else f"_i % {wp}"
    where = f"the {h}x{w} plane" + (f" (padded plane {hp}x{wp})" if (hp, wp) != (h, w) else "")
    src.line(f"{m} = ({row} * {w} + {col}).to({y}.dtype)  # Caffe's mask: h * W + w in {where}")
