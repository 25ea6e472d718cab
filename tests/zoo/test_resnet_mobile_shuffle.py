"""ResNet, ResNeXt, Xception, MobileNet v2 and ShuffleNet v2 in the model zoo (issue #3, part 2).

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

from tests.helpers import CORPUS  # noqa: E402
MSRA = CORPUS / "kaiminghe_deep-residual-networks"

_STATS: dict = {}


def stats(name, **opts):
    key = (name, tuple(sorted(opts.items())))
    if key not in _STATS:
        _STATS[key] = compute(zoo.build(name, **opts).graph)
    return _STATS[key]


def layer(net, name):
    return net.graph.layer(name)


# ----------------------------------------------------------------------------- ResNet
# torchvision model docs, "num_params" of resnet18/34/50/101/152 (IMAGENET1K_V1 weights pages).
# torchvision's ResNet is the v1.5 form and has no conv1 bias.
TORCHVISION_RESNET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160,
                             152: 60_192_808}
# torchvision model docs, "GFLOPS" (they are multiply-adds) of the same models (v1.5 form)
TORCHVISION_RESNET_GMACS = {18: 1.814, 34: 3.664, 50: 4.089, 101: 7.801, 152: 11.514}
# He et al. 2015, Table 1, "FLOPs" row (multiply-adds, x10^9), the original (v1) form
PAPER_RESNET_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_v15_matches_torchvision_exactly(depth):
    s = stats(f"resnet{depth}", variant="v1.5")
    assert s["params"] == TORCHVISION_RESNET_PARAMS[depth]
    # torchvision prints 3 decimals: agree to half a unit of the last digit
    assert abs(s["macs"] / 1e9 - TORCHVISION_RESNET_GMACS[depth]) <= 0.0005


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_v1_params(depth):
    s = stats(f"resnet{depth}")
    # v1 only moves strides, so its parameters are torchvision's -- except that the MSRA
    # ResNet-50 release (ResNet-50-deploy.prototxt) leaves conv1 with its default bias
    # (101 and 152 set bias_term: false): 64 more parameters, the count torchvision's exact
    # figure cannot include. The v1.5 test above compares the bias-free configuration exactly.
    extra = 64 if depth == 50 else 0
    assert s["params"] == TORCHVISION_RESNET_PARAMS[depth] + extra


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_v1_macs(depth):
    ours = stats(f"resnet{depth}")["macs"]
    # (1) hand calculation from torchvision's v1.5 figure: v1 puts the stride on the first 1x1
    # of the first unit of stages 3, 4, 5, so that 1x1 runs on a 4x smaller map. Its cost at
    # the stage's input resolution H is H^2 * Cin * Cmid; v1 saves 3/4 of it:
    #   stage 3: 3/4 * 56^2 * 256 * 128,  stage 4: 3/4 * 28^2 * 512 * 256,
    #   stage 5: 3/4 * 14^2 * 1024 * 512  (each 77,070,336).
    # Basic-block nets (18/34) have their stride on the first 3x3 in both variants.
    saved = 0 if depth < 50 else 3 * (3 * 56 * 56 * 256 * 128 // 4)
    v15 = stats(f"resnet{depth}", variant="v1.5")["macs"]
    assert ours == v15 - saved
    assert abs(ours / 1e9 - (TORCHVISION_RESNET_GMACS[depth] - saved / 1e9)) <= 0.0005
    # (2) the paper's Table 1 gives two significant digits, sometimes rounded (101: 7.57 ->
    # 7.6, 152: 11.28 -> 11.3) and sometimes cut (34: 3.66 -> 3.6, 50: 3.86 -> 3.8), so the
    # tolerance is one unit of its last digit (0.1 G): ours must round or truncate to it.
    g = ours / 1e9
    paper = PAPER_RESNET_GMACS[depth]
    assert paper in (round(g, 1), math.floor(g * 10) / 10)
    assert abs(g - paper) / paper < 0.02


def test_resnet_variant_stride_placement():
    v1 = zoo.build("resnet50")
    v15 = zoo.build("resnet50", variant="v1.5")
    assert layer(v1, "res3a_branch2a").params.stride_h == 2
    assert layer(v1, "res3a_branch2b").params.stride_h == 1
    assert layer(v15, "res3a_branch2a").params.stride_h == 1
    assert layer(v15, "res3a_branch2b").params.stride_h == 2
    # projection shortcuts exactly where the shape changes: the first unit of each stage
    proj = [l.name for l in v1.graph.layers if l.name.endswith("_branch1") and l.type == "Convolution"]
    assert proj == ["res2a_branch1", "res3a_branch1", "res4a_branch1", "res5a_branch1"]
    # ResNet-18/34 (basic blocks): no projection at res2a (64 -> 64), option B elsewhere
    r18 = zoo.build("resnet18")
    proj = [l.name for l in r18.graph.layers if l.name.endswith("_branch1") and l.type == "Convolution"]
    assert proj == ["res3a_branch1", "res4a_branch1", "res5a_branch1"]


def test_resnet_input_size_and_classes():
    n = zoo.build("resnet50", input_size=320, num_classes=10)
    shapes = n.graph.select(net=DEPLOY).blob_shapes()
    # conv1 /2 -> 160, pool1 3x3/2 ceil -> ceil(157/2)+1 = 80, then 80, 40, 20, 10
    assert shapes["pool1"] == (1, 64, 80, 80)
    assert shapes["res5c"] == (1, 2048, 10, 10)
    assert shapes["pool5"] == (1, 2048, 1, 1)
    assert shapes["prob"] == (1, 10)
    # 112 -> 56 at 224 in both variants (v1: pad 0 CEIL as MSRA; v1.5: pad 1 FLOOR as torch)
    for v in ("v1", "v1.5"):
        assert zoo.build("resnet18", variant=v).graph.select(net=DEPLOY).blob_shapes()["pool1"] == (1, 64, 56, 56)


def _msra_names(graph):
    return [l.name for l in graph.layers if l.type != "Input"]


@pytest.mark.skipif(not MSRA.is_dir(), reason=CORPUS_SKIP_REASON)
@pytest.mark.parametrize("depth", [50, 101, 152])
def test_resnet_matches_msra_release(depth):
    """Same layers, types, parameters, wiring and blob shapes as the MSRA deploy prototxt
    (protogen.diff), and the same layer names in the same order, so that the released
    caffemodels load by name."""
    theirs = load_prototxt(MSRA / f"ResNet-{depth}-deploy.prototxt")
    ours = zoo.build(f"resnet{depth}")
    assert diff_graphs(ours.graph, theirs, net=DEPLOY) is None
    assert _msra_names(ours.graph.select(net=DEPLOY)) == _msra_names(theirs)
    # the v1.5 form differs where expected: the stride of res3a's 1x1 moved to its 3x3
    d = diff_graphs(zoo.build(f"resnet{depth}", variant="v1.5").graph, theirs, net=DEPLOY)
    assert d is not None and d.a_layer in ("conv1", "pool1", "res3a_branch2a")


# ----------------------------------------------------------------------------- ResNeXt
def test_resnext50():
    s = stats("resnext50_32x4d")
    assert s["params"] == 25_028_904                      # torchvision docs, num_params
    assert abs(s["macs"] / 1e9 - 4.23) <= 0.005           # torchvision docs, GFLOPS 4.23
    # Xie et al. 2016, Table 1: ResNeXt-50 (32x4d) 25.0 x 10^6 params, 4.2 x 10^9 FLOPs
    assert round(s["params"] / 1e6, 1) == 25.0 and round(s["macs"] / 1e9, 1) == 4.2


def test_resnext101():
    s = stats("resnext101_64x4d")
    assert s["params"] == 83_455_272                      # torchvision docs, num_params
    assert abs(s["macs"] / 1e9 - 15.46) <= 0.005          # torchvision docs, GFLOPS 15.46
    s = stats("resnext101_32x4d")
    # timm model card resnext101_32x4d.gluon_in1k: Params (M) 44.2, GMACs 8.0
    assert round(s["params"] / 1e6, 1) == 44.2 and round(s["macs"] / 1e9, 1) == 8.0


def test_resnext_options_and_grouped_conv():
    n = zoo.build("resnext50_32x4d")
    p = layer(n, "res2a_branch2b").params
    assert (p.group, p.num_output, p.stride_h) == (32, 128, 1)
    p = layer(n, "res3a_branch2b").params
    assert (p.group, p.num_output, p.stride_h) == (32, 256, 2)   # stride on the 3x3 (v1.5)
    # --cardinality/--base-width override the name's figures: 64x4d at depth 50
    n = zoo.build("resnext50_32x4d", cardinality=64, base_width=4)
    assert layer(n, "res2a_branch2b").params.group == 64
    assert layer(n, "res2a_branch2b").params.num_output == 256
    assert n.name == "resnext50_32x4d_cardinality64"
    # 1 group of width 64 is ResNet-50 (v1.5): same parameter count as torchvision's
    assert compute(zoo.build("resnext50_32x4d", cardinality=1, base_width=64).graph)["params"] \
        == TORCHVISION_RESNET_PARAMS[50]


# ----------------------------------------------------------------------------- Xception
def _xception_macs_by_hand(num_classes=1000):
    """Conv + FC mult-adds of Xception at 299x299, from the paper's Figure 5, written out.

    Spatial sizes: 299 -conv3x3/2 valid-> 149 -conv3x3 valid-> 147 -pool/2-> 74 -> 37 -> 19,
    exit pool 19 -> 10. A separable conv of Cin -> Cout on HxW costs H*W*Cin*9 + H*W*Cin*Cout.
    """
    def sep(h, cin, cout):
        return h * h * cin * 9 + h * h * cin * cout

    total = 149 * 149 * 3 * 9 * 32 + 147 * 147 * 32 * 9 * 64
    total += 74 * 74 * 64 * 128 + sep(147, 64, 128) + sep(147, 128, 128)        # block 2
    total += 37 * 37 * 128 * 256 + sep(74, 128, 256) + sep(74, 256, 256)       # block 3
    total += 19 * 19 * 256 * 728 + sep(37, 256, 728) + sep(37, 728, 728)       # block 4
    total += 8 * 3 * sep(19, 728, 728)                                         # middle flow
    total += 10 * 10 * 728 * 1024 + sep(19, 728, 728) + sep(19, 728, 1024)     # block 13
    total += sep(10, 1024, 1536) + sep(10, 1536, 2048)                         # block 14
    return total + 2048 * num_classes


def test_xception_figures():
    s = stats("xception")
    # Chollet 2016, Table 3: Xception 22,855,952 parameters. That is Keras' trainable count:
    # convolutions (all bias-free), BN gamma/beta (our Scale), and the 2048x1000 classifier
    # with its bias -- BN's moving mean/variance (54,528 values) are excluded, as in ours.
    assert s["params"] == 22_855_952
    assert s["stats"] == 54_528 + 40                  # + Caffe's scale-factor blob per BN (40)
    assert s["macs"] == _xception_macs_by_hand()
    # 8.4 G mult-adds as the issue states (timm's figure for the Keras-ported model)
    assert abs(s["macs"] / 8.4e9 - 1) < 0.015


def test_xception_structure():
    n = zoo.build("xception")
    g = n.graph.select(net=DEPLOY)
    # no activation (or BN) between a depthwise conv and its pointwise conv
    consumers = {}
    for l in g.layers:
        for b in l.bottoms:
            consumers.setdefault(b, []).append(l)
    dws = [l for l in g.layers if l.type == "Convolution" and l.params.group > 1]
    assert len(dws) == 2 * 3 + 8 * 3 + 2 + 2         # entry 3 blocks, middle 8, exit 2 + 2
    for dw in dws:
        nxt = consumers[dw.tops[0]]
        assert [c.type for c in nxt] == ["Convolution"] and nxt[0].params.kernel_h == 1
    # 12 residual additions: 3 entry + 8 middle + 1 exit
    assert sum(l.type == "Eltwise" for l in g.layers) == 12
    shapes = g.blob_shapes()
    assert shapes["block2_pool"] == (1, 128, 74, 74)
    assert shapes["block4_pool"] == (1, 728, 19, 19)
    assert shapes["block13_pool"] == (1, 1024, 10, 10)
    assert shapes["prob"] == (1, 1000)


def test_same_pool_pad_reproduces_tensorflow_same():
    # TF 'same': out = ceil(H/s), windows start at -floor(total_pad/2)
    for h in range(7, 200):
        p = same_pool_pad(h, 3, 2)
        total = max((math.ceil(h / 2) - 1) * 2 + 3 - h, 0)
        assert p == total // 2
    n = zoo.build("xception", input_size=224, num_classes=7)
    assert n.graph.select(net=DEPLOY).blob_shapes()["prob"] == (1, 7)
    with pytest.raises(ProtogenError):
        zoo.build("xception", input_size=32)


# ----------------------------------------------------------------------------- MobileNet v2
# tensorflow/models research/slim/nets/mobilenet README (the authors' release; the same table
# is in tf.keras.applications.mobilenet_v2's docs): (width, resolution) -> (MACs in M,
# params in M). Its params count convolutions and the classifier, BatchNorm excluded (TF-slim
# BN has no gamma and its beta is not counted).
TF_SLIM_V2 = {(1.4, 224): (582, 6.06), (1.3, 224): (509, 5.34), (1.0, 224): (300, 3.47),
              (1.0, 192): (221, 3.47), (1.0, 160): (154, 3.47), (1.0, 128): (99, 3.47),
              (1.0, 96): (56, 3.47), (0.75, 224): (209, 2.61), (0.75, 192): (153, 2.61),
              (0.5, 224): (97, 1.95), (0.35, 224): (59, 1.66)}


def _without_bn_affine(s):
    return s["params"] - sum(r["params"] for r in s["layers"] if r["type"] == "Scale")


@pytest.mark.parametrize("width,size", sorted(TF_SLIM_V2))
def test_mobilenet_v2_reference_table(width, size):
    s = stats("mobilenet_v2", width=width, input_size=size)
    macs, params = TF_SLIM_V2[(width, size)]
    # the table gives whole millions, sometimes cut rather than rounded (0.75/192: ours
    # 153.94M, table 153): within one unit of its last digit
    assert abs(s["macs"] / 1e6 - macs) < 1.0
    assert round(_without_bn_affine(s) / 1e6, 2) == params


def test_mobilenet_v2_paper():
    s = stats("mobilenet_v2")
    # torchvision docs, mobilenet_v2 num_params 3,504,872 (BN gamma/beta included, like ours)
    assert s["params"] == 3_504_872
    # Sandler et al. 2018, Table 4: MobileNetV2 3.4M params, 300M mult-adds. The paper's 3.4M
    # is the BN-free count 3.47M (above) cut to one decimal.
    assert math.floor(_without_bn_affine(s) / 1e5) / 10 == 3.4
    assert abs(s["macs"] / 300e6 - 1) < 0.015
    # Table 4, MobileNetV2 (1.4): 585M mult-adds (its 6.9M params disagree with the authors'
    # released 1.4 checkpoint, 6.06M, which we match above)
    assert abs(stats("mobilenet_v2", width=1.4)["macs"] / 585e6 - 1) < 0.015


def test_mobilenet_v2_structure():
    # the reference rounding: nearest multiple of 8, never 10% below (hand-checked values)
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == \
        [16, 8, 8, 16, 24, 32, 56, 112]
    assert make_divisible(1280 * 1.4) == 1792
    n = zoo.build("mobilenet_v2", width=0.35)
    g = n.graph.select(net=DEPLOY)
    assert layer(n, "conv9").params.num_output == 1280          # not reduced below width 1.0
    assert layer(n, "conv1").params.num_output == 16
    assert layer(zoo.build("mobilenet_v2", width=1.4), "conv9").params.num_output == 1792
    n = zoo.build("mobilenet_v2")
    g = n.graph.select(net=DEPLOY)
    # residuals only where stride 1 and channels unchanged: (24: 1) (32: 2) (64: 3) (96: 2) (160: 2)
    assert sum(l.type == "Eltwise" for l in g.layers) == 10
    # linear bottlenecks: nothing after the projection's BN/Scale but the addition
    for l in g.layers:
        if l.type in ("ReLU", "ReLU6", "Clip"):
            assert not l.bottoms[0].endswith("/linear")
    assert sum(l.type == "ReLU6" for l in g.layers) == 1 + 2 * 17 - 1 + 1   # t=1 block has no expand
    assert layer(n, "conv2_1/dwise").params.group == 32
    assert g.blob_shapes()["conv8_1/linear"] == (1, 320, 7, 7)
    n = zoo.build("mobilenet_v2", input_size=257, num_classes=5)
    assert n.graph.select(net=DEPLOY).blob_shapes()["prob"] == (1, 5)


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


# ----------------------------------------------------------------------------- emit / reload
NEW_NETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x4d", "resnext101_64x4d", "xception", "mobilenet_v2", "shufflenet_v2"]


def _reload(text):
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text)
    try:
        return load_prototxt(f.name)
    finally:
        Path(f.name).unlink()


@pytest.mark.parametrize("name", NEW_NETS)
def test_emitted_prototxt_reloads_identically(name):
    """deploy and train_val prototxt parse back (our loader) into the same net (our diff)."""
    d = Dialect.make("default", shuffle="shufflechannel")
    n = zoo.build(name, dialect=d)
    assert diff_graphs(n.graph, _reload(n.deploy_prototxt()), net=DEPLOY) is None
    assert diff_graphs(n.graph, _reload(n.train_prototxt()), net=TRAIN_VAL) is None


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2"])
def test_bvlc_dialect_loads_with_same_output(name):
    """Upstream-only Caffe (ReLU6 -> Clip, shuffle -> Slice/Reshape/Concat) still parses and
    infers the same output shape and the same learnable parameter count."""
    n = zoo.build(name, dialect=Dialect.make("bvlc"))
    text = n.deploy_prototxt()
    assert "ReLU6" not in text and "ShuffleChannel" not in text and "Permute" not in text
    g = _reload(text)
    assert g.blob_shapes()["prob"] == (1, 1000)
    assert compute(g)["params"] == stats(name)["params"]


def test_cli_stats_and_bad_option():
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "protogen", "stats", "resnet50", "--variant", "v1.5"],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "25,557,032" in r.stdout
    r = subprocess.run([sys.executable, "-m", "protogen", "stats", "resnet50", "--variant", "v2"],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- execution
# Small configurations (same layer structure, reduced input/width) run through the PyTorch
# reference, ONNX Runtime and OpenCV dnn with seeded weights: outputs must agree (~1e-4
# relative) and be healthy (input-dependent, not constant).
EXEC_CASES = [("resnet18", dict(input_size=64)),
              ("resnet50", dict(input_size=64, variant="v1.5")),
              # 48, not 32: at 32 stage 5 is 1x1, and BatchNorm statistics calibrated on a batch
              # of two 1x1 maps (2 values per channel) blow activations up (RMS ~1e3), so the
              # softmax saturates to the same one-hot for both inputs (a degenerate output);
              # at 48 stage 5 is 2x2 and the output is healthy
              ("resnext50_32x4d", dict(input_size=48)),
              ("xception", dict(input_size=71)),
              ("mobilenet_v2", dict(input_size=64, width=0.35)),
              ("shufflenet_v2", dict(input_size=64, width=0.5))]


@pytest.mark.parametrize("name,opts", EXEC_CASES, ids=[c[0] for c in EXEC_CASES])
def test_runtimes_agree(name, opts):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from protogen.verify import verify
    rep = verify(zoo.build(name, **opts).graph, seed=0, batch=2, model_name=name)
    assert rep.ok, rep.failures
    assert any(c.runtime == "ort-cpu" for c in rep.comparisons)
