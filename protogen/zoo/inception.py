"""Inception v2 (BN-Inception), v3, v4 and Inception-ResNet v1/v2.

* ``bn_inception`` (alias ``inception_v2``): Ioffe & Szegedy 2015 (arXiv:1502.03167), the
  module table of Figure 5, BatchNorm (+ Scale) after every convolution, each 5x5 branch
  replaced by two 3x3, stride-2 modules 3c and 4e (max pool + pass-through). Layer names and
  the two details the table leaves open follow the Caffe ports (lim0606/caffe-googlenet-bn,
  Intel Caffe's googlenet_v2): conv1 is a plain 7x7 convolution (the paper's is a 7x7
  depthwise-separable one, depth multiplier 8), and 4c/4d have a 96-channel pool
  projection (the table's 128 contradicts its own 576-channel outputs). BN eps 1e-5.
* ``inception_v3``: Szegedy et al. 2015 (arXiv:1512.00567) as released (TF-slim, torchvision):
  299x299, factorised 1xn/nx1 modules, grid reductions Mixed_6a/7a; optional auxiliary head
  (train net) after Mixed_6e with loss weight 0.4 (TF-slim). BN eps 1e-3.
* ``inception_v4``, ``inception_resnet_v2``: Szegedy et al. 2016 (arXiv:1602.07261), as
  released (TF-slim checkpoints; timm/Cadene ports). Inception-ResNet-v2 uses the released
  stem (conv 80/192 + Mixed_5b, 320 channels at 35x35), not the paper's Figure 3 stem.
  Residual branches are scaled 0.17 / 0.10 / 0.20 (A / B / C) through Eltwise SUM
  ``coeff: [1, scale]``; the last block-C is unscaled and has no ReLU. BN eps 1e-3.
* ``inception_resnet_v1``: the paper's Figures 10-14 (stem of Figure 14, 5 x A, Reduction-A
  with k=192 l=192 m=256 n=384, 10 x B, Reduction-B of Figure 12, 5 x C), same scaling.

Caffe notes: TF averages exclude padding (``count_include_pad=False``); Caffe AVE pooling
counts it, so the 3x3/1 pad-1 average pools differ at the image border from the TF
checkpoints (CAFFE-SEMANTICS section 7); shapes and costs are unaffected. Dropout ratio
0.2 (TF-slim ``keep_prob`` 0.8).
"""
from __future__ import annotations

from . import NUM_CLASSES, Option, model

INPUT_299 = Option("input_size", int, 299, range=(75, 2048), help="input height and width")
INPUT_224 = Option("input_size", int, 224, range=(64, 2048), help="input height and width")


def cbr(n, x, out, k, stride=1, pad=0, *, name, eps=1e-3):
    """Convolution (no bias) -> BatchNorm + Scale -> ReLU, all but the conv in place."""
    y = n.conv(x, out, k, stride, pad, bias=False, name=name)
    y = n.bn(y, eps=eps)
    return n.relu(y)


def grid_pool(n, x, like=None, *, name):
    """3x3/2 max pool of a grid reduction. Caffe rounds pooling up, convolution down; TF's
    VALID pooling rounds down. At the published input sizes both agree and the plain (CEIL,
    no pad) Caffe pooling is written; where they differ, ``round_mode: FLOOR`` (or, when the
    parallel conv is padded, pad 1) keeps the pool the size of the parallel stride-2 conv
    ``like`` (or of a TF VALID pool when there is none)."""
    from ..errors import ShapeError
    from ..layers.pool import pooled_size
    h, w = x.shape[2], x.shape[3]
    want = (like.shape[2], like.shape[3]) if like is not None else \
        (pooled_size(h, 3, 0, 2, False), pooled_size(w, 3, 0, 2, False))
    for pad, mode in ((0, "CEIL"), (0, "FLOOR"), (1, "CEIL"), (1, "FLOOR")):
        if (pooled_size(h, 3, pad, 2, mode == "CEIL"), pooled_size(w, 3, pad, 2, mode == "CEIL")) == want:
            return n.max_pool(x, 3, 2, pad, name=name, round_mode=mode)
    raise ShapeError(f"no 3x3/2 pooling of {h}x{w} gives {want[0]}x{want[1]}", layer=name)


