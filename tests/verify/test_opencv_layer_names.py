"""OpenCV 4.14's Caffe importer names a layer that is not in place after its first top (a
Convolution "c" with top "mid" is OpenCV's layer "mid"): verify asks OpenCV for a net output
written by a layer named otherwise (the OpenPose nets end in "Mconv7_stage6" -> "net_output")."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("needs OpenCV 4.x (the Caffe importer)", allow_module_level=True)

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.verify import verify  # noqa: E402

NET = """name: "t"
input: "data" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "c" type: "Convolution" bottom: "data" top: "mid" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "r" type: "ReLU" bottom: "mid" top: "mid" }
layer { name: "last" type: "Convolution" bottom: "mid" top: "net_output" convolution_param { num_output: 2 kernel_size: 1 } }
"""


def test_opencv_names_layers_after_their_top(tmp_path):
    p = tmp_path / "t.prototxt"
    p.write_text(NET)
    net = cv2.dnn.readNetFromCaffe(str(p))
    assert list(net.getLayerNames()) == ["mid", "r", "net_output"]


@pytest.mark.parametrize("blobs", ["outputs", "all"])
def test_verify_reads_opencv_outputs_of_layers_named_otherwise(tmp_path, blobs):
    p = tmp_path / "t.prototxt"
    p.write_text(NET)
    rep = verify(load_model(p), seed=0, batch=2, blobs=blobs)
    assert rep.ok, rep.format_table()
    cv = {c.blob for c in rep.comparisons if c.runtime == "opencv-caffe"}
    assert "net_output" in cv and (blobs == "outputs" or "mid@1" in cv or "mid" in cv), cv
