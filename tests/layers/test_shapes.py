"""Shape rules of the layer registry on hand-computed cases.

Every expected value is worked out in the test from Caffe's formulas (see
shared/CAFFE-SEMANTICS.md and upstream's conv_layer.cpp / deconv_layer.cpp /
pooling_layer.cpp / reshape_layer.cpp / caffe.proto comments), never copied from protogen.
"""
from __future__ import annotations

import math

import pytest

from protogen.errors import ProtogenError, ShapeError
from protogen.layers import get_type
from protogen.layers.conv import ConvParams, InnerProductParams
from protogen.layers.pool import PoolParams, pooled_size
from protogen.layers.tensor import (ConcatParams, EltwiseParams, FlattenParams, PermuteParams,
                                    ReshapeParams, SliceParams)


def out(type_, params, *ins, n_tops=1):
    return get_type(type_).output_shapes(params, [tuple(s) for s in ins], n_tops)


def conv(num_output, k, s=1, p=0, d=1, g=1, bias=True):
    kh, kw = k if isinstance(k, tuple) else (k, k)
    sh, sw = s if isinstance(s, tuple) else (s, s)
    ph, pw = p if isinstance(p, tuple) else (p, p)
    return ConvParams(num_output=num_output, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                      pad_h=ph, pad_w=pw, dilation_h=d, dilation_w=d, group=g, bias_term=bias)


def pool(k, s=1, p=0, mode="CEIL", method="MAX", glob=False):
    if glob:
        return PoolParams(pool=method, global_pooling=True)
    return PoolParams(pool=method, kernel_h=k, kernel_w=k, stride_h=s, stride_w=s, pad_h=p, pad_w=p,
                      round_mode=mode)


# ----------------------------------------------------------------------------- convolution
def test_conv_pad_stride():
    # AlexNet-style 7x7/2 pad 3 on 224: floor((224 + 2*3 - 7) / 2) + 1 = floor(223/2) + 1 = 112
    assert out("Convolution", conv(64, 7, 2, 3), (1, 3, 224, 224)) == [(1, 64, 112, 112)]
    # 11x11/4 no pad on 227: floor((227 - 11) / 4) + 1 = 54 + 1 = 55
    assert out("Convolution", conv(96, 11, 4), (2, 3, 227, 227)) == [(2, 96, 55, 55)]
    # conv floors: 3x3/2 pad 0 on 56: floor(53/2) + 1 = 27  (pooling would give 28, see below)
    assert out("Convolution", conv(8, 3, 2), (1, 8, 56, 56)) == [(1, 8, 27, 27)]


def test_conv_dilation():
    # effective kernel d*(k-1)+1 = 2*2+1 = 5; (14 + 2*2 - 5)/1 + 1 = 14
    assert out("Convolution", conv(8, 3, 1, 2, d=2), (1, 4, 14, 14)) == [(1, 8, 14, 14)]
    # d=4: effective 9; (20 + 0 - 9)/1 + 1 = 12
    assert out("Convolution", conv(8, 3, 1, 0, d=4), (1, 4, 20, 20)) == [(1, 8, 12, 12)]


def test_conv_asymmetric():
    # Inception-v3 1x7 pad (0,3): H: (17 - 1)/1 + 1 = 17; W: (17 + 6 - 7) + 1 = 17
    assert out("Convolution", conv(192, (1, 7), 1, (0, 3)), (1, 768, 17, 17)) == [(1, 192, 17, 17)]
    # stride (2,1) kernel (3,1): H floor((35-3)/2)+1 = 17, W (35-1)/1+1 = 35
    assert out("Convolution", conv(4, (3, 1), (2, 1)), (1, 4, 35, 35)) == [(1, 4, 17, 35)]


def test_conv_groups_weights_and_macs():
    k = get_type("Convolution")
    p = conv(64, 3, 1, 1, g=4, bias=True)
    ins = [(1, 32, 10, 10)]
    # weights [O, I/group, kh, kw] = [64, 8, 3, 3], bias [64]
    assert k.weight_shapes(p, ins) == [(64, 8, 3, 3), (64,)]
    # MACs: every output element does (I/g)*k*k = 8*9 = 72 multiply-adds; 64*10*10 outputs
    assert k.macs(p, ins, [(1, 64, 10, 10)]) == 64 * 100 * 72
    # depthwise: group == I == O -> weights [C, 1, 3, 3]
    dw = conv(32, 3, 1, 1, g=32, bias=False)
    assert k.weight_shapes(dw, ins) == [(32, 1, 3, 3)]
    with pytest.raises(ShapeError, match="divisible by group"):
        out("Convolution", conv(64, 3, g=4), (1, 30, 10, 10))
    with pytest.raises(ProtogenError, match="divisible by group"):
        k.validate(conv(30, 3, g=4))


