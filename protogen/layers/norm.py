"""BatchNorm, Scale, Bias and LRN."""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, layer_blobs, numel, register


@dataclass(frozen=True)
class BatchNormParams:
    use_global_stats: bool | None = None
    moving_average_fraction: float = 0.999
    eps: float = 1e-5
    #: the prototxt set NVIDIA Caffe's batch_norm_param scale_filler/bias_filler (read only;
    #: never written: the fillers themselves travel as layer.fillers)
    nvidia_fillers: bool = False


#: NVIDIA Caffe's BatchNorm fillers and the constant each must be for an upstream BatchNorm
#: to compute the same: NVIDIA/caffe src/caffe/layers/batch_norm_layer.cpp turns either one
#: on a fused per-channel scale and bias (scale_bias_, blobs 3 and 4: y = x_norm * scale +
#: bias) that they initialise
NVIDIA_FILLERS = (("scale_filler", 1.0), ("bias_filler", 0.0))
NVIDIA_FILLERS_NOTE = ("has NVIDIA Caffe's batch_norm_param scale_filler/bias_filler (constant 1/0): "
                       "there they add a learned scale and bias (blobs 3 and 4) starting at those "
                       "values; read as upstream BatchNorm (3 blobs, the fused scale/bias at their "
                       "initial identity); a caffemodel with the 5 NVIDIA blobs is refused")


