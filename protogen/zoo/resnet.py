"""ResNet (He et al. 2015, arXiv:1512.03385) and ResNeXt (Xie et al. 2016, arXiv:1611.05431).

Layer names follow the MSRA Caffe release (KaimingHe/deep-residual-networks): ``conv1``,
``bn_conv1``, ``scale_conv1``, ``conv1_relu``, ``pool1``, then per residual unit
``res2a_branch1`` (projection), ``res2a_branch2a/2b/2c`` with ``bn2a_branch2a`` /
``scale2a_branch2a`` / ``res2a_branch2a_relu``, the sum ``res2a`` and ``res2a_relu``, and
finally ``pool5`` and ``fc1000``. ResNet-101/152 number the units of their long stages
the MSRA way (``res4a``, ``res4b1`` .. ``res4b22``); shallower nets use letters (``res4a`` ..
``res4f``).

Variants:

* ``v1`` — the MSRA Caffe release: stride in the first 1x1 of a downsampling bottleneck,
  bias-free convolutions except ResNet-50's ``conv1`` (its released prototxt, unlike 101's
  and 152's, does not set ``bias_term: false`` there: 64 more parameters),
  ``pool1`` 3x3/2 without padding in Caffe's CEIL mode (112 -> 56), ``pool5`` a global average
  (MSRA writes it as a 7x7/1 window, the same thing at 224x224).
* ``v1.5`` — torchvision's form: the stride sits on the 3x3 convolution, no bias anywhere,
  ``pool1`` 3x3/2 with pad 1 in FLOOR mode (torch's windows: 112 -> 56 starting at -1).
"""
from __future__ import annotations

from ..errors import ProtogenError
from . import INPUT_SIZE, NUM_CLASSES, Option, model

#: units per stage (conv2_x .. conv5_x), paper Table 1
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
VARIANT = Option("variant", str, "v1", choices=("v1", "v1.5"),
                 help="v1: MSRA Caffe (stride on the first 1x1); v1.5: torchvision (stride on the 3x3)")


def unit_names(stage: int, count: int, numbered: bool) -> list[str]:
    """MSRA unit names: letters ``2a 2b 2c`` (all of ResNet-50), or ``4a 4b1 .. 4b22`` for the
    stages of more than 3 units in ResNet-101/152 (``numbered``)."""
    if not numbered or count <= 3:
        return [f"{stage}{chr(ord('a') + i)}" for i in range(count)]
    return [f"{stage}a"] + [f"{stage}b{i}" for i in range(1, count)]


def conv_bn(n, x, out, k, stride, pad, tag, *, group=1, bias=False, relu=True):
    """``res{tag}`` conv + ``bn{tag}`` + ``scale{tag}`` (+ ``res{tag}_relu``), MSRA names."""
    y = n.conv(x, out, k, stride, pad, group=group, bias=bias, name=f"res{tag}")
    y = n.bn(y, name=f"bn{tag}", scale_name=f"scale{tag}")
    if relu:
        y = n.relu(y, name=f"res{tag}_relu")
    return y


def bottleneck(n, x, unit: str, mid: int, out: int, stride: int, *, group: int = 1,
               stride_on_3x3: bool = False):
    """1x1 (mid) -> 3x3 (mid, ``group``) -> 1x1 (out), BN + Scale after each, projection
    shortcut (1x1 conv + BN, stride ``stride``) where the shape changes."""
    if stride != 1 or x.channels != out:
        shortcut = conv_bn(n, x, out, 1, stride, 0, f"{unit}_branch1", relu=False)
    else:
        shortcut = x
    s1, s3 = (1, stride) if stride_on_3x3 else (stride, 1)
    y = conv_bn(n, x, mid, 1, s1, 0, f"{unit}_branch2a")
    y = conv_bn(n, y, mid, 3, s3, 1, f"{unit}_branch2b", group=group)
    y = conv_bn(n, y, out, 1, 1, 0, f"{unit}_branch2c", relu=False)
    y = n.eltwise([shortcut, y], name=f"res{unit}")
    return n.relu(y, name=f"res{unit}_relu")


