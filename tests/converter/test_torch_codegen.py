"""`protogen convert ... -o OUT.py`: readable PyTorch source + state_dict.

Every generated module is imported from its file (with protogen made unimportable), loaded
with ``torch.load(..., weights_only=True)`` + ``load_state_dict`` (strict), run on a seeded
batch of 2 and compared with two independent executions of the same graph: the PyTorch
reference executor (``TorchNet``, built on each layer's ``torch_forward``) and ONNX Runtime on
``export_onnx``. Nets: a coverage net holding every Caffe corner the generator must keep
(ceil pooling with clipped windows and divisors, pad > kernel/2, both LRN regions, BN scale
factor, Eltwise coeffs, Reshape 0/-1, Permute, shuffle, Slice/Concat, Softmax axis, ...),
every zoo net (small inputs, up to the logits: seeded deep nets saturate their softmax), and
the corpus nets with trained caffemodels (MTCNN det1-det4, LeNet in V1 format).
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen import zoo  # noqa: E402
from protogen.caffe.loader import load_model  # noqa: E402
from protogen.cli import main  # noqa: E402
from protogen.errors import UnsupportedError  # noqa: E402
from protogen.ir import Graph, Layer  # noqa: E402
from protogen.layers.act import ClipParams, PowerParams, PReLUParams, ReLUParams  # noqa: E402
from protogen.layers.conv import ConvParams, InnerProductParams  # noqa: E402
from protogen.layers.io import InputParams  # noqa: E402
from protogen.layers.norm import BatchNormParams, BiasParams, LRNParams, ScaleParams  # noqa: E402
from protogen.layers.pool import PoolParams  # noqa: E402
from protogen.layers.tensor import (ConcatParams, EltwiseParams, FlattenParams, PermuteParams,  # noqa: E402
                                    ReshapeParams, ShuffleChannelParams, SliceParams, SoftmaxParams)
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.torch_codegen import graph_to_torch_source, identifier, write_torch  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402
from protogen.weights import calibrate_batchnorm, init_weights, seeded_input  # noqa: E402

from tests.helpers import CORPUS  # noqa: E402
from tests.helpers import needs_corpus  # noqa: E402
RTOL = 1e-4


# ----------------------------------------------------------------------------- harness
def load_generated(py: Path):
    """Import the generated file while ``protogen`` cannot be imported; returns the module
    class, instantiated with the .pth loaded strictly (weights_only)."""
    blocked = {k: v for k, v in sys.modules.items() if k == "protogen" or k.startswith("protogen.")}
    for k in blocked:
        sys.modules[k] = None
    try:
        name = f"generated_{py.stem}_{abs(hash(str(py)))}"
        spec = importlib.util.spec_from_file_location(name, py)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.modules.update(blocked)
    classes = [v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == name]
    assert len(classes) == 1
    model = classes[0]()
    state = torch.load(py.with_suffix(".pth"), weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def check_source(src: str) -> None:
    compile(src, "<generated>", "exec")
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module)
    assert mods == {"torch", "torch.nn.functional"}, mods
    assert "protogen" not in src.split('"""', 2)[2]         # only the docstring may mention it


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def assert_spread(name, ref, min_dependence=1e-2):
    """Not degenerate: the values vary, and the two images of the batch give different outputs
    (by ``min_dependence`` of the output's scale)."""
    ref = np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    assert scale > 0 and ref.std() > 1e-3 * scale, f"{name}: near-constant output"
    # (an output that hardly depends on the input hardly depends on early layers either)
    assert np.abs(ref[0] - ref[1]).max() > min_dependence * scale, f"{name}: output hardly depends on the input"


