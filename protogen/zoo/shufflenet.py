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
