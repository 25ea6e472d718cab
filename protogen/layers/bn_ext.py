"""Normalisation with batch statistics, and the forks' ``BN`` layer.

* :func:`batch_stats_onnx` / :func:`batch_stats_torch` / :func:`batch_stats_source`: per-channel
  normalisation by the batch's own mean and (biased) variance over every axis but the channel
  axis 1; used by upstream BatchNorm with ``use_global_stats: false`` at test time and by
  SegNet's BN in LEARN mode.
* :class:`BN`: the ``BN`` layer of two fork families, told apart by their ``bn_param`` fields:
  SegNet (alexgkendall/caffe-segnet: scale_filler/shift_filler/bn_mode; blobs scale, shift)
  and yjxiong's (PSPNet, hszhao/PSPNet: slope_filler/bias_filler/momentum/eps/frozen; blobs
  slope, bias, mean, variance).
"""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ShapeError
from .base import Example, LayerType, layer_blobs, register

#: the note shown for a layer that normalises with batch statistics at inference
BATCH_STATS_NOTE = ("normalises with the batch's own mean and variance at test time (as Caffe "
                    "does for {what}), not with the stored statistics: outputs depend on the "
                    "other samples of the batch; this is rarely intended")


def batch_stats_onnx(ctx, x: str, out: str, rank: int, eps: float, var_from_squares: bool) -> None:
    """y = (x - E[x]) / sqrt(var + eps), moments over every axis but 1. The variance is
    E[(x - E[x])^2], or with ``var_from_squares`` E[x^2] - E[x]^2 (SegNet's formula)."""
    axes = [0] + list(range(2, rank))
    mean = ctx.op("ReduceMean", [x], axes=axes, keepdims=1)
    d = ctx.op("Sub", [x, mean])
    if var_from_squares:
        ex2 = ctx.op("ReduceMean", [ctx.op("Mul", [x, x])], axes=axes, keepdims=1)
        var = ctx.op("Sub", [ex2, ctx.op("Mul", [mean, mean])])
    else:
        var = ctx.op("ReduceMean", [ctx.op("Mul", [d, d])], axes=axes, keepdims=1)
    std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const("eps", np.float32(eps))])])
    ctx.op("Div", [d, std], out)


def batch_stats_torch(x, eps: float, var_from_squares: bool):
    import torch
    axes = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    if var_from_squares:
        var = (x * x).mean(dim=axes, keepdim=True) - mean * mean
    else:
        var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def batch_stats_source(src, step, eps: float) -> str:
    """An expression normalising ``src.x()`` with batch statistics: nn.BatchNorm without
    running statistics (it always uses the batch's mean and biased variance)."""
    from ..torch_codegen import num
    rank = len(step.in_shapes[0])
    dim = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
    if dim is None:
        raise ShapeError(f"batch statistics on a {rank}-D blob have no nn.BatchNorm form")
    c = step.in_shapes[0][1]
    m = src.module(f"nn.BatchNorm{dim}d({c}, eps={num(eps)}, affine=False, track_running_stats=False)",
                   {}, ": batch statistics at test time, as Caffe computes")
    return f"{m}({src.x()})"


@dataclass(frozen=True)
class BNParams:
    #: "segnet" (scale, shift) or "pspnet" (slope, bias, mean, variance), from the fields used
    variant: str = "segnet"
    bn_mode: str = "LEARN"          # segnet: LEARN = batch statistics, INFERENCE = scale/shift only
    eps: float = 1e-5               # pspnet
    frozen: bool = False            # pspnet (stored statistics at TRAIN too)
    momentum: float = 0.9           # pspnet (training only)


_PSP_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")