def _head(n, x, num_classes, dropout: float | None, name="fc"):
    x = n.global_pool(x, name="pool_global")
    if dropout:
        x = n.dropout(x, dropout, name="drop")
    return n.fc(x, num_classes, name=name)


# ============================================================================ BN-Inception
#: Figure 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj
#: (pool proj 0 = pass-through); stride-2 modules have no 1x1 branch
BN_MODULES = {
    "3a": (64, 64, 64, 64, 96, "AVE", 32),
    "3b": (64, 64, 96, 64, 96, "AVE", 64),
    "3c": (0, 128, 160, 64, 96, "MAX", 0),
    "4a": (224, 64, 96, 96, 128, "AVE", 128),
    "4b": (192, 96, 128, 96, 128, "AVE", 128),
    "4c": (160, 128, 160, 128, 160, "AVE", 96),
    "4d": (96, 128, 192, 160, 192, "AVE", 96),
    "4e": (0, 128, 192, 192, 256, "MAX", 0),
    "5a": (352, 192, 320, 160, 224, "AVE", 128),
    "5b": (352, 192, 320, 192, 224, "MAX", 128),
}


def bn_module(n, x, c1, c3r, c3, d3r, d3, pool, proj, eps):
    """BN-Inception module; a module without a 1x1 branch reduces the grid (stride 2)."""
    s = 1 if c1 else 2
    outs = []
    if c1:
        outs.append(cbr(n, x, c1, 1, name="1x1", eps=eps))
    y = cbr(n, x, c3r, 1, name="3x3_reduce", eps=eps)
    outs.append(cbr(n, y, c3, 3, s, 1, name="3x3", eps=eps))
    y = cbr(n, x, d3r, 1, name="double3x3_reduce", eps=eps)
    y = cbr(n, y, d3, 3, 1, 1, name="double3x3a", eps=eps)
    outs.append(cbr(n, y, d3, 3, s, 1, name="double3x3b", eps=eps))
    if s == 2:
        outs.append(grid_pool(n, x, outs[-1], name="pool"))    # pass-through
    else:
        y = n.pool(x, 3, 1, 1, pool=pool, name="pool")
        outs.append(cbr(n, y, proj, 1, name="pool_proj", eps=eps))
    return n.concat(outs, name="output")


@model("bn_inception", INPUT_224, NUM_CLASSES,
       Option("variant", str, "caffe", choices=("caffe", "paper"),
              help="caffe: as the Caffe ports (plain 7x7 conv1, 96-channel pool proj in 4c/4d); "
                   "paper: Fig. 5 literally (separable 7x7 conv1 x8, 128-channel projections)"),
       aliases=("inception_v2",),
       summary="BN-Inception / Inception v2 (Ioffe & Szegedy 2015, Fig. 5), as the Caffe ports")
def bn_inception(n, x, input_size=224, num_classes=1000, variant="caffe"):
    """BN-Inception: 7x7/2 conv, 3x3 max pool, 1x1 + 3x3 conv, pool, 10 modules, avg pool, FC."""
    eps = 1e-5
    modules = dict(BN_MODULES)
    if variant == "paper":
        # 7x7 depthwise-separable conv1 (depth multiplier 8), BN after the pointwise part
        y = n.conv(x, 3 * 8, 7, 2, 3, group=3, bias=False, name="conv1/7x7_s2_dw")
        x = cbr(n, y, 64, 1, name="conv1/7x7_s2", eps=eps)
        for key in ("4c", "4d"):
            modules[key] = modules[key][:-1] + (128,)
    else:
        x = cbr(n, x, 64, 7, 2, 3, name="conv1/7x7_s2", eps=eps)
    x = n.max_pool(x, 3, 2, name="pool1/3x3_s2")
    x = cbr(n, x, 64, 1, name="conv2/3x3_reduce", eps=eps)
    x = cbr(n, x, 192, 3, 1, 1, name="conv2/3x3", eps=eps)
    x = n.max_pool(x, 3, 2, name="pool2/3x3_s2")
    for key, cfg in modules.items():
        with n.scope(f"inception_{key}"):
            x = bn_module(n, x, *cfg, eps=eps)
    x = n.ave_pool(x, (x.shape[2], x.shape[3]), 1, name="pool5/7x7_s1")
    return n.fc(x, num_classes, name="loss3/classifier")


