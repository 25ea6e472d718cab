"""Fork-tolerant reading: every unknown field listed at once, training-only ones ignored with
a note, fields of several forks in one prototxt, OpenCV's ``ceil_mode`` kept in its meaning."""
from __future__ import annotations

import pytest

from protogen.caffe.loader import load_model, load_prototxt
from protogen.errors import ProtogenError, UnsupportedError

THREE_UNKNOWN = '''name: "three"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3
    fused_op: FUSED_RELU
    weight_filler { type: "msra" } }
}
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 pool_depth: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
  inner_product_param { num_output: 3 my_filler { type: "xavier" } }
  quantization_parameter { bw_params: 8 }
}
'''


def test_three_unknown_fields_are_named_with_their_lines(tmp_path):
    p = tmp_path / "three.prototxt"
    p.write_text(THREE_UNKNOWN)
    with pytest.raises(UnsupportedError) as ei:
        load_model(p)
    e = ei.value
    text = str(e)
    # all three, each with file:line:col and its layer; the training-only my_filler is not one
    assert len(e.items) == 3, text
    assert f"{p}:6:5: unknown field 'convolution_param.fused_op'" in text
    assert f"{p}:10:54: unknown field 'pooling_param.pool_depth'" in text
    assert f"{p}:13:3: unknown field 'quantization_parameter'" in text
    assert [n for n, _, _ in e.items] == ["conv1", "pool1", "fc"]
    assert [t for _, t, _ in e.items] == ["Convolution", "Pooling", "InnerProduct"]
    assert "my_filler" not in text
    assert (e.line, e.column) == (6, 5)


def test_training_only_unknown_fields_are_ignored_with_a_note(tmp_path):
    p = tmp_path / "t.prototxt"
    p.write_text(THREE_UNKNOWN.replace("    fused_op: FUSED_RELU\n", "")
                 .replace(" pool_depth: 2", "").replace("  quantization_parameter { bw_params: 8 }\n", "")
                 .replace('layer { name: "pool1"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv1" '
                          'top: "conv1" batch_norm_param { filler { type: "constant" } } }\nlayer { name: "pool1"'))
    g = load_prototxt(p)
    assert [l.name for l in g.layers][-3:] == ["bn", "pool1", "fc"]
    notes = " | ".join(g.notes)
    assert "inner_product_param.my_filler" in notes and "'fc'" in notes
    assert "batch_norm_param.filler" not in notes or "'bn'" in notes
    assert len(g.notes) == 1 or "batch_norm_param.filler" in notes


# OpenCV's schema (ceil_mode), the SSD fork (permute_param, prior_box... , transform resize),
# the depthwise fork (ConvolutionDepthwise) together
TWO_FORKS = '''name: "mixed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 7 dim: 7 } } }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "dw" top: "dw"
  batch_norm_param { use_global_stats: true } }
layer { name: "pool_floor" type: "Pooling" bottom: "dw" top: "pf"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false } }
layer { name: "pool_ceil" type: "Pooling" bottom: "dw" top: "pc"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: true } }
layer { name: "perm" type: "Permute" bottom: "pf" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
'''


def test_a_prototxt_mixing_two_forks_converts(tmp_path):
    p = tmp_path / "mixed.prototxt"
    p.write_text(TWO_FORKS)
    g = load_model(p)
    shapes = {st.layer.name: st.out_shapes[0] for st in g.steps()}
    # 7x7, kernel 2 stride 2: floor (7-2)/2+1 = 3, ceil ceil(5/2)+1 = 4 (Caffe's pooling rule)
    assert shapes["pool_floor"] == (1, 4, 3, 3)
    assert shapes["pool_ceil"] == (1, 4, 4, 4)
    assert shapes["perm"] == (1, 3, 3, 4)
    # the canonical (upstream) spelling of OpenCV's ceil_mode: false is round_mode: FLOOR
    from protogen.caffe.loader import read_net
    net = read_net(p)
    pools = {lp.name: lp.pooling_param for lp in net.layer if lp.type == "Pooling"}
    assert pools["pool_floor"].round_mode == 1 and not pools["pool_floor"].HasField("ceil_mode")
    assert pools["pool_ceil"].round_mode == 0


def test_ceil_mode_and_round_mode_disagreeing_are_refused(tmp_path):
    p = tmp_path / "clash.prototxt"
    p.write_text(TWO_FORKS.replace("ceil_mode: false", "ceil_mode: false round_mode: CEIL"))
    with pytest.raises(ProtogenError, match="ceil_mode: false and round_mode: CEIL") as ei:
        load_model(p)
    assert ei.value.layer == "pool_floor"


def test_c3d_pooling_fields_on_upstream_pooling_are_refused(tmp_path):
    """C3D's kernel_depth/temporal_stride are known to the schema (its POOLING3D reads them), but
    upstream's 2-D Pooling ignores them: taking them silently would pool another window."""
    p = tmp_path / "p.prototxt"
    p.write_text('input: "data" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                 'layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1"\n'
                 '  pooling_param { pool: MAX kernel_size: 2 stride: 2 kernel_depth: 2 temporal_stride: 2 } }\n')
    with pytest.raises(ProtogenError) as e:
        load_prototxt(p)
    text = str(e.value)
    assert "pool1" in text and "pooling_param.kernel_depth is C3D's" in text
    assert "pooling_param.temporal_stride is C3D's" in text
