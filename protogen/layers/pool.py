"""Pooling, with Caffe's exact output-size rule."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, register, require_rank, spatial_pair

FLT_MAX = 3.4028234663852886e38   # float32 max, Caffe's -FLT_MAX initial value for MAX pooling
#: facebookarchive/C3D's PoolingParameter fields (proto/caffe.proto, read by layers/c3d.py)
C3D_POOL_FIELDS = ("kernel_depth", "temporal_stride")


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
    examples = (Example(params=dict(pool="MAX", kernel_size=3, stride=2), ins=[(2, 3, 8, 8)]),
                Example(params=dict(pool="AVE", kernel_size=3, stride=2, pad=1), ins=[(2, 3, 7, 6)]),
                Example(params=dict(pool="AVE", global_pooling=True), ins=[(2, 3, 5, 4)]),
                Example(params=dict(pool="MAX", kernel_h=2, kernel_w=3, stride=2, pad_w=1),
                        ins=[(2, 2, 7, 7)]),
                Example(params=dict(pool="MAX", kernel_size=3, stride=2, pad=1), ins=[(2, 3, 7, 8)],
                        n_tops=2))
    param_field = "pooling_param"
    Params = PoolParams
    #: MAX pooling may give a second top, the mask (layers/pool_mask.py)
    n_tops = (1, 2)

    def output_shapes(self, p, ins, n_tops):
        out = self.shapes(p, ins)
        if n_tops == 2 and p.pool != "MAX":
            raise ProtogenError(f"only MAX pooling has a mask top, not {p.pool}")
        return out * n_tops

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
        c = lp.pooling_param
        bad = [f"pooling_param.{f} is C3D's (POOLING3D), not Pooling's: upstream Pooling is 2-D"
               for f in C3D_POOL_FIELDS if c.HasField(f)]
        if c.pool == c.STOCHASTIC:
            bad.append("STOCHASTIC pooling has no deterministic inference form")
        return bad

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

    def caffe_layers(self, layer, dialect, shapes=None) -> list:
        """Floor pooling where the dialect has no ``round_mode`` (OpenCV's Caffe importer,
        forks older than the field): the ceil-mode Pooling (Caffe's default) followed by a
        Slice per spatial axis whose floor size is smaller, keeping the first rows/columns
        (the dropped pieces go to a Silence layer).
        Both modes place window i at ``i*s - pad`` with the same clipping and divisor, and the
        ceil count exceeds the floor count by at most one window, so this is exact."""
        from dataclasses import replace

        from ..caffe import pb
        p = layer.params
        if dialect.floor_pool != "slice" or p.round_mode != "FLOOR" or p.global_pooling:
            return super().caffe_layers(layer, dialect, shapes)
        if shapes is None:
            raise ProtogenError("floor pooling without round_mode needs known input shapes")
        ceil_p = replace(p, round_mode="CEIL")
        (_, _, _, floor_out), (_, _, _, ceil_out) = (self.geometry(p, shapes[0]), self.geometry(ceil_p, shapes[0]))
        cut = [(ax, f) for ax, f, c in zip((2, 3), floor_out, ceil_out) if f != c]
        if not cut:
            return super().caffe_layers(layer.copy(params=ceil_p), dialect, shapes)
        name, tops = layer.name, list(layer.tops)
        lps = super().caffe_layers(layer.copy(params=ceil_p, tops=[f"{t}/ceil" for t in tops]), dialect, shapes)
        for k, t in enumerate(tops):
            src = f"{t}/ceil"
            for n_cut, (ax, keep) in enumerate(cut):
                dst = t if n_cut == len(cut) - 1 else f"{t}/ceil_{'hw'[ax - 2]}"
                sl = pb.LayerParameter(name=f"{name}/floor_{'hw'[ax - 2]}" + (f"{k}" if k else ""), type="Slice",
                                       bottom=[src], top=[dst, f"{dst}/surplus_{'hw'[ax - 2]}"])
                sl.slice_param.axis = ax
                sl.slice_param.slice_point.append(keep)
                lps.append(sl)
                src = dst
        # the surplus pieces end in a Silence (upstream since 2014, OpenCV, the forks), so
        # no reader takes them for net outputs
        surplus = [t for lp in lps[1:] for t in lp.top[1:]]
        lps.append(pb.LayerParameter(name=f"{name}/floor_surplus", type="Silence", bottom=surplus))
        return lps

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

    def to_onnx(self, ctx, step):
        """Exact Caffe pooling on every provider, never via ceil_mode: explicit end padding
        makes Caffe's ceil windows; AVE divides like Caffe through a constant map where a
        window is clipped at H + pad. See CAFFE-SEMANTICS.md section 8."""
        import numpy as np
        p = step.layer.params
        if len(step.outputs) == 2:
            from .pool_mask import mask_onnx
            return mask_onnx(self, ctx, step)
        if p.pool not in ("MAX", "AVE"):
            raise ProtogenError(f"{p.pool} pooling has no deterministic inference form")
        x_ssa, y = step.inputs[0], step.outputs[0]
        x = ctx.name(x_ssa)
        if p.global_pooling:
            ctx.op("GlobalMaxPool" if p.pool == "MAX" else "GlobalAveragePool", [x], y)
            return
        n, c, h, w = step.in_shapes[0]
        (kh, kw), (sh, sw), (ph, pw), (ho, wo) = self.geometry(p, step.in_shapes[0])
        if p.round_mode == "CEIL":
            # Caffe's ceil windows at another size need other end pads: bake the size
            if sh > 1:
                ctx.static(x_ssa, 2)
            if sw > 1:
                ctx.static(x_ssa, 3)
        eh = window_overhang(h, kh, ph, sh, ho)
        ew = window_overhang(w, kw, pw, sw, wo)
        kernel, strides = [kh, kw], [sh, sw]
        if eh == 0 and ew == 0:
            # every window ends inside [0, H + pad): symmetric pads are exact (for AVE the
            # divisor is always kh*kw, which count_include_pad gives)
            pads = [ph, pw, ph, pw] if (ph or pw) else None
            if p.pool == "MAX":
                ctx.op("MaxPool", [x], y, kernel_shape=kernel, strides=strides, pads=pads)
            else:
                ctx.op("AveragePool", [x], y, kernel_shape=kernel, strides=strides, pads=pads,
                       count_include_pad=1 if pads else None)
            return
        pad_value = -FLT_MAX if p.pool == "MAX" else 0.0
        xp = ctx.op("Pad", [x, ctx.ints("pads", [0, 0, ph, pw, 0, 0, ph + eh, pw + ew]),
                            ctx.const("pad_value", np.float32(pad_value))], mode="constant")
        if p.pool == "MAX":
            # -FLT_MAX like Caffe's initial value: padding never wins, an empty window
            # (pad 0, stride > kernel) gives -FLT_MAX as in Caffe
            ctx.op("MaxPool", [xp], y, kernel_shape=kernel, strides=strides)
            return
        # Caffe: pool_size = (min(hs+k, H+p) - hs) * (min(ws+k, W+p) - ws), hs = i*s - p
        hs = np.arange(ho) * sh - ph
        ws = np.arange(wo) * sw - pw
        size = np.outer(np.minimum(hs + kh, h + ph) - hs, np.minimum(ws + kw, w + pw) - ws)
        with np.errstate(divide="ignore"):
            corr = (np.float64(kh * kw) / size).astype(np.float32)
        if np.all(corr == 1):
            ctx.op("AveragePool", [xp], y, kernel_shape=kernel, strides=strides)
            return
        a = ctx.op("AveragePool", [xp], kernel_shape=kernel, strides=strides)
        ctx.op("Mul", [a, ctx.const("divisor_correction", corr.reshape(1, 1, ho, wo))], y)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        """Caffe's PoolingLayer forward on tensors: the output size by Caffe's rule; MAX over
        windows clipped to the image (init -FLT_MAX); AVE = window sum / pool_size where
        pool_size counts padding but not the part of the window beyond H + pad."""
        import torch
        import torch.nn.functional as F
        x = xs[0]
        if n_tops == 2:
            from .pool_mask import mask_torch
            return mask_torch(self, p, x)
        if p.pool not in ("MAX", "AVE"):
            raise ProtogenError(f"{p.pool} pooling has no deterministic inference form")
        if p.global_pooling:
            return [x.amax(dim=(2, 3), keepdim=True) if p.pool == "MAX" else x.mean(dim=(2, 3), keepdim=True)]
        h, w = int(x.shape[2]), int(x.shape[3])
        ceil = p.round_mode == "CEIL"
        ho = pooled_size(h, p.kernel_h, p.pad_h, p.stride_h, ceil)
        wo = pooled_size(w, p.kernel_w, p.pad_w, p.stride_w, ceil)
        # pad far enough that every window [i*s - p, i*s - p + k) lies inside the tensor
        need_h = (ho - 1) * p.stride_h + p.kernel_h
        need_w = (wo - 1) * p.stride_w + p.kernel_w
        end_h = max(0, need_h - h - p.pad_h)
        end_w = max(0, need_w - w - p.pad_w)
        if p.pool == "MAX":
            lo = float(torch.finfo(torch.float32).min)
            xp = F.pad(x, (p.pad_w, end_w, p.pad_h, end_h), value=lo)
            y = F.max_pool2d(xp, (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w))
            return [y[:, :, :ho, :wo]]
        xp = F.pad(x, (p.pad_w, end_w, p.pad_h, end_h), value=0.0)
        sums = F.avg_pool2d(xp, (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w),
                            divisor_override=1)[:, :, :ho, :wo]
        hstart = torch.arange(ho, device=x.device) * p.stride_h - p.pad_h
        hend = torch.clamp(hstart + p.kernel_h, max=h + p.pad_h)
        wstart = torch.arange(wo, device=x.device) * p.stride_w - p.pad_w
        wend = torch.clamp(wstart + p.kernel_w, max=w + p.pad_w)
        pool_size = ((hend - hstart)[:, None] * (wend - wstart)[None, :]).to(x.dtype)
        return [sums / pool_size]

    def torch_source(self, p: PoolParams, src, step):
        """Plain F.max_pool2d / F.avg_pool2d where every window ends inside [0, H + pad);
        else explicit end padding (-FLT_MAX or 0) + pooling without padding, and for AVE
        window sums divided by Caffe's pool sizes (a literal divisor map)."""
        from ..fmt import pair
        if len(step.outputs) == 2:
            from .pool_mask import mask_source
            return mask_source(self, p, src, step)
        if p.pool not in ("MAX", "AVE"):
            raise ProtogenError(f"{p.pool} pooling has no deterministic inference form")
        x = src.x()
        if p.global_pooling:
            src.assign(f"{x}.amax((2, 3), keepdim=True)" if p.pool == "MAX" else f"{x}.mean((2, 3), keepdim=True)")
            return
        _, _, h, w = step.in_shapes[0]
        (kh, kw), (sh, sw), (ph, pw), (ho, wo) = self.geometry(p, step.in_shapes[0])
        eh, ew = window_overhang(h, kh, ph, sh, ho), window_overhang(w, kw, pw, sw, wo)
        k, s = pair(kh, kw), pair(sh, sw)
        fn = "F.max_pool2d" if p.pool == "MAX" else "F.avg_pool2d"
        if eh == 0 and ew == 0 and 2 * ph <= kh and 2 * pw <= kw:
            # symmetric padding is exact (AVE: the divisor is always kh*kw, padding included)
            pad = f", {pair(ph, pw)}" if (ph or pw) else ""
            src.assign(f"{fn}({x}, {k}, {s}{pad})")
            return
        # pad explicitly: Caffe's last (ceil) window, or a pad PyTorch refuses (> kernel/2)
        if p.pool == "MAX":
            src.uses.add("FLT_MAX")
            src.assign(f"F.max_pool2d(F.pad({x}, ({pw}, {pw + ew}, {ph}, {ph + eh}), value=-FLT_MAX), {k}, {s})")
            return
        # Caffe: pool_size = (min(hs+k, H+p) - hs) * (min(ws+k, W+p) - ws), hs = i*s - p
        rows = [min(i * sh - ph + kh, h + ph) - (i * sh - ph) for i in range(ho)]
        cols = [min(j * sw - pw + kw, w + pw) - (j * sw - pw) for j in range(wo)]
        xp = f"F.pad({x}, ({pw}, {pw + ew}, {ph}, {ph + eh}))"
        if all(r == kh for r in rows) and all(c == kw for c in cols):
            src.assign(f"F.avg_pool2d({xp}, {k}, {s})")
            return

        def lit(v):
            return "torch.tensor([" + ", ".join(f"{float(a)}" for a in v) + "])"

        div = src.constant("divisor", f"{lit(rows)}.outer({lit(cols)})",
                           "Caffe's pool sizes (clipped at H + pad)")
        src.assign(f"F.avg_pool2d({xp}, {k}, {s}, divisor_override=1) / {div}")

    def shapes(self, p: PoolParams, ins):
        require_rank(ins, 4, "Pooling")
        n, c, h, w = ins[0]
        (kh, kw), _, (ph, pw), (ho, wo) = self.geometry(p, ins[0])
        if ho <= 0 or wo <= 0 or h + 2 * ph < kh or w + 2 * pw < kw:
            raise ShapeError(f"input {h}x{w} is smaller than the {kh}x{kw} pooling kernel (pad {ph},{pw})")
        return [(n, c, ho, wo)]
