"""MaxPool / AveragePool -> Pooling with the pad and round mode that reproduce ONNX's windows
and divisors exactly (or a refusal); GlobalAveragePool / GlobalMaxPool -> global Pooling."""
from __future__ import annotations

from .registry import OpConverter, Refuse, onnx_op


def onnx_pool_out(size: int, k: int, s: int, pb: int, pe: int, ceil: bool) -> int:
    num = size + pb + pe - k
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + pb:
        out -= 1
    return out


def match_pool_axis(size, k, s, pool_pads, pre_pads, ceil, ave, include_pad):
    """Caffe (pad, ceil) reproducing one ONNX pooling axis, or a reason string.

    ``size`` is the real input size; ``pre_pads`` a folded constant Pad's (begin, end) whose
    values count as data for the pool; ``pool_pads`` the pool's own pads. Windows start at
    ``i*s - pb - qb`` in both; the ONNX divisor (AVE) clips each window to the padded extent
    (count_include_pad=1) or to the data plus the Pad node's values (0); Caffe's divisor
    clips it to ``size + pad``.
    """
    from ..layers.pool import pooled_size
    pb, pe = pool_pads
    qb, qe = pre_pads
    out = onnx_pool_out(size + qb + qe, k, s, pb, pe, ceil)
    p = pb + qb
    if out <= 0:
        return "the pooling window is larger than the padded input"
    if p >= k:
        return f"begin padding {p} is not smaller than the kernel {k} (Caffe requires pad < kernel)"
    starts = [i * s - p for i in range(out)]
    if starts[-1] >= size:
        return "the last window lies entirely in padding (Caffe would pool an empty window)"
    if ave:
        if include_pad:
            onnx_div = [min(a + k, size + qe + pe) - a for a in starts]
        else:
            onnx_div = [min(a + k, size + qe) - max(a, -qb) for a in starts]
        caffe_div = [min(a + k, size + p) - a for a in starts]
    for c in ((True, False) if ceil else (False, True)):
        if pooled_size(size, k, p, s, c) != out:
            continue
        if ave and onnx_div != caffe_div:
            return (f"Caffe's average divisor {caffe_div} (it counts padding up to size+pad) "
                    f"differs from ONNX's {onnx_div}")
        return p, c
    return (f"no Caffe pad/round_mode gives ONNX's {out} windows (input {size}, kernel {k}, "
            f"stride {s}, pads {p},{pe + qe})")


