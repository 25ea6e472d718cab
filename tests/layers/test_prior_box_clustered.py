"""PriorBox with explicit ``width``/``height`` lists (clustered priors, OpenVINO's
PriorBoxClustered): OpenCV's own caffe.proto defines them (opencv modules/dnn/src/caffe/
opencv-caffe.proto PriorBoxParameter fields 16/17) and its prior_box_layer.cpp computes them.

Oracle: a numpy transcription of that C++ loop (per location, per width/height pair: centre
(w + offset) * step_x in float32, corners (centre -+ size * 0.5) / image size, clip, then the
variances), written here. Checked against the float64 torch forward, ONNX Runtime (constant and
in-graph priors), the generated PyTorch source, and OpenCV's dnn itself on the written prototxt.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from protogen.errors import ProtogenError  # noqa: E402
from protogen.layers import get_type  # noqa: E402
from tests.layers.test_ssd import _opencv_net, one_layer, params_of, run_all  # noqa: E402

F32 = np.float32


def clustered_oracle(p: dict, layer_hw, img_hw):
    """opencv prior_box_layer.cpp forward for explicit sizes, loop by loop (float32)."""
    lh, lw = layer_hw
    ih, iw = img_hw
    step_y = F32(p["step"]) if "step" in p else F32(ih) / F32(lh)
    step_x = F32(p["step"]) if "step" in p else F32(iw) / F32(lw)
    off = F32(p.get("offset", 0.5))
    out = []
    for h in range(lh):
        for w in range(lw):
            for bw, bh in zip(p["width"], p["height"]):
                cx = (F32(w) + off) * step_x
                cy = (F32(h) + off) * step_y
                bw, bh = F32(bw), F32(bh)
                out += [(cx - bw * F32(0.5)) / F32(iw), (cy - bh * F32(0.5)) / F32(ih),
                        (cx + bw * F32(0.5)) / F32(iw), (cy + bh * F32(0.5)) / F32(ih)]
    boxes = np.array(out, F32)
    if p.get("clip", False):
        boxes = np.clip(boxes, F32(0), F32(1))
    var = p.get("variance", [0.1])
    variances = np.tile(np.array(var if len(var) == 4 else var[:1] * 4, F32), boxes.size // 4)
    return np.stack([boxes, variances])[None]


CASES = [
    # OpenVINO-style person-detection clusters, 4 variances, step from the sizes (float division)
    (dict(width=[5.5, 12.0, 30.25], height=[7.0, 3.25, 60.0], variance=[0.1, 0.1, 0.2, 0.2]),
     (5, 6), (40, 60)),
    # clipped at the borders (boxes larger than the image), one variance, explicit step, offset 0
    (dict(width=[50.0, 8.0], height=[20.0, 80.0], clip=True, variance=[0.2], step=16.0, offset=0.0),
     (3, 4), (48, 64)),
    # a single pair, non-square map
    (dict(width=[9.0], height=[9.0], variance=[0.1]), (7, 3), (28, 13)),
]


@pytest.mark.parametrize("fields,layer_hw,img_hw", CASES)
def test_clustered_priors_match_opencv_loop(fields, layer_hw, img_hw):
    ins = [np.zeros((1, 2) + layer_hw, F32), np.zeros((1, 3) + img_hw, F32)]
    p = params_of("PriorBox", fields)
    want = clustered_oracle(fields, layer_hw, img_hw)
    assert get_type("PriorBox").num_priors(p) == len(fields["width"])
    assert get_type("PriorBox").output_shapes(p, [x.shape for x in ins], 1)[0] == want.shape
    if fields.get("clip"):
        assert (want[0, 0] == 0).any() and (want[0, 0] == 1).any()     # the clip applies
    g, feeds = one_layer("PriorBox", p, ins)
    for rt, got in run_all(g, feeds).items():
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=rt)


def test_clustered_priors_in_graph_for_dynamic_sizes():
    """The in-graph form (H/W symbolic): ONNX Runtime on other sizes than the export's."""
    from protogen.onnx_io import export_onnx
    fields = dict(width=[5.5, 12.0], height=[7.0, 3.25], variance=[0.1, 0.1, 0.2, 0.2])
    p = params_of("PriorBox", fields)
    g, _ = one_layer("PriorBox", p, [np.zeros((1, 2, 3, 4), F32), np.zeros((1, 3, 24, 32), F32)])
    m = export_onnx(g)
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert not any(isinstance(d, int) for d in dims[2:]), dims        # H/W symbolic
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for lh, lw, ih, iw in ((5, 7, 50, 70), (2, 9, 16, 99)):
        got = sess.run(None, {"in0": np.zeros((1, 2, lh, lw), F32), "in1": np.zeros((1, 3, ih, iw), F32)})[0]
        np.testing.assert_allclose(got, clustered_oracle(fields, (lh, lw), (ih, iw)), atol=1e-6)


@pytest.mark.parametrize("fields,msg", [
    (dict(width=[4.0, 5.0], height=[4.0]), "as many width as height"),
    (dict(width=[4.0], height=[4.0], min_size=[10.0]), "exclude"),
    (dict(width=[4.0], height=[4.0], aspect_ratio=[2.0]), "exclude"),
    (dict(width=[0.0], height=[4.0]), "positive"),
])
def test_clustered_refuses_what_opencv_asserts(fields, msg):
    with pytest.raises(ProtogenError, match=msg):
        params_of("PriorBox", fields)


@pytest.mark.parametrize("fields,layer_hw,img_hw", CASES)
def test_opencv_reads_the_written_clustered_priors(tmp_path, fields, layer_hw, img_hw):
    """The written prototxt carries width/height; OpenCV's dnn computes the same priors."""
    ins = [np.zeros((1, 2) + layer_hw, F32), np.zeros((1, 3) + img_hw, F32)]
    g, feeds = one_layer("PriorBox", params_of("PriorBox", fields), ins)
    net = _opencv_net(tmp_path, g)
    assert "width:" in (tmp_path / "net.prototxt").read_text()
    for k, v in feeds.items():
        net.setInput(v, k)
    np.testing.assert_allclose(net.forward(), clustered_oracle(fields, layer_hw, img_hw), rtol=0, atol=1e-6)
