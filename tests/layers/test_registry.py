"""Per-type oracle tests over the whole layer registry, driven by each type's ``examples``.

For every registered type and every :class:`protogen.layers.base.Example` it declares:

* shape: the type's shape rule (``output_shapes``) == the shape of the torch forward's output;
* onnx: the one-layer net lowered to ONNX (``onnx_io.export_onnx``, full checker + strict shape
  inference), run by ONNX Runtime in float32 == the float64 torch forward, within the
  example's ``rtol`` (1e-5) relative to the output's scale;
* torch_source: the generated ``nn.Module`` source (``torch_codegen``), loaded with its
  state_dict and run in float64 == the float64 torch forward (1e-6: the same formulas; the
  source writes float32 parameters as their shortest decimal text, e.g. ``0.7``);
* roundtrip: the layer written as Caffe prototxt (in every dialect) and read back has the same
  type and params where the dialect writes the type itself, and computes the same outputs
  (float64 torch forward of the read-back net) where the dialect expands it into other types
  (ShuffleChannel as Reshape/Permute or Slice/Concat, ReLU6 as Clip).

The float64 torch forward is the reference of both runtimes; it must be non-degenerate (finite,
not constant) so that an agreement means something. Independent oracles per type (numpy
transcriptions of Caffe's loops) live in test_backends.py; this file makes sure that no type
and no backend of a type is left out.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from protogen.caffe.prototxt import graph_from_net_param, parse_prototxt, to_prototxt  # noqa: E402
from protogen.dialect import Dialect  # noqa: E402
from protogen.ir import Graph, Layer  # noqa: E402
from protogen.layers import registered_types  # noqa: E402
from protogen.layers.io import InputParams  # noqa: E402
from protogen.weights import init_weights  # noqa: E402

#: types that declare no examples, by name, with the reason: they cannot run in an inference
#: net alone (data sources, losses). Shrink this list by declaring examples.
NO_EXAMPLES = {
    "Input": "the graph input itself (every example net starts with one)",
    "Data": "training data source (LMDB/LevelDB)",
    "ImageData": "training data source (image list)",
    "SoftmaxWithLoss": "training loss",
    "Accuracy": "training/test metric",
    # data sources of protogen/layers/data.py (engineer D): the inference view turns each into
    # an Input (tests/converter/test_data_layers.py checks their shapes)
    "HDF5Data": "training data source (HDF5 files)",
    "MemoryData": "training data source (arrays fed from code)",
    "DenseImageData": "training data source (SegNet image + label list)",
    "WindowData": "training data source (R-CNN windows)",
    "AnnotatedData": "training data source (SSD images + boxes)",
    "DummyData": "data source (filler-made blobs)",
    "Python": "data source written in Python (arbitrary code)",
    # losses and metrics of protogen/layers/train_only.py (engineer D): the inference view drops
    # them (tests/converter/test_data_layers.py)
    **{t: "training/evaluation only" for t in (
        "EuclideanLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss", "HingeLoss", "InfogainLoss",
        "MultinomialLogisticLoss", "SmoothL1Loss", "MultiBoxLoss", "CenterLoss", "SegAccuracy",
        "EvalDetection", "DetectionEvaluate")},
    # protogen/layers/fork_misc.py: the loader expands DenseBlock into standard layers
    # (tests/layers/test_fork_misc.py checks it against a numpy forward); the others only
    # exist for training (a data source, SphereFace's label-reading head)
    "DenseBlock": "expanded by the loader into BatchNorm/Scale/ReLU/Convolution/Concat",
    "ImageLabelmapData": "training data source (HED image + edge-map list)",
    "C3DVideoData": "training data source (C3D clip list; protogen/layers/c3d.py, tests/layers/test_conv3d.py)",
    "MarginInnerProduct": "training head: its forward reads the label",
    "Python:loss": "a Python layer with loss_weight: a loss, dropped (tests/converter/test_python_loss.py)",
}


def _types():
    seen, out = set(), []
    for name, kind in sorted(registered_types().items()):
        if id(kind) in seen:
            continue
        seen.add(id(kind))
        out.append(kind)
    return out


def _cases():
    for kind in _types():
        for i, ex in enumerate(kind.examples):
            yield pytest.param(kind, ex, id=f"{kind.type}-{i}")


CASES = list(_cases())


def test_every_type_declares_examples_or_is_allowed():
    missing = sorted(k.type for k in _types() if not k.examples and k.type not in NO_EXAMPLES)
    assert not missing, f"layer types without examples (declare LayerType.examples): {missing}"
    stale = sorted(t for t in NO_EXAMPLES if any(k.type == t and k.examples for k in _types()))
    assert not stale, f"types in NO_EXAMPLES that now have examples (remove them): {stale}"
    known = {k.type for k in _types()}
    assert set(NO_EXAMPLES) <= known, set(NO_EXAMPLES) - known


def one_layer_net(kind, ex, seed=0):
    """Input -> the example's layer; weights seeded. Returns (graph, inputs, tops)."""
    params = ex.make_params(kind)
    xs = ex.inputs(seed)
    names = [f"in{i}" for i in range(len(xs))]
    tops = [f"out{i}" for i in range(ex.n_tops)]
    inp = Layer("input", "Input", [], names, InputParams(shape=tuple(tuple(x.shape) for x in xs)))
    layer = Layer(f"{kind.type.lower()}_1", kind.type, names, tops, params)
    g = Graph("example", [inp, layer])
    init_weights(g, seed)
    return g, dict(zip(names, xs)), tops