@register
class BatchNorm(LayerType):
    """Caffe BatchNorm: no affine part. Blobs: mean*s, var*s, s (the scale factor).

    Inference: f = 0 if s == 0 else 1/s; y = (x - f*b0) / sqrt(f*b1 + eps).
    """
    type = "BatchNorm"
    examples = (Example(ins=[(2, 4, 5, 5)]), Example(params=dict(eps=1e-3), ins=[(3, 6)]),
                Example(params=dict(use_global_stats=False), ins=[(3, 4, 5, 5)]))
    param_field = "batch_norm_param"
    Params = BatchNormParams
    inplace = True
    calibrates = True
    benign_param_fields = LayerType.benign_param_fields | {"scale_filler"}

    def parse(self, lp):
        from dataclasses import replace
        p = super().parse(lp)
        m = lp.batch_norm_param
        return replace(p, nvidia_fillers=True) if any(m.HasField(f) for f, _ in NVIDIA_FILLERS) else p

    def unsupported(self, lp) -> list[str]:
        """NVIDIA's fillers are accepted where they start the fused scale/bias at identity
        (constant 1 and 0: then an upstream BatchNorm computes the same); another filler makes
        a different function even before training."""
        bad = super().unsupported(lp)
        m = lp.batch_norm_param
        for f, value in NVIDIA_FILLERS:
            fl = getattr(m, f)
            if m.HasField(f) and not (fl.type == "constant" and fl.value == value):
                bad.append(f"batch_norm_param.{f} ({fl.type}) is NVIDIA Caffe's initialiser of a "
                           f"fused scale/bias (batch_norm_layer.cpp); only constant {value:g} (the "
                           "upstream BatchNorm's function) is supported")
        return bad

    def calibrated_blobs(self, p, x, out_mean, out_std, var_floor):
        axes = [0] + list(range(2, x.dim()))
        mean = x.mean(axes).cpu().numpy()
        var = x.var(axes, unbiased=False).cpu().numpy()
        # a (near-)constant channel would amplify rounding noise by 1/sqrt(eps)
        var = np.maximum(var, var_floor * float(var.mean()) + 1e-12)
        if out_std != 1.0:
            var = var / out_std ** 2
        if out_mean:
            mean = mean - out_mean * np.sqrt(var)
        return [mean.astype(np.float32), var.astype(np.float32), np.ones(1, np.float32)]

    def weight_shapes(self, p, ins):
        if len(ins[0]) < 2:
            raise ShapeError("BatchNorm needs a channel axis")
        c = ins[0][1]
        return [(c,), (c,), (1,)]

    def learnable(self, p, ins):
        return [False, False, False]

    def canonical_params(self, p, ins, phase=None):
        # use_global_stats defaults to (phase == TEST); the moving-average fraction only
        # matters when statistics are updated (training without global stats)
        from dataclasses import replace
        p = replace(p, nvidia_fillers=False)      # a reading note, not part of the function
        if phase is None:
            return p
        use = (phase == "TEST") if p.use_global_stats is None else p.use_global_stats
        p = replace(p, use_global_stats=use)
        return replace(p, moving_average_fraction=0.999) if use else p

    def init_weights(self, p, ins, rng):
        c = ins[0][1]
        mean = (rng.standard_normal(c) * 0.5).astype(np.float32)
        var = rng.uniform(1.0, 2.0, c).astype(np.float32)
        return [mean, var, np.ones(1, np.float32)]

    def note(self, p) -> str | None:
        """One line for the user: use_global_stats false at test time means batch statistics;
        NVIDIA's fillers read as upstream BatchNorm."""
        notes = []
        if p.use_global_stats is False:
            from .bn_ext import BATCH_STATS_NOTE
            notes.append(BATCH_STATS_NOTE.format(what="use_global_stats: false"))
        if p.nvidia_fillers:
            notes.append(NVIDIA_FILLERS_NOTE)
        return "; ".join(notes) or None

    def to_onnx(self, ctx, step):
        """BatchNormalization(mean = f*b0, var = f*b1); a Scale that alone reads this output
        folds in as gamma/beta (decided by dataflow), otherwise gamma 1, beta 0.
        ``use_global_stats: false`` (an inference view is Caffe's TEST phase): the batch's own
        statistics, as Caffe computes them (bn_ext.batch_stats_onnx)."""
        p = step.layer.params
        if p.use_global_stats is False:
            from .bn_ext import batch_stats_onnx
            batch_stats_onnx(ctx, ctx.name(step.inputs[0]), step.outputs[0], len(step.in_shapes[0]),
                             p.eps, False)
            return
        mean, var = self.statistics(layer_blobs(step))
        c = mean.shape[0]
        out = step.outputs[0]
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        users = ctx.consumers(out)
        if len(users) == 1 and not ctx.is_output(out) and users[0].inputs.count(out) == 1:
            affine = users[0].layer.kind.batchnorm_affine(users[0])
            if affine is not None:
                gamma, beta = affine
                ctx.mark_done(users[0])
                out = users[0].outputs[0]
        ctx.op("BatchNormalization", [ctx.name(step.inputs[0]), ctx.const("scale", gamma),
                                      ctx.const("bias", beta), ctx.const("mean", mean),
                                      ctx.const("var", var)], out, epsilon=float(p.eps))

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch
        x = xs[0]
        if p.use_global_stats is False:     # batch_norm_layer.cpp: mean, E[(x - mean)^2] of the batch
            from .bn_ext import batch_stats_torch
            return [batch_stats_torch(x, p.eps, False)]
        s = blobs[2].reshape(-1)[0]
        f = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
        view = (1, -1) + (1,) * (x.dim() - 2)
        mean = (blobs[0] * f).reshape(view)
        var = (blobs[1] * f).reshape(view)
        return [(x - mean) / torch.sqrt(var + p.eps)]

    def torch_source(self, p, src, step):
        """nn.BatchNorm{1,2,3}d holding Caffe's statistics with the scale factor applied; a
        Scale that alone reads this output (decided by dataflow) becomes its affine part."""
        from ..fmt import num
        if p.use_global_stats is False:
            from .bn_ext import batch_stats_source
            src.assign(batch_stats_source(src, step, p.eps))
            return
        mean, var = self.statistics(layer_blobs(step))
        c = mean.shape[0]
        rank = len(step.in_shapes[0])
        dim = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
        if dim is None:
            raise ShapeError(f"BatchNorm on a {rank}-D blob has no nn.BatchNorm form")
        state = {"running_mean": mean, "running_var": var, "num_batches_tracked": np.array(0, np.int64)}
        affine, y, note = "affine=False", src.y(), ""
        out = step.outputs[0]
        users = src.consumers(out)
        if len(users) == 1 and not src.is_output(out) and users[0].inputs.count(out) == 1:
            ga = users[0].layer.kind.batchnorm_affine(users[0])
            if ga is not None:
                state = {"weight": ga[0], "bias": ga[1], **state}
                affine = "affine=True"
                src.mark_done(users[0])
                note = f" + {users[0].layer.name} (Scale)"
                y = src.var(users[0].layer.tops[0])
        m = src.module(f"nn.BatchNorm{dim}d({c}, eps={num(p.eps)}, {affine})", state, note)
        src.line(f"{y} = {m}({src.x()})")

    @staticmethod
    def statistics(blobs) -> tuple[np.ndarray, np.ndarray]:
        """(mean, variance) from Caffe's three blobs, applying the scale factor."""
        s = float(np.asarray(blobs[2]).reshape(-1)[0]) if len(blobs) > 2 else 1.0
        f = 0.0 if s == 0 else 1.0 / s
        return (np.asarray(blobs[0], np.float32).reshape(-1) * np.float32(f),
                np.asarray(blobs[1], np.float32).reshape(-1) * np.float32(f))


