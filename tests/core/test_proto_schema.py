"""Checks for proto/caffe.proto and the committed protogen/caffe/caffe_pb2.py.

Three layers of checking:

(a) the committed bindings are up to date with proto/caffe.proto (requires
    grpc_tools; skipped when it is not installed);
(b) a hand-written table of facts taken from upstream BVLC Caffe's schema
    agrees with our descriptors (wire compatibility);
(c) real prototxt snippets in both the current (V2 ``layer {}``) and legacy
    (V1 ``layers {}``) syntax parse with google.protobuf.text_format.
"""
from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from google.protobuf.descriptor import FieldDescriptor

from protogen.caffe import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_proto.py"


# ---------------------------------------------------------------------------
# (a) committed bindings match the .proto source
# ---------------------------------------------------------------------------


def _load_gen_script():
    spec = importlib.util.spec_from_file_location("_gen_proto", GEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serialized_descriptor_from_source(path: Path) -> bytes:
    """Pull the bytes literal passed to AddSerializedFile out of a _pb2.py.

    The generated module is not imported: its descriptor would clash with the
    already-loaded committed one in the default pool (same "caffe.proto").
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            return ast.literal_eval(node.args[0])
    raise AssertionError(f"no AddSerializedFile(...) call in {path}")


def test_committed_bindings_match_proto_source(tmp_path):
    pytest.importorskip("grpc_tools.protoc")
    generated = _load_gen_script().generate(tmp_path)
    fresh = _serialized_descriptor_from_source(generated)

    # 1. Byte-exact: the FileDescriptorProto protoc just produced is the one
    #    embedded in the committed module.
    committed_literal = _serialized_descriptor_from_source(
        REPO_ROOT / "protogen" / "caffe" / "caffe_pb2.py"
    )
    if fresh != committed_literal:
        a = descriptor_pb2.FileDescriptorProto.FromString(committed_literal)
        b = descriptor_pb2.FileDescriptorProto.FromString(fresh)
        old = {m.name for m in a.message_type}
        new = {m.name for m in b.message_type}
        pytest.fail(
            "protogen/caffe/caffe_pb2.py is stale; run scripts/gen_proto.py "
            f"(messages only in committed: {sorted(old - new)}, "
            f"only in source: {sorted(new - old)})"
        )

    # 2. Against the loaded module's DESCRIPTOR.serialized_pb.  The upb
    #    backend re-serialises descriptors from its pool (e.g. float defaults
    #    come back as "0.999000013"), so load the fresh bytes into a private
    #    pool first; that applies the same normalisation on every backend.
    private_pool = descriptor_pool.DescriptorPool()
    fresh_fd = private_pool.AddSerializedFile(fresh)
    assert fresh_fd.serialized_pb == caffe_pb2.DESCRIPTOR.serialized_pb


def test_descriptor_identity():
    fd = caffe_pb2.DESCRIPTOR
    assert fd.name == "caffe.proto"
    assert fd.package == "caffe"
    proto = descriptor_pb2.FileDescriptorProto.FromString(fd.serialized_pb)
    assert proto.syntax in ("", "proto2")


# ---------------------------------------------------------------------------
# (b) facts from upstream Caffe
# ---------------------------------------------------------------------------
#
# Source: BVLC/caffe master, src/caffe/proto/caffe.proto ("LayerParameter
# next available layer-specific ID: 149 (last added: clip_param)"), typed in
# by hand from that file; the two EXTENSION rows come from the SSD fork
# (weiliu89/caffe, permute_param) and the ShuffleNet Caffe layer
# (shuffle_channel_param).  These rows must NOT be generated from our own
# descriptors -- they are the independent reference.
#
# (message, field, number, label, type, default or _NO_DEFAULT)

_NO_DEFAULT = object()
OPT = FieldDescriptor.LABEL_OPTIONAL
REP = FieldDescriptor.LABEL_REPEATED
REQ = FieldDescriptor.LABEL_REQUIRED
T = FieldDescriptor

UPSTREAM_FIELDS = [
    # NetParameter
    ("NetParameter", "name", 1, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("NetParameter", "layers", 2, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("NetParameter", "input", 3, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("NetParameter", "input_dim", 4, REP, T.TYPE_INT32, _NO_DEFAULT),
    ("NetParameter", "force_backward", 5, OPT, T.TYPE_BOOL, False),
    ("NetParameter", "state", 6, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("NetParameter", "debug_info", 7, OPT, T.TYPE_BOOL, False),
    ("NetParameter", "input_shape", 8, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("NetParameter", "layer", 100, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    # Blobs
    ("BlobShape", "dim", 1, REP, T.TYPE_INT64, _NO_DEFAULT),
    ("BlobProto", "num", 1, OPT, T.TYPE_INT32, 0),
    ("BlobProto", "width", 4, OPT, T.TYPE_INT32, 0),
    ("BlobProto", "data", 5, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("BlobProto", "diff", 6, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("BlobProto", "shape", 7, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("BlobProto", "double_data", 8, REP, T.TYPE_DOUBLE, _NO_DEFAULT),
    ("BlobProto", "double_diff", 9, REP, T.TYPE_DOUBLE, _NO_DEFAULT),
    ("Datum", "encoded", 7, OPT, T.TYPE_BOOL, False),
    ("FillerParameter", "type", 1, OPT, T.TYPE_STRING, "constant"),
    ("FillerParameter", "std", 6, OPT, T.TYPE_FLOAT, 1.0),
    ("FillerParameter", "sparse", 7, OPT, T.TYPE_INT32, -1),
    # LayerParameter
    ("LayerParameter", "name", 1, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("LayerParameter", "type", 2, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("LayerParameter", "bottom", 3, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("LayerParameter", "top", 4, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("LayerParameter", "loss_weight", 5, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("LayerParameter", "param", 6, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "blobs", 7, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "include", 8, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "exclude", 9, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "phase", 10, OPT, T.TYPE_ENUM, _NO_DEFAULT),
    ("LayerParameter", "propagate_down", 11, REP, T.TYPE_BOOL, _NO_DEFAULT),
    ("LayerParameter", "transform_param", 100, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "loss_param", 101, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "concat_param", 104, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "convolution_param", 106, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "dropout_param", 108, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "eltwise_param", 110, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "inner_product_param", 117, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "lrn_param", 118, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "pooling_param", 121, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "relu_param", 123, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "softmax_param", 125, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "python_param", 130, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "prelu_param", 131, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "reshape_param", 133, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "flatten_param", 135, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "batch_norm_param", 139, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "elu_param", 140, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "bias_param", 141, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "scale_param", 142, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "input_param", 143, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "crop_param", 144, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "parameter_param", 145, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "recurrent_param", 146, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "swish_param", 147, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "clip_param", 148, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    # Extensions (fork numbers)
    ("LayerParameter", "shuffle_channel_param", 164, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("LayerParameter", "permute_param", 202, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("PermuteParameter", "order", 1, REP, T.TYPE_UINT32, _NO_DEFAULT),
    ("ShuffleChannelParameter", "group", 1, OPT, T.TYPE_UINT32, 1),
    # Per-layer parameters
    ("ParamSpec", "lr_mult", 3, OPT, T.TYPE_FLOAT, 1.0),
    ("ParamSpec", "decay_mult", 4, OPT, T.TYPE_FLOAT, 1.0),
    ("BatchNormParameter", "use_global_stats", 1, OPT, T.TYPE_BOOL, _NO_DEFAULT),
    ("BatchNormParameter", "moving_average_fraction", 2, OPT, T.TYPE_FLOAT, 0.999),
    ("BatchNormParameter", "eps", 3, OPT, T.TYPE_FLOAT, 1e-5),
    ("ClipParameter", "min", 1, REQ, T.TYPE_FLOAT, _NO_DEFAULT),
    ("ClipParameter", "max", 2, REQ, T.TYPE_FLOAT, _NO_DEFAULT),
    ("ConcatParameter", "concat_dim", 1, OPT, T.TYPE_UINT32, 1),
    ("ConcatParameter", "axis", 2, OPT, T.TYPE_INT32, 1),
    ("ConvolutionParameter", "num_output", 1, OPT, T.TYPE_UINT32, _NO_DEFAULT),
    ("ConvolutionParameter", "bias_term", 2, OPT, T.TYPE_BOOL, True),
    ("ConvolutionParameter", "pad", 3, REP, T.TYPE_UINT32, _NO_DEFAULT),
    ("ConvolutionParameter", "kernel_size", 4, REP, T.TYPE_UINT32, _NO_DEFAULT),
    ("ConvolutionParameter", "group", 5, OPT, T.TYPE_UINT32, 1),
    ("ConvolutionParameter", "stride", 6, REP, T.TYPE_UINT32, _NO_DEFAULT),
    ("ConvolutionParameter", "pad_h", 9, OPT, T.TYPE_UINT32, 0),
    ("ConvolutionParameter", "engine", 15, OPT, T.TYPE_ENUM, 0),
    ("ConvolutionParameter", "axis", 16, OPT, T.TYPE_INT32, 1),
    ("ConvolutionParameter", "force_nd_im2col", 17, OPT, T.TYPE_BOOL, False),
    ("ConvolutionParameter", "dilation", 18, REP, T.TYPE_UINT32, _NO_DEFAULT),
    ("CropParameter", "axis", 1, OPT, T.TYPE_INT32, 2),
    ("DataParameter", "prefetch", 10, OPT, T.TYPE_UINT32, 4),
    ("DropoutParameter", "dropout_ratio", 1, OPT, T.TYPE_FLOAT, 0.5),
    ("EltwiseParameter", "operation", 1, OPT, T.TYPE_ENUM, 1),  # SUM
    ("EltwiseParameter", "stable_prod_grad", 3, OPT, T.TYPE_BOOL, True),
    ("FlattenParameter", "end_axis", 2, OPT, T.TYPE_INT32, -1),
    ("InnerProductParameter", "axis", 5, OPT, T.TYPE_INT32, 1),
    ("InnerProductParameter", "transpose", 6, OPT, T.TYPE_BOOL, False),
    ("LRNParameter", "local_size", 1, OPT, T.TYPE_UINT32, 5),
    ("LRNParameter", "alpha", 2, OPT, T.TYPE_FLOAT, 1.0),
    ("LRNParameter", "beta", 3, OPT, T.TYPE_FLOAT, 0.75),
    ("LRNParameter", "norm_region", 4, OPT, T.TYPE_ENUM, 0),
    ("LRNParameter", "k", 5, OPT, T.TYPE_FLOAT, 1.0),
    ("MVNParameter", "eps", 3, OPT, T.TYPE_FLOAT, 1e-9),
    ("PoolingParameter", "pool", 1, OPT, T.TYPE_ENUM, 0),  # MAX
    ("PoolingParameter", "kernel_size", 2, OPT, T.TYPE_UINT32, _NO_DEFAULT),
    ("PoolingParameter", "stride", 3, OPT, T.TYPE_UINT32, 1),
    ("PoolingParameter", "pad", 4, OPT, T.TYPE_UINT32, 0),
    ("PoolingParameter", "global_pooling", 12, OPT, T.TYPE_BOOL, False),
    ("PoolingParameter", "round_mode", 13, OPT, T.TYPE_ENUM, 0),  # CEIL
    ("PReLUParameter", "channel_shared", 2, OPT, T.TYPE_BOOL, False),
    ("PythonParameter", "param_str", 3, OPT, T.TYPE_STRING, ""),
    ("ReductionParameter", "operation", 1, OPT, T.TYPE_ENUM, 1),  # SUM = 1
    ("ReLUParameter", "negative_slope", 1, OPT, T.TYPE_FLOAT, 0.0),
    ("ReshapeParameter", "num_axes", 3, OPT, T.TYPE_INT32, -1),
    ("ScaleParameter", "bias_term", 4, OPT, T.TYPE_BOOL, False),
    ("SliceParameter", "axis", 3, OPT, T.TYPE_INT32, 1),
    ("SwishParameter", "beta", 1, OPT, T.TYPE_FLOAT, 1.0),
    ("TransformationParameter", "scale", 1, OPT, T.TYPE_FLOAT, 1.0),
    ("TransformationParameter", "mean_value", 5, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("WindowDataParameter", "crop_mode", 11, OPT, T.TYPE_STRING, "warp"),
    # Solver
    ("SolverParameter", "train_net", 1, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("SolverParameter", "base_lr", 5, OPT, T.TYPE_FLOAT, _NO_DEFAULT),
    ("SolverParameter", "solver_mode", 17, OPT, T.TYPE_ENUM, 1),  # GPU
    ("SolverParameter", "random_seed", 20, OPT, T.TYPE_INT64, -1),
    ("SolverParameter", "net", 24, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("SolverParameter", "regularization_type", 29, OPT, T.TYPE_STRING, "L2"),
    ("SolverParameter", "solver_type", 30, OPT, T.TYPE_ENUM, 0),  # SGD
    ("SolverParameter", "delta", 31, OPT, T.TYPE_FLOAT, 1e-8),
    ("SolverParameter", "clip_gradients", 35, OPT, T.TYPE_FLOAT, -1.0),
    ("SolverParameter", "snapshot_format", 37, OPT, T.TYPE_ENUM, 1),  # BINARYPROTO
    ("SolverParameter", "rms_decay", 38, OPT, T.TYPE_FLOAT, 0.99),
    ("SolverParameter", "momentum2", 39, OPT, T.TYPE_FLOAT, 0.999),
    ("SolverParameter", "type", 40, OPT, T.TYPE_STRING, "SGD"),
    ("SolverParameter", "layer_wise_reduce", 41, OPT, T.TYPE_BOOL, True),
    ("SolverParameter", "weights", 42, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("SolverState", "current_step", 4, OPT, T.TYPE_INT32, 0),
    ("NetState", "phase", 1, OPT, T.TYPE_ENUM, 1),  # TEST
    ("NetStateRule", "not_stage", 5, REP, T.TYPE_STRING, _NO_DEFAULT),
    # Legacy V1
    ("V1LayerParameter", "layer", 1, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "bottom", 2, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("V1LayerParameter", "top", 3, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("V1LayerParameter", "name", 4, OPT, T.TYPE_STRING, _NO_DEFAULT),
    ("V1LayerParameter", "type", 5, OPT, T.TYPE_ENUM, _NO_DEFAULT),
    ("V1LayerParameter", "blobs", 6, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "blobs_lr", 7, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("V1LayerParameter", "weight_decay", 8, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("V1LayerParameter", "convolution_param", 10, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "pooling_param", 19, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "include", 32, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "loss_weight", 35, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("V1LayerParameter", "loss_param", 42, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V1LayerParameter", "param", 1001, REP, T.TYPE_STRING, _NO_DEFAULT),
    ("V1LayerParameter", "blob_share_mode", 1002, REP, T.TYPE_ENUM, _NO_DEFAULT),
    # Legacy V0
    ("V0LayerParameter", "biasterm", 4, OPT, T.TYPE_BOOL, True),
    ("V0LayerParameter", "kernelsize", 8, OPT, T.TYPE_UINT32, _NO_DEFAULT),
    ("V0LayerParameter", "k", 22, OPT, T.TYPE_FLOAT, 1.0),
    ("V0LayerParameter", "blobs", 50, REP, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("V0LayerParameter", "det_context_pad", 58, OPT, T.TYPE_UINT32, 0),
    ("V0LayerParameter", "det_crop_mode", 59, OPT, T.TYPE_STRING, "warp"),
    ("V0LayerParameter", "concat_dim", 65, OPT, T.TYPE_UINT32, 1),
    ("V0LayerParameter", "hdf5_output_param", 1001, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
]

# (enum full name relative to the package, value name, number)
UPSTREAM_ENUM_VALUES = [
    ("Phase", "TRAIN", 0),
    ("Phase", "TEST", 1),
    ("V1LayerParameter.LayerType", "NONE", 0),
    ("V1LayerParameter.LayerType", "ACCURACY", 1),
    ("V1LayerParameter.LayerType", "CONVOLUTION", 4),
    ("V1LayerParameter.LayerType", "DATA", 5),
    ("V1LayerParameter.LayerType", "INNER_PRODUCT", 14),
    ("V1LayerParameter.LayerType", "LRN", 15),
    ("V1LayerParameter.LayerType", "POOLING", 17),
    ("V1LayerParameter.LayerType", "RELU", 18),
    ("V1LayerParameter.LayerType", "SOFTMAX", 20),
    ("V1LayerParameter.LayerType", "SOFTMAX_LOSS", 21),
    ("V1LayerParameter.LayerType", "ELTWISE", 25),
    ("V1LayerParameter.LayerType", "DUMMY_DATA", 32),
    ("V1LayerParameter.LayerType", "SLICE", 33),
    ("V1LayerParameter.LayerType", "ABSVAL", 35),
    ("V1LayerParameter.LayerType", "DECONVOLUTION", 39),
    ("PoolingParameter.PoolMethod", "STOCHASTIC", 2),
    ("PoolingParameter.RoundMode", "CEIL", 0),
    ("PoolingParameter.RoundMode", "FLOOR", 1),
    ("EltwiseParameter.EltwiseOp", "PROD", 0),
    ("EltwiseParameter.EltwiseOp", "MAX", 2),
    ("ConvolutionParameter.Engine", "CUDNN", 2),
    ("LossParameter.NormalizationMode", "NONE", 3),
    ("HingeLossParameter.Norm", "L1", 1),
    ("ReductionParameter.ReductionOp", "MEAN", 4),
    ("FillerParameter.VarianceNorm", "AVERAGE", 2),
    ("SolverParameter.SnapshotFormat", "HDF5", 0),
    ("SolverParameter.SolverType", "ADAM", 5),
    ("DataParameter.DB", "LMDB", 1),
    ("V0LayerParameter.PoolMethod", "AVE", 1),
]


def _message(name: str):
    return caffe_pb2.DESCRIPTOR.message_types_by_name[name]


def _label(fd) -> int:
    # protobuf >= 7 dropped FieldDescriptor.label in favour of predicates.
    if hasattr(fd, "is_repeated"):
        if fd.is_repeated:
            return REP
        return REQ if fd.is_required else OPT
    return fd.label


@pytest.mark.parametrize(
    "message,field,number,label,ftype,default",
    UPSTREAM_FIELDS,
    ids=[f"{m}.{f}" for m, f, *_ in UPSTREAM_FIELDS],
)
def test_upstream_field(message, field, number, label, ftype, default):
    fd = _message(message).fields_by_name[field]
    assert fd.number == number
    assert _label(fd) == label
    assert fd.type == ftype
    if default is _NO_DEFAULT:
        assert not fd.has_default_value
    else:
        assert fd.has_default_value
        if isinstance(default, float):
            assert math.isclose(fd.default_value, default, rel_tol=1e-6)
        else:
            assert fd.default_value == default


@pytest.mark.parametrize(
    "enum,value,number",
    UPSTREAM_ENUM_VALUES,
    ids=[f"{e}.{v}" for e, v, _ in UPSTREAM_ENUM_VALUES],
)
def test_upstream_enum_value(enum, value, number):
    outer, _, inner = enum.partition(".")
    if inner:
        ed = _message(outer).enum_types_by_name[inner]
    else:
        ed = caffe_pb2.DESCRIPTOR.enum_types_by_name[outer]
    assert ed.values_by_name[value].number == number


def test_packed_blob_fields():
    # Upstream declares these [packed = true]; packing changes the bytes of
    # every .caffemodel, so it must match.
    for message, field in [
        ("BlobShape", "dim"),
        ("BlobProto", "data"),
        ("BlobProto", "diff"),
        ("BlobProto", "double_data"),
        ("BlobProto", "double_diff"),
    ]:
        fd = _message(message).fields_by_name[field]
        assert fd.GetOptions().packed, f"{message}.{field} must be packed"
    # ... and plain repeated scalars elsewhere are not (proto2 default).
    assert not _message("Datum").fields_by_name["float_data"].GetOptions().packed


#: upstream BVLC LayerParameter: every field name (typed from BVLC/caffe
#: master's caffe.proto, independent of our descriptors).
UPSTREAM_LAYER_FIELDS = {
    "name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
    "propagate_down", "include", "exclude", "transform_param", "loss_param",
    "accuracy_param", "argmax_param", "batch_norm_param", "bias_param", "clip_param",
    "concat_param", "contrastive_loss_param", "convolution_param", "crop_param",
    "data_param", "dropout_param", "dummy_data_param", "eltwise_param", "elu_param",
    "embed_param", "exp_param", "flatten_param", "hdf5_data_param", "hdf5_output_param",
    "hinge_loss_param", "image_data_param", "infogain_loss_param", "inner_product_param",
    "input_param", "log_param", "lrn_param", "memory_data_param", "mvn_param",
    "parameter_param", "pooling_param", "power_param", "prelu_param", "python_param",
    "recurrent_param", "reduction_param", "relu_param", "reshape_param", "scale_param",
    "sigmoid_param", "softmax_param", "spp_param", "slice_param", "swish_param",
    "tanh_param", "threshold_param", "tile_param", "window_data_param",
}

#: fork fields of LayerParameter: (name, number in our schema, the fork's own
#: number or None where forks disagree, source).  Typed from each fork's
#: src/caffe/proto/caffe.proto (read with the search tool), not generated.
FORK_LAYER_FIELDS = [
    ("bn_param", 45, 45, "alexgkendall/caffe-segnet"),
    ("bbox_reg_param", 150, 150, "zhaoweicai/cascade-rcnn"),
    ("psroi_pooling_param", 153, 153, "intel/caffe"),
    ("scale_route_param", 154, 154, "zhaoweicai/cascade-rcnn"),
    ("decode_bbox_param", 155, 155, "zhaoweicai/cascade-rcnn"),
    ("box_group_output_param", 158, 158, "zhaoweicai/cascade-rcnn"),
    ("reorg_param", 159, 159, "intel/caffe"),
    ("shuffle_channel_param", 164, 164, "farmingyard/ShuffleNet"),
    ("annotated_data_param", 200, 200, "weiliu89/caffe"),
    ("multibox_loss_param", 201, 201, "weiliu89/caffe"),
    ("permute_param", 202, 202, "weiliu89/caffe"),
    ("prior_box_param", 203, 203, "weiliu89/caffe"),
    ("detection_output_param", 204, 204, "weiliu89/caffe"),
    ("detection_evaluate_param", 205, 205, "weiliu89/caffe"),
    ("norm_param", 206, 206, "weiliu89/caffe"),
    ("video_data_param", 207, 207, "weiliu89/caffe"),
    ("eval_detection_param", 301, 301, "intel/caffe"),
    ("region_param", 214, 214, "openvinotoolkit/training_toolbox_caffe"),
    ("yolo_detection_output_param", 601, 601, "eric612/MobileNet-YOLO"),
    ("yolov3_detection_output_param", 602, 602, "eric612/MobileNet-YOLO"),
    ("roi_pooling_param", 8266711, 8266711, "rbgirshick/caffe-fast-rcnn"),
    ("denseblock_param", 260, 260, "Tongcheng DenseNet caffe (as in leonzfa/iResNet's copy)"),
    # the fork's number is upstream's (or another fork's): renumbered 60000 + n
    ("upsample_param", 60137, 137, "alexgkendall/caffe-segnet (137 = embed_param)"),
    ("dense_image_data_param", 60138, 138, "alexgkendall/caffe-segnet (138 = tile_param)"),
    ("interp_param", 60143, 143, "DeepLab v2 / PSPNet (143 = input_param)"),
    ("smooth_l1_loss_param", 60148, 148, "mahyarnajibi/caffe-ssh (148 = clip_param)"),
    ("quantization_param", 60158, 158, "intel/caffe (158 = box_group_output_param)"),
    ("margin_inner_product_param", 60147, 147, "wy1iu/sphereface (147 = swish_param)"),
    # forks disagree: protogen's own numbers
    ("proposal_param", 70001, None, "pva-faster-rcnn and others"),
    ("crop_center_param", 70003, None, "lltcggie/waifu2x-caffe"),
    ("seg_accuracy_param", 70004, None, "DeepLab"),
]

#: fork fields inside messages: (message, field, number, label, type, default)
FORK_FIELDS = [
    # OpenCV / PR #3057: bool ceil_mode, default true (fork number 13 = round_mode)
    ("PoolingParameter", "ceil_mode", 60013, OPT, T.TYPE_BOOL, True),
    ("PriorBoxParameter", "min_size", 1, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("PriorBoxParameter", "flip", 4, OPT, T.TYPE_BOOL, True),
    ("PriorBoxParameter", "clip", 5, OPT, T.TYPE_BOOL, False),
    ("PriorBoxParameter", "variance", 6, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("PriorBoxParameter", "step", 10, OPT, T.TYPE_FLOAT, _NO_DEFAULT),
    ("PriorBoxParameter", "offset", 13, OPT, T.TYPE_FLOAT, 0.5),
    ("DetectionOutputParameter", "keep_top_k", 7, OPT, T.TYPE_INT32, -1),
    ("DetectionOutputParameter", "variance_encoded_in_target", 8, OPT, T.TYPE_BOOL, False),
    ("DetectionOutputParameter", "objectness_score", 24, OPT, T.TYPE_FLOAT, 0.01),  # RefineDet
    ("NormalizeParameter", "across_spatial", 1, OPT, T.TYPE_BOOL, True),
    ("NormalizeParameter", "channel_shared", 3, OPT, T.TYPE_BOOL, True),
    ("NormalizeParameter", "eps", 4, OPT, T.TYPE_FLOAT, 1e-10),
    ("NonMaximumSuppressionParameter", "nms_threshold", 1, OPT, T.TYPE_FLOAT, 0.3),
    ("ROIPoolingParameter", "spatial_scale", 3, OPT, T.TYPE_FLOAT, 1.0),
    ("PSROIPoolingParameter", "group_size", 3, OPT, T.TYPE_INT32, _NO_DEFAULT),
    ("InterpParameter", "zoom_factor", 3, OPT, T.TYPE_INT32, 1),
    ("InterpParameter", "shrink_factor", 4, OPT, T.TYPE_INT32, 1),
    ("InterpParameter", "pad_end", 6, OPT, T.TYPE_INT32, 0),
    ("UpsampleParameter", "scale", 1, OPT, T.TYPE_UINT32, 2),  # SegNet's default
    ("UpsampleParameter", "upsample_h", 6, OPT, T.TYPE_UINT32, _NO_DEFAULT),
    ("BNParameter", "bn_mode", 3, OPT, T.TYPE_ENUM, 0),        # SegNet LEARN
    ("BNParameter", "frozen", 105, OPT, T.TYPE_BOOL, False),   # yjxiong 5, moved
    ("ReorgParameter", "stride", 1, OPT, T.TYPE_UINT32, _NO_DEFAULT),
    ("RegionParameter", "coords", 1, OPT, T.TYPE_INT32, 4),      # training_toolbox_caffe
    ("RegionParameter", "classes", 2, OPT, T.TYPE_INT32, 20),
    ("RegionParameter", "num", 3, OPT, T.TYPE_INT32, 1),
    ("PriorBoxParameter", "width", 16, REP, T.TYPE_FLOAT, _NO_DEFAULT),   # opencv-caffe.proto
    ("PriorBoxParameter", "height", 17, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("Yolov3DetectionOutputParameter", "mask_group_num", 7, OPT, T.TYPE_UINT32, 2),
    ("YoloDetectionOutputParameter", "biases", 7, REP, T.TYPE_FLOAT, _NO_DEFAULT),
    ("ProposalParameter", "nms_thresh", 8, OPT, T.TYPE_FLOAT, 0.7),
    ("BatchNormParameter", "scale_filler", 5, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("TransformationParameter", "resize_param", 8, OPT, T.TYPE_MESSAGE, _NO_DEFAULT),
    ("DenseImageDataParameter", "new_height", 5, OPT, T.TYPE_UINT32, 0),
]


@pytest.mark.parametrize("message,field,number,label,ftype,default", FORK_FIELDS,
                         ids=[f"{m}.{f}" for m, f, *_ in FORK_FIELDS])
def test_fork_field(message, field, number, label, ftype, default):
    test_upstream_field(message, field, number, label, ftype, default)


def test_layer_fields_are_upstream_or_a_listed_fork_field():
    layer = _message("LayerParameter")
    names = {fd.name: fd.number for fd in layer.fields}
    forks = {n: num for n, num, _, _ in FORK_LAYER_FIELDS}
    assert set(names) == UPSTREAM_LAYER_FIELDS | set(forks), (
        sorted(set(names) - UPSTREAM_LAYER_FIELDS - set(forks)),
        sorted((UPSTREAM_LAYER_FIELDS | set(forks)) - set(names)))
    for name, num in forks.items():
        assert names[name] == num, name
    numbers = list(names.values())
    assert len(numbers) == len(set(numbers))
    # every fork field keeps the fork's number unless upstream (or an earlier
    # fork field) took it; renumbered ones are 60000 + the fork's number
    upstream_numbers = {names[n] for n in UPSTREAM_LAYER_FIELDS}
    for name, ours, theirs, _ in FORK_LAYER_FIELDS:
        assert ours not in upstream_numbers, name
        if theirs is not None and ours != theirs:
            assert ours == 60000 + theirs
            assert theirs in upstream_numbers or theirs in {o for _, o, _, _ in FORK_LAYER_FIELDS}, name
    # Upstream uses every number from 100 to 148 for the parameter blocks.
    assert {names[n] for n in UPSTREAM_LAYER_FIELDS if 100 <= names[n]} == set(range(100, 149))


def test_every_layer_param_message_is_defined():
    layer = _message("LayerParameter")
    params = [fd for fd in layer.fields if fd.name.endswith("_param")]
    assert len(params) == 2 + 47 + len(FORK_LAYER_FIELDS)  # transform/loss + upstream + forks
    for fd in params:
        assert fd.message_type is not None
        assert fd.message_type.file is caffe_pb2.DESCRIPTOR


# ---------------------------------------------------------------------------
# (c) text-format parsing
# ---------------------------------------------------------------------------

V2_PROTOTXT = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 16 kernel_size: 3 pad: 1 stride: 2 group: 1 bias_term: false
    weight_filler { type: "msra" }
  }
}
layer {
  name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { use_global_stats: true eps: 0.001 }
}
layer { name: "relu1" type: "ReLU6" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE global_pooling: true round_mode: FLOOR }
}
layer {
  name: "perm" type: "Permute" bottom: "pool1" top: "perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 }
}
layer {
  name: "shuf" type: "ShuffleChannel" bottom: "perm" top: "shuf"
  shuffle_channel_param { group: 4 }
}
layer {
  name: "clip" type: "Clip" bottom: "shuf" top: "clip"
  clip_param { min: 0 max: 6 }
  include { phase: TEST }
}
"""

V1_PROTOTXT = """
name: "legacy"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 28 input_dim: 28
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 }
}
layers {
  name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers { name: "prob" type: SOFTMAX bottom: "pool1" top: "prob" }
"""


def test_parse_v2_prototxt():
    net = text_format.Parse(V2_PROTOTXT, caffe_pb2.NetParameter())
    assert net.name == "tiny"
    assert list(net.input_shape[0].dim) == [1, 3, 32, 32]
    assert [l.type for l in net.layer] == [
        "Convolution", "BatchNorm", "ReLU6", "Pooling", "Permute",
        "ShuffleChannel", "Clip",
    ]
    conv = net.layer[0]
    assert list(conv.convolution_param.kernel_size) == [3]
    assert list(conv.convolution_param.pad) == [1]
    assert conv.convolution_param.bias_term is False
    assert conv.convolution_param.weight_filler.type == "msra"
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]
    # Defaults of unset fields come from the schema.
    assert conv.convolution_param.axis == 1
    assert conv.convolution_param.group == 1

    bn = net.layer[1].batch_norm_param
    assert bn.use_global_stats is True
    assert math.isclose(bn.eps, 1e-3, rel_tol=1e-6)
    assert math.isclose(bn.moving_average_fraction, 0.999, rel_tol=1e-6)

    pool = net.layer[3].pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE
    assert pool.global_pooling is True
    assert pool.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert pool.stride == 1  # default

    assert list(net.layer[4].permute_param.order) == [0, 2, 3, 1]
    assert net.layer[5].shuffle_channel_param.group == 4
    clip = net.layer[6]
    assert (clip.clip_param.min, clip.clip_param.max) == (0.0, 6.0)
    assert clip.include[0].phase == caffe_pb2.TEST

    # Binary round trip (what a .caffemodel is).
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net


def test_parse_v1_prototxt():
    net = text_format.Parse(V1_PROTOTXT, caffe_pb2.NetParameter())
    assert len(net.layer) == 0
    assert list(net.input_dim) == [1, 3, 28, 28]
    V1 = caffe_pb2.V1LayerParameter
    assert [l.type for l in net.layers] == [V1.CONVOLUTION, V1.POOLING, V1.SOFTMAX]
    conv = net.layers[0]
    assert conv.convolution_param.num_output == 20
    assert list(conv.blobs_lr) == [1.0, 2.0]
    assert list(conv.weight_decay) == [1.0, 0.0]
    assert net.layers[1].pooling_param.kernel_size == 2
    assert net.layers[1].pooling_param.pool == caffe_pb2.PoolingParameter.MAX


def test_clip_requires_both_bounds():
    clip = caffe_pb2.ClipParameter(min=0.0)
    assert not clip.IsInitialized()
    clip.max = 6.0
    assert clip.IsInitialized()