_POOL_ATTRS = frozenset({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"})

#: why a 3-D pool is refused: no Caffe runtime loads a 3-D pooling layer in the V2 files
#: written here. Upstream Pooling (BVLC/caffe src/caffe/layers/pooling_layer.cpp: "Input must
#: have 4 axes") and OpenCV's copy of the schema are 2-D; facebookarchive/C3D's 3-D pooling is
#: POOLING3D in its V1-only v1.0 schema and, in C3D-v1.1, a V2 "Pooling3D" reading its own
#: pooling3d_param message (examples/c3d_ucf101_training/train_simple.prototxt).
NO_3D_POOL = ("3-D {op} has no Caffe layer that a runtime loads: upstream Caffe's (and OpenCV's) "
              "Pooling is 2-D only; the C3D fork's 3-D pooling exists only in its own schemas "
              "(V1 POOLING3D; C3D-v1.1's Pooling3D with pooling3d_param)")


@onnx_op("MaxPool", ave=False, folds_pad=True, attrs=_POOL_ATTRS | {"storage_order"})
@onnx_op("AveragePool", ave=True, folds_pad=True, attrs=_POOL_ATTRS | {"count_include_pad"})
class Pool(OpConverter):
    ave = False

    def static_problems(self, ctx, i, n, a, const):
        bad = []
        ks = a.get("kernel_shape")
        if ks is not None and len(ks) not in (2, 3):      # 3-D: see convert
            bad.append(f"only 2-D {self.op_type} is supported (kernel_shape {list(ks)})")
        if any(d != 1 for d in a.get("dilations", [])):
            bad.append("pooling dilation is not supported by Caffe")
        if not self.ave and len(n.output) > 1 and n.output[1] and (
                n.output[1] in ctx.consumers or n.output[1] in ctx.outputs):
            bad.append("the Indices output is not supported")
        return bad

    def nonneg(self, ctx, n) -> bool:
        return not self.ave and ctx.nonneg(n.input[0])

    def pad_value_ok(self, ctx, x, value) -> bool:
        if self.ave:
            return value == 0.0
        # MAX: padding must never win (-inf), or 0 on an input that is never negative
        return value <= -3.0e38 or (value == 0.0 and ctx.nonneg(x))

    def pad_value_problem(self, value) -> str:
        if self.ave:
            return super().pad_value_problem(value)
        return (f"a Pad value {value} before MaxPool can be folded only when it is -inf, "
                "or 0 on a non-negative input")

    def convert(self, ctx, i, n, a):
        from ..layers.pool import PoolParams
        x, q, _ = ctx.take_pad(n.input[0])
        shape = ctx.shape_of(x)
        if len(shape) == 5 and len(a["kernel_shape"]) == 3:
            # a window over all of (D, H, W) without padding (torch's AdaptiveMaxPool3d(1)):
            # one output per channel, global pooling; any other 3-D pool has no Caffe layer
            pads = [v for v in a.get("pads", [0] * 6)]
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if (tuple(a["kernel_shape"]) == tuple(shape[2:]) and not any(pads)
                    and auto in ("NOTSET", "", "VALID")):
                global_pool_5d(ctx, i, x, "AVE" if self.ave else "MAX")
                return
            raise Refuse(NO_3D_POOL.format(op=self.op_type))
        if len(shape) != 4 or len(a["kernel_shape"]) != 2:
            raise Refuse(f"only 4-D (N,C,H,W) input is supported, got {shape}")
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        qshape = (shape[0], shape[1], shape[2] + q[0] + q[2], shape[3] + q[1] + q[3])
        bh, bw, eh, ew = ctx.spatial_pads(a, qshape, (kh, kw), (sh, sw), (1, 1))
        ceil = bool(a.get("ceil_mode", 0))
        include = bool(a.get("count_include_pad", 0))
        res = []
        for ax, (size, k, s, b, e, qb, qe) in enumerate(zip(shape[2:], (kh, kw), (sh, sw), (bh, bw), (eh, ew),
                                                             q[:2], q[2:])):
            r = match_pool_axis(size, k, s, (b, e), (qb, qe), ceil, self.ave, include)
            if isinstance(r, str):
                raise Refuse(f"axis {'hw'[ax]}: {r}")
            res.append(r)
        if res[0][1] != res[1][1]:
            raise Refuse("height and width need different Caffe round modes")
        p = PoolParams(pool="AVE" if self.ave else "MAX", kernel_h=int(kh), kernel_w=int(kw), stride_h=int(sh),
                       stride_w=int(sw), pad_h=int(res[0][0]), pad_w=int(res[1][0]),
                       round_mode="CEIL" if res[0][1] else "FLOOR")
        ctx.emit(i, "Pooling", p, x=x)


@onnx_op("GlobalAveragePool", pool="AVE")
@onnx_op("GlobalMaxPool", pool="MAX")
class GlobalPool(OpConverter):
    """4-D: global Pooling. 5-D (N,C,D,H,W; torch's AdaptiveAvgPool3d(1)): upstream Pooling
    is 2-D, but a mean or max over D*H*W is one over a (N, C, D*H*W, 1) view, so the node
    becomes Reshape -> global Pooling -> Reshape (N, C, 1, 1, 1), layers every runtime loads."""
    pool = "AVE"

    def convert(self, ctx, i, n, a):
        from ..layers.pool import PoolParams
        rank = len(ctx.shape_of(n.input[0]))
        if rank == 4:
            ctx.emit(i, "Pooling", PoolParams(pool=self.pool, global_pooling=True))
            return
        if rank != 5:
            raise Refuse(f"only 4-D and 5-D input are supported, got {rank}-D")
        global_pool_5d(ctx, i, n.input[0], self.pool)


def global_pool_5d(ctx, i, x, pool) -> None:
    """Node ``i``: ``pool`` (AVE/MAX) over all of (D, H, W) of the 5-D tensor ``x``, as
    Reshape (N, C, D*H*W, 1) -> global Pooling -> Reshape (N, C, 1, 1, 1)."""
    from ..layers.pool import PoolParams
    from ..layers.tensor import ReshapeParams
    from .ops_compose import Chain
    ch = Chain(ctx, i)
    y = ch.add("Reshape", [ctx.bottom(x)], ReshapeParams(shape=(0, 0, -1, 1)))
    y = ch.add("Pooling", [y], PoolParams(pool=pool, global_pooling=True))
    ch.add("Reshape", [y], ReshapeParams(shape=(0, 0, 1, 1, 1)), last=True)


@onnx_op("ReduceMean", pool="AVE", attrs=frozenset({"axes", "keepdims", "noop_with_empty_axes"}))
@onnx_op("ReduceMax", pool="MAX", attrs=frozenset({"axes", "keepdims", "noop_with_empty_axes"}))
class ReduceSpatial(OpConverter):
    """A mean / max over H and W of an N,C,H,W tensor is global pooling (+ a Flatten to N,C
    without keepdims): the dynamo exporter's adaptive_avg_pool2d(1), ShuffleNet v2, MNASNet."""
    pool = "AVE"

    def static_problems(self, ctx, i, n, a, const):
        if len(n.input) > 1 and n.input[1] and n.input[1] not in const:
            return ["the axes must be constant"]
        return []

    def convert(self, ctx, i, n, a):
        from ..layers.pool import PoolParams
        from ..layers.tensor import FlattenParams
        from .ops_compose import Chain
        shape = ctx.shape_of(n.input[0])
        axes = a.get("axes")
        if axes is None and len(n.input) > 1 and n.input[1]:
            axes = ctx.const(n.input[1], "axes").reshape(-1).tolist()
        if not axes and a.get("noop_with_empty_axes", 0):
            ctx.set_out(n.output[0], ctx.bottom(n.input[0]))
            return
        axes = sorted(int(x) % len(shape) for x in axes) if axes else list(range(len(shape)))
        if len(shape) != 4 or axes != [2, 3]:
            raise Refuse(f"only a reduction over H and W of an N,C,H,W tensor is global pooling "
                         f"(axes {axes} of {shape})")
        ch = Chain(ctx, i)
        keep = bool(a.get("keepdims", 1))
        y = ch.add("Pooling", [ctx.bottom(n.input[0])], PoolParams(pool=self.pool, global_pooling=True), last=keep)
        if not keep:
            ch.add("Flatten", [y], FlattenParams(axis=1), last=True)
