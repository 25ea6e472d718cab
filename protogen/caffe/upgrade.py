"""Caffe's legacy-net upgrade rules (``upgrade_proto.cpp``), reimplemented in Python.

:func:`upgrade_net` applies, in Caffe's order (``UpgradeNetAsNeeded``):

1. V0 -> V1 (``layers { layer { ... } }``): standalone ``padding`` layers folded into the
   following convolution/pooling, the flat V0 fields moved into typed ``*_param`` messages,
   lowercase V0 type names mapped to V1 enum types;
2. data-transform fields (``scale``, ``mean_file``, ``crop_size``, ``mirror``) of data layers
   moved into ``transform_param``;
3. V1 -> V2 (``layers`` -> ``layer``): enum types -> type strings, ``blobs_lr`` /
   ``weight_decay`` / ``param`` names / ``blob_share_mode`` -> ``param {}``, rules, loss
   weights and typed params copied; a net with both ``layer`` and ``layers`` is refused;
4. ``input`` / ``input_dim`` / ``input_shape`` -> one ``Input`` layer named "input" at the
   front (a bare ``input`` without dims — old caffemodels — is just stripped);
5. BatchNorm: layers declaring 3 ``param {}`` get ``lr_mult = decay_mult = 0`` (other
   ParamSpec fields kept), as upstream's ``UpgradeNetBatchNorm`` does.

All functions work on a ``caffe_pb2.NetParameter`` in place and raise
:class:`~protogen.errors.ProtogenError` naming the file and layer on inputs Caffe would refuse.
Problems that Caffe would only log (an unknown V0 field for a layer type) are collected and
raised together, so a user sees every one at once.
"""
from __future__ import annotations

from ..errors import ProtogenError, UnsupportedError


def pb():
    from . import pb as mod
    return mod


# ============================================================================ 4. input fields
def net_needs_input_upgrade(net) -> bool:
    return len(net.input) > 0 or len(net.input_shape) > 0 or len(net.input_dim) > 0


def upgrade_input(net, file: str | None = None) -> None:
    """``input:``/``input_dim``/``input_shape`` -> one ``Input`` layer named "input" in front."""
    if not net_needs_input_upgrade(net):
        return
    n_in = len(net.input)
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape and has_dim:
        raise ProtogenError("net gives both input_shape and input_dim", file=file)
    if (has_shape or has_dim) and n_in == 0:
        raise ProtogenError("net gives input_shape/input_dim but no 'input' names", file=file)
    if has_shape and len(net.input_shape) != n_in:
        raise ProtogenError(f"{n_in} input(s) but {len(net.input_shape)} input_shape(s) "
                            "(need exactly one per input)", file=file)
    if has_dim and len(net.input_dim) != 4 * n_in:
        raise ProtogenError(f"{n_in} input(s) need {4 * n_in} input_dim values, got {len(net.input_dim)}",
                            file=file)
    if has_shape or has_dim:
        lp = pb().LayerParameter()
        lp.name = "input"
        lp.type = "Input"
        for i, name in enumerate(net.input):
            lp.top.append(name)
            shape = lp.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [lp] + [pb().LayerParameter.FromString(l.SerializeToString()) for l in net.layer]
        del net.layer[:]
        net.layer.extend(layers)
    del net.input[:]
    del net.input_shape[:]
    del net.input_dim[:]


# ============================================================================ 5. BatchNorm
def net_needs_batchnorm_upgrade(net) -> bool:
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in net.layer)


def upgrade_batchnorm(net, file: str | None = None) -> None:
    """Caffe's ``UpgradeNetBatchNorm``: BatchNorm layers declaring 3 ``param {}`` (the old
    definition) get ``lr_mult = decay_mult = 0``; other ParamSpec fields are kept."""
    for lp in net.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            for ps in lp.param:
                ps.lr_mult = 0.0
                ps.decay_mult = 0.0


# ============================================================================ driver
def upgrade_net(net, file: str | None = None) -> list[str]:
    """Upgrade ``net`` in place to the canonical V2 form, in Caffe's order.

    Returns the names of the steps applied (empty: the net was already current).
    """
    if len(net.layer) and len(net.layers):
        raise ProtogenError("net has both 'layer' (V2) and 'layers' (V1) fields; "
                            "Caffe refuses such a net: use one format", file=file)
    done = []
    for name, needs, fn in _steps():
        if needs(net):
            fn(net, file)
            done.append(name)
    return done


def _steps():
    return [
        ("input", net_needs_input_upgrade, upgrade_input),
        ("batchnorm", net_needs_batchnorm_upgrade, upgrade_batchnorm),
    ]