# ============================================================================ Inception v3
def v3_a(n, x, pool_features):
    """35x35 module (Fig. 5 of the v3 paper, as released: one 5x5 branch, double 3x3)."""
    b0 = cbr(n, x, 64, 1, name="branch1x1")
    b1 = cbr(n, x, 48, 1, name="branch5x5_1")
    b1 = cbr(n, b1, 64, 5, 1, 2, name="branch5x5_2")
    b2 = cbr(n, x, 64, 1, name="branch3x3dbl_1")
    b2 = cbr(n, b2, 96, 3, 1, 1, name="branch3x3dbl_2")
    b2 = cbr(n, b2, 96, 3, 1, 1, name="branch3x3dbl_3")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch_pool_avg")
    b3 = cbr(n, b3, pool_features, 1, name="branch_pool")
    return n.concat([b0, b1, b2, b3], name="output")


def v3_b(n, x):
    """35 -> 17 grid reduction (Mixed_6a)."""
    b0 = cbr(n, x, 384, 3, 2, name="branch3x3")
    b1 = cbr(n, x, 64, 1, name="branch3x3dbl_1")
    b1 = cbr(n, b1, 96, 3, 1, 1, name="branch3x3dbl_2")
    b1 = cbr(n, b1, 96, 3, 2, name="branch3x3dbl_3")
    b2 = grid_pool(n, x, name="branch_pool")
    return n.concat([b0, b1, b2], name="output")


def v3_c(n, x, c7):
    """17x17 module with factorised 7x7 (1x7 then 7x1)."""
    b0 = cbr(n, x, 192, 1, name="branch1x1")
    b1 = cbr(n, x, c7, 1, name="branch7x7_1")
    b1 = cbr(n, b1, c7, (1, 7), 1, (0, 3), name="branch7x7_2")
    b1 = cbr(n, b1, 192, (7, 1), 1, (3, 0), name="branch7x7_3")
    b2 = cbr(n, x, c7, 1, name="branch7x7dbl_1")
    b2 = cbr(n, b2, c7, (7, 1), 1, (3, 0), name="branch7x7dbl_2")
    b2 = cbr(n, b2, c7, (1, 7), 1, (0, 3), name="branch7x7dbl_3")
    b2 = cbr(n, b2, c7, (7, 1), 1, (3, 0), name="branch7x7dbl_4")
    b2 = cbr(n, b2, 192, (1, 7), 1, (0, 3), name="branch7x7dbl_5")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch_pool_avg")
    b3 = cbr(n, b3, 192, 1, name="branch_pool")
    return n.concat([b0, b1, b2, b3], name="output")


def v3_d(n, x):
    """17 -> 8 grid reduction (Mixed_7a)."""
    b0 = cbr(n, x, 192, 1, name="branch3x3_1")
    b0 = cbr(n, b0, 320, 3, 2, name="branch3x3_2")
    b1 = cbr(n, x, 192, 1, name="branch7x7x3_1")
    b1 = cbr(n, b1, 192, (1, 7), 1, (0, 3), name="branch7x7x3_2")
    b1 = cbr(n, b1, 192, (7, 1), 1, (3, 0), name="branch7x7x3_3")
    b1 = cbr(n, b1, 192, 3, 2, name="branch7x7x3_4")
    b2 = grid_pool(n, x, name="branch_pool")
    return n.concat([b0, b1, b2], name="output")


