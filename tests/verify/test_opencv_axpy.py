"""OpenCV's Axpy (protogen.opencv_defects, defect ``axpy-swaps-x-y``): the SENet fork
(hujie-frank/SENet src/caffe/layers/axpy_layer.cpp, Forward_cpu) computes
``top[n, c] = bottom[0][n, c] * bottom[1][n, c] + bottom[2][n, c]`` (a * X + Y); OpenCV's
Caffe importer (modules/dnn/src/caffe/caffe_importer.cpp) builds Scale(bottom[2], bottom[0])
followed by an Eltwise sum with bottom[1], i.e. a * Y + X."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("needs OpenCV 4.x (the Caffe importer)", allow_module_level=True)


def test_opencv_axpy_swaps_x_and_y(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    y = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    proto = tmp_path / "axpy.prototxt"
    proto.write_text('name: "t"\n'
                     'input: "a" input_shape { dim: 1 dim: 3 dim: 1 dim: 1 }\n'
                     'input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
                     'input: "y" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
                     'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }\n')
    net = cv2.dnn.readNetFromCaffe(str(proto))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, v in (("a", a), ("x", x), ("y", y)):
        net.setInput(v, name)
    got = net.forward("axpy").astype(np.float64)
    a64, x64, y64 = (np.asarray(v, np.float64) for v in (a, x, y))
    caffe = a64 * x64 + y64                  # axpy_layer.cpp
    assert np.abs(got - (a64 * y64 + x64)).max() < 1e-5
    assert np.abs(got - caffe).max() > 0.1


def test_protogen_axpy_is_the_forks():
    import torch

    from protogen.layers import get_type
    rng = np.random.default_rng(1)
    a, x, y = rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    kind = get_type("Axpy")
    (out,) = kind.torch_forward(None, [torch.as_tensor(a), torch.as_tensor(x), torch.as_tensor(y)], [], n_tops=1)
    np.testing.assert_allclose(out.numpy(), a * x + y, rtol=1e-12)
