"""Shared helpers of the ONNX-import tests: ONNX Runtime as the oracle, OpenCV's Caffe
importer as the runtime that must load what we write, and a relative-error check that
refuses degenerate references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RTOL = 1e-4


def ort_run(model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort
    data = model if isinstance(model, (bytes, str)) else (str(model) if isinstance(model, Path)
                                                          else model.SerializeToString())
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def assert_close(ref: np.ndarray, got: np.ndarray, what: str = "", rtol: float = RTOL) -> float:
    """max |ref - got| <= rtol * max |ref|, on a reference that is not degenerate; returns
    the relative error."""
    assert ref.shape == got.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = float(np.abs(ref).max())
    assert np.isfinite(ref).all() and scale > 0 and float(ref.std()) > 1e-6 * max(scale, 1), \
        f"{what}: degenerate reference output"
    err = float(np.abs(ref.astype(np.float64) - got).max())
    assert err <= rtol * max(scale, 1e-3), f"{what}: max abs error {err} vs scale {scale}"
    return err / max(scale, 1e-3)


def opencv_or_skip():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5)")
    return cv2


def opencv_caffe_run(prototxt, caffemodel, x: np.ndarray, blob: str) -> np.ndarray:
    """OpenCV dnn's Caffe importer on the written files: the value of ``blob`` (the output of
    the last layer whose first top it is)."""
    from protogen.caffe.prototxt import read_prototxt
    cv2 = opencv_or_skip()
    msg = read_prototxt(str(prototxt))
    layer = [lp.name for lp in msg.layer if lp.top[:1] == [blob]][-1]
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    if hasattr(net, "enableWinograd"):      # its approximate 3x3 kernel (docs/verify.md)
        net.enableWinograd(False)
    net.setInput(x)
    return net.forward(layer)


def caffe_output_blob(graph, onnx_model) -> str:
    """The Caffe blob of the ONNX graph's first output (blob names follow tensor names)."""
    out = onnx_model.graph.output[0].name
    tops = {t for l in graph.layers for t in l.tops}
    assert out in tops, f"output {out} not among the Caffe blobs"
    return out
