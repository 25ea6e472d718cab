"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861) and v2 (Sandler et al. 2018)."""
from __future__ import annotations

from . import INPUT_SIZE, NUM_CLASSES, Option, model

# MobileNet v1, Table 1: (output channels, stride) of the 13 depthwise-separable blocks
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def conv_bn_relu(n, x, out, k, stride=1, pad=0, group=1, name=None, act="relu"):
    y = n.conv(x, out, k, stride, pad, group=group, bias=False, name=name)
    y = n.bn(y)
    if act == "relu":
        y = n.relu(y)
    elif act == "relu6":
        y = n.relu6(y)
    return y


@model("mobilenet_v1",
       Option("width", float, 1.0, choices=(0.25, 0.5, 0.75, 1.0), help="width multiplier alpha"),
       INPUT_SIZE, NUM_CLASSES,
       summary="MobileNet v1 (Howard et al. 2017), Table 1; width 0.25-1.0, any input size")
def mobilenet_v1(n, x, width=1.0, input_size=224, num_classes=1000):
    """MobileNet v1: 3x3/2 conv then 13 depthwise (3x3) + pointwise (1x1) blocks, BN + ReLU."""
    def ch(c):
        return int(c * width)
    x = conv_bn_relu(n, x, ch(32), 3, 2, 1, name="conv1")
    for i, (out, stride) in enumerate(V1_BLOCKS):
        cin = x.channels
        x = conv_bn_relu(n, x, cin, 3, stride, 1, group=cin, name=f"conv{i + 2}_dw")
        x = conv_bn_relu(n, x, ch(out), 1, name=f"conv{i + 2}_pw")
    x = n.global_pool(x, name="pool6")
    return n.fc(x, num_classes, name="fc7")


# MobileNet v2, Table 2: (expansion t, output channels c, repeats n, first stride s)
V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The reference implementation's channel rounding (TF-slim ``_make_divisible``): nearest
    multiple of ``divisor``, at least ``min_value``, never more than 10% below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def inverted_residual(n, x, out: int, stride: int, t: int, name: str):
    """1x1 expand (t x in, BN, ReLU6; absent when t == 1) -> 3x3 depthwise (BN, ReLU6) -> 1x1
    linear projection (BN, no activation); the input is added back only when the stride is 1
    and the channel count is unchanged."""
    cin = x.channels
    y = x
    if t != 1:
        y = conv_bn_relu(n, y, int(round(cin * t)), 1, name=f"{name}/expand", act="relu6")
    hidden = y.channels
    y = conv_bn_relu(n, y, hidden, 3, stride, 1, group=hidden, name=f"{name}/dwise", act="relu6")
    y = conv_bn_relu(n, y, out, 1, name=f"{name}/linear", act=None)
    if stride == 1 and cin == out:
        y = n.eltwise([x, y], name=f"{name}/add")
    return y


@model("mobilenet_v2",
       Option("width", float, 1.0, choices=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
              help="width multiplier (channels rounded to multiples of 8)"),
       INPUT_SIZE, NUM_CLASSES,
       summary="MobileNet v2 (Sandler et al. 2018), Table 2; width 0.35-1.4, any input size")
def mobilenet_v2(n, x, width=1.0, input_size=224, num_classes=1000):
    """MobileNet v2: 3x3/2 conv (32), 17 inverted-residual linear bottlenecks, 1x1 conv (1280,
    not reduced for widths below 1), global average pool, classifier. ReLU6 throughout."""
    x = conv_bn_relu(n, x, make_divisible(32 * width), 3, 2, 1, name="conv1", act="relu6")
    for gi, (t, c, reps, s) in enumerate(V2_BLOCKS):
        out = make_divisible(c * width)
        for j in range(reps):
            x = inverted_residual(n, x, out, s if j == 0 else 1, t, f"conv{gi + 2}_{j + 1}")
    x = conv_bn_relu(n, x, make_divisible(1280 * max(1.0, width)), 1, name="conv9", act="relu6")
    x = n.global_pool(x, name="pool9")
    return n.fc(x, num_classes, name="fc10")