def reference(g, inputs):
    from protogen.torch_ref import TorchNet
    net = TorchNet.from_graph(g).double()
    with torch.no_grad():
        out = net({k: torch.from_numpy(v.astype(np.float64)) for k, v in inputs.items()})
    assert all(v.dtype == torch.float64 for v in out.values())
    return {k: v.numpy() for k, v in out.items()}


def rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if not want.size:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def non_degenerate(a, what):
    a = np.asarray(a, np.float64)
    assert np.isfinite(a).all(), f"{what}: non-finite reference"
    assert a.size and a.max() > a.min(), f"{what}: constant reference output (a weak example)"


@pytest.mark.parametrize("kind,ex", CASES)
def test_example(kind, ex):
    g, inputs, tops = one_layer_net(kind, ex)
    ref = reference(g, inputs)
    for t in tops:
        non_degenerate(ref[t], f"{kind.type} {t}")
    layer = g.layers[1]
    if "shape" not in ex.skip:
        want = kind.output_shapes(layer.params, list(ex.ins), ex.n_tops)
        assert [tuple(ref[t].shape) for t in tops] == [tuple(s) for s in want]
    if "onnx" not in ex.skip:
        from protogen.onnx_io import export_onnx, load_check
        m = export_onnx(g)
        load_check(m)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(None, inputs)))
        for t in tops:
            assert rel(got[t], ref[t]) <= ex.rtol, f"ONNX {t}: {rel(got[t], ref[t]):.3g}"
    if "torch_source" not in ex.skip:
        _check_source(g, inputs, tops, ref)
    if "roundtrip" not in ex.skip:
        _check_roundtrip(g, inputs, tops, ref)


DIALECTS = [Dialect.make(), Dialect.make("bvlc"), Dialect.make(shuffle="shufflechannel"),
            Dialect.make(depthwise="ConvolutionDepthwise")]


def _check_roundtrip(g, inputs, tops, ref):
    layer = g.layers[1]
    native = 0
    for d in DIALECTS:
        back = graph_from_net_param(parse_prototxt(to_prototxt(g, dialect=d)))
        if [l.type for l in back.layers] == [l.type for l in g.layers]:
            native += 1
            assert back.layers[1].name == layer.name
            assert back.layers[1].params == layer.params, d
            continue
        # an expansion into other types: same function (weights copied by layer name)
        for l in back.layers:
            if l.name == layer.name:
                l.blobs = layer.blobs
        got = reference(back, inputs)
        for t in tops:
            assert rel(got[t], ref[t]) <= 1e-9, f"{d}: {t} differs by {rel(got[t], ref[t]):.3g}"
    assert native, "no dialect writes this type as itself"


def _check_source(g, inputs, tops, ref):
    from protogen.torch_codegen import SourceContext, graph_to_torch_source, torch_state_dict
    ctxs: list[SourceContext] = []
    src = graph_to_torch_source(g, "Example", _ctx_out=ctxs)
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)
    model = ns["Example"]()
    model.load_state_dict(torch_state_dict(ctxs[0]), strict=True)
    model = model.double()
    with torch.no_grad():
        out = model(*[torch.from_numpy(inputs[n].astype(np.float64)) for n in model.input_names])
    out = out if isinstance(out, tuple) else (out,)
    got = dict(zip(model.output_names, out))
    for t in tops:
        assert got[t].dtype == torch.float64
        assert rel(got[t].numpy(), ref[t]) <= 1e-6, f"torch_source {t}: {rel(got[t].numpy(), ref[t]):.3g}"
