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
   ParamSpec fields kept), as upstream's ``UpgradeNetBatchNorm`` does;
6. fork spellings with an upstream equivalent: OpenCV's / PR #3057's pooling
   ``ceil_mode: B`` becomes ``round_mode: CEIL`` (B true) or ``FLOOR`` (B false).

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


# ============================================================================ 1. V0 -> V1
#: UpgradeV0LayerType: V0 lowercase type strings -> V1 enum names
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# UpgradeV0LayerParameter: V0 field -> {V0 type: (typed param field, field in it)}.
# Fields whose target does not depend on the type use the key "*".
_V0_FIELDS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}


def net_needs_v0_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def _fold_v0_padding(net, file, problems) -> None:
    """UpgradeV0PaddingLayers: a ``padding`` layer's pad moves into the conv/pool reading it."""
    last_top: dict[str, int] = {b: -1 for b in net.input}
    layers = list(net.layers)
    kept = []
    for i, conn in enumerate(layers):
        v0 = conn.layer
        new = pb().V1LayerParameter()
        new.CopyFrom(conn)
        for j, b in enumerate(conn.bottom):
            if b not in last_top:
                raise ProtogenError(f"unknown bottom blob '{b}' (no earlier layer produces it)",
                                    file=file, layer=v0.name or conn.name)
            src = last_top[b]
            if src == -1:
                continue
            source = layers[src]
            if source.layer.type != "padding":
                continue
            where = v0.name or f"#{i}"
            if v0.type not in ("conv", "pool"):
                problems.append((where, v0.type, "a padding layer feeds a layer that is not conv/pool"))
                continue
            if len(conn.bottom) != 1 or len(source.bottom) != 1 or len(source.top) != 1:
                problems.append((where, v0.type, "padding layers must have one bottom and one top "
                                 "and feed a single-input layer"))
                continue
            new.layer.pad = source.layer.pad
            new.bottom[j] = source.bottom[0]
        if v0.type != "padding":
            kept.append(new)
        for t in conn.top:
            last_top[t] = i
    del net.layers[:]
    net.layers.extend(kept)


def _v0_layer_to_v1(conn, problems):
    v1 = pb().V1LayerParameter()
    v1.bottom.extend(conn.bottom)
    v1.top.extend(conn.top)
    v0 = conn.layer
    if v0.HasField("name"):
        v1.name = v0.name
    t = v0.type
    name = v0.name
    if v0.HasField("type"):
        if t in V0_TYPES:
            v1.type = pb().V1LayerParameter.LayerType.Value(V0_TYPES[t])
        else:
            problems.append((name, t, f"unknown V0 layer type '{t}'"))
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for fd, value in v0.ListFields():
        if fd.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        targets = _V0_FIELDS.get(fd.name)
        target = None if targets is None else targets.get(t, targets.get("*"))
        if target is None:
            problems.append((name, t, f"V0 field '{fd.name}' is not used by layer type '{t}'"))
            continue
        msg_field, sub = target
        msg = getattr(v1, msg_field)
        if sub is None:
            msg.CopyFrom(value)
        elif fd.message_type is not None:
            getattr(msg, sub).CopyFrom(value)
        elif fd.name == "pool":
            msg.pool = pb().PoolingParameter.PoolMethod.Value(
                pb().V0LayerParameter.PoolMethod.Name(value))
        else:
            target_fd = msg.DESCRIPTOR.fields_by_name[sub]
            if target_fd.is_repeated:
                getattr(msg, sub).append(value)
            else:
                setattr(msg, sub, value)
    return v1


def upgrade_v0_to_v1(net, file: str | None = None) -> None:
    """UpgradeV0Net: fold padding layers, then map every V0 layer to a V1 layer."""
    problems: list = []
    _fold_v0_padding(net, file, problems)
    conns = list(net.layers)
    del net.layers[:]
    for conn in conns:
        if conn.HasField("layer"):
            net.layers.append(_v0_layer_to_v1(conn, problems))
        else:
            net.layers.append(conn)
    if problems:
        raise UnsupportedError(problems, file=file)


# ============================================================================ 2. data transform
_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _data_param_of(lp):
    name = pb().V1LayerParameter.LayerType.Name(lp.type) if lp.HasField("type") else ""
    field = _DATA_PARAMS.get(name)
    return getattr(lp, field) if field and lp.HasField(field) else None


def net_needs_data_upgrade(net) -> bool:
    for lp in net.layers:
        d = _data_param_of(lp)
        if d is not None and any(d.HasField(f) for f in _TRANSFORM_FIELDS):
            return True
    return False


def upgrade_data_transform(net, file: str | None = None) -> None:
    """UpgradeNetDataTransformation: data-layer scale/mean_file/crop_size/mirror -> transform_param."""
    for lp in net.layers:
        d = _data_param_of(lp)
        if d is None:
            continue
        for f in _TRANSFORM_FIELDS:
            if d.HasField(f):
                setattr(lp.transform_param, f, getattr(d, f))
                d.ClearField(f)


