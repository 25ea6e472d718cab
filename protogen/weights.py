"""Seeded weights that keep activations healthy through deep nets.

Convolutions and fully-connected layers get He-normal weights (std sqrt(2/fan_in); fan_in
only for the last classifier), biases are small; BatchNorm statistics are drawn around what
He-initialised convolutions produce (mean ~ N(0, 0.5^2), variance ~ U(1, 2)), with the scale
factor blob 1; Scale gammas ~ U(0.8, 1.2). Each layer draws from its own generator seeded
by (seed, layer name), so the same layer gets the same weights in every net and format.
BatchNorm-like layers are then calibrated on a seeded batch (:func:`calibrate_batchnorm`), and
so are the layers that stand for a BatchNorm folded away at deployment: a Scale with bias right
after a convolution, and, downstream of a residual sum with no BatchNorm in between, a
Convolution with bias read by a rectifier (:mod:`protogen.calibrate_affine`).
"""
from __future__ import annotations

import zlib

import numpy as np

from .ir import DEPLOY, Graph
from .seed_heads import scale_seeded_heads


def layer_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def init_weights(graph: Graph, seed: int = 0, net: str = DEPLOY) -> Graph:
    """Fill ``layer.blobs`` of every layer of ``net`` that has weights with drawn values (in
    place, every phase's view); returns graph. Most callers want :func:`seeded_weights`."""
    done = set()
    for res in graph.resolve_phases(net):
        for st in res.steps:
            l = st.layer
            if l.name in done:
                continue
            done.add(l.name)
            kind = l.kind
            if kind.weight_shapes(l.params, st.in_shapes):
                l.blobs = kind.init_weights(l.params, st.in_shapes, layer_rng(seed, l.name))
    return graph


def needs_calibration(graph: Graph) -> bool:
    """Whether some layer's seeded weights are set by :func:`calibrate_batchnorm`: a
    BatchNorm-like layer, or a folded BatchNorm (:mod:`protogen.calibrate_affine`)."""
    if any(l.kind.calibrates for l in graph.layers):
        return True
    from .calibrate_affine import affine_plan
    from .ir import TEST
    return bool(affine_plan(graph.select(net=DEPLOY, phase=TEST).resolve()))


def seeded_weights(graph: Graph, seed: int = 0, net: str = DEPLOY, batch: int = 2) -> Graph:
    """The one way to make seeded weights (emit, convert, verify, stats): drawn weights
    (:func:`init_weights`), then, when the net has BatchNorm-like layers, their statistics
    calibrated on a seeded batch (:func:`calibrate_batchnorm`; needs torch), so that a deep
    seeded net stays well-conditioned and its outputs depend on its input. In place; returns
    graph. Calibration runs on the deploy/TEST view with batch ``batch`` (statistics are
    per channel, so the batch used does not change their shapes)."""
    init_weights(graph, seed, net)
    if needs_calibration(graph.select(net=DEPLOY)):
        calibrate_batchnorm(graph, seed, batch)
    scale_seeded_heads(graph, net)    # heads a decoding layer asks to scale (SSH: protogen.seed_heads)
    return graph