def v3_e(n, x):
    """8x8 module with expanded filter banks (1x3 and 3x1 side by side)."""
    b0 = cbr(n, x, 320, 1, name="branch1x1")
    b1 = cbr(n, x, 384, 1, name="branch3x3_1")
    b1a = cbr(n, b1, 384, (1, 3), 1, (0, 1), name="branch3x3_2a")
    b1b = cbr(n, b1, 384, (3, 1), 1, (1, 0), name="branch3x3_2b")
    b2 = cbr(n, x, 448, 1, name="branch3x3dbl_1")
    b2 = cbr(n, b2, 384, 3, 1, 1, name="branch3x3dbl_2")
    b2a = cbr(n, b2, 384, (1, 3), 1, (0, 1), name="branch3x3dbl_3a")
    b2b = cbr(n, b2, 384, (3, 1), 1, (1, 0), name="branch3x3dbl_3b")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch_pool_avg")
    b3 = cbr(n, b3, 192, 1, name="branch_pool")
    return n.concat([b0, b1a, b1b, b2a, b2b, b3], name="output")


def v3_aux(n, x, num_classes):
    """Auxiliary classifier on Mixed_6e (17x17x768): AVE 5x5/3 -> 1x1 128 -> 5x5 768 -> FC."""
    y = n.ave_pool(x, min(5, x.shape[2]), 3, name="pool")
    y = cbr(n, y, 128, 1, name="conv0")
    y = cbr(n, y, 768, (min(5, y.shape[2]), min(5, y.shape[3])), name="conv1")  # 5x5 -> 1x1 at 299
    if y.shape[2] != 1 or y.shape[3] != 1:
        y = n.global_pool(y, name="pool_global")
    return n.fc(y, num_classes, name="fc")


@model("inception_v3", INPUT_299, NUM_CLASSES,
       Option("aux", bool, True, help="auxiliary classifier in the train net (loss weight 0.4)"),
       summary="Inception v3 (Szegedy et al. 2015) as released: 299x299, factorised modules")
def inception_v3(n, x, input_size=299, num_classes=1000, aux=True):
    """Inception v3: stem, 3 x A (35x35), B, 4 x C (17x17), D, 2 x E (8x8), avg pool, FC."""
    x = cbr(n, x, 32, 3, 2, name="Conv2d_1a_3x3")
    x = cbr(n, x, 32, 3, name="Conv2d_2a_3x3")
    x = cbr(n, x, 64, 3, 1, 1, name="Conv2d_2b_3x3")
    x = grid_pool(n, x, name="MaxPool_3a_3x3")
    x = cbr(n, x, 80, 1, name="Conv2d_3b_1x1")
    x = cbr(n, x, 192, 3, name="Conv2d_4a_3x3")
    x = grid_pool(n, x, name="MaxPool_5a_3x3")
    for key, pf in (("5b", 32), ("5c", 64), ("5d", 64)):
        with n.scope(f"Mixed_{key}"):
            x = v3_a(n, x, pf)
    with n.scope("Mixed_6a"):
        x = v3_b(n, x)
    for key, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
        with n.scope(f"Mixed_{key}"):
            x = v3_c(n, x, c7)
    if aux and n.label is not None:
        with n.train_only():
            with n.scope("AuxLogits"):
                a = v3_aux(n, x, num_classes)
            n.loss(a, name="AuxLogits/loss", loss_weight=0.4)
    with n.scope("Mixed_7a"):
        x = v3_d(n, x)
    for key in ("7b", "7c"):
        with n.scope(f"Mixed_{key}"):
            x = v3_e(n, x)
    return _head(n, x, num_classes, 0.2)