@register
class BN(LayerType):
    """SegNet (alexgkendall/caffe-segnet src/caffe/layers/bn_layer.cpp), blobs scale, shift
    (1, C, 1, 1): INFERENCE y = x * scale + shift; LEARN (the default, also at test time)
    y = (x - E[x]) / sqrt(E[x^2] - E[x]^2 + 1e-9) * scale + shift over the batch's N, H, W.
    yjxiong / PSPNet (hszhao/PSPNet src/caffe/layers/bn_layer.cpp at c479f4f), blobs slope,
    bias, mean, variance (1, C, 1, 1), chosen when any of slope_filler, bias_filler,
    momentum, eps, frozen is given: at test time y = slope * (x - mean) / sqrt(var + eps) + bias."""
    type = "BN"
    param_field = "bn_param"
    Params = BNParams
    inplace = True
    schemas = ("segnet", "pspnet")
    benign_param_fields = LayerType.benign_param_fields | {"scale_filler", "shift_filler",
                                                           "slope_filler", "bias_filler"}
    examples = (
        Example(params=dict(bn_mode="INFERENCE"), ins=[(2, 4, 5, 5)]),
        Example(ins=[(3, 4, 5, 3)]),
        Example(params=dict(frozen=True, momentum=0.95), ins=[(2, 4, 5, 5)]),
        Example(params=dict(eps=1e-3), ins=[(2, 3, 4, 4)]),
    )

    def parse(self, lp):
        m = lp.bn_param
        if any(m.HasField(f) for f in _PSP_FIELDS):
            return BNParams(variant="pspnet", bn_mode="LEARN", eps=m.eps, frozen=m.frozen,
                            momentum=m.momentum)
        return BNParams(bn_mode=m.DESCRIPTOR.fields_by_name["bn_mode"].enum_type
                        .values_by_number[m.bn_mode].name)

    def write(self, p, lp):
        m = lp.bn_param
        if p.variant == "pspnet":
            m.eps = p.eps                   # always written: it marks the variant
            if p.frozen:
                m.frozen = True
            if abs(p.momentum - 0.9) > 1e-7:
                m.momentum = p.momentum
        elif p.bn_mode != "LEARN":
            m.bn_mode = m.DESCRIPTOR.fields_by_name["bn_mode"].enum_type.values_by_name[p.bn_mode].number

    def note(self, p) -> str | None:
        """One line for the user when this layer computes something rarely intended."""
        if p.variant == "segnet" and p.bn_mode == "LEARN":
            return BATCH_STATS_NOTE.format(what="SegNet's BN in bn_mode LEARN")
        return None

    def shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError(f"BN needs a channel axis, got {ins[0]}")
        return [ins[0]]

    def weight_shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError(f"BN needs a channel axis, got {ins[0]}")
        s = (1, ins[0][1], 1, 1)
        return [s] * (4 if p.variant == "pspnet" else 2)

    def learnable(self, p, ins):
        return [True, True, False, False] if p.variant == "pspnet" else [True, True]

    calibrates = True

    def calibrated_blobs(self, p, x, out_mean, out_std, var_floor):
        """Seeded blobs that give the output mean ``out_mean`` and std ``out_std`` per channel
        on the calibration batch ``x`` (as BatchNorm's): without this a deep net of INFERENCE-
        mode BN layers (ENet's merged deploy file) multiplies its activations layer by layer."""
        axes = [0] + list(range(2, x.dim()))
        s = (1, int(x.shape[1]), 1, 1)
        mean = x.mean(axes).cpu().numpy()
        var = x.var(axes, unbiased=False).cpu().numpy()
        var = np.maximum(var, var_floor * float(var.mean()) + 1e-12)
        ones = np.ones(s, np.float32)
        if p.variant == "pspnet":      # slope * (x - mean) / sqrt(var + eps) + bias
            return [(ones * out_std).astype(np.float32), (ones * out_mean).astype(np.float32),
                    mean.reshape(s).astype(np.float32), var.reshape(s).astype(np.float32)]
        if p.bn_mode == "LEARN":       # the batch's own statistics normalise: scale and shift only
            return [(ones * out_std).astype(np.float32), (ones * out_mean).astype(np.float32)]
        scale = out_std / np.sqrt(var)                                  # INFERENCE: x * scale + shift
        return [scale.reshape(s).astype(np.float32), (out_mean - mean * scale).reshape(s).astype(np.float32)]

    def init_weights(self, p, ins, rng):
        s = self.weight_shapes(p, ins)[0]
        ws = [rng.uniform(0.8, 1.2, s).astype(np.float32),
              (rng.standard_normal(s) * 0.1).astype(np.float32)]
        if p.variant == "pspnet":
            ws += [(rng.standard_normal(s) * 0.5).astype(np.float32), rng.uniform(1.0, 2.0, s).astype(np.float32)]
        return ws

    @staticmethod
    def _chan(a, rank):
        return np.asarray(a, np.float32).reshape((-1,) + (1,) * (rank - 2))

    def to_onnx(self, ctx, step):
        p = step.layer.params
        ws = layer_blobs(step)
        rank = len(step.in_shapes[0])
        x, out = ctx.name(step.inputs[0]), step.outputs[0]
        if p.variant == "pspnet":
            ctx.op("BatchNormalization", [x] + [ctx.const(h, w.reshape(-1)) for h, w in
                                                zip(("slope", "bias", "mean", "var"), ws)],
                   out, epsilon=float(p.eps))
            return
        if p.bn_mode == "LEARN":
            x = ctx.tmp("normalized")
            batch_stats_onnx(ctx, ctx.name(step.inputs[0]), x, rank, 1e-9, True)
        y = ctx.op("Mul", [x, ctx.const("scale", self._chan(ws[0], rank))])
        ctx.op("Add", [y, ctx.const("shift", self._chan(ws[1], rank))], out)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        view = (1, -1) + (1,) * (x.dim() - 2)
        scale, shift = blobs[0].reshape(view), blobs[1].reshape(view)
        if p.variant == "pspnet":
            mean, var = blobs[2].reshape(view), blobs[3].reshape(view)
            return [scale * ((x - mean) * torch.pow(var + p.eps, -0.5)) + shift]
        if p.bn_mode == "LEARN":
            x = batch_stats_torch(x, 1e-9, True)
        return [x * scale + shift]

    def torch_source(self, p, src, step):
        from ..torch_codegen import num
        ws = layer_blobs(step)
        rank = len(step.in_shapes[0])
        c = step.in_shapes[0][1]
        if p.variant == "pspnet":
            dim = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
            if dim is None:
                raise ShapeError(f"BN on a {rank}-D blob has no nn.BatchNorm form")
            state = {"weight": ws[0].reshape(-1), "bias": ws[1].reshape(-1), "running_mean": ws[2].reshape(-1),
                     "running_var": ws[3].reshape(-1), "num_batches_tracked": np.array(0, np.int64)}
            m = src.module(f"nn.BatchNorm{dim}d({c}, eps={num(p.eps)})", state)
            src.assign(f"{m}({src.x()})")
            return
        if p.bn_mode == "LEARN":
            # E[x^2] - E[x]^2 as the fork computes it, eps 1e-9
            axes = tuple([0] + list(range(2, rank)))
            x = src.x()
            src.line(f"_m = {x}.mean(dim={axes}, keepdim=True)", True)
            src.line(f"_v = ({x} * {x}).mean(dim={axes}, keepdim=True) - _m * _m")
            xn = f"(({x} - _m) / torch.sqrt(_v + 1e-09))"
        else:
            xn = src.x()
        scale = src.parameter("scale", self._chan(ws[0], rank))
        shift = src.parameter("shift", self._chan(ws[1], rank))
        src.assign(f"{xn} * {scale} + {shift}")
