"""Element-wise binary ops. Between activations of one shape: Eltwise (SUM with coeff, PROD,
MAX); with one broadcast constant: Power (scalar) or Scale (a block of the shape, + a bias
merged into the preceding Scale). Constant operands alone are folded with numpy."""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, onnx_op


@onnx_op("Add", eltwise="SUM", sums=True, adds=True, foldable=True, fn=np.add)
@onnx_op("Sum", eltwise="SUM", sums=True)
@onnx_op("Sub", eltwise="SUM", sign=-1.0, foldable=True, fn=np.subtract)
@onnx_op("Mul", eltwise="PROD", foldable=True, fn=np.multiply)
@onnx_op("Max", eltwise="MAX")
class Binary(OpConverter):
    eltwise = "SUM"
    sign = 1.0
    fn = None

    def fold(self, ctx, n, a, ins):
        return [np.asarray(self.fn(*ins)).astype(ins[0].dtype)]

    def convert(self, ctx, i, n, a):
        if self.eltwise == "PROD" and defer_scaled(ctx, i, n):
            return
        if (self.sign != 1.0 and sum(1 for t in n.input if not ctx.is_const(t)) == 2
                and n.input[1] in ctx.scaled):
            raise Refuse("Sub of a scaled activation is not supported")
        binary(ctx, i, n, self.eltwise, self.sign)