# ============================================================================ Inception v4
def v4_stem(n, x):
    """Figure 3: 299x299x3 -> 35x35x384."""
    x = cbr(n, x, 32, 3, 2, name="conv1_3x3_s2")
    x = cbr(n, x, 32, 3, name="conv2_3x3")
    x = cbr(n, x, 64, 3, 1, 1, name="conv3_3x3")
    with n.scope("mixed_3a"):
        a = grid_pool(n, x, name="maxpool")
        b = cbr(n, x, 96, 3, 2, name="conv_3x3_s2")
        x = n.concat([a, b], name="output")
    with n.scope("mixed_4a"):
        a = cbr(n, x, 64, 1, name="branch0_1x1")
        a = cbr(n, a, 96, 3, name="branch0_3x3")
        b = cbr(n, x, 64, 1, name="branch1_1x1")
        b = cbr(n, b, 64, (1, 7), 1, (0, 3), name="branch1_1x7")
        b = cbr(n, b, 64, (7, 1), 1, (3, 0), name="branch1_7x1")
        b = cbr(n, b, 96, 3, name="branch1_3x3")
        x = n.concat([a, b], name="output")
    with n.scope("mixed_5a"):
        a = cbr(n, x, 192, 3, 2, name="conv_3x3_s2")
        b = grid_pool(n, x, name="maxpool")
        x = n.concat([a, b], name="output")
    return x


def v4_a(n, x):
    """Inception-A (Figure 4), 35x35x384."""
    b0 = cbr(n, x, 96, 1, name="branch0_1x1")
    b1 = cbr(n, x, 64, 1, name="branch1_1x1")
    b1 = cbr(n, b1, 96, 3, 1, 1, name="branch1_3x3")
    b2 = cbr(n, x, 64, 1, name="branch2_1x1")
    b2 = cbr(n, b2, 96, 3, 1, 1, name="branch2_3x3a")
    b2 = cbr(n, b2, 96, 3, 1, 1, name="branch2_3x3b")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch3_avgpool")
    b3 = cbr(n, b3, 96, 1, name="branch3_1x1")
    return n.concat([b0, b1, b2, b3], name="output")


def reduction_a(n, x, k, l, m, nn):
    """Reduction-A (Figure 7): 35 -> 17; k, l, m, n as Table 1 of the paper."""
    b0 = cbr(n, x, nn, 3, 2, name="branch0_3x3_s2")
    b1 = cbr(n, x, k, 1, name="branch1_1x1")
    b1 = cbr(n, b1, l, 3, 1, 1, name="branch1_3x3")
    b1 = cbr(n, b1, m, 3, 2, name="branch1_3x3_s2")
    b2 = grid_pool(n, x, name="branch2_maxpool")
    return n.concat([b0, b1, b2], name="output")


def v4_b(n, x):
    """Inception-B (Figure 5), 17x17x1024."""
    b0 = cbr(n, x, 384, 1, name="branch0_1x1")
    b1 = cbr(n, x, 192, 1, name="branch1_1x1")
    b1 = cbr(n, b1, 224, (1, 7), 1, (0, 3), name="branch1_1x7")
    b1 = cbr(n, b1, 256, (7, 1), 1, (3, 0), name="branch1_7x1")
    b2 = cbr(n, x, 192, 1, name="branch2_1x1")
    b2 = cbr(n, b2, 192, (7, 1), 1, (3, 0), name="branch2_7x1a")
    b2 = cbr(n, b2, 224, (1, 7), 1, (0, 3), name="branch2_1x7a")
    b2 = cbr(n, b2, 224, (7, 1), 1, (3, 0), name="branch2_7x1b")
    b2 = cbr(n, b2, 256, (1, 7), 1, (0, 3), name="branch2_1x7b")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch3_avgpool")
    b3 = cbr(n, b3, 128, 1, name="branch3_1x1")
    return n.concat([b0, b1, b2, b3], name="output")


