"""Pooling, with Caffe's exact output-size rule."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import LayerType, register, require_rank, spatial_pair


@dataclass(frozen=True)
class PoolParams:
    pool: str = "MAX"             # MAX | AVE | STOCHASTIC
    kernel_h: int = 0
    kernel_w: int = 0
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    global_pooling: bool = False
    round_mode: str = "CEIL"      # CEIL | FLOOR


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool) -> int:
    """Caffe's PoolingLayer::Reshape for one axis.

    ``ceil((H + 2p - k) / s) + 1`` (or floor), then, when there is padding, drop the last
    window if it would start at or beyond ``H + p`` (inside the right padding only).
    """
    num = size + 2 * pad - kernel
    out = (-(-num // stride) if ceil else num // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def window_overhang(size: int, kernel: int, pad: int, stride: int, out: int) -> int:
    """How far the last window reaches past ``size + pad`` (>= 0): the extra end padding a
    symmetric-pad pooling needs to produce Caffe's ``out`` windows."""
    return max(0, (out - 1) * stride + kernel - (size + 2 * pad))


@register
class Pooling(LayerType):
    type = "Pooling"
    param_field = "pooling_param"
    Params = PoolParams

    def validate(self, p: PoolParams) -> None:
        if p.pool not in ("MAX", "AVE", "STOCHASTIC"):
            raise ProtogenError(f"unknown pool method {p.pool}")
        if p.global_pooling:
            if p.pad_h or p.pad_w or p.stride_h != 1 or p.stride_w != 1:
                raise ProtogenError("global_pooling requires pad 0 and stride 1")
            return
        if min(p.kernel_h, p.kernel_w) <= 0:
            raise ProtogenError("pooling needs a positive kernel_size (or global_pooling)")
        if min(p.stride_h, p.stride_w) <= 0:
            raise ProtogenError("pooling stride must be positive")
        if p.pad_h or p.pad_w:
            if p.pool not in ("MAX", "AVE"):
                raise ProtogenError("padding is implemented only for MAX and AVE pooling")
            if p.pad_h >= p.kernel_h or p.pad_w >= p.kernel_w:
                raise ProtogenError(f"pad ({p.pad_h},{p.pad_w}) must be smaller than the kernel "
                                    f"({p.kernel_h},{p.kernel_w})")

    def parse(self, lp) -> PoolParams:
        c = lp.pooling_param
        if c.global_pooling:
            kh = kw = 0
        else:
            kh, kw = spatial_pair((c.kernel_size,) if c.HasField("kernel_size") else (),
                                  c.kernel_h, c.kernel_w, 0, "kernel_size")
        sh, sw = spatial_pair((c.stride,) if c.HasField("stride") else (), c.stride_h, c.stride_w, 1, "stride")
        ph, pw = spatial_pair((c.pad,) if c.HasField("pad") else (), c.pad_h, c.pad_w, 0, "pad")
        p = PoolParams(pool=c.PoolMethod.Name(c.pool), kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                       pad_h=ph, pad_w=pw, global_pooling=c.global_pooling,
                       round_mode=c.RoundMode.Name(c.round_mode))
        self.validate(p)
        return p

    def unsupported(self, lp) -> list[str]:
        if lp.pooling_param.pool == lp.pooling_param.STOCHASTIC:
            return ["STOCHASTIC pooling has no deterministic inference form"]
        return []

    def write(self, p: PoolParams, lp) -> None:
        c = lp.pooling_param
        c.pool = c.PoolMethod.Value(p.pool)
        if p.global_pooling:
            c.global_pooling = True
        else:
            for name, a, b, dflt in (("kernel", p.kernel_h, p.kernel_w, None),
                                     ("stride", p.stride_h, p.stride_w, 1), ("pad", p.pad_h, p.pad_w, 0)):
                if a == b:
                    if a != dflt:
                        setattr(c, "kernel_size" if name == "kernel" else name, a)
                else:
                    setattr(c, f"{name}_h", a)
                    setattr(c, f"{name}_w", b)
        if p.round_mode != "CEIL":
            c.round_mode = c.RoundMode.Value(p.round_mode)

    def geometry(self, p: PoolParams, shape):
        """(kernel, stride, pad, out) per spatial axis, with global pooling resolved."""
        _, _, h, w = shape
        if p.global_pooling:
            return (h, w), (1, 1), (0, 0), (1, 1)
        ceil = p.round_mode == "CEIL"
        ho = pooled_size(h, p.kernel_h, p.pad_h, p.stride_h, ceil)
        wo = pooled_size(w, p.kernel_w, p.pad_w, p.stride_w, ceil)
        return (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (ho, wo)

    def canonical_params(self, p: PoolParams, ins, phase=None):
        # a single window covering the whole (unpadded) input is global pooling, whatever
        # its stride and rounding
        from dataclasses import replace
        if not ins or len(ins[0]) != 4:
            return p
        h, w = ins[0][2:]
        if p.global_pooling or ((p.kernel_h, p.kernel_w) == (h, w) and not (p.pad_h or p.pad_w)):
            return replace(p, kernel_h=0, kernel_w=0, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                           global_pooling=True, round_mode="CEIL")
        return p

    def shapes(self, p: PoolParams, ins):
        require_rank(ins, 4, "Pooling")
        n, c, h, w = ins[0]
        (kh, kw), _, (ph, pw), (ho, wo) = self.geometry(p, ins[0])
        if ho <= 0 or wo <= 0 or h + 2 * ph < kh or w + 2 * pw < kw:
            raise ShapeError(f"input {h}x{w} is smaller than the {kh}x{kw} pooling kernel (pad {ph},{pw})")
        return [(n, c, ho, wo)]
