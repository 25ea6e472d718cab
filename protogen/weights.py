"""Seeded weights that keep activations healthy through deep nets.

Convolutions and fully-connected layers get He-normal weights (std sqrt(2/fan_in); fan_in
only for the last classifier), biases are small; BatchNorm statistics are drawn around what
He-initialised convolutions produce (mean ~ N(0, 0.5^2), variance ~ U(1, 2)), with the scale
factor blob 1; Scale gammas ~ U(0.8, 1.2). Each layer draws from its own generator seeded
by (seed, layer name), so the same layer gets the same weights in every net and format.
"""
from __future__ import annotations

import zlib

import numpy as np

from .ir import DEPLOY, Graph


def layer_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def init_weights(graph: Graph, seed: int = 0, net: str = DEPLOY) -> Graph:
    """Fill ``layer.blobs`` of every layer of ``net`` that has weights (in place); returns graph."""
    view = graph.select(net=net)
    phases = {p for l in view.layers if l.phases for p in l.phases}
    done = set()
    for ph in (sorted(phases) or [None]):
        for st in view.select(phase=ph).steps():
            l = st.layer
            if l.name in done:
                continue
            done.add(l.name)
            kind = l.kind
            if kind.weight_shapes(l.params, st.in_shapes):
                l.blobs = kind.init_weights(l.params, st.in_shapes, layer_rng(seed, l.name))
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
    depend on the input prove little). Calibrating layer by layer, in one float64 pass of the
    PyTorch reference (each layer's own ``torch_forward``), keeps activations normalised
    through 100+ layers: each BatchNorm output gets per-channel standard deviation 1 and mean
    ``BN_OUTPUT_MEAN`` (1), except the one that ends a residual branch (its result reaches an
    Eltwise): standard deviation ``RESIDUAL_BRANCH_STD``, mean 0. With zero-mean outputs
    (or half the mean removed, as before) the ReLU nets were chaotic: a 1e-7 input
    perturbation grew up to ~1000x inside Inception-v4 (162x at its output), and float32
    rounding with it; now at most ~6x (1.5x at the output). The
    calibration input (``seed + 1000``) differs from the verification input. Needs torch;
    ``protogen emit`` does not call it.
    """
    import torch

    from .ir import TEST
    from .layers.base import layer_blobs
    from .layers.norm import BatchNorm
    view = graph.select(net=DEPLOY, phase=TEST)
    shapes = {t: (batch,) + tuple(s[1:]) for l in view.input_layers() if l.type == "Input"
              for t, s in zip(l.tops, l.kind.output_shapes(l.params, [], len(l.tops)))}
    steps = view.steps(shapes)
    last_use = {}
    consumers: dict = {}
    for i, st in enumerate(steps):
        for v in st.inputs:
            last_use[v] = i
            consumers.setdefault(v, []).append(st)

    def ends_residual_branch(st) -> bool:
        # BatchNorm (+ an in-place affine such as Scale) whose result is summed by an Eltwise
        v = st.outputs[0]
        for _ in range(3):
            nxt = consumers.get(v, [])
            if any(c.layer.type == "Eltwise" for c in nxt):
                return True
            if len(nxt) != 1 or nxt[0].layer.kind.batchnorm_affine(nxt[0]) is None:
                return False
            v = nxt[0].outputs[0]
        return False
    env: dict = {}
    with torch.no_grad():
        for i, st in enumerate(steps):
            l, kind = st.layer, st.layer.kind
            if kind.is_input:
                for v, s in zip(st.outputs, st.out_shapes):
                    env[v] = torch.from_numpy(seeded_input(s, seed + 1000 + len(env))).double()
                continue
            xs = [env[v] for v in st.inputs]
            if isinstance(kind, BatchNorm):
                x = xs[0]
                axes = [0] + list(range(2, x.dim()))
                mean = x.mean(axes).numpy()
                var = x.var(axes, unbiased=False).numpy()
                # a (near-)constant channel would amplify rounding noise by 1/sqrt(eps)
                var = np.maximum(var, VAR_FLOOR * float(var.mean()) + 1e-12)
                if ends_residual_branch(st):
                    # residual branches start small (cf. zero-gamma init, Goyal et al. 2017):
                    # otherwise the sum grows and rounding differences amplify block by block
                    var = var / RESIDUAL_BRANCH_STD ** 2
                else:
                    # output mean +1 std: mostly-active ReLUs keep the net well-conditioned
                    mean = mean - BN_OUTPUT_MEAN * np.sqrt(var)
                l.blobs = [mean.astype(np.float32), var.astype(np.float32), np.ones(1, np.float32)]
            blobs = [torch.from_numpy(b).double() for b in layer_blobs(st)]
            outs = kind.torch_forward(l.params, xs, blobs, len(st.outputs))
            for v, o in zip(st.outputs, outs):
                env[v] = o
            for v in st.inputs:
                if last_use.get(v) == i:
                    env.pop(v, None)
    return graph