def seeded_input(shape, seed: int = 0) -> np.ndarray:
    """The verification input: standard normal, seeded."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 7]).standard_normal(shape).astype(np.float32)


#: standard deviation of a residual branch's output after calibration (its mean is 0)
RESIDUAL_BRANCH_STD = 0.2
#: floor of a channel variance, relative to the mean over channels
VAR_FLOOR = 0.25
#: mean of every other calibrated BatchNorm output, in units of its standard deviation: the
#: ReLU that follows passes ~84% of the values (Phi(1)), so the net stays close to linear and
#: a small perturbation (float32 rounding) is not amplified layer by layer; see docs/verify.md
BN_OUTPUT_MEAN = 1.0


def calibrate_batchnorm(graph: Graph, seed: int = 0, batch: int = 2) -> Graph:
    """Set every BatchNorm's statistics to its input's actual per-channel mean and variance
    on a seeded calibration batch (in place; returns graph).

    Drawn statistics leave a random per-channel offset after each BatchNorm, and the
    input-dependent part of the activations fades through tens of layers (outputs that barely
    depend on the input prove little). Calibrating layer by layer, in one float32 pass of the
    PyTorch reference executor (:class:`protogen.torch_ref.TorchNet` with a hook that asks
    each layer type with ``calibrates`` for its blobs), keeps activations normalised through
    100+ layers: each BatchNorm output gets per-channel standard deviation 1 and mean
    ``BN_OUTPUT_MEAN`` (1), except the one that ends a residual branch (its result reaches a
    layer type with ``joins_residual``, Eltwise): standard deviation ``RESIDUAL_BRANCH_STD``,
    mean 0. With zero-mean outputs (or half the mean removed, as before) the ReLU nets were
    chaotic: a 1e-7 input perturbation grew up to ~1000x inside Inception-v4 (162x at its
    output), and float32 rounding with it; now at most ~6x (1.5x at the output). The
    calibration input (``seed + 1000``) differs from the verification input. Needs torch;
    ``protogen emit`` of a prototxt does not call it.

    Nets whose BatchNorms were folded away at deployment (into a ``Scale`` with bias, or into
    a convolution's weights and bias: ResNet and ENet deploy files) calibrate those layers in
    the same pass to the same targets (:mod:`protogen.calibrate_affine`).
    """
    import torch

    from .ir import TEST
    from .torch_ref import TorchNet
    view = graph.select(net=DEPLOY, phase=TEST)
    # a layer that takes at most max_batch images (proposal layers: 1) bounds the batch
    batch = min([batch] + [l.kind.max_batch for l in view.layers if getattr(l.kind, "max_batch", None)])
    shapes = {blob: (batch,) + tuple(s[1:]) for blob, _, s in view.resolve().inputs}
    # float32: the statistics become float32 blobs anyway, and this pass costs what a
    # verification's reference pass costs (float64 convolutions run ~2.3x slower here)
    net = TorchNet.from_graph(view, shapes)
    res = net.resolved

    def ends_residual_branch(st) -> bool:
        # BatchNorm (+ an in-place affine such as Scale) whose result is summed by an Eltwise
        v = st.outputs[0]
        for _ in range(3):
            nxt = res.consumers(v)
            if any(c.layer.kind.joins_residual for c in nxt):
                return True
            if len(nxt) != 1 or nxt[0].layer.kind.batchnorm_affine(nxt[0]) is None:
                return False
            v = nxt[0].outputs[0]
        return False

    from .calibrate_affine import affine_blobs, affine_plan
    folded = affine_plan(res)       # Scale / Convolution standing for a folded BatchNorm

    def hook(st, xs):
        l = st.layer
        if not l.kind.calibrates and st.index not in folded:
            return None
        if ends_residual_branch(st):
            # residual branches start small (cf. zero-gamma init, Goyal et al. 2017):
            # otherwise the sum grows and rounding differences amplify block by block
            mean, std = 0.0, RESIDUAL_BRANCH_STD
        else:
            # output mean +1 std: mostly-active ReLUs keep the net well-conditioned
            mean, std = BN_OUTPUT_MEAN, 1.0
        if st.index in folded:
            l.blobs = affine_blobs(st, xs, mean, std, VAR_FLOOR)
        else:
            l.blobs = l.kind.calibrated_blobs(l.params, xs[0], mean, std, VAR_FLOOR)
        return l.blobs

    # inputs by role (protogen.seed_inputs: a detector's im_info/rois as its layers declare;
    # standard-normal im_info gave PVANet's Proposal no boxes), the rest seed + 1000 + k
    from .seed_inputs import seeded_feeds
    feeds = {v: torch.from_numpy(a) for v, a in seeded_feeds(
        res, lambda shape, k: seeded_input(shape, seed + 1000 + k), seed + 1000).items()}
    with torch.no_grad():
        net(feeds, hook=hook)
    return graph
