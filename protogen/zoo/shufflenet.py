"""ShuffleNet v1 (Zhang et al. 2017, arXiv:1707.01083) and v2 (Ma et al. 2018)."""
from __future__ import annotations

from ..errors import ProtogenError
from . import INPUT_SIZE, NUM_CLASSES, Option, model

# ShuffleNet v1, Table 1: output channels of stages 2-4 at width 1x, per group count
V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                     4: (272, 544, 1088), 8: (384, 768, 1536)}
V1_REPEATS = (4, 8, 4)


def _round(c: float, multiple: int) -> int:
    return max(multiple, int(round(c / multiple)) * multiple)


def v1_unit(n, x, out: int, groups: int, stride: int, first_group: int):
    """One ShuffleNet v1 unit: 1x1 GConv -> shuffle -> 3x3 DWConv -> 1x1 GConv (+ shortcut).

    Stride 1 adds the input; stride 2 concatenates a 3x3/2 average-pooled shortcut and the
    branch produces ``out - in`` channels. The bottleneck is out/4 channels.
    """
    cin = x.channels
    mid = out // 4
    branch_out = out - cin if stride == 2 else out
    y = n.conv(x, mid, 1, group=first_group, bias=False, name="gconv1")
    y = n.relu(n.bn(y))
    if first_group > 1:
        y = n.channel_shuffle(y, first_group, name="shuffle")
    y = n.conv(y, mid, 3, stride, 1, group=mid, bias=False, name="dwconv")
    y = n.bn(y)
    y = n.conv(y, branch_out, 1, group=groups, bias=False, name="gconv2")
    y = n.bn(y)
    if stride == 1:
        y = n.eltwise([x, y], name="add")
    else:
        # FLOOR: with Caffe's default CEIL a 3x3/2 pad-1 pool of 56 gives 29, not 28
        s = n.ave_pool(x, 3, 2, 1, round_mode="FLOOR", name="shortcut")
        y = n.concat([s, y], name="concat")
    return n.relu(y)


@model("shufflenet_v1",
       Option("groups", int, 3, choices=(1, 2, 3, 4, 8), help="group count of the 1x1 convolutions"),
       Option("width", float, 1.0, choices=(0.25, 0.5, 1.0, 1.5, 2.0), help="channel multiplier"),
       INPUT_SIZE, NUM_CLASSES,
       summary="ShuffleNet v1 (Zhang et al. 2017), Table 1; groups 1/2/3/4/8, width 0.25-2x")
def shufflenet_v1(n, x, groups=3, width=1.0, input_size=224, num_classes=1000):
    """ShuffleNet v1: 3x3/2 stem conv (24 x width), 3x3/2 max pool, three stages of units."""
    # stem channels as in the paper's 1.5x (292 MFLOPs, Table 5) and 2x (524 MFLOPs) nets and
    # Megvii's reference code: 24 up to 1.5x, 48 at 2x, 24*width below 1x; rounded up to a
    # multiple of g so that the first unit's grouped 1x1 gets (out - stem) divisible by g
    base = 48 if width >= 2.0 else 24 if width >= 1.0 else 24 * width
    stem = int(-(-base // groups) * groups)
    x = n.conv(x, stem, 3, 2, 1, bias=False, name="conv1")
    x = n.relu(n.bn(x))
    x = n.max_pool(x, 3, 2, name="pool1")   # ceil mode, no pad: 112 -> 56
    for si, (base, reps) in enumerate(zip(V1_STAGE_CHANNELS[groups], V1_REPEATS)):
        out = _round(base * width, 4 * groups)
        for ui in range(reps):
            with n.scope(f"stage{si + 2}/unit{ui + 1}"):
                # the first 1x1 of stage 2 is not grouped: its input has only `stem` channels
                first_group = 1 if (si == 0 and ui == 0) else groups
                x = v1_unit(n, x, out, groups, 2 if ui == 0 else 1, first_group)
    x = n.global_pool(x, name="pool_global")
    return n.fc(x, num_classes, name="fc")


# ShuffleNet v2, Table 5: output channels of stages 2-4 and conv5, per width
V2_STAGE_CHANNELS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
                     1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}
V2_REPEATS = (4, 8, 4)


def v2_unit(n, x, out: int, stride: int):
    """One ShuffleNet v2 unit (Ma et al. 2018, Fig. 3c/3d), channel counts as megvii's code.

    Stride 1: split the channels in halves (Slice); the right half goes 1x1 -> 3x3 DW -> 1x1
    (BN after each, ReLU after the 1x1s), the left half passes through; Concat.
    Stride 2: no split; the left branch is 3x3/2 DW -> 1x1 on the whole input and keeps its
    channel count, the right branch (1x1 -> 3x3/2 DW -> 1x1, ``out/2`` wide inside) makes the
    other ``out - in`` channels; Concat.
    Both end with a channel shuffle of 2 groups.
    """
    cin = x.channels
    mid = out // 2
    if stride == 1:
        if cin != out or cin % 2:
            raise ProtogenError(f"a stride-1 ShuffleNet v2 unit needs an even, unchanged channel "
                                f"count (got {cin} -> {out})")
        left, right = n.slice(x, (cin // 2,), name="split")
        right_out = out - cin // 2
    else:
        b = n.conv(x, cin, 3, 2, 1, group=cin, bias=False, name="branch1_dwconv")
        b = n.bn(b)
        b = n.conv(b, cin, 1, bias=False, name="branch1_conv")
        left = n.relu(n.bn(b))
        right = x
        right_out = out - cin
    y = n.conv(right, mid, 1, bias=False, name="conv1")
    y = n.relu(n.bn(y))
    y = n.conv(y, mid, 3, stride, 1, group=mid, bias=False, name="dwconv")
    y = n.bn(y)
    y = n.conv(y, right_out, 1, bias=False, name="conv2")
    y = n.relu(n.bn(y))
    y = n.concat([left, y], name="concat")
    return n.channel_shuffle(y, 2, name="shuffle")


@model("shufflenet_v2",
       Option("width", float, 1.0, choices=(0.5, 1.0, 1.5, 2.0), help="channel multiplier"),
       INPUT_SIZE, NUM_CLASSES,
       summary="ShuffleNet v2 (Ma et al. 2018), Table 5 and the megvii code; 0.5x/1x/1.5x/2x")
def shufflenet_v2(n, x, width=1.0, input_size=224, num_classes=1000):
    """ShuffleNet v2: 3x3/2 conv (24), 3x3/2 max pool, three stages of units, 1x1 conv5
    (1024, or 2048 at 2x), global average pool, bias-free classifier (dropout 0.2 at 2x)."""
    *stages, last = V2_STAGE_CHANNELS[width]
    x = n.conv(x, 24, 3, 2, 1, bias=False, name="conv1")
    x = n.relu(n.bn(x))
    # PyTorch's MaxPool2d(3, 2, 1): FLOOR (Caffe's CEIL would give 57 from 112)
    x = n.max_pool(x, 3, 2, 1, round_mode="FLOOR", name="pool1")
    for si, (out, reps) in enumerate(zip(stages, V2_REPEATS)):
        for ui in range(reps):
            with n.scope(f"stage{si + 2}/unit{ui + 1}"):
                x = v2_unit(n, x, out, 2 if ui == 0 else 1)
    x = n.conv(x, last, 1, bias=False, name="conv5")
    x = n.relu(n.bn(x))
    x = n.global_pool(x, name="pool_global")
    if width == 2.0:
        x = n.dropout(x, 0.2, name="drop")
    return n.fc(x, num_classes, bias=False, name="fc")
