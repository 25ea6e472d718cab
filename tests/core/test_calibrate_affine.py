"""Seeded weights of nets whose BatchNorm was folded away at deployment
(protogen.calibrate_affine, called from weights.calibrate_batchnorm): a Scale with bias not fed
by a BatchNorm, and in residual nets a biased Convolution read by a rectifier, calibrate to
BatchNorm's targets (per-channel mean 1, std 1; a residual branch's end: mean 0, std 0.2).

The oracle is a numpy forward of the net written here (im2col convolution, Scale, ReLU,
PReLU, Eltwise sum) on the calibration batch (``seeded_input`` with seed + 1000, batch 2),
independent of the torch executor the calibration runs in.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.calibrate_affine import affine_plan  # noqa: E402
from protogen.weights import init_weights, seeded_input, seeded_weights  # noqa: E402

from tests.helpers import CORPUS, needs_corpus  # noqa: E402


def _conv(name, bottom, n, k=3, bias=True):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} pad: {k // 2} '
            f'bias_term: {"true" if bias else "false"} }} }}\n')


def _layer(name, typ, bottoms, top, extra=""):
    bs = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{typ}" {bs} top: "{top}" {extra} }}\n'


SCALE_BIAS = "scale_param { bias_term: true }"
#: a ResNet-style block with BatchNorm folded into Scale (sc1, sc2; sc2 ends the residual
#: branch) and a residual tail whose BatchNorm is folded into the convolutions (conv3 -> PReLU,
#: conv4 -> ReLU, conv5 ends the branch); conv6 -> ReLU is a head after the last sum: left as
#: drawn
FOLDED = ('name: "folded" layer { name: "data" type: "Input" top: "data" '
          'input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }\n'
          + _conv("conv1", "data", 8) + _layer("sc1", "Scale", ["conv1"], "conv1", SCALE_BIAS)
          + _layer("relu1", "ReLU", ["conv1"], "conv1")
          + _conv("conv2", "conv1", 8) + _layer("sc2", "Scale", ["conv2"], "conv2", SCALE_BIAS)
          + _layer("sum1", "Eltwise", ["conv1", "conv2"], "sum1")
          + _layer("relu2", "ReLU", ["sum1"], "sum1")
          + _conv("conv3", "sum1", 6, k=1) + _layer("prelu3", "PReLU", ["conv3"], "conv3")
          + _conv("conv4", "conv3", 6) + _layer("relu4", "ReLU", ["conv4"], "conv4")
          + _conv("conv5", "conv4", 8, k=1) + _layer("sum2", "Eltwise", ["sum1", "conv5"], "sum2")
          + _conv("conv6", "sum2", 4, k=1) + _layer("relu6", "ReLU", ["conv6"], "conv6"))


def _graph(tmp_path, text=FOLDED):
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return load_model(p)


def np_conv(x, w, b, pad):
    """Caffe convolution, stride 1, group 1 (im2col), float64."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    cols = np.stack([xp[:, :, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], axis=2)
    y = np.einsum("nckhw,ock->nohw", cols, w.reshape(o, c, kh * kw).astype(np.float64))
    return y + b.astype(np.float64).reshape(1, -1, 1, 1)


def np_forward(g, x) -> dict[str, np.ndarray]:
    """Every layer's output (by layer name) of FOLDED, in numpy."""
    w = {l.name: [np.asarray(b, np.float64) for b in l.blobs or []] for l in g.layers}
    chan = (1, -1, 1, 1)
    out = {}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    out["conv1"] = np_conv(x, *w["conv1"], 1)
    out["sc1"] = out["conv1"] * w["sc1"][0].reshape(chan) + w["sc1"][1].reshape(chan)
    a1 = relu(out["sc1"])
    out["conv2"] = np_conv(a1, *w["conv2"], 1)
    out["sc2"] = out["conv2"] * w["sc2"][0].reshape(chan) + w["sc2"][1].reshape(chan)
    s1 = relu(a1 + out["sc2"])
    out["conv3"] = np_conv(s1, *w["conv3"], 0)
    a3 = np.maximum(out["conv3"], 0) + w["prelu3"][0].reshape(chan) * np.minimum(out["conv3"], 0)
    out["conv4"] = np_conv(a3, *w["conv4"], 1)
    out["conv5"] = np_conv(relu(out["conv4"]), *w["conv5"], 0)
    out["conv6"] = np_conv(s1 + out["conv5"], *w["conv6"], 0)
    return out


def _stats(y):
    return y.mean(axis=(0, 2, 3)), y.std(axis=(0, 2, 3))


def test_plan_names_the_folded_layers(tmp_path):
    g = _graph(tmp_path)
    res = g.select(net="deploy", phase="TEST").resolve()
    assert sorted(res.steps[i].layer.name for i in affine_plan(res)) == ["conv3", "conv4", "conv5", "sc1", "sc2"]


