"""ShuffleNet v2 in the model zoo (ShuffleNet v1: test_mobilenet_v1.py).

Every expected figure comes from outside this project, with its source next to it:
published papers, the authors' reference implementations, torchvision's model documentation,
or a hand calculation written out here. Our counting convention (protogen.stats): params are
learnable weights and biases, BatchNorm's affine part included (our Scale layers) and its
running statistics excluded, exactly as torchvision/Keras count trainable parameters;
mult-adds are those of convolutions and fully-connected layers, no bias adds.
"""
from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests.helpers import CORPUS_SKIP_REASON

from protogen import zoo
from protogen.caffe.loader import load_prototxt
from protogen.dialect import Dialect
from protogen.diff import diff_graphs
from protogen.errors import ProtogenError
from protogen.ir import DEPLOY, TRAIN_VAL
from protogen.stats import compute
from protogen.zoo.mobilenet import make_divisible
from protogen.zoo.xception import same_pool_pad

from tests.zoo.common import MSRA, layer, stats  # noqa: F401,E402


# ----------------------------------------------------------------------------- ShuffleNet v2
# megvii-model/ShuffleNet-Series README (the official implementation): params 1.4M / 2.3M /
# 3.5M / 7.4M; Ma et al. 2018, Table 8 (and the same README): 41 / 146 / 299 / 591 MFLOPs.
SHUFFLE_V2 = {0.5: (1.4, 41), 1.0: (2.3, 146), 1.5: (3.5, 299), 2.0: (7.4, 591)}


@pytest.mark.parametrize("width", sorted(SHUFFLE_V2))
def test_shufflenet_v2_figures(width):
    s = stats("shufflenet_v2", width=width)
    params, mflops = SHUFFLE_V2[width]
    assert round(s["params"] / 1e6, 1) == params
    # The paper's FLOPs come from megvii's counter, which counts a little more than conv + FC
    # mult-adds (0.5x: 41M vs our 40.48M, -1.3%); tolerance: ours within 1.5% below, 0.5% above
    r = s["macs"] / (mflops * 1e6)
    assert 0.985 <= r <= 1.005


def test_shufflenet_v2_structure():
    n = zoo.build("shufflenet_v2")
    g = n.graph.select(net=DEPLOY)
    shuffles = [l for l in g.layers if l.type == "ShuffleChannel"]
    assert len(shuffles) == 16 and all(l.params.group == 2 for l in shuffles)
    slices = [l for l in g.layers if l.type == "Slice"]
    assert len(slices) == 13                                  # every stride-1 unit
    shapes = g.blob_shapes()
    assert shapes["stage2/unit2/split_0"] == (1, 58, 28, 28)
    assert shapes["pool1"] == (1, 24, 56, 56)                 # FLOOR: torch's 112 -> 56
    assert shapes["stage4/unit4/shuffle"] == (1, 464, 7, 7)
    assert layer(n, "conv5").params.num_output == 1024
    # megvii: the stride-2 unit's left branch keeps its input width, the right makes the rest
    assert layer(n, "stage2/unit1/branch1_conv").params.num_output == 24
    assert layer(n, "stage2/unit1/conv2").params.num_output == 116 - 24
    assert not layer(n, "fc").params.bias_term
    n2 = zoo.build("shufflenet_v2", width=2.0)
    assert layer(n2, "conv5").params.num_output == 2048
    assert any(l.type == "Dropout" for l in n2.graph.layers)