def _affine_shape(axis: int, num_axes: int, shape) -> tuple[int, ...]:
    a = axis if axis >= 0 else axis + len(shape)
    if not 0 <= a < len(shape):
        raise ShapeError(f"axis {axis} out of range for shape {shape}")
    end = len(shape) if num_axes == -1 else a + num_axes
    if end > len(shape) or num_axes < -1:
        raise ShapeError(f"num_axes {num_axes} out of range for shape {shape}")
    return tuple(shape[a:end])


def _affine_view(p, x, t):
    """``t`` (the shape of x's axes [axis, axis + t.dim())) broadcast against ``x``."""
    a = p.axis if p.axis >= 0 else p.axis + x.dim()
    return t.reshape(tuple(t.shape) + (1,) * (x.dim() - a - t.dim()))


def _affine_onnx(ctx, step, is_scale: bool) -> None:
    """Scale (Mul, then Add of the bias) or Bias (Add) broadcast at ``axis``: the operand is
    a blob (an initializer with trailing 1-dims) or the second bottom (Unsqueezed)."""
    p = step.layer.params
    rank = len(step.in_shapes[0])
    a = p.axis if p.axis >= 0 else p.axis + rank
    ws = layer_blobs(step)

    def from_blob(hint, blob):
        return ctx.const(hint, blob.reshape(blob.shape + (1,) * (rank - a - blob.ndim)))

    def from_bottom():
        v = ctx.name(step.inputs[1])
        k = len(step.in_shapes[1])
        tail = rank - a - k
        if tail:
            v = ctx.op("Unsqueeze", [v, ctx.ints("axes", list(range(k, k + tail)))])
        return v

    x = ctx.name(step.inputs[0])
    out = step.outputs[0]
    two = len(step.inputs) == 2
    if not is_scale:
        ctx.op("Add", [x, from_bottom() if two else from_blob("bias", ws[0])], out)
        return
    factor = from_bottom() if two else from_blob("scale", ws[0])
    has_bias = bool(p.bias_term)
    y = ctx.op("Mul", [x, factor], None if has_bias else out)
    if has_bias:
        ctx.op("Add", [y, from_blob("bias", ws[-1])], out)


@dataclass(frozen=True)
class ScaleParams:
    axis: int = 1
    num_axes: int = 1
    bias_term: bool = False


