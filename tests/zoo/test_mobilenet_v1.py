"""MobileNet v1 and ShuffleNet v1 against their papers' published multiply-adds and params.

Sources:
* MobileNet v1: Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for
  Mobile Vision Applications", arXiv:1704.04861, Table 6/8 (width multiplier, 224x224):
  1.0: 569M mult-adds / 4.2M params; 0.75: 325M / 2.6M; 0.5: 149M / 1.3M; 0.25: 41M / 0.5M.
* ShuffleNet v1: Zhang et al. 2017, "ShuffleNet: An Extremely Efficient Convolutional Neural
  Network for Mobile Devices", arXiv:1707.01083, Table 1 (complexity of 1x, g = 1/2/3/4/8:
  143/140/137/133/137 MFLOPs, where FLOPs = multiply-adds) and Table 5 (2x g=3: 524 MFLOPs;
  1.5x g=3: 292 MFLOPs). Params: Megvii's reference ShuffleNet-Series README
  (1.0x g=3: 1.9M, 2.0x g=8: 6.5M; 0.5x g=3: 0.7M).
* MAC of a 1x1 convolution: Ma et al. 2018, "ShuffleNet V2", arXiv:1807.11164, Sec. 2,
  guideline G1: MAC = h*w*(c1 + c2) + c1*c2.
"""
from __future__ import annotations

import pytest

from protogen import Net, stats, zoo


def _stats(name, **opts):
    return stats.compute(zoo.build(name, **opts).graph)


@pytest.mark.parametrize("width,macs_m,params_m", [
    (1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_mobilenet_v1_paper_table(width, macs_m, params_m):
    s = _stats("mobilenet_v1", width=width)
    assert abs(s["macs"] / 1e6 - macs_m) / macs_m <= 0.015, s["macs"]
    # the paper gives params to 0.1M
    assert round(s["params"] / 1e6, 1) == params_m, s["params"]
    assert s["outputs"] == ["prob"]


@pytest.mark.parametrize("groups,mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_table1(groups, mflops):
    s = _stats("shufflenet_v1", groups=groups)
    assert abs(s["macs"] / 1e6 - mflops) / mflops <= 0.015, s["macs"]


@pytest.mark.parametrize("groups,width,mflops", [(3, 2.0, 524), (3, 1.5, 292)])
def test_shufflenet_v1_table5(groups, width, mflops):
    s = _stats("shufflenet_v1", groups=groups, width=width)
    assert abs(s["macs"] / 1e6 - mflops) / mflops <= 0.015, s["macs"]


@pytest.mark.parametrize("groups,width,params_m", [(3, 1.0, 1.9), (8, 2.0, 6.5), (3, 0.5, 0.7)])
def test_shufflenet_v1_params(groups, width, params_m):
    s = _stats("shufflenet_v1", groups=groups, width=width)
    assert round(s["params"] / 1e6, 1) == params_m, s["params"]


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0, 1.5, 2.0])
def test_shufflenet_v1_every_option_builds(groups, width):
    g = zoo.build("shufflenet_v1", groups=groups, width=width).graph
    # 224 -> conv1/2 112 -> pool1 56 -> stages 28, 14, 7 -> global pool 1
    shapes = g.select(net="deploy").blob_shapes()
    assert shapes["pool1"][2:] == (56, 56)
    assert shapes["stage4/unit4/add"][2:] == (7, 7)
    assert shapes["prob"] == (1, 1000)


def test_shufflenet_v1_structure_g3():
    # Table 1, g = 3: stage outputs 240 / 480 / 960 at 28 / 14 / 7
    shapes = zoo.build("shufflenet_v1", groups=3).graph.select(net="deploy").blob_shapes()
    assert shapes["stage2/unit4/add"] == (1, 240, 28, 28)
    assert shapes["stage3/unit8/add"] == (1, 480, 14, 14)
    assert shapes["stage4/unit4/add"] == (1, 960, 7, 7)
    # stride-2 shortcut is a 3x3/2 average pool that must give 28 (FLOOR), not Caffe-CEIL 29
    assert shapes["stage2/unit1/shortcut"] == (1, 24, 28, 28)


def test_mobilenet_v1_structure():
    shapes = zoo.build("mobilenet_v1").graph.select(net="deploy").blob_shapes()
    # Table 1: 112x112x32 after conv1, 7x7x1024 after the last pointwise conv
    assert shapes["conv1"] == (1, 32, 112, 112)
    assert shapes["conv14_pw"] == (1, 1024, 7, 7)
    assert shapes["fc7"] == (1, 1000)


@pytest.mark.parametrize("h,w,c1,c2", [(56, 56, 64, 64), (28, 28, 128, 256), (7, 7, 1024, 1000)])
def test_mac_of_1x1_conv_matches_shufflenet_v2(h, w, c1, c2):
    n = Net("one")
    x = n.input("data", (1, c1, h, w))
    n.conv(x, c2, 1, bias=False)
    s = stats.compute(n.graph)
    assert s["memory_access"] == h * w * (c1 + c2) + c1 * c2
    assert s["macs"] == h * w * c1 * c2          # B = hwc1c2 (the paper's FLOPs)
    assert s["params"] == c1 * c2