def test_conv_kernel_larger_than_input():
    with pytest.raises(ShapeError):
        out("Convolution", conv(4, 7), (1, 3, 5, 5))


def test_deconv():
    k = get_type("Deconvolution")
    # FCN-style 2x upsampling 4x4/2 pad 1 on 14: 2*(14-1) + 4 - 2 = 28
    assert out("Deconvolution", conv(21, 4, 2, 1), (1, 21, 14, 14)) == [(1, 21, 28, 28)]
    # 32x upsampling 64/32 no pad on 7: 32*6 + 64 = 256
    assert out("Deconvolution", conv(21, 64, 32), (1, 21, 7, 7)) == [(1, 21, 256, 256)]
    # dilation 2, k3, s1: (10-1) + 2*2+1 - 0 = 14
    assert out("Deconvolution", conv(3, 3, 1, 0, d=2), (1, 3, 10, 10)) == [(1, 3, 14, 14)]
    # weights [I, O/group, kh, kw]
    assert k.weight_shapes(conv(21, 4, 2, 1, g=21, bias=False), [(1, 21, 14, 14)]) == [(21, 1, 4, 4)]


# ----------------------------------------------------------------------------- pooling
def test_pool_ceil_resnet_pool1():
    # ResNet pool1 3x3/2 pad 1 on 112: ceil((112 + 2 - 3)/2) + 1 = ceil(55.5) + 1 = 57;
    # clip check: (57-1)*2 = 112 >= 112 + 1? no -> 57 (PyTorch's default floor would give 56)
    assert out("Pooling", pool(3, 2, 1), (1, 64, 112, 112)) == [(1, 64, 57, 57)]


def test_pool_shufflenet_shortcut_ceil_vs_floor():
    # 3x3/2 pad 1 AVE on 56: CEIL ceil(55/2) + 1 = 29 ((29-1)*2 = 56 < 57, no clip); FLOOR 27 + 1 = 28
    assert out("Pooling", pool(3, 2, 1, "CEIL", "AVE"), (1, 24, 56, 56)) == [(1, 24, 29, 29)]
    assert out("Pooling", pool(3, 2, 1, "FLOOR", "AVE"), (1, 24, 56, 56)) == [(1, 24, 28, 28)]


def test_pool_last_window_clip():
    # k2 s2 p1 on 5: ceil((5 + 2 - 2)/2) + 1 = ceil(2.5) + 1 = 4, but the 4th window would
    # start at (4-1)*2 = 6 >= H + p = 6 (only right padding) -> dropped: 3
    assert pooled_size(5, 2, 1, 2, True) == 3
    assert out("Pooling", pool(2, 2, 1), (1, 1, 5, 5)) == [(1, 1, 3, 3)]
    # same k/s on 6 with p1: ceil(6/2)+1 = 4; (4-1)*2 = 6 < 7 -> kept
    assert pooled_size(6, 2, 1, 2, True) == 4


def test_pool_no_clip_without_pad_and_stride_over_kernel():
    # p = 0, s > k: k1 s3 on 5: ceil(4/3) + 1 = 3 windows start at 0, 3, 6 (the last is empty);
    # Caffe clips only when pad > 0, so 3 (PyTorch >= 2 would clip to 2)
    assert out("Pooling", pool(1, 3), (1, 2, 5, 5)) == [(1, 2, 3, 3)]
    # FLOOR: floor(4/3) + 1 = 2
    assert out("Pooling", pool(1, 3, 0, "FLOOR"), (1, 2, 5, 5)) == [(1, 2, 2, 2)]
    # k2 s3 on 8: ceil(6/3)+1 = 3
    assert out("Pooling", pool(2, 3), (1, 1, 8, 8)) == [(1, 1, 3, 3)]


def test_pool_googlenet_and_floor():
    # GoogLeNet pool1 3x3/2 on 112, no pad: ceil(109/2) + 1 = 55 + 1 = 56; floor -> 54 + 1 = 55
    assert out("Pooling", pool(3, 2), (1, 64, 112, 112)) == [(1, 64, 56, 56)]
    assert out("Pooling", pool(3, 2, 0, "FLOOR"), (1, 64, 112, 112)) == [(1, 64, 55, 55)]
    # GoogLeNet avg 5x5/3 aux pool on 14: ceil(9/3) + 1 = 4
    assert out("Pooling", pool(5, 3, 0, "CEIL", "AVE"), (1, 512, 14, 14)) == [(1, 512, 4, 4)]


def test_pool_global():
    assert out("Pooling", pool(0, glob=True), (2, 1024, 7, 7)) == [(2, 1024, 1, 1)]
    assert out("Pooling", pool(0, glob=True, method="MAX"), (1, 8, 5, 3)) == [(1, 8, 1, 1)]
    with pytest.raises(ProtogenError, match="global_pooling"):
        get_type("Pooling").validate(PoolParams(global_pooling=True, pad_h=1, pad_w=1))


