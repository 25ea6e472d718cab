"""What Caffe puts in a layer's blobs when the caffemodel has none for it.

Caffe's ``Net::CopyTrainedLayersFrom`` (BVLC/caffe src/caffe/net.cpp) only overwrites the
blobs of layers the caffemodel names; every other layer keeps what its ``LayerSetUp`` gave it:
the prototxt's filler, or the layer's own default when the prototxt sets none. This module
knows, per parameter message (schema knowledge, not per backend), which filler fills which
blob and the C++ default:

* convolution_param / inner_product_param / embed_param: weight_filler, bias_filler; an unset
  FillerParameter is ``constant`` 0 (caffe.proto default), so the blobs are zero;
* prelu_param.filler: constant 0.25 when unset (prelu_layer.cpp LayerSetUp);
* scale_param: filler constant 1 when unset (scale_layer.cpp), bias_filler constant 0;
* bias_param.filler: constant 0 (bias_layer.cpp);
* norm_param.scale_filler: constant 1 when unset (weiliu89/caffe normalize_layer.cpp);
* batch_norm_param: all three blobs set to 0 (batch_norm_layer.cpp LayerSetUp).

Deterministic fillers (constant, bilinear) give Caffe's exact values; random ones (gaussian,
uniform, xavier, msra, positive_unitball and NVIDIA's ``*static`` variants) cannot be
reproduced, so such a layer is refused.
"""
from __future__ import annotations

import math

from .._lazy import numpy as np

#: per parameter message: (filler field or None, Caffe's default (type, value)) per blob
BLOB_FILLERS = {
    "convolution_param": (("weight_filler", ("constant", 0.0)), ("bias_filler", ("constant", 0.0))),
    "inner_product_param": (("weight_filler", ("constant", 0.0)), ("bias_filler", ("constant", 0.0))),
    "embed_param": (("weight_filler", ("constant", 0.0)), ("bias_filler", ("constant", 0.0))),
    "prelu_param": (("filler", ("constant", 0.25)),),
    "scale_param": (("filler", ("constant", 1.0)), ("bias_filler", ("constant", 0.0))),
    "bias_param": (("filler", ("constant", 0.0)),),
    "norm_param": (("scale_filler", ("constant", 1.0)),),
    "batch_norm_param": ((None, ("constant", 0.0)),) * 3,
}

DETERMINISTIC = ("constant", "bilinear")


def bilinear(shape) -> np.ndarray:
    """Caffe's BilinearFiller (BVLC/caffe master include/caffe/filler.hpp): an upsampling
    kernel for a Deconvolution; square kernels only. f = ceil(k/2), c = (k-1)/(2f),
    w[y, x] = (1 - |x/f - c|)(1 - |y/f - c|), the same for every (output, input) pair."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"the bilinear filler needs a 4-D blob with a square kernel, got {shape}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * f)
    idx = np.arange(int(np.prod(shape)))
    x = idx % k
    y = (idx // k) % k
    vals = (1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))
    return vals.astype(np.float32).reshape(shape)


def filler_spec(lp_fillers: dict, param_field: str | None, i: int):
    """(field name, type, value, FillerParameter or None) for blob ``i`` of a layer whose
    param message is ``param_field``; None when protogen does not know the layer's rule."""
    rules = BLOB_FILLERS.get(param_field or "")
    if rules is None or i >= len(rules):
        return None
    field, (dtype, dval) = rules[i]
    fp = lp_fillers.get(field) if field else None
    if fp is None:
        return field, dtype, dval, None
    return field, fp.type, float(fp.value), fp


def initial_blob(spec, shape) -> np.ndarray:
    field, ftype, value, _ = spec
    if ftype == "constant":
        return np.full(tuple(int(d) for d in shape), value, dtype=np.float32)
    if ftype == "bilinear":
        return bilinear(shape)
    raise ValueError(ftype)


def fillers_of(lp) -> dict:
    """The FillerParameter fields set in ``lp``'s parameter message(s), by field name."""
    out = {}
    for fd, msg in lp.ListFields():
        if fd.message_type is None or not fd.name.endswith("_param") or not hasattr(msg, "ListFields"):
            continue
        for sub, val in msg.ListFields():
            if sub.message_type is not None and sub.message_type.name == "FillerParameter":
                out[sub.name] = val
    return out