def v4_reduction_b(n, x):
    """Reduction-B (Figure 8): 17 -> 8."""
    b0 = cbr(n, x, 192, 1, name="branch0_1x1")
    b0 = cbr(n, b0, 192, 3, 2, name="branch0_3x3_s2")
    b1 = cbr(n, x, 256, 1, name="branch1_1x1")
    b1 = cbr(n, b1, 256, (1, 7), 1, (0, 3), name="branch1_1x7")
    b1 = cbr(n, b1, 320, (7, 1), 1, (3, 0), name="branch1_7x1")
    b1 = cbr(n, b1, 320, 3, 2, name="branch1_3x3_s2")
    b2 = grid_pool(n, x, name="branch2_maxpool")
    return n.concat([b0, b1, b2], name="output")


def v4_c(n, x):
    """Inception-C (Figure 6), 8x8x1536."""
    b0 = cbr(n, x, 256, 1, name="branch0_1x1")
    b1 = cbr(n, x, 384, 1, name="branch1_1x1")
    b1a = cbr(n, b1, 256, (1, 3), 1, (0, 1), name="branch1_1x3")
    b1b = cbr(n, b1, 256, (3, 1), 1, (1, 0), name="branch1_3x1")
    b2 = cbr(n, x, 384, 1, name="branch2_1x1")
    b2 = cbr(n, b2, 448, (3, 1), 1, (1, 0), name="branch2_3x1a")
    b2 = cbr(n, b2, 512, (1, 3), 1, (0, 1), name="branch2_1x3a")
    b2a = cbr(n, b2, 256, (1, 3), 1, (0, 1), name="branch2_1x3b")
    b2b = cbr(n, b2, 256, (3, 1), 1, (1, 0), name="branch2_3x1b")
    b3 = n.ave_pool(x, 3, 1, 1, name="branch3_avgpool")
    b3 = cbr(n, b3, 256, 1, name="branch3_1x1")
    return n.concat([b0, b1a, b1b, b2a, b2b, b3], name="output")


@model("inception_v4", INPUT_299, NUM_CLASSES,
       summary="Inception v4 (Szegedy et al. 2016): stem, 4xA, Red-A, 7xB, Red-B, 3xC")
def inception_v4(n, x, input_size=299, num_classes=1000):
    """Inception v4 (Figure 9)."""
    x = v4_stem(n, x)
    for i in range(4):
        with n.scope(f"inception_a{i + 1}"):
            x = v4_a(n, x)
    with n.scope("reduction_a"):
        x = reduction_a(n, x, 192, 224, 256, 384)
    for i in range(7):
        with n.scope(f"inception_b{i + 1}"):
            x = v4_b(n, x)
    with n.scope("reduction_b"):
        x = v4_reduction_b(n, x)
    for i in range(3):
        with n.scope(f"inception_c{i + 1}"):
            x = v4_c(n, x)
    return _head(n, x, num_classes, 0.2)


# ============================================================================ Inception-ResNet
def residual(n, x, branches, scale: float, relu: bool = True):
    """Concat the branches, 1x1 linear conv (with bias, no BN) back to x's width, then
    ``x + scale * up`` as one Eltwise SUM with coeff [1, scale], then ReLU."""
    y = n.concat(branches, name="concat") if len(branches) > 1 else branches[0]
    up = n.conv(y, x.channels, 1, name="up")
    out = n.eltwise([x, up], "SUM", (1.0, scale) if scale != 1.0 else (), name="sum")
    return n.relu(out) if relu else out


def block_a(n, x, w, scale):
    """Inception-ResNet-A (35x35): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3, widths ``w`` =
    (b0, b1 1x1, b1 3x3, b2 1x1, b2 3x3a, b2 3x3b); v1: Figure 10, v2: block35."""
    b0 = cbr(n, x, w[0], 1, name="branch0_1x1")
    b1 = cbr(n, x, w[1], 1, name="branch1_1x1")
    b1 = cbr(n, b1, w[2], 3, 1, 1, name="branch1_3x3")
    b2 = cbr(n, x, w[3], 1, name="branch2_1x1")
    b2 = cbr(n, b2, w[4], 3, 1, 1, name="branch2_3x3a")
    b2 = cbr(n, b2, w[5], 3, 1, 1, name="branch2_3x3b")
    return residual(n, x, [b0, b1, b2], scale)