# ============================================================================ 3. V1 -> V2
#: UpgradeV1LayerType: V1 enum names -> V2 type strings
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
    # facebookarchive/C3D's V1 enum types (C3D reads V1 files only): the registry's type
    # strings (protogen/layers/c3d.py). C3D-v1.1's V2 files spell the first two the same;
    # its "VideoData" reads video_data_param, which here is the SSD fork's webcam/video
    # source, so VIDEO_DATA (image_data_param.new_length clips) keeps a name of its own.
    "CONVOLUTION3D": "Convolution3D", "POOLING3D": "Pooling3D", "VIDEO_DATA": "C3DVideoData",
}

_V1_COPIED = ("name", "bottom", "top", "include", "exclude", "loss_weight", "blobs")
_V1_PARAMSPEC = ("type", "param", "blob_share_mode", "blobs_lr", "weight_decay", "layer")


def net_needs_v1_upgrade(net) -> bool:
    return len(net.layers) > 0


def _v1_layer_to_v2(v1, problems):
    lp = pb().LayerParameter()
    for f in _V1_COPIED:
        if f in ("name",):
            if v1.HasField(f):
                lp.name = v1.name
        else:
            getattr(lp, f).extend(getattr(v1, f))
    if v1.HasField("type"):
        enum = pb().V1LayerParameter.LayerType.Name(v1.type)
        if enum == "NONE":
            problems.append((v1.name, "NONE", "V1 layer type NONE"))
        else:
            lp.type = V1_TYPES.get(enum, enum)
    def spec(i):
        while len(lp.param) <= i:
            lp.param.add()
        return lp.param[i]
    for i, n in enumerate(v1.param):
        spec(i).name = n
    for i, m in enumerate(v1.blob_share_mode):
        spec(i).share_mode = m
    for i, v in enumerate(v1.blobs_lr):
        spec(i).lr_mult = v
    for i, v in enumerate(v1.weight_decay):
        spec(i).decay_mult = v
    if v1.HasField("layer"):
        problems.append((v1.name, lp.type or "?", "a V1 layer also holds a V0 layer definition"))
    lp_fields = lp.DESCRIPTOR.fields_by_name
    for fd, value in v1.ListFields():
        if fd.name in _V1_COPIED or fd.name in _V1_PARAMSPEC:
            continue
        if fd.name not in lp_fields:
            problems.append((v1.name, lp.type, f"V1 field '{fd.name}' has no V2 counterpart"))
            continue
        getattr(lp, fd.name).CopyFrom(value)
    return lp


def upgrade_v1_to_v2(net, file: str | None = None) -> None:
    """UpgradeV1Net: every ``layers {}`` becomes a ``layer {}``."""
    if len(net.layer):
        raise ProtogenError("net has both 'layer' (V2) and 'layers' (V1) fields; "
                            "Caffe refuses such a net: use one format", file=file)
    problems: list = []
    new = [_v1_layer_to_v2(v1, problems) for v1 in net.layers]
    if problems:
        raise UnsupportedError(problems, file=file)
    del net.layers[:]
    net.layer.extend(new)


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


# ============================================================================ 6. fork spellings
def net_needs_fork_upgrade(net) -> bool:
    return any(lp.pooling_param.HasField("ceil_mode") for lp in net.layer if lp.HasField("pooling_param"))


def upgrade_fork_fields(net, file: str | None = None) -> None:
    """``pooling_param { ceil_mode: B }`` (OpenCV's schema and forks built on BVLC PR #3057:
    a bool, default true = ceil) -> upstream's ``round_mode`` (CEIL = 0, FLOOR = 1). Both
    given and disagreeing is refused, naming the layer."""
    P = pb().PoolingParameter
    for lp in net.layer:
        pp = lp.pooling_param
        if not lp.HasField("pooling_param") or not pp.HasField("ceil_mode"):
            continue
        want = P.CEIL if pp.ceil_mode else P.FLOOR
        if pp.HasField("round_mode") and pp.round_mode != want:
            raise ProtogenError(f"pooling_param gives ceil_mode: {str(pp.ceil_mode).lower()} and "
                                f"round_mode: {P.RoundMode.Name(pp.round_mode)}, which disagree",
                                file=file, layer=lp.name)
        pp.round_mode = want
        pp.ClearField("ceil_mode")


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
        ("v0", net_needs_v0_upgrade, upgrade_v0_to_v1),
        ("data", net_needs_data_upgrade, upgrade_data_transform),
        ("v1", net_needs_v1_upgrade, upgrade_v1_to_v2),
        ("input", net_needs_input_upgrade, upgrade_input),
        ("batchnorm", net_needs_batchnorm_upgrade, upgrade_batchnorm),
        ("fork", net_needs_fork_upgrade, upgrade_fork_fields),
    ]
