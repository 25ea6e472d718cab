"""Xception (Chollet 2016, arXiv:1610.02357), as the author's Keras reference implementation.

Entry flow: two plain 3x3 convolutions (32/2, 64, no padding), then three blocks of two
depthwise-separable convolutions (128, 256, 728) closed by a 3x3/2 max pool and added to a
1x1/2 convolution + BN projection of the block input. Middle flow: 8 blocks of three
728-channel separable convolutions with an identity shortcut. Exit flow: a 728/1024 block
with a 1024 projection, then separable 1536 and 2048, global average pooling, the classifier.

A depthwise-separable convolution is a 3x3 depthwise ``Convolution`` (group = channels)
followed directly by a 1x1 pointwise one: no BatchNorm and no activation between them (the
paper, section 4, and Keras ``SeparableConv2D``); BN (with its Scale) follows each separable
convolution. Every convolution is bias-free. The ReLU that opens a block is not in place:
the un-activated block input also feeds the residual projection or the identity shortcut.

Layer names follow Keras (``block1_conv1``, ``block2_sepconv1`` split into ``.../depthwise``
and ``.../pointwise``, ``block2_sepconv1_bn``, ``block2_pool``, ...).

Padding: Keras uses TensorFlow 'same' padding on the strided max pools. Caffe's pooling is
symmetric, but with the left pad TensorFlow would use and CEIL rounding the extra right
window is clipped to the image, which for MAX pooling is exactly TensorFlow's -inf right pad
(checked per layer by :func:`same_pool_pad`).
"""
from __future__ import annotations

from ..errors import ShapeError
from ..layers.pool import pooled_size
from . import NUM_CLASSES, Option, model


def same_pool_pad(size: int, kernel: int, stride: int) -> int:
    """The symmetric Caffe pad (CEIL mode) that reproduces TensorFlow 'same' max pooling."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    pad = total // 2
    if pooled_size(size, kernel, pad, stride, ceil=True) != out:
        raise ShapeError(f"'same' pooling of size {size} (kernel {kernel}, stride {stride}) has no "
                         f"Caffe equivalent")
    return pad


def sepconv(n, x, out: int, name: str):
    """Depthwise 3x3 (pad 1) -> pointwise 1x1, then BN + Scale; no bias, nothing in between."""
    c = x.channels
    y = n.conv(x, c, 3, 1, 1, group=c, bias=False, name=f"{name}/depthwise")
    y = n.conv(y, out, 1, bias=False, name=f"{name}/pointwise")
    return n.bn(y, name=f"{name}_bn", scale_name=f"{name}_scale")


def conv_bn(n, x, out, k, stride, name, relu=True):
    y = n.conv(x, out, k, stride, bias=False, name=name)
    y = n.bn(y, name=f"{name}_bn", scale_name=f"{name}_scale")
    return n.relu(y, name=f"{name}_act") if relu else y


def down_block(n, x, b: int, mid: int, out: int, first_relu: bool = True):
    """Entry/exit block: [ReLU] sep(mid) BN ReLU sep(out) BN, 3x3/2 max pool, + 1x1/2 projection."""
    residual = conv_bn(n, x, out, 1, 2, f"block{b}_residual", relu=False)
    y = n.relu(x, name=f"block{b}_sepconv1_act", inplace=False) if first_relu else x
    y = sepconv(n, y, mid, f"block{b}_sepconv1")
    y = n.relu(y, name=f"block{b}_sepconv2_act")
    y = sepconv(n, y, out, f"block{b}_sepconv2")
    pad = same_pool_pad(y.shape[2], 3, 2)
    if same_pool_pad(y.shape[3], 3, 2) != pad:
        raise ShapeError("Xception needs a square feature map")
    y = n.max_pool(y, 3, 2, pad, name=f"block{b}_pool")
    return n.eltwise([y, residual], name=f"block{b}_add")


def middle_block(n, x, b: int):
    """Three ReLU -> sep(728) -> BN, identity shortcut."""
    y = n.relu(x, name=f"block{b}_sepconv1_act", inplace=False)
    for i in (1, 2, 3):
        if i > 1:
            y = n.relu(y, name=f"block{b}_sepconv{i}_act")
        y = sepconv(n, y, 728, f"block{b}_sepconv{i}")
    return n.eltwise([y, x], name=f"block{b}_add")


@model("xception",
       Option("input_size", int, 299, range=(71, 2048), help="input height and width"),
       NUM_CLASSES,
       summary="Xception (Chollet 2016), Keras reference layout; entry/middle/exit flows, 299x299")
def xception(n, x, input_size=299, num_classes=1000):
    """Xception: 36 convolutional layers in 14 blocks, all but the first and last with
    linear residual connections."""
    x = conv_bn(n, x, 32, 3, 2, "block1_conv1")
    x = conv_bn(n, x, 64, 3, 1, "block1_conv2")
    x = down_block(n, x, 2, 128, 128, first_relu=False)
    x = down_block(n, x, 3, 256, 256)
    x = down_block(n, x, 4, 728, 728)
    for b in range(5, 13):
        x = middle_block(n, x, b)
    x = down_block(n, x, 13, 728, 1024)
    x = sepconv(n, x, 1536, "block14_sepconv1")
    x = n.relu(x, name="block14_sepconv1_act")
    x = sepconv(n, x, 2048, "block14_sepconv2")
    x = n.relu(x, name="block14_sepconv2_act")
    x = n.global_pool(x, name="avg_pool")
    return n.fc(x, num_classes, name="predictions")
