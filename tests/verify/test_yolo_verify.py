"""protogen verify on the YOLO corpus nets: the outputs of YoloDetectionOutput /
Yolov3DetectionOutput (types with is_detection_output) are compared as detection sets (count,
rows paired by image, label and score), not element-wise; OpenCV has neither type and is
skipped with that reason (LayerType.opencv_limit) instead of failing on its importer's error."""
from __future__ import annotations

import pytest

from tests.helpers import CORPUS, needs_corpus

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytestmark = needs_corpus

from tests.helpers import one_torch_thread  # noqa: E402,F401  (autouse: one torch thread)


@pytest.mark.parametrize("rel,shape", [
    ("eric612_mobilenet-yolo/models/yolov3/mobilenet_yolov3_lite_deploy.prototxt", (1, 3, 96, 96)),
    pytest.param("eric612_mobilenet-yolo/models/darknet/darknet19_deploy.prototxt", (1, 3, 96, 96),
                 marks=pytest.mark.slow),
])
def test_verify_compares_yolo_detections_as_sets(rel, shape):
    from protogen.caffe.loader import load_model
    from protogen.layers import get_type
    from protogen.verify import verify
    for t in ("YoloDetectionOutput", "Yolov3DetectionOutput"):
        assert get_type(t).is_detection_output
    rep = verify(load_model(CORPUS / rel, input_shape=shape), seed=0, batch=2, model_name=rel)
    assert rep.ok, rep.format_table()
    det = [c for c in rep.comparisons if c.blob == "detection_out"]
    assert {"ort-cpu"} <= {c.runtime for c in det}
    assert all(c.ok and "detections match" in c.note and "weak" not in c.note for c in det), det
    assert all(int(c.note.split()[0]) > 0 for c in det), det            # count of boxes > 0
    assert all("opencv" not in c.runtime for c in det)          # skipped, with the reason
    assert any("has no Caffe layer type" in (r.note or "") for r in rep.runtimes if r.name.startswith("opencv")), \
        rep.format_table()