@register
class Scale(LayerType):
    """y = x * gamma (+ beta), gamma broadcast along ``axis`` (a blob, or the 2nd bottom)."""
    type = "Scale"
    examples = (Example(params=dict(bias_term=True), ins=[(2, 4, 5, 5)]), Example(ins=[(2, 4, 5, 5)]),
                Example(ins=[(2, 4, 5, 5), (2, 4)], params=dict(axis=0)))
    param_field = "scale_param"
    Params = ScaleParams
    n_bottoms = (1, 2)
    inplace = True

    def shapes(self, p, ins):
        if len(ins) == 2:
            a = p.axis if p.axis >= 0 else p.axis + len(ins[0])
            if tuple(ins[0][a:a + len(ins[1])]) != tuple(ins[1]):
                raise ShapeError(f"scale shape {ins[1]} does not match input {ins[0]} at axis {p.axis}")
        return [ins[0]]

    def batchnorm_affine(self, step):
        p = step.layer.params
        rank = len(step.in_shapes[0])
        if len(step.inputs) != 1 or p.num_axes != 1 or p.axis % rank != 1:
            return None
        ws = layer_blobs(step)
        beta = ws[1] if p.bias_term else np.zeros_like(ws[0])
        return ws[0].reshape(-1), beta.reshape(-1)

    def to_onnx(self, ctx, step):
        if ctx.done(step):          # folded into the preceding BatchNormalization
            return
        _affine_onnx(ctx, step, True)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        if len(xs) == 2:
            y = x * _affine_view(p, x, xs[1])
            return [y + _affine_view(p, x, blobs[0]) if p.bias_term else y]
        y = x * _affine_view(p, x, blobs[0])
        return [y + _affine_view(p, x, blobs[1]) if p.bias_term else y]

    def torch_source(self, p, src, step):
        """Weights stored in their broadcast shape (e.g. C x 1 x 1); a 2nd bottom is indexed
        with trailing None axes."""
        ws = layer_blobs(step)
        rank = len(step.in_shapes[0])
        a = p.axis if p.axis >= 0 else p.axis + rank
        x = src.x()
        if len(step.inputs) == 2:
            tail = rank - a - len(step.in_shapes[1])
            factor = f"{src.x(1)}[..., {', '.join(['None'] * tail)}]" if tail else src.x(1)
        else:
            factor = src.parameter("weight", ws[0].reshape(ws[0].shape + (1,) * (rank - a - ws[0].ndim)))
        expr = f"{x} * {factor}"
        if p.bias_term:
            b = ws[-1]
            expr += " + " + src.parameter("bias", b.reshape(b.shape + (1,) * (rank - a - b.ndim)))
        src.assign(expr)

    def weight_shapes(self, p, ins):
        if len(ins) == 2:
            return [tuple(ins[1])] if p.bias_term else []
        s = _affine_shape(p.axis, p.num_axes, ins[0])
        return [s, s] if p.bias_term else [s]

    def init_weights(self, p, ins, rng):
        shapes = self.weight_shapes(p, ins)
        ws = []
        if len(ins) == 1:
            ws.append(rng.uniform(0.8, 1.2, shapes[0]).astype(np.float32))
        if p.bias_term:
            ws.append((rng.standard_normal(shapes[-1]) * 0.1).astype(np.float32))
        return ws


@dataclass(frozen=True)
class BiasParams:
    axis: int = 1
    num_axes: int = 1


@register
class Bias(LayerType):
    type = "Bias"
    examples = (Example(ins=[(2, 4, 5, 5)]),)
    param_field = "bias_param"
    Params = BiasParams
    n_bottoms = (1, 2)
    inplace = True

    def shapes(self, p, ins):
        if len(ins) == 2:   # bias_layer.cpp: bottom 1's axes match bottom 0's from axis on
            a = p.axis if p.axis >= 0 else p.axis + len(ins[0])
            if len(ins[1]) and tuple(ins[0][a:a + len(ins[1])]) != tuple(ins[1]):
                raise ShapeError(f"bias shape {ins[1]} does not match input {ins[0]} at axis {p.axis}")
        return [ins[0]]

    def to_onnx(self, ctx, step):
        _affine_onnx(ctx, step, False)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        return [x + _affine_view(p, x, xs[1] if len(xs) == 2 else blobs[0])]

    def torch_source(self, p, src, step):
        rank = len(step.in_shapes[0])
        a = p.axis if p.axis >= 0 else p.axis + rank
        if len(step.inputs) == 2:
            tail = rank - a - len(step.in_shapes[1])
            b = f"{src.x(1)}[..., {', '.join(['None'] * tail)}]" if tail else src.x(1)
        else:
            w = layer_blobs(step)[0]
            b = src.parameter("bias", w.reshape(w.shape + (1,) * (rank - a - w.ndim)))
        src.assign(f"{src.x()} + {b}")

    def weight_shapes(self, p, ins):
        if len(ins) == 2:
            return []
        return [_affine_shape(p.axis, p.num_axes, ins[0])]

    def init_weights(self, p, ins, rng):
        return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in self.weight_shapes(p, ins)]