def test_calibrated_outputs_have_batchnorm_targets(tmp_path):
    g = seeded_weights(_graph(tmp_path), seed=4)
    x = seeded_input((2, 3, 12, 12), 4 + 1000)          # the calibration batch
    out = np_forward(g, x)
    targets = {"sc1": (1.0, 1.0), "sc2": (0.0, 0.2), "conv3": (1.0, 1.0), "conv4": (1.0, 1.0),
               "conv5": (0.0, 0.2)}
    for name, (mean, std) in targets.items():
        m, s = _stats(out[name])
        np.testing.assert_allclose(m, mean, atol=2e-4, err_msg=name)
        np.testing.assert_allclose(s, std, rtol=2e-4, err_msg=name)
    # on another input the statistics are near the targets, not equal: they were measured
    m, s = _stats(np_forward(g, seeded_input((2, 3, 12, 12), 0))["conv4"])
    assert 0.5 < s.mean() < 2 and not np.allclose(s, 1.0, rtol=1e-3)


def test_other_layers_keep_their_draw_and_seeding_is_deterministic(tmp_path):
    a = seeded_weights(_graph(tmp_path), seed=4)
    b = seeded_weights(_graph(tmp_path), seed=4)
    drawn = init_weights(_graph(tmp_path), seed=4)
    for la, lb, ld in zip(a.layers, b.layers, drawn.layers):
        for x, y, d in zip(la.blobs or [], lb.blobs or [], ld.blobs or []):
            assert np.array_equal(x, y), la.name
            if la.name not in ("sc1", "sc2", "conv3", "conv4", "conv5"):
                assert np.array_equal(x, d), la.name
            else:
                assert not np.array_equal(x, d), la.name


def test_scale_after_batchnorm_and_plain_chains_are_not_folded(tmp_path):
    """A Scale that is a BatchNorm's affine part calibrates with it (as before); a conv ->
    ReLU upstream of every residual sum (a plain chain) keeps its He-normal draw; a Scale
    without bias has no shift to calibrate, one after a rectifier or a Concat (PVANet's
    C.ReLU) stands for no folded BatchNorm; after the sum, a conv read by a BatchNorm."""
    text = ('name: "plain" layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
            + _conv("c1", "data", 4) + _layer("bn1", "BatchNorm", ["c1"], "c1")
            + _layer("s1", "Scale", ["c1"], "c1", SCALE_BIAS) + _layer("r1", "ReLU", ["c1"], "c1")
            + _conv("c2", "c1", 4) + _layer("r2", "ReLU", ["c2"], "c2")
            + _layer("s2", "Scale", ["c2"], "s2") + _layer("s3", "Scale", ["c2"], "s3", SCALE_BIAS)
            + _layer("cat", "Concat", ["s2", "s3"], "cat")
            + _layer("s4", "Scale", ["cat"], "s4", SCALE_BIAS)
            + _layer("sum", "Eltwise", ["c1", "c2"], "sum")
            + _conv("c3", "sum", 4) + _layer("bn3", "BatchNorm", ["c3"], "c3")
            + _layer("r3", "ReLU", ["c3"], "c3"))
    g = _graph(tmp_path, text)
    assert not affine_plan(g.select(net="deploy", phase="TEST").resolve())


def test_zoo_nets_have_nothing_folded():
    """Every zoo net normalises with BatchNorm (or is a plain chain): its seeded weights are
    what they were before folded BatchNorms calibrated."""
    from protogen import zoo
    for name in zoo.models():
        res = zoo.build(name).graph.select(net="deploy", phase="TEST").resolve()
        assert not affine_plan(res), name


@pytest.mark.slow
@needs_corpus
def test_cascade_res50_trunk_stays_normalised():
    """cascade R-CNN's R-FCN net (53 Scale, no BatchNorm): drawn weights gave the res5 trunk a
    std of ~600 and saturated class probabilities; calibrated, the trunk stays O(1)."""
    import torch

    from protogen.torch_ref import TorchNet
    g = load_model(CORPUS / "zhaoweicai_cascade-rcnn/examples/voc/res50-9s-600-rfcn-cascade/deploy.prototxt",
                   input_shape=(1, 3, 64, 96))
    seeded_weights(g, 0)
    view = g.select(net="deploy", phase="TEST")
    net = TorchNet.from_graph(view)
    feeds = {v: torch.from_numpy(seeded_input(s, 0)) for _, v, s in net.resolved.inputs}
    with torch.no_grad():
        vals = net(feeds, all_blobs=True)
    res = net.resolved
    trunk = [st.outputs[0] for st in res.steps if st.layer.type == "Eltwise" and st.layer.name.startswith("res")]
    assert len(trunk) == 16
    for v in trunk:
        assert 0.05 < float(vals[v].double().std()) < 2.0, v


@pytest.mark.slow
@needs_corpus
def test_calibration_batch_bounded_by_max_batch():
    """PVANet's Proposal layer takes one image (max_batch 1): the calibration batch is lowered
    to it (before, seeded_weights at its default batch 2 raised 'only single item batches')."""
    rel = "sanghoon_pva-faster-rcnn/models/pvanet/example_train/test.prototxt"
    shapes = {"data": "1,3,64,96", "im_info": "1,6"}
    a = seeded_weights(load_model(CORPUS / rel, input_shape=shapes), 0)
    b = seeded_weights(load_model(CORPUS / rel, input_shape=shapes), 0, batch=1)
    n = 0
    for la, lb in zip(a.layers, b.layers):
        for x, y in zip(la.blobs or [], lb.blobs or []):
            assert np.array_equal(x, y), la.name
            n += 1
    assert n > 100
