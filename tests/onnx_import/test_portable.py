"""The portable dialect (the default of ONNX -> Caffe) for floor-rounded pooling: the written
prototxt parses with the schema of a Caffe fork older than ``round_mode`` and with OpenCV's,
and computes ONNX's floor pooling (ceil Pooling + Slice of the surplus + Silence)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from protogen.dialect import Dialect  # noqa: E402
from protogen.onnx_import import onnx_to_caffe  # noqa: E402
from tests.onnx_import.common import assert_close, opencv_caffe_run, ort_run  # noqa: E402

# The messages a floor-pooled conv net needs, as the SSD fork (weiliu89/caffe, 2016;
# src/caffe/proto/caffe.proto) declares them: field names and numbers; its PoolingParameter
# ends at global_pooling = 12 (upstream added round_mode = 13 in 2018).
FORK_SCHEMA = {
    "BlobShape": [("dim", 1, "int64", "repeated")],
    "BlobProto": [("shape", 7, "BlobShape", "optional"), ("data", 5, "float", "repeated")],
    "InputParameter": [("shape", 1, "BlobShape", "repeated")],
    "ConvolutionParameter": [("num_output", 1, "uint32", "optional"), ("bias_term", 2, "bool", "optional"),
                             ("pad", 3, "uint32", "repeated"), ("kernel_size", 4, "uint32", "repeated"),
                             ("group", 5, "uint32", "optional"), ("stride", 6, "uint32", "repeated"),
                             ("pad_h", 9, "uint32", "optional"), ("pad_w", 10, "uint32", "optional"),
                             ("kernel_h", 11, "uint32", "optional"), ("kernel_w", 12, "uint32", "optional"),
                             ("stride_h", 13, "uint32", "optional"), ("stride_w", 14, "uint32", "optional"),
                             ("axis", 16, "int32", "optional"), ("dilation", 18, "uint32", "repeated")],
    "PoolingParameter": [("pool", 1, "PoolMethod", "optional"), ("kernel_size", 2, "uint32", "optional"),
                         ("stride", 3, "uint32", "optional"), ("pad", 4, "uint32", "optional"),
                         ("kernel_h", 5, "uint32", "optional"), ("kernel_w", 6, "uint32", "optional"),
                         ("stride_h", 7, "uint32", "optional"), ("stride_w", 8, "uint32", "optional"),
                         ("pad_h", 9, "uint32", "optional"), ("pad_w", 10, "uint32", "optional"),
                         ("global_pooling", 12, "bool", "optional")],
    "ReLUParameter": [("negative_slope", 1, "float", "optional")],
    "SliceParameter": [("slice_dim", 1, "uint32", "optional"), ("slice_point", 2, "uint32", "repeated"),
                       ("axis", 3, "int32", "optional")],
    "LayerParameter": [("name", 1, "string", "optional"), ("type", 2, "string", "optional"),
                       ("bottom", 3, "string", "repeated"), ("top", 4, "string", "repeated"),
                       ("blobs", 7, "BlobProto", "repeated"),
                       ("convolution_param", 106, "ConvolutionParameter", "optional"),
                       ("pooling_param", 121, "PoolingParameter", "optional"),
                       ("relu_param", 123, "ReLUParameter", "optional"),
                       ("slice_param", 126, "SliceParameter", "optional"),
                       ("input_param", 143, "InputParameter", "optional")],
    "NetParameter": [("name", 1, "string", "optional"), ("layer", 100, "LayerParameter", "repeated")],
}


def fork_net_parameter():
    """A NetParameter class built from FORK_SCHEMA (a dynamic protobuf descriptor)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    scalars = {"int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "int32": F.TYPE_INT32, "float": F.TYPE_FLOAT,
               "bool": F.TYPE_BOOL, "string": F.TYPE_STRING}
    fd = descriptor_pb2.FileDescriptorProto(name="fork_caffe_2016.proto", package="forkcaffe", syntax="proto2")
    for mname, fields in FORK_SCHEMA.items():
        m = fd.message_type.add(name=mname)
        if mname == "PoolingParameter":
            e = m.enum_type.add(name="PoolMethod")
            for k, v in (("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)):
                e.value.add(name=k, number=v)
        for fname, num, ftype, label in fields:
            f = m.field.add(name=fname, number=num,
                            label=F.LABEL_REPEATED if label == "repeated" else F.LABEL_OPTIONAL)
            if ftype in scalars:
                f.type = scalars[ftype]
            elif ftype == "PoolMethod":
                f.type, f.type_name = F.TYPE_ENUM, ".forkcaffe.PoolingParameter.PoolMethod"
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".forkcaffe.{ftype}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("forkcaffe.NetParameter"))


def floor_pooled_model():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             # 16 -> floor 8 / ceil 9 rows: the ceil form needs its last row/column cut
             helper.make_node("MaxPool", ["r"], ["p"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             # 3x3 stride 3 on 8 -> floor 2, ceil 3 (no padding)
             helper.make_node("AveragePool", ["p"], ["y"], name="pool2", kernel_shape=[3, 3], strides=[3, 3])]
    g = helper.make_graph(nodes, "floorpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.reshape(-1))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_portable_floor_pooling_parses_with_pre_2018_fork_schema_and_opencv(tmp_path):
    from google.protobuf import text_format
    m = floor_pooled_model()
    onnx.save(m, str(tmp_path / "fp.onnx"))
    proto, cm = onnx_to_caffe(tmp_path / "fp.onnx", tmp_path / "fp.prototxt")      # default: portable
    text = proto.read_text()
    assert "round_mode" not in text and text.count('type: "Slice"') == 4 and 'type: "Silence"' in text
    Fork = fork_net_parameter()
    net = text_format.Parse(text, Fork())                  # unknown fields would raise ParseError
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "Slice", "Slice",
                                           "Silence", "Pooling", "Slice", "Slice", "Silence"]
    weights = Fork.FromString(cm.read_bytes())              # the caffemodel with the same schema
    assert [len(l.blobs) for l in weights.layer if l.blobs] == [1]
    # the check bites: the default dialect's round_mode does not parse with that schema
    from protogen.onnx_import import load_onnx, write_caffe
    p2, _ = write_caffe(load_onnx(m), tmp_path / "default.prototxt", Dialect.make("default"))
    assert "round_mode: FLOOR" in p2.read_text()
    with pytest.raises(text_format.ParseError, match="round_mode"):
        text_format.Parse(p2.read_text(), Fork())
    # OpenCV's Caffe importer (its own caffe.proto) loads and computes ONNX's floor pooling
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = ort_run(m, {"x": x})[0]
    assert ref.shape == (1, 4, 2, 2)
    assert_close(ref, opencv_caffe_run(proto, cm, x, "y").reshape(ref.shape), "OpenCV vs ORT")