@dataclass(frozen=True)
class LRNParams:
    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    norm_region: str = "ACROSS_CHANNELS"   # or WITHIN_CHANNEL
    k: float = 1.0


@register
class LRN(LayerType):
    """ACROSS_CHANNELS: y = x * (k + alpha/n * sum_{n neighbouring channels} x^2)^-beta.
    WITHIN_CHANNEL: y = x * (1 + alpha/n^2 * sum_{n x n window} x^2)^-beta (k ignored)."""
    type = "LRN"
    examples = (Example(params=dict(local_size=5, alpha=1.0, beta=0.75, k=2.0), ins=[(2, 8, 5, 5)]),
                Example(params=dict(local_size=3, alpha=2.0, beta=0.75, norm_region="WITHIN_CHANNEL"),
                        ins=[(2, 3, 6, 5)]))
    param_field = "lrn_param"
    Params = LRNParams

    def validate(self, p) -> None:
        if p.local_size % 2 == 0 or p.local_size <= 0:
            raise ProtogenError(f"LRN local_size must be odd and positive, got {p.local_size}")

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x, y = ctx.name(step.inputs[0]), step.outputs[0]
        n = p.local_size
        if p.norm_region == "ACROSS_CHANNELS":
            ctx.op("LRN", [x], y, size=n, alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k))
            return
        # WITHIN_CHANNEL (Caffe builds it from Power, AVE Pooling, Power, Eltwise PROD):
        # y = x * (1 + alpha * avg_{n x n, zero pad (n-1)/2, divisor n^2}(x^2)) ^ -beta
        r = (n - 1) // 2
        sq = ctx.op("Mul", [x, x])
        avg = ctx.op("AveragePool", [sq], kernel_shape=[n, n], strides=[1, 1],
                     pads=[r, r, r, r] if r else None, count_include_pad=1 if r else None)
        t = ctx.op("Mul", [avg, ctx.const("alpha", np.float32(p.alpha))])
        t = ctx.op("Add", [t, ctx.const("one", np.float32(1.0))])
        t = ctx.op("Pow", [t, ctx.const("neg_beta", np.float32(-p.beta))])
        ctx.op("Mul", [x, t], y)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        """Caffe's sums: ACROSS over n zero-padded neighbouring channels, scale k + alpha/n*sum;
        WITHIN over an n x n zero-padded window, scale 1 + alpha/n^2*sum (k unused)."""
        import torch.nn.functional as F
        x = xs[0]
        n, r = p.local_size, (p.local_size - 1) // 2
        sq = x * x
        if p.norm_region == "ACROSS_CHANNELS":
            padded = F.pad(sq, (0, 0, 0, 0, r, r))                      # pad the channel axis
            sums = padded.unfold(1, n, 1).sum(-1)                        # N, C, H, W
            scale = p.k + (p.alpha / n) * sums
        else:
            padded = F.pad(sq, (r, r, r, r))
            sums = padded.unfold(2, n, 1).unfold(3, n, 1).sum((-1, -2))  # N, C, H, W
            scale = 1.0 + (p.alpha / (n * n)) * sums
        return [x * scale.pow(-p.beta)]

    def torch_source(self, p, src, step):
        """ACROSS_CHANNELS is nn.LocalResponseNorm (same formula); WITHIN_CHANNEL: x times
        (1 + alpha * mean of x^2 over the zero-padded n x n window) ^ -beta."""
        from ..fmt import num
        n, r = p.local_size, (p.local_size - 1) // 2
        x = src.x()
        if p.norm_region == "ACROSS_CHANNELS":
            m = src.module(f"nn.LocalResponseNorm({n}, alpha={num(p.alpha)}, beta={num(p.beta)}, "
                           f"k={num(p.k)})", {})
            src.assign(f"{m}({x})")
        else:
            src.assign(f"{x} * (1.0 + {num(p.alpha)} * F.avg_pool2d({x} * {x}, {n}, 1, {r}))"
                       f".pow({num(-p.beta)})")

    def shapes(self, p, ins):
        if len(ins[0]) != 4:
            raise ShapeError(f"LRN needs 4-D input, got {ins[0]}")
        return [ins[0]]