def block_b(n, x, w, scale):
    """Inception-ResNet-B (17x17): 1x1 | 1x1 -> 1x7 -> 7x1, widths ``w`` = (b0, b1 1x1,
    1x7, 7x1); v1: Figure 11, v2: block17."""
    b0 = cbr(n, x, w[0], 1, name="branch0_1x1")
    b1 = cbr(n, x, w[1], 1, name="branch1_1x1")
    b1 = cbr(n, b1, w[2], (1, 7), 1, (0, 3), name="branch1_1x7")
    b1 = cbr(n, b1, w[3], (7, 1), 1, (3, 0), name="branch1_7x1")
    return residual(n, x, [b0, b1], scale)


def block_c(n, x, w, scale, relu=True):
    """Inception-ResNet-C (8x8): 1x1 | 1x1 -> 1x3 -> 3x1, widths ``w`` = (b0, b1 1x1, 1x3,
    3x1); v1: Figure 13, v2: block8."""
    b0 = cbr(n, x, w[0], 1, name="branch0_1x1")
    b1 = cbr(n, x, w[1], 1, name="branch1_1x1")
    b1 = cbr(n, b1, w[2], (1, 3), 1, (0, 1), name="branch1_1x3")
    b1 = cbr(n, b1, w[3], (3, 1), 1, (1, 0), name="branch1_3x1")
    return residual(n, x, [b0, b1], scale, relu)


# branch widths of the residual blocks: v2 (35x35x320, 17x17x1088, 8x8x2080) as released,
# v1 (35x35x256, 17x17x896, 8x8x1792) as the paper's Figures 10, 11, 13
IR2_WIDTHS = dict(a=(32, 32, 32, 32, 48, 64), b=(192, 128, 160, 192), c=(192, 192, 224, 256))
IR1_WIDTHS = dict(a=(32, 32, 32, 32, 32, 32), b=(128, 128, 128, 128), c=(192, 192, 192, 192))


@model("inception_resnet_v2", INPUT_299, NUM_CLASSES,
       summary="Inception-ResNet-v2 (Szegedy et al. 2016) as released (TF-slim): 10xA, 20xB, 10xC")
def inception_resnet_v2(n, x, input_size=299, num_classes=1000):
    """Inception-ResNet-v2: released stem, 10 x block35, Mixed_6a, 20 x block17, Mixed_7a,
    10 x block8, 1x1 conv to 1536, avg pool, FC."""
    x = cbr(n, x, 32, 3, 2, name="conv2d_1a")
    x = cbr(n, x, 32, 3, name="conv2d_2a")
    x = cbr(n, x, 64, 3, 1, 1, name="conv2d_2b")
    x = grid_pool(n, x, name="maxpool_3a")
    x = cbr(n, x, 80, 1, name="conv2d_3b")
    x = cbr(n, x, 192, 3, name="conv2d_4a")
    x = grid_pool(n, x, name="maxpool_5a")
    with n.scope("mixed_5b"):
        b0 = cbr(n, x, 96, 1, name="branch0_1x1")
        b1 = cbr(n, x, 48, 1, name="branch1_1x1")
        b1 = cbr(n, b1, 64, 5, 1, 2, name="branch1_5x5")
        b2 = cbr(n, x, 64, 1, name="branch2_1x1")
        b2 = cbr(n, b2, 96, 3, 1, 1, name="branch2_3x3a")
        b2 = cbr(n, b2, 96, 3, 1, 1, name="branch2_3x3b")
        b3 = n.ave_pool(x, 3, 1, 1, name="branch3_avgpool")
        b3 = cbr(n, b3, 64, 1, name="branch3_1x1")
        x = n.concat([b0, b1, b2, b3], name="output")
    for i in range(10):
        with n.scope(f"block35_{i + 1}"):
            x = block_a(n, x, IR2_WIDTHS['a'], 0.17)
    with n.scope("mixed_6a"):
        x = reduction_a(n, x, 256, 256, 384, 384)
    for i in range(20):
        with n.scope(f"block17_{i + 1}"):
            x = block_b(n, x, IR2_WIDTHS['b'], 0.10)
    with n.scope("mixed_7a"):
        b0 = cbr(n, x, 256, 1, name="branch0_1x1")
        b0 = cbr(n, b0, 384, 3, 2, name="branch0_3x3_s2")
        b1 = cbr(n, x, 256, 1, name="branch1_1x1")
        b1 = cbr(n, b1, 288, 3, 2, name="branch1_3x3_s2")
        b2 = cbr(n, x, 256, 1, name="branch2_1x1")
        b2 = cbr(n, b2, 288, 3, 1, 1, name="branch2_3x3")
        b2 = cbr(n, b2, 320, 3, 2, name="branch2_3x3_s2")
        b3 = grid_pool(n, x, name="branch3_maxpool")
        x = n.concat([b0, b1, b2, b3], name="output")
    for i in range(9):
        with n.scope(f"block8_{i + 1}"):
            x = block_c(n, x, IR2_WIDTHS['c'], 0.20)
    with n.scope("block8_10"):
        x = block_c(n, x, IR2_WIDTHS['c'], 1.0, relu=False)
    x = cbr(n, x, 1536, 1, name="conv2d_7b")
    return _head(n, x, num_classes, 0.2)