def basic(n, x, unit: str, out: int, stride: int):
    """ResNet-18/34 unit: 3x3 -> 3x3, BN + Scale after each, projection where shape changes."""
    if stride != 1 or x.channels != out:
        shortcut = conv_bn(n, x, out, 1, stride, 0, f"{unit}_branch1", relu=False)
    else:
        shortcut = x
    y = conv_bn(n, x, out, 3, stride, 1, f"{unit}_branch2a")
    y = conv_bn(n, y, out, 3, 1, 1, f"{unit}_branch2b", relu=False)
    y = n.eltwise([shortcut, y], name=f"res{unit}")
    return n.relu(y, name=f"res{unit}_relu")


def stem(n, x, variant: str, conv1_bias: bool = False):
    """conv1 7x7/2 (64) + BN + Scale + ReLU, pool1 3x3/2 max (see the module doc for the
    per-variant padding)."""
    v1 = variant == "v1"
    x = n.conv(x, 64, 7, 2, 3, bias=conv1_bias, name="conv1")
    x = n.bn(x, name="bn_conv1", scale_name="scale_conv1")
    x = n.relu(x, name="conv1_relu")
    if v1:
        return n.max_pool(x, 3, 2, name="pool1")
    return n.max_pool(x, 3, 2, 1, round_mode="FLOOR", name="pool1")


def head(n, x, num_classes: int):
    """pool5: global average (MSRA writes the same window as 7x7/1 at 224), then fc1000."""
    x = n.global_pool(x, name="pool5")
    return n.fc(x, num_classes, name="fc1000" if num_classes == 1000 else "fc")


def build_resnet(n, x, depth: int, variant: str, num_classes: int, *, cardinality: int = 1,
                 base_width: int = 64):
    if depth not in DEPTHS:
        raise ProtogenError(f"no ResNet of depth {depth} (have {sorted(DEPTHS)})")
    # only the MSRA ResNet-50 release gives conv1 a bias (101 and 152 set bias_term: false)
    x = stem(n, x, variant, conv1_bias=variant == "v1" and depth == 50 and cardinality == 1)
    for si, count in enumerate(DEPTHS[depth]):
        stage = si + 2
        planes = 64 * 2 ** si
        for ui, unit in enumerate(unit_names(stage, count, numbered=depth >= 101)):
            stride = 2 if (ui == 0 and si > 0) else 1
            if depth < 50:
                x = basic(n, x, unit, planes, stride)
            else:
                # ResNeXt: width of the grouped 3x3 = cardinality * base_width per 64 planes
                mid = planes if cardinality == 1 and base_width == 64 else \
                    cardinality * base_width * planes // 64
                x = bottleneck(n, x, unit, mid, planes * 4, stride, group=cardinality,
                               stride_on_3x3=variant == "v1.5")
    return head(n, x, num_classes)


def _register_resnet(depth: int):
    @model(f"resnet{depth}", VARIANT, INPUT_SIZE, NUM_CLASSES,
           summary=f"ResNet-{depth} (He et al. 2015), MSRA Caffe names; --variant v1 (MSRA) | v1.5 "
                   f"(torchvision)")
    def build(n, x, variant="v1", input_size=224, num_classes=1000):
        return build_resnet(n, x, depth, variant, num_classes)
    build.__name__ = f"resnet{depth}"
    return build


for _d in DEPTHS:
    globals()[f"resnet{_d}"] = _register_resnet(_d)


def _register_resnext(depth: int, cardinality: int, base_width: int):
    name = f"resnext{depth}_{cardinality}x{base_width}d"

    @model(name,
           Option("cardinality", int, cardinality, range=(1, 1024), help="groups of the 3x3 convolutions"),
           Option("base_width", int, base_width, range=(1, 1024),
                  help="channels per group in the first stage (conv2_x)"),
           Option("variant", str, "v1.5", choices=("v1", "v1.5"),
                  help="v1.5 (default, as the ResNeXt release and torchvision): stride on the grouped "
                       "3x3; v1: stride on the first 1x1 (MSRA Caffe style)"),
           INPUT_SIZE, NUM_CLASSES,
           summary=f"ResNeXt-{depth} {cardinality}x{base_width}d (Xie et al. 2016), grouped 3x3 bottlenecks")
    def build(n, x, cardinality=cardinality, base_width=base_width, variant="v1.5", input_size=224,
              num_classes=1000):
        return build_resnet(n, x, depth, variant, num_classes, cardinality=cardinality,
                            base_width=base_width)
    build.__name__ = name
    return build


for _d, _c, _w in ((50, 32, 4), (101, 32, 4), (101, 64, 4)):
    globals()[f"resnext{_d}_{_c}x{_w}d"] = _register_resnext(_d, _c, _w)