@onnx_op("Div", foldable=True)
class Div(OpConverter):
    def fold(self, ctx, n, a, ins):
        x, y = ins
        return [x // y if np.issubdtype(x.dtype, np.integer) else (x / y).astype(x.dtype)]

    def convert(self, ctx, i, n, a):
        if not ctx.is_const(n.input[1]) or ctx.is_const(n.input[0]):
            raise Refuse("Div is only supported as activation / constant")
        affine_const(ctx, i, n, n.input[0], 1.0 / ctx.consts[n.input[1]].astype(np.float32), True)


def binary(ctx, i, n, op, sign=1.0):
    from ..layers.tensor import EltwiseParams
    ins = [t for t in n.input if t]
    consts = [t for t in ins if ctx.is_const(t)]
    acts = [t for t in ins if not ctx.is_const(t)]
    if not consts:
        coeff = [1.0] * len(acts)
        if sign != 1.0:
            coeff[1] = sign
        if op == "SUM":     # Mul(x, scalar) feeding only this sum: Caffe's Eltwise coeff
            for k, t in enumerate(acts):
                if t in ctx.scaled:
                    acts[k], c = ctx.scaled[t]
                    coeff[k] *= c
        shapes = [ctx.shape_of(t) for t in acts]
        if any(s != shapes[0] for s in shapes):
            broadcast_channels(ctx, i, n, op, acts, coeff)
            return
        out = ctx.out_blob(i)
        p = EltwiseParams(operation=op, coeff=tuple(coeff) if any(c != 1.0 for c in coeff) else ())
        ctx.add_layer(ctx.new_layer_name(ctx.node_name(i)), "Eltwise", [ctx.bottom(t) for t in acts], [out], p)
        ctx.set_out(n.output[0], out)
        return
    if len(acts) != 1 or len(consts) != 1 or op == "MAX" or (sign != 1.0 and n.input[0] != acts[0]):
        raise Refuse(f"{n.op_type} with constant operands is only supported as activation "
                     f"{'-' if sign != 1.0 else '(+ or *)'} one constant")
    c = ctx.consts[consts[0]].astype(np.float32)
    affine_const(ctx, i, n, acts[0], c * np.float32(sign) if op == "SUM" else c, op == "PROD")


def defer_scaled(ctx, i, n) -> bool:
    """x * scalar read only by an Add/Sum/Sub of activations: becomes that Eltwise's coeff."""
    ins = list(n.input)
    if len(ins) != 2 or sum(ctx.is_const(t) for t in ins) != 1:
        return False
    x = ins[0] if ctx.is_const(ins[1]) else ins[1]
    c = ctx.consts[ins[1] if x == ins[0] else ins[0]]
    user = ctx.sole_user(n.output[0])
    if c.size != 1 or user is None:
        return False
    u = user[1]
    if not ctx.role(u, "sums") or u.input[0] == u.input[-1]:
        return False
    if any(t in ctx.consts or ctx.try_const(t) for t in u.input if t):
        return False
    ctx.scaled[n.output[0]] = (x, float(c.reshape(-1)[0]))
    ctx.shape[n.output[0]] = ctx.shape_of(x)
    ctx.blob[n.output[0]] = ctx.bottom(x)      # placeholder; the Eltwise reads x itself
    return True


def affine_const(ctx, i, n, x, c, mul):
    """activation (* or +) a constant that broadcasts onto it: Power for a scalar, Scale for
    a block of the shape (an added block merges into the Scale just before it)."""
    from ..layers.act import PowerParams
    from ..layers.norm import ScaleParams
    shape = ctx.shape_of(x)
    if c.ndim > len(shape):
        raise Refuse(f"constant of shape {c.shape} broadcasts beyond the input {shape}")
    cs = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
    if any(d not in (1, s) for d, s in zip(cs, shape)):
        raise Refuse(f"constant of shape {c.shape} does not broadcast onto {shape}")
    big = [k for k, d in enumerate(cs) if d != 1]
    out = ctx.out_blob(i, x, inplace_ok=True)
    name = ctx.new_layer_name(ctx.node_name(i))
    if not big:
        v = float(c.reshape(-1)[0])
        p = PowerParams(scale=v) if mul else PowerParams(shift=v)
        ctx.add_layer(name, "Power", [ctx.bottom(x)], [out], p)
        ctx.set_out(n.output[0], out)
        return
    axis, end = big[0], big[-1] + 1
    if axis == 0 and shape[0] == 1 and len(big) > 1:
        axis = big[1]
    if any(cs[k] != shape[k] for k in range(axis, end)):
        raise Refuse(f"constant of shape {c.shape} is not a block of the input {shape}")
    blob = c.reshape(shape[axis:end])
    if mul:
        ctx.add_layer(name, "Scale", [ctx.bottom(x)], [out], ScaleParams(axis=axis, num_axes=end - axis), [blob])
        ctx.bare_scale = ctx.layers[-1]         # a following added constant may become its bias
    else:
        # an added per-channel constant: merged into the Scale just before it (x*g + b, one
        # Caffe Scale with bias_term) or a Scale with gamma 1 (OpenCV and several Caffe
        # forks lack the Bias layer)
        last = ctx.layers[-1]
        if (last is ctx.bare_scale and last.tops == [ctx.blob[x]] and out == ctx.blob[x]
                and (last.params.axis, last.params.num_axes) == (axis, end - axis)):
            ctx.layers.pop()
            ctx.layer_names.discard(name)
            name = last.name
            gamma = last.blobs[0]
        else:
            gamma = np.ones(blob.shape, np.float32)
        ctx.add_layer(name, "Scale", [ctx.bottom(x)], [out],
                      ScaleParams(axis=axis, num_axes=end - axis, bias_term=True), [gamma, blob])
    ctx.set_out(n.output[0], out)


def broadcast_channels(ctx, i, n, op, acts, coeff):
    """activation (N,C,H,W) (* or +) a per-channel activation (N,C,1,1), the squeeze-and-
    excitation gate: PROD -> Flatten the gate to (N,C) + Scale(axis 0) with two bottoms;
    SUM -> the gate spread to H x W by a ones Deconvolution (kernel H x W, one group per
    channel: exact) + Eltwise SUM."""
    from ..layers.conv import ConvParams
    from ..layers.norm import ScaleParams
    from ..layers.tensor import EltwiseParams, FlattenParams
    from .ops_compose import Chain
    shapes = [ctx.shape_of(t) for t in acts]
    if len(acts) != 2 or op == "MAX" or len(shapes[0]) != 4 or len(shapes[1]) != 4:
        raise Refuse(f"broadcasting between activations {shapes} has no Caffe layer")
    big = 0 if shapes[0][2:] != (1, 1) else 1
    small = 1 - big
    nb, cb, h, w = shapes[big]
    if tuple(shapes[small]) != (nb, cb, 1, 1):
        raise Refuse(f"broadcasting between activations {shapes} has no Caffe layer "
                     "(only N,C,H,W with a per-channel N,C,1,1 one)")
    ch = Chain(ctx, i)
    xs = [ctx.bottom(t) for t in acts]
    if op == "PROD":
        flat = ch.add("Flatten", [xs[small]], FlattenParams(axis=1))
        ch.add("Scale", [xs[big], flat], ScaleParams(axis=0), last=True)
        return
    ones = np.ones((cb, 1, h, w), np.float32)
    spread = ch.add("Deconvolution", [xs[small]], ConvParams(num_output=cb, kernel_h=h, kernel_w=w, group=cb,
                                                              bias_term=False), [ones])
    xs[small] = spread
    p = EltwiseParams(operation="SUM", coeff=tuple(coeff) if any(c != 1.0 for c in coeff) else ())
    ch.add("Eltwise", xs, p, last=True)
