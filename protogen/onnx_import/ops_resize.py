"""Resize (opset 10+) and Upsample (opset 9): nearest-neighbour enlargement by an integer
factor becomes a Deconvolution with one group per channel, kernel = stride = the factor and
weights 1 (each input pixel copied into its s x s block: exact, and every Caffe runtime has
Deconvolution). Other modes are refused with the reason."""
from __future__ import annotations

import math

import numpy as np

from .registry import OpConverter, Refuse, onnx_op

_RESIZE_ATTRS = frozenset({"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                           "exclude_outside", "extrapolation_value", "antialias", "axes",
                           "keep_aspect_ratio_policy"})


def _text(v, default):
    v = default if v is None else v
    return v.decode() if isinstance(v, bytes) else v


def nearest_source(i: int, size_in: int, size_out: int, scale: float, ctm: str, nearest: str) -> int:
    """ONNX Resize's source index for output index ``i`` (nearest mode), clamped."""
    if ctm == "asymmetric":
        x = i / scale
    elif ctm == "align_corners":
        x = 0.0 if size_out == 1 else i * (size_in - 1) / (size_out - 1)
    elif ctm == "tf_half_pixel_for_nn":
        x = (i + 0.5) / scale
    elif ctm == "pytorch_half_pixel":
        x = (i + 0.5) / scale - 0.5 if size_out > 1 else 0.0
    else:       # half_pixel, half_pixel_symmetric (the same when size_out == size_in * scale)
        x = (i + 0.5) / scale - 0.5
    if nearest == "floor":
        j = math.floor(x)
    elif nearest == "ceil":
        j = math.ceil(x)
    elif nearest == "round_prefer_ceil":
        j = math.floor(x + 0.5)
    else:       # round_prefer_floor
        j = math.ceil(x - 0.5)
    return min(max(j, 0), size_in - 1)


@onnx_op("Resize", attrs=_RESIZE_ATTRS, default_ctm="half_pixel")
@onnx_op("Upsample", attrs=frozenset({"mode", "scales"}), default_ctm="asymmetric")
class Resize(OpConverter):
    default_ctm = "half_pixel"       # Upsample-9 indexes like Resize's asymmetric mode

    def static_problems(self, ctx, i, n, a, const):
        if any(t and t not in const for t in n.input[1:]):
            return ["roi, scales and sizes must be constant"]
        return []

    def _factors(self, ctx, n, a, shape):
        """Output size per axis from scales (Upsample's attribute or input) or sizes."""
        ins = [ctx.consts.get(t) if t else None for t in n.input]
        if "scales" in a:
            scales = list(a["scales"])
        elif len(ins) == 2:                     # Resize-10 / Upsample-9: X, scales
            scales = ins[1].reshape(-1).tolist()
        else:
            scales = ins[2].reshape(-1).tolist() if len(ins) > 2 and ins[2] is not None and ins[2].size else None
        if "axes" in a:
            raise Refuse("the axes attribute of Resize is not supported")
        if scales is not None:
            out = [int(math.floor(d * s)) for d, s in zip(shape, scales)]
        else:
            sizes = ins[3].reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else None
            if sizes is None:
                raise Refuse("Resize needs scales or sizes")
            out = [int(d) for d in sizes]
            scales = [o / d for o, d in zip(out, shape)]
        return scales, out

    def convert(self, ctx, i, n, a):
        from ..layers.conv import ConvParams
        shape = ctx.shape_of(n.input[0])
        mode = _text(a.get("mode"), "nearest")
        if len(shape) != 4:
            raise Refuse(f"only 4-D (N,C,H,W) input is supported, got {shape}")
        scales, out = self._factors(ctx, n, a, shape)
        if out[:2] != list(shape[:2]):
            raise Refuse("Resize of the batch or channel axis has no Caffe layer")
        ctm = _text(a.get("coordinate_transformation_mode"), self.default_ctm)
        if mode == "linear" and ctm == "align_corners" and ctx.dialect.has_interp:
            # the fork's Interp is exactly align-corners bilinear to a given size
            # (semantics: hszhao/PSPNet src/caffe/layers/interp_layer.cpp, via layers/resize.py)
            from ..layers.resize import InterpParams
            ctx.emit(i, "Interp", InterpParams(height=int(out[2]), width=int(out[3])))
            return
        if mode != "nearest":
            where = ("the Interp layer of the default dialect" if ctm == "align_corners"
                     else "no Caffe layer (Interp is align-corners only)")
            raise Refuse(f"Resize mode '{mode}' ({ctm}) has no exact Caffe form in dialect "
                         f"'{ctx.dialect.name}': {where}")
        nearest = _text(a.get("nearest_mode"), "round_prefer_floor")
        factors = []
        for size, o, s in zip(shape[2:], out[2:], scales[2:]):
            f = o // size
            if f < 1 or f * size != o or any(nearest_source(k, size, o, float(s), ctm, nearest) != k // f
                                             for k in range(o)):
                raise Refuse(f"nearest Resize {size} -> {o} ({ctm}, {nearest}) is not a whole-factor "
                             "pixel copy; no Caffe layer computes it exactly")
            factors.append(f)
        c = shape[1]
        fh, fw = factors
        if (fh, fw) == (1, 1):
            ctx.set_out(n.output[0], ctx.bottom(n.input[0]))
            return
        p = ConvParams(num_output=int(c), kernel_h=fh, kernel_w=fw, stride_h=fh, stride_w=fw, group=int(c),
                       bias_term=False)
        ctx.emit(i, "Deconvolution", p, [np.ones((c, 1, fh, fw), np.float32)])
