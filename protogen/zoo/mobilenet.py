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