def test_pool_checks():
    k = get_type("Pooling")
    with pytest.raises(ProtogenError, match="smaller than the kernel"):
        k.validate(pool(3, 2, 3))
    with pytest.raises(ProtogenError, match="padding"):
        k.validate(pool(3, 2, 1, method="STOCHASTIC"))


# ----------------------------------------------------------------------------- reshape & co
# caffe.proto's ReshapeParameter comments: "suppose input is a 2D blob with shape 2 x 8"
@pytest.mark.parametrize("dims,axis,num_axes,expected", [
    ((2, 2, 4), 0, -1, (2, 2, 4)),
    ((0, 2, 4), 0, -1, (2, 2, 4)),
    ((0, 2, -1), 0, -1, (2, 2, 4)),
    ((0, -1, 4), 0, -1, (2, 2, 4)),
    ((1, 2, 8), 0, -1, (1, 2, 8)),
    ((1, 2), 0, 1, (1, 2, 8)),
    ((1,), 0, 0, (1, 2, 8)),
    ((2, 1, 8), 0, -1, (2, 1, 8)),
    ((1,), 1, 0, (2, 1, 8)),
    ((1,), -1, 0, (2, 8, 1)),      # axis -1: "begin the reshape after the last axis"
    ((-1,), -2, -1, (2, 8)),       # axis -2 includes only the last axis
])
def test_reshape_caffe_proto_examples(dims, axis, num_axes, expected):
    assert out("Reshape", ReshapeParams(dims, axis, num_axes), (2, 8)) == [expected]


def test_reshape_4d():
    # (N, C, H, W) = (2, 6, 4, 5): channel shuffle step (g=3): axis 1, num_axes 1, (3, -1)
    # -> (2, 3, 6/3 = 2, 4, 5)
    assert out("Reshape", ReshapeParams((3, -1), 1, 1), (2, 6, 4, 5)) == [(2, 3, 2, 4, 5)]
    # merge axes 1..2 of (2, 2, 3, 4, 5) back: -1 = 2*3 = 6
    assert out("Reshape", ReshapeParams((-1,), 1, 2), (2, 2, 3, 4, 5)) == [(2, 6, 4, 5)]
    # (0, -1): keep N, flatten the rest: 6*4*5 = 120
    assert out("Reshape", ReshapeParams((0, -1)), (2, 6, 4, 5)) == [(2, 120)]
    with pytest.raises(ShapeError):
        out("Reshape", ReshapeParams((7, -1)), (2, 6, 4, 5))       # 240 not divisible by 7
    with pytest.raises(ShapeError):
        out("Reshape", ReshapeParams((-1, -1)), (2, 6, 4, 5))      # two -1
    with pytest.raises(ShapeError):
        out("Reshape", ReshapeParams((5, 5)), (2, 6, 4, 5))        # 25 != 240


def test_flatten():
    assert out("Flatten", FlattenParams(), (2, 3, 4, 5)) == [(2, 60)]
    assert out("Flatten", FlattenParams(axis=2), (2, 3, 4, 5)) == [(2, 3, 20)]
    assert out("Flatten", FlattenParams(axis=1, end_axis=2), (2, 3, 4, 5)) == [(2, 12, 5)]
    assert out("Flatten", FlattenParams(axis=0), (2, 3, 4, 5)) == [(120,)]


def test_permute_full_order_rule():
    # SSD fork: listed axes first, then the missing ones in increasing order
    assert out("Permute", PermuteParams((0, 2, 3, 1)), (1, 12, 19, 19)) == [(1, 19, 19, 12)]
    assert out("Permute", PermuteParams((0, 2)), (1, 12, 19, 7)) == [(1, 19, 12, 7)]   # = (0,2,1,3)
    assert out("Permute", PermuteParams((3,)), (1, 2, 3, 4)) == [(4, 1, 2, 3)]         # = (3,0,1,2)
    assert out("Permute", PermuteParams((0, 2, 1, 3, 4)), (1, 3, 4, 7, 7)) == [(1, 4, 3, 7, 7)]
    assert out("Permute", PermuteParams(()), (1, 2, 3)) == [(1, 2, 3)]
    with pytest.raises(ShapeError):
        out("Permute", PermuteParams((0, 0, 1)), (1, 2, 3))
    with pytest.raises(ShapeError):
        out("Permute", PermuteParams((4,)), (1, 2, 3))