def generate_and_compare(tmp_path: Path, g: Graph, seed: int = 3, stem: str = "net", min_dependence=1e-2):
    """Write OUT.py/.pth, import, run batch 2, compare with TorchNet and ORT; returns the source."""
    out = tmp_path / f"{stem}.py"
    written = write_torch(g, out)
    assert written == [str(out), str(out.with_suffix(".pth"))]
    src = out.read_text()
    check_source(src)
    model = load_generated(out)
    steps = g.select(net="deploy").steps()
    inputs = {t: seeded_input((2,) + tuple(s[1:]), seed + i)
              for i, (t, s) in enumerate((t, s) for st in steps if st.layer.kind.is_input
                                         for t, s in zip(st.layer.tops, st.out_shapes))}
    assert list(model.input_names) == list(inputs)
    with torch.no_grad():
        got = model(*[torch.from_numpy(v) for v in inputs.values()])
    names = list(model.output_names)
    assert names == g.select(net="deploy").outputs()
    got = dict(zip(names, got if isinstance(got, tuple) else (got,)))
    ref_net = TorchNet.from_graph(g)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in ref_net({k: torch.from_numpy(v) for k, v in inputs.items()}).items()}
    sess = ort.InferenceSession(export_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    ro = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    for name in names:
        y = got[name].numpy()
        assert_spread(name, ref[name], min_dependence)
        assert rel_err(y, ref[name]) < RTOL, (name, rel_err(y, ref[name]))
        assert rel_err(y, ro[name]) < RTOL, (name, rel_err(y, ro[name]))
    return src


# ----------------------------------------------------------------------------- coverage net
def L(name, typ, bottoms, tops, params=None):
    return Layer(name, typ, list(bottoms), list(tops), params)


def coverage_graph() -> Graph:
    """Every layer type and Caffe corner, with names that are not Python identifiers."""
    conv = ConvParams
    layers = [
        L("input", "Input", [], ["data", "class"], InputParams(shape=((1, 8, 12, 13), (1, 8)))),
        # grouped + dilated: 12 + 2 - 5 + 1 = 10, 13 + 2 - 5 + 1 = 11
        L("conv1/3x3", "Convolution", ["data"], ["conv1/3x3"],
          conv(12, 3, 3, pad_h=1, pad_w=1, dilation_h=2, dilation_w=2, group=4)),
        L("bn1", "BatchNorm", ["conv1/3x3"], ["conv1/3x3"], BatchNormParams(eps=1e-3)),
        L("scale1", "Scale", ["conv1/3x3"], ["conv1/3x3"], ScaleParams(bias_term=True)),
        L("relu1", "ReLU", ["conv1/3x3"], ["conv1/3x3"], ReLUParams(negative_slope=0.1)),
        # AVE k3 s2 p1 on 10: Caffe ceil gives 6 windows, the last [9, 12) clipped at H+p=11 ->
        # pool size 2*3 (a divisor map, not k*k)
        L("pool1", "Pooling", ["conv1/3x3"], ["pool1"], PoolParams("AVE", 3, 3, 2, 2, 1, 1)),
        # MAX k3 s2 p0 on 10x11: 5x5 windows, the last row of windows reaches past H
        L("pool2", "Pooling", ["conv1/3x3"], ["pool2"], PoolParams("MAX", 3, 3, 2, 2)),
        # pad 2 > kernel/2: PyTorch's pooling refuses it, Caffe allows pad < kernel
        L("pool3", "Pooling", ["pool1"], ["pool3"], PoolParams("MAX", 3, 3, 1, 1, 2, 2)),
        L("pool_floor", "Pooling", ["pool1"], ["pool_floor"], PoolParams("AVE", 2, 2, 2, 2, round_mode="FLOOR")),
        L("norm/across", "LRN", ["pool2"], ["lrn_a"], LRNParams(5, 0.05, 0.75, "ACROSS_CHANNELS", 2.0)),
        L("norm/within", "LRN", ["pool3"], ["lrn_w"], LRNParams(3, 0.5, 0.6, "WITHIN_CHANNEL", 7.0)),
        L("up", "Deconvolution", ["pool2"], ["up"], conv(6, 4, 4, 2, 2, 1, 1, group=2)),
        L("gap", "Pooling", ["up"], ["gap"], PoolParams("AVE", global_pooling=True)),
        L("gmp", "Pooling", ["lrn_w"], ["gmp"], PoolParams("MAX", global_pooling=True)),
        L("sum", "Eltwise", ["pool2", "lrn_a", "pool2"], ["sum"], EltwiseParams("SUM", (0.5, -1.0, 2.0))),
        L("prod", "Eltwise", ["pool2", "lrn_a"], ["prod"], EltwiseParams("PROD")),
        L("max", "Eltwise", ["pool2", "lrn_a", "sum"], ["max"], EltwiseParams("MAX")),
        L("shuffle", "ShuffleChannel", ["sum"], ["shuffle"], ShuffleChannelParams(3)),
        L("slice", "Slice", ["shuffle"], ["s-a", "s-b"], SliceParams(1, (5,))),
        L("concat", "Concat", ["s-b", "s-a", "prod"], ["concat"], ConcatParams(1)),
        L("drop", "Dropout", ["concat"], ["concat"]),
        L("pow", "Power", ["concat"], ["pow"], PowerParams(2.0, 0.5, 1.0)),
        L("forward", "PReLU", ["pow"], ["pow"], PReLUParams()),                 # an nn.Module member name
        L("reshape", "Reshape", ["pow"], ["reshaped"], ReshapeParams((0, 4, -1))),  # N, 4, 150
        L("permute", "Permute", ["reshaped"], ["permuted"], PermuteParams((0, 2, 1))),
        L("softmax", "Softmax", ["permuted"], ["sm"], SoftmaxParams(2)),
        L("fc/t", "InnerProduct", ["permuted"], ["fc_t"], InnerProductParams(5, axis=2, transpose=True)),
        L("flat", "Flatten", ["max"], ["flat"], FlattenParams()),
        L("fc", "InnerProduct", ["flat"], ["fc"], InnerProductParams(7)),
        L("eval", "BatchNorm", ["fc"], ["fc_bn"], BatchNormParams()),          # BatchNorm1d
        L("split", "Split", ["pool3"], ["s1", "s2"]),
        L("sig", "Sigmoid", ["s1"], ["sig"]),
        L("tanh", "TanH", ["s2"], ["F"]),                                         # shadows nothing
        L("train", "Bias", ["lrn_w"], ["biased"], BiasParams()),
        L("scale_by_input", "Scale", ["data", "class"], ["scaled"], ScaleParams(axis=0, num_axes=2)),
        L("abs", "AbsVal", ["scaled"], ["abs"]),
        L("conv2", "Convolution", ["abs"], ["conv2"],
          conv(4, 1, 3, stride_h=2, stride_w=1, pad_h=0, pad_w=1, bias_term=False)),
        L("bn2", "BatchNorm", ["conv2"], ["conv2"], BatchNormParams()),
        L("relu6", "ReLU6", ["conv2"], ["conv2"]),
        L("clip", "Clip", ["sig"], ["clipped"], ClipParams(0.3, 0.6)),
        L("shared", "PReLU", ["F"], ["prelu_s"], PReLUParams(channel_shared=True)),
        L("cat1", "Concat", ["gap"], ["gap1"], ConcatParams(1)),
        L("scale_c", "Scale", ["gap1"], ["gap_s"], ScaleParams(bias_term=False)),
    ]
    g = Graph("coverage net-1", layers)
    init_weights(g, 5)
    # a trained-looking BatchNorm: Caffe's blobs hold mean*s, var*s and s (s ~ 1/(1-0.999))
    bn = g.layer("bn1")
    s = np.float32(999.0)
    bn.blobs = [bn.blobs[0] * s, bn.blobs[1] * s, np.array([s], np.float32)]
    return g


def test_coverage_net(tmp_path):
    g = coverage_graph()
    src = generate_and_compare(tmp_path, g)
    body = src.split("def forward", 1)[1]
    # the Caffe corners are written as literal code
    assert "F.pad(conv1_3x3, (1, 1, 1, 2))" in body                              # pool1 end pad
    assert "divisor_override=1) / self.pool1_divisor" in body
    assert "torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, 2.0]).outer(torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, 3.0]))" in src
    assert "value=-FLT_MAX), 3, 2)" in body and "FLT_MAX = 3.4028234663852886e+38" in src
    assert "F.pad(pool1, (2, 2, 2, 2), value=-FLT_MAX), 3, 1)" in body            # pad > k/2
    assert "nn.BatchNorm2d(12, eps=0.001, affine=True)  # bn1 (BatchNorm) + scale1 (Scale)" in src
    assert "nn.BatchNorm1d(7, eps=1e-05, affine=False)" in src and "self.eval_ = " in src
    assert "self.forward_ = nn.PReLU(24)" in src and "nn.PReLU(1)" in src
    assert "sum_ = 0.5 * pool2 - lrn_a + 2.0 * pool2" in body
    assert "pow_ = torch.pow(1.0 + 0.5 * concat, 2.0)" in body
    assert "reshaped = pow_.reshape(pow_.shape[0], 4, -1)" in body
    assert "shuffle = sum_.unflatten(1, (3, 4)).transpose(1, 2).flatten(1, 2)" in body
    assert "s_a, s_b = torch.split(shuffle, [5, 7], dim=1)" in body
    assert "def forward(self, data, class_):" in src
    assert "F_ = torch.tanh(s2)" in body
    assert "nn.Dropout" not in src and "# drop (Dropout): identity at inference" in body
    # state_dict: Caffe's statistics divided by the scale factor, Scale as BN's affine part
    sd = torch.load(tmp_path / "net.pth", weights_only=True)
    bn, sc = g.layer("bn1").blobs, g.layer("scale1").blobs
    np.testing.assert_allclose(sd["bn1.running_mean"].numpy(), bn[0] / 999.0, rtol=1e-6)
    np.testing.assert_allclose(sd["bn1.running_var"].numpy(), bn[1] / 999.0, rtol=1e-6)
    np.testing.assert_array_equal(sd["bn1.weight"].numpy(), sc[0])
    np.testing.assert_array_equal(sd["fc_t.weight"].numpy(), g.layer("fc/t").blobs[0].T)
    assert all(v.dtype in (torch.float32, torch.int64) for v in sd.values())
    # plain torch code: torch.export traces it (a path to ONNX/ExecuTorch for users)
    model = load_generated(tmp_path / "net.py")
    xs = (torch.from_numpy(seeded_input((2, 8, 12, 13), 1)), torch.from_numpy(seeded_input((2, 8), 2)))
    exported = torch.export.export(model, xs).module()
    with torch.no_grad():
        for a, b in zip(model(*xs), exported(*xs)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_ceil_pool_matches_hand_computed_caffe_values(tmp_path):
    """AVE k2 s2 on a 1x1x3x3 ramp, Caffe ceil: 2x2 windows [0,2) and [2,3) per axis (pad 0:
    no clip rule); pool sizes 4, 2, 2, 1 (window clipped at H + pad = 3), so by hand:
    y = [[(0+1+3+4)/4, (2+5)/2], [(6+7)/2, 8/1]] = [[2, 3.5], [6.5, 8]]."""
    g = Graph("ramp", [L("input", "Input", [], ["x"], InputParams(shape=((1, 1, 3, 3),))),
                       L("pool", "Pooling", ["x"], ["y"], PoolParams("AVE", 2, 2, 2, 2)),
                       L("pool_max", "Pooling", ["x"], ["m"], PoolParams("MAX", 2, 2, 2, 2))])
    write_torch(g, tmp_path / "ramp.py")
    model = load_generated(tmp_path / "ramp.py")
    with torch.no_grad():
        y, m = model(torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3))
    np.testing.assert_array_equal(y.numpy()[0, 0], [[2.0, 3.5], [6.5, 8.0]])
    np.testing.assert_array_equal(m.numpy()[0, 0], [[4.0, 5.0], [7.0, 8.0]])


# ----------------------------------------------------------------------------- zoo
#: small configurations with the nets' full layer structure (time-bounded); 10 classes.
#: (googlenet's aux heads need >= 80 px, its option allows 32; at 32 px the calibrated
#: MobileNet v2 / ShuffleNet v2 amplify float32 rounding to ~5e-5 between any two runtimes)
SMALL = {"bn_inception": dict(input_size=64), "googlenet": dict(input_size=96),
         "inception_resnet_v1": dict(input_size=75), "inception_resnet_v2": dict(input_size=75),
         "inception_v3": dict(input_size=75), "inception_v4": dict(input_size=75),
         "mobilenet_v1": dict(input_size=32, width=0.25), "mobilenet_v2": dict(input_size=64, width=0.35),
         "shufflenet_v1": dict(input_size=32, width=0.5), "shufflenet_v2": dict(input_size=64, width=0.5),
         "xception": dict(input_size=71)}


def up_to_logits(g: Graph) -> Graph:
    """The deploy net without its final Softmax layers (seeded deep nets give one-hot
    probabilities, which would hide errors in the logits)."""
    d = g.select(net="deploy")
    outs = d.outputs()
    return Graph(d.name, [l for l in d.layers if not (l.type == "Softmax" and l.tops[0] in outs)])


#: zoo nets checked in the quick run (`make test-quick`); the others are marked slow
QUICK_ZOO = {"mobilenet_v1", "shufflenet_v2", "resnet18"}


@pytest.mark.parametrize("name", [n if n in QUICK_ZOO else pytest.param(n, marks=pytest.mark.slow)
                                  for n in zoo.models()])
def test_zoo_net(tmp_path, name):
    opts = dict(SMALL.get(name, dict(input_size=32)), num_classes=10)
    g = zoo.build(name, **opts).graph
    init_weights(g, 1)
    # drawn BN statistics let the input's influence fade through deep nets: calibrate them
    calibrate_batchnorm(g, 1)
    full = graph_to_torch_source(g)
    check_source(full)
    assert "F.softmax(" in full.split("def forward", 1)[1]
    generate_and_compare(tmp_path, up_to_logits(g), stem=identifier(name))


# ----------------------------------------------------------------------------- corpus
MTCNN = [(f"kpzhang93_mtcnn/det{i}.prototxt", f"kpzhang93_mtcnn/det{i}.caffemodel") for i in (1, 2, 3, 4)]
LENET = ("everpeace_caffe/examples/mnist/lenet.prototxt", "everpeace_caffe/examples/mnist/lenet_iter_10000.caffemodel")


@needs_corpus
@pytest.mark.parametrize("proto, model", MTCNN, ids=["det1", "det2", "det3", "det4"])
def test_mtcnn_with_trained_weights(tmp_path, proto, model):
    g = load_model(CORPUS / proto, CORPUS / model)
    # trained detectors are confident on noise: their probabilities move by ~1e-2 only
    src = generate_and_compare(tmp_path, g, stem=Path(proto).stem, min_dependence=1e-3)
    assert "nn.PReLU(" in src
    if proto.endswith("det4.prototxt"):     # LNet: five 24x24 patches stacked on channels
        assert "torch.split(data, [3, 3, 3, 3, 3], dim=1)" in src
    else:
        assert "F.softmax(" in src
    if not proto.endswith("det1.prototxt"):  # 3x3/2 ceil pools past the edge (e.g. 22 -> 11)
        assert "value=-FLT_MAX), 3, 2)" in src


@needs_corpus
def test_cli_lenet_v1_with_trained_weights(tmp_path):
    """`protogen convert lenet.prototxt --weights lenet.caffemodel -o lenet.py` (V1 files,
    legacy 4-D blobs): the written module equals the reference and ORT, and its weights are
    the caffemodel's."""
    out = tmp_path / "lenet.py"
    assert main(["convert", str(CORPUS / LENET[0]), "--weights", str(CORPUS / LENET[1]), "-o", str(out)]) == 0
    src = out.read_text()
    check_source(src)
    g = load_model(CORPUS / LENET[0], CORPUS / LENET[1])
    model = load_generated(out)
    sd = torch.load(out.with_suffix(".pth"), weights_only=True)
    np.testing.assert_array_equal(sd["ip1.weight"].numpy(), g.layer("ip1").blobs[0].reshape(500, 800))
    assert "self.ip1(pool2.flatten(1))" in src
    generate_and_compare(tmp_path / "again", g, stem="lenet", min_dependence=1e-3)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        prob = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- errors, atomicity
def _tiny() -> Graph:
    g = Graph("tiny", [L("input", "Input", [], ["data"], InputParams(shape=((1, 3, 8, 8),))),
                       L("conv", "Convolution", ["data"], ["conv"], ConvParams(4, 3, 3)),
                       L("act", "TanH", ["conv"], ["out"])])
    return init_weights(g, 0)


def test_unsupported_layer_writes_nothing(tmp_path, monkeypatch):
    from protogen.layers.base import LayerType, get_type
    monkeypatch.setattr(type(get_type("TanH")), "torch_source", LayerType.torch_source)
    with pytest.raises(UnsupportedError, match="layer 'act' \\(TanH\\)"):
        write_torch(_tiny(), tmp_path / "m.py")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_earlier_files_alone(tmp_path):
    (tmp_path / "m.py").mkdir()                 # the .py cannot replace a directory
    (tmp_path / "m.pth").write_bytes(b"earlier")
    with pytest.raises(OSError):
        write_torch(_tiny(), tmp_path / "m.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "m.py"]   # no temporaries
    assert (tmp_path / "m.pth").read_bytes() == b"earlier"


def test_cli_refuses_without_partial_output(tmp_path, capsys, monkeypatch):
    """A layer without a PyTorch form: exit 2, a `protogen: error:` message naming the layer,
    no traceback, and neither OUT.py nor OUT.pth."""
    from protogen.layers.base import LayerType, get_type
    monkeypatch.setattr(type(get_type("TanH")), "torch_source", LayerType.torch_source)
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 } } }\n'
                   'layer { name: "t" type: "TanH" bottom: "d" top: "t" }\n')
    assert main(["convert", str(net), "-o", str(tmp_path / "out.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("protogen: error:") and "layer 't' (TanH)" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def test_identifiers():
    assert identifier("inception_3a/1x1") == "inception_3a_1x1"
    assert identifier("conv4-2") == "conv4_2"
    assert identifier("1x1") == "v_1x1"
    assert identifier("class") == "class_" and identifier("F") == "F_" and identifier("self") == "self_"


HOSTILE = ["__conv", "свёртка/1", "свёртка/2", "conv-1", "conv_1", "class", "self", "forward",
           "1x1", "__init__", "torch", "a\nb", 'q"""q', "_", "\u2028"]


def test_hostile_names_load_and_run(tmp_path):
    """Layer and blob names that are Python keywords, dunder names (mangled inside a class),
    non-ASCII names that collide after sanitising, names with line breaks and quotes: the
    generated module compiles, loads its state_dict strictly, runs, and equals TorchNet;
    every Caffe name is kept (escaped) in a comment."""
    layers = [L("input", "Input", [], ["data"], InputParams(shape=((2, 3, 6, 6),)))]
    x = "data"
    for i, name in enumerate(HOSTILE):
        conv = ConvParams(3, 3, 3, pad_h=1, pad_w=1) if i == 0 else ConvParams(3, 1, 1)
        layers.append(L(name, "Convolution", [x], [name], conv))
        layers.append(L(name + "/bn", "BatchNorm", [name], [name], BatchNormParams()))
        x = name
    g = Graph("hostile net \"\"\" x", layers)
    init_weights(g, 2)
    calibrate_batchnorm(g, 2)
    out = tmp_path / "hostile.py"
    write_torch(g, out)
    src = out.read_text()
    check_source(src)
    model = load_generated(out)               # strict load_state_dict inside
    attrs = [n for n, _ in model.named_children()]
    assert len(attrs) == len(set(attrs)) == 2 * len(HOSTILE)
    assert all(a.isidentifier() and a.isascii() and not a.startswith("_") for a in attrs), attrs
    assert "# \\u2028 (Convolution)" in src and '# q\\"\\"\\"q (Convolution)' in src
    for name in ("свёртка/1", "свёртка/2", "__conv", "a\\nb"):
        assert f"# {name} (" in src, name
    inp = seeded_input((2, 3, 6, 6), 4)
    with torch.no_grad():
        got = model(torch.from_numpy(inp)).numpy()
        want = TorchNet.from_graph(g)({"data": torch.from_numpy(inp)})[x].numpy()
    assert_spread("out", want)
    # two float32 executions of 15 conv + BatchNorm layers (nn.BatchNorm2d against TorchNet's
    # own normalisation): float32 round-off, measured 1.2e-6 with float32-calibrated statistics
    assert rel_err(got, want) < 1e-5