@model("inception_resnet_v1", INPUT_299, NUM_CLASSES,
       summary="Inception-ResNet-v1 (Szegedy et al. 2016, Figs. 10-14): 5xA, 10xB, 5xC")
def inception_resnet_v1(n, x, input_size=299, num_classes=1000):
    """Inception-ResNet-v1: stem (Figure 14), 5 x A, Reduction-A, 10 x B, Reduction-B, 5 x C."""
    x = cbr(n, x, 32, 3, 2, name="conv2d_1a")
    x = cbr(n, x, 32, 3, name="conv2d_2a")
    x = cbr(n, x, 64, 3, 1, 1, name="conv2d_2b")
    x = grid_pool(n, x, name="maxpool_3a")
    x = cbr(n, x, 80, 1, name="conv2d_3b")
    x = cbr(n, x, 192, 3, name="conv2d_4a")
    x = cbr(n, x, 256, 3, 2, name="conv2d_4b")
    for i in range(5):
        with n.scope(f"block35_{i + 1}"):
            x = block_a(n, x, IR1_WIDTHS['a'], 0.17)
    with n.scope("mixed_6a"):
        x = reduction_a(n, x, 192, 192, 256, 384)
    for i in range(10):
        with n.scope(f"block17_{i + 1}"):
            x = block_b(n, x, IR1_WIDTHS['b'], 0.10)
    with n.scope("mixed_7a"):
        b0 = cbr(n, x, 256, 1, name="branch0_1x1")
        b0 = cbr(n, b0, 384, 3, 2, name="branch0_3x3_s2")
        b1 = cbr(n, x, 256, 1, name="branch1_1x1")
        b1 = cbr(n, b1, 256, 3, 2, name="branch1_3x3_s2")
        b2 = cbr(n, x, 256, 1, name="branch2_1x1")
        b2 = cbr(n, b2, 256, 3, 1, 1, name="branch2_3x3")
        b2 = cbr(n, b2, 256, 3, 2, name="branch2_3x3_s2")
        b3 = grid_pool(n, x, name="branch3_maxpool")
        x = n.concat([b0, b1, b2, b3], name="output")
    for i in range(4):
        with n.scope(f"block8_{i + 1}"):
            x = block_c(n, x, IR1_WIDTHS['c'], 0.20)
    with n.scope("block8_5"):
        x = block_c(n, x, IR1_WIDTHS['c'], 1.0, relu=False)
    return _head(n, x, num_classes, 0.2)