def test_slice():
    # points 3, 7 on 10 channels -> [0,3) [3,7) [7,10) = 3, 4, 3
    assert out("Slice", SliceParams(1, (3, 7)), (1, 10, 5, 5), n_tops=3) == \
        [(1, 3, 5, 5), (1, 4, 5, 5), (1, 3, 5, 5)]
    # no points: equal parts, 10 / 2 = 5
    assert out("Slice", SliceParams(1, ()), (1, 10, 5, 5), n_tops=2) == [(1, 5, 5, 5)] * 2
    # axis 0 (batch) into 4 pieces of 1
    assert out("Slice", SliceParams(0, ()), (4, 3), n_tops=4) == [(1, 3)] * 4
    with pytest.raises(ShapeError, match="evenly"):
        out("Slice", SliceParams(1, ()), (1, 10, 5, 5), n_tops=3)
    with pytest.raises(ShapeError):
        out("Slice", SliceParams(1, (3,)), (1, 10, 5, 5), n_tops=3)     # 1 point, 3 tops
    with pytest.raises(ShapeError):
        out("Slice", SliceParams(1, (7, 3)), (1, 10, 5, 5), n_tops=3)   # not increasing


def test_concat():
    # inception output: 64 + 128 + 32 + 32 = 256 channels
    ins = [(1, 64, 28, 28), (1, 128, 28, 28), (1, 32, 28, 28), (1, 32, 28, 28)]
    assert out("Concat", ConcatParams(1), *ins) == [(1, 256, 28, 28)]
    assert out("Concat", ConcatParams(0), (2, 3), (5, 3)) == [(7, 3)]
    assert out("Concat", ConcatParams(-1), (2, 3), (2, 4)) == [(2, 7)]
    with pytest.raises(ShapeError):
        out("Concat", ConcatParams(1), (1, 64, 28, 28), (1, 64, 27, 28))


def test_eltwise():
    assert out("Eltwise", EltwiseParams("SUM"), (1, 8, 4, 4), (1, 8, 4, 4)) == [(1, 8, 4, 4)]
    with pytest.raises(ShapeError, match="equal shapes"):
        out("Eltwise", EltwiseParams("SUM"), (1, 8, 4, 4), (1, 8, 4, 5))
    with pytest.raises(ShapeError):
        out("Eltwise", EltwiseParams("SUM", (1.0,)), (1, 8), (1, 8))   # 1 coeff, 2 bottoms
    with pytest.raises(ProtogenError):
        get_type("Eltwise").validate(EltwiseParams("MAX", (1.0, 1.0)))


def test_inner_product_axis():
    k = get_type("InnerProduct")
    p = InnerProductParams(num_output=10)
    # axis 1: flatten C*H*W = 3*4*5 = 60 -> (2, 10), weights (10, 60)
    assert out("InnerProduct", p, (2, 3, 4, 5)) == [(2, 10)]
    assert k.weight_shapes(p, [(2, 3, 4, 5)]) == [(10, 60), (10,)]
    assert k.macs(p, [(2, 3, 4, 5)], [(2, 10)]) == 60 * 10       # per sample
    # axis 2: keeps (N, C), flattens H*W = 20 -> (2, 3, 10); 3 vectors per sample
    p2 = InnerProductParams(num_output=10, axis=2, bias_term=False)
    assert out("InnerProduct", p2, (2, 3, 4, 5)) == [(2, 3, 10)]
    assert k.weight_shapes(p2, [(2, 3, 4, 5)]) == [(10, 20)]
    assert k.macs(p2, [(2, 3, 4, 5)], [(2, 3, 10)]) == 3 * 20 * 10
    # transpose stores [K, N]
    p3 = InnerProductParams(num_output=10, transpose=True)
    assert k.weight_shapes(p3, [(2, 60)])[0] == (60, 10)


def test_shuffle_channel_shape():
    from protogen.layers.tensor import ShuffleChannelParams
    assert out("ShuffleChannel", ShuffleChannelParams(3), (1, 240, 28, 28)) == [(1, 240, 28, 28)]
    with pytest.raises(ShapeError):
        out("ShuffleChannel", ShuffleChannelParams(3), (1, 100, 28, 28))


def test_batchnorm_blobs_are_stats():
    k = get_type("BatchNorm")
    from protogen.layers.norm import BatchNormParams
    import numpy as np
    c = k.cost(BatchNormParams(), [(1, 16, 8, 8)], [(1, 16, 8, 8)])
    # mean (16) + var (16) + factor (1) = 33 statistics, 0 learnable
    assert (c.params, c.stats) == (0, 33)
    # Caffe: f = 1/s; mean = f*b0, var = f*b1 (s = 999.0 after many training steps)
    m, v = k.statistics([np.full(2, 999.0 * 0.5, np.float32), np.full(2, 999.0 * 2.0, np.float32),
                         np.array([999.0], np.float32)])
    assert np.allclose(m, 0.5) and np.allclose(v, 2.0)
    m, v = k.statistics([np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(1, np.float32)])
    assert not m.any() and not v.any()     # s == 0 -> f = 0
