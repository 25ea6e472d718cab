"""Pad: Caffe has no Pad layer, so a constant spatial Pad is folded into the one Conv or
pooling node that reads it (that converter declares ``folds_pad``)."""
from __future__ import annotations

import numpy as np

from .registry import OpConverter, Refuse, onnx_op


@onnx_op("Pad", attrs=frozenset({"mode", "pads", "value"}))
class Pad(OpConverter):
    def static_problems(self, ctx, i, n, a, const):
        bad = []
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            bad.append(f"Pad mode '{mode}' has no Caffe equivalent")
        if any(t and t not in const for t in n.input[1:]):
            bad.append("pads and value must be constant")
        user = ctx.sole_user(n.output[0])
        if user is None or not ctx.role(user[1], "folds_pad") or user[1].input[0] != n.output[0]:
            bad.append("a Pad is only supported when folded into the one Conv/MaxPool/AveragePool "
                       "that reads it (Caffe has no Pad layer)")
        return bad

    def nonneg(self, ctx, n) -> bool:
        return ctx.nonneg(n.input[0])

    def convert(self, ctx, i, n, a):
        pads = list(a["pads"]) if "pads" in a else ctx.const(n.input[1], "pads").astype(int).tolist()
        if len(n.input) > 3 and n.input[3]:
            raise Refuse("the axes input of Pad is not supported")
        value = float(a.get("value", 0.0))
        if len(n.input) > 2 and n.input[2]:
            value = float(np.asarray(ctx.const(n.input[2], "the pad value")).reshape(-1)[0])
        r = len(pads) // 2
        if r != 4 or pads[0] or pads[1] or pads[4] or pads[5]:
            raise Refuse(f"only spatial padding of a 4-D tensor can be folded (pads {pads})")
        if min(pads) < 0:
            raise Refuse("negative pads (cropping) are not supported")
        user = ctx.converter(ctx.nodes[ctx.users(n.output[0])[0]])
        if not user.pad_value_ok(ctx, n.input[0], value):
            raise Refuse(user.pad_value_problem(value))
        ctx.pad_fold[n.output[0]] = (n.input[0], (pads[2], pads[3], pads[6], pads[7]), value)
        ctx.shape[n.output[0]] = tuple(d + pads[k] + pads[k + r] for k, d in enumerate(ctx.shape[n.input[0]]))
