"""Calibrated seeded weights for nets whose normalisation was folded away at deployment.

Part of :func:`protogen.weights.calibrate_batchnorm` (the same single seeded pass, the same
targets). Deployed Caffe nets often have no BatchNorm left: ResNet ports whose BatchNorm is
folded into a ``Scale`` with bias (cascade R-CNN's res50 nets: 53 Scale, no BatchNorm), or
folded entirely into the convolutions' weights and biases (ENet's ``enet_deploy_final``).
With drawn weights their activations grow block by block (residual sums add variance that
nothing takes out again: ~600x by res5 of ResNet-50, ~10^4x through ENet's encoder) and
the outputs saturate. Two kinds of layer therefore calibrate like a BatchNorm does, to the
per-channel output mean/std the caller asks for (mean 1, std 1; a residual branch's end:
mean 0, std 0.2):

* **folded-BatchNorm Scale**: a one-bottom ``Scale`` with a bias, per channel (axis 1,
  num_axes 1), right after a layer with weights (a convolution: where the BatchNorm stood)
  that does not calibrate itself (``kind.calibrates``; a Scale right after a BatchNorm is that
  BatchNorm's affine part, calibrated with it). From the input's per-channel mean m and
  variance v (floored as BatchNorm's): gamma = std / sqrt(v), beta = mean - gamma * m.
* **folded-BatchNorm Convolution**, only inside a chain of residual sums (layer types with
  ``joins_residual``): reading a sum's result and read by a later sum, with no
  BatchNorm-like layer in between. There each block adds a branch whose output is
  proportional to its input, so without a normaliser the trunk grows geometrically with
  depth. Elsewhere (a plain chain: VGG, FCN's trunk, GoogLeNet; a head after the last sum,
  SSH's detection modules after its one feature fusion) the He-normal draw preserves the
  scale by design and stays as drawn. A
  one-bottom ``Convolution`` with a bias whose output has one reader: a rectifier
  (``RECTIFIERS``) not followed by a calibrating layer, or the sum itself (a branch end:
  the small-branch target, as a BatchNorm there). From the per-channel mean m and variance v
  of its output without bias on the batch: weights scaled by a = std / sqrt(v) per output
  channel, bias = mean - a * m. Inception-ResNet's linear 1x1 "up" convolutions end branches
  too, but read BatchNorm'd values (not downstream of an unnormalised sum): left as drawn.

Nets whose every convolution reads into a BatchNorm (the zoo) get exactly the weights they
got before. Numpy and torch; the torch part runs inside the calibration hook.
"""
from __future__ import annotations

import numpy as np

#: layer types after which a calibrated convolution's output is read as a pre-activation
RECTIFIERS = frozenset({"ReLU", "PReLU", "ELU", "ReLU6"})


def _is_conv(kind) -> bool:
    from .layers.conv import Convolution
    return isinstance(kind, Convolution)


def _folded_scale(res, st) -> bool:
    p = st.layer.params
    if len(st.inputs) != 1 or not p.bias_term or p.num_axes != 1:
        return False
    if len(st.in_shapes[0]) < 2 or p.axis % len(st.in_shapes[0]) != 1:
        return False
    prod = res.producer.get(st.inputs[0])
    if prod is None or prod.layer.kind.calibrates:
        return False
    # where the BatchNorm stood: right after a layer with weights (a convolution)
    return bool(prod.layer.kind.weight_shapes(prod.layer.params, prod.in_shapes))


def _after_unnormalised_sum(res) -> set[str]:
    """SSA values computed from a residual sum (``joins_residual``) with no calibrating layer
    (BatchNorm-like) in between."""
    out: set[str] = set()
    for st in res.steps:
        kind = st.layer.kind
        if kind.calibrates:
            continue
        if kind.joins_residual or any(v in out for v in st.inputs):
            out.update(st.outputs)
    return out


def _folded_conv(res, st) -> bool:
    if len(st.inputs) != 1 or len(st.outputs) != 1 or not st.layer.params.bias_term:
        return False
    users = res.consumers(st.outputs[0])
    if len(users) != 1 or res.is_output(st.outputs[0]):
        return False
    u = users[0]
    if u.layer.kind.joins_residual:
        return True
    if u.layer.type not in RECTIFIERS:
        return False
    return not any(c.layer.kind.calibrates for c in res.consumers(u.outputs[0]))


def _reaching_a_sum(res) -> set[str]:
    """SSA values from which a residual sum is reached with no calibrating layer in between."""
    out: set[str] = set()
    for st in reversed(res.steps):
        kind = st.layer.kind
        if kind.calibrates:
            continue
        if kind.joins_residual or any(v in out for v in st.outputs):
            out.update(st.inputs)
    return out


def affine_plan(res) -> set[int]:
    """Indices of the steps of ``res`` (a Resolved deploy/TEST view) that calibrate as folded
    BatchNorms (see the module docstring)."""
    from .layers.norm import Scale
    summed, summing = _after_unnormalised_sum(res), _reaching_a_sum(res)
    out = set()
    for st in res.steps:
        kind = st.layer.kind
        if kind.calibrates:
            continue
        if isinstance(kind, Scale) and _folded_scale(res, st):
            out.add(st.index)
        elif (_is_conv(kind) and st.inputs and st.inputs[0] in summed and st.outputs
              and st.outputs[0] in summing and _folded_conv(res, st)):
            # a branch end (read by the sum itself) gets the caller's small-branch target
            out.add(st.index)
    return out


def _channel_stats(y, var_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and variance of tensor ``y`` in float64, the variances
    floored at ``var_floor`` times their mean (as BatchNorm's calibration)."""
    y = y.double()
    axes = [0] + list(range(2, y.dim()))
    mean = y.mean(axes).cpu().numpy()
    var = y.var(axes, unbiased=False).cpu().numpy()
    return mean, np.maximum(var, var_floor * float(var.mean()) + 1e-12)


def affine_blobs(st, xs, out_mean: float, out_std: float, var_floor: float) -> list:
    """Blobs (float32) of step ``st`` (a step of :func:`affine_plan`) that give its output
    per-channel mean ``out_mean`` and std ``out_std`` on the calibration inputs ``xs``."""
    import torch
    l = st.layer
    kind = l.kind
    if _is_conv(kind):
        w = np.asarray(l.blobs[0], np.float32)
        zero = torch.zeros(w.shape[0], dtype=xs[0].dtype)
        y, = kind.torch_forward(l.params, xs, [torch.from_numpy(w).to(xs[0].dtype), zero])
        m, v = _channel_stats(y, var_floor)
        a = out_std / np.sqrt(v)
        w = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
        return [w.astype(np.float32), (out_mean - a * m).astype(np.float32)]
    m, v = _channel_stats(xs[0], var_floor)
    gamma = out_std / np.sqrt(v)
    shape = np.shape(l.blobs[0])
    return [gamma.reshape(shape).astype(np.float32), (out_mean - gamma * m).reshape(shape).astype(np.float32)]
