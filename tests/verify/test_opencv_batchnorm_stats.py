"""OpenCV's BatchNorm with ``use_global_stats: false`` (protogen.opencv_defects, defect
``batchnorm-batch-stats``): a minimal reproduction against a numpy float64 transcription of
Caffe's forward, and the error model that explains ResNet-50 train_val's OpenCV difference in
the corpus test (tests/converter/test_corpus.py).

Caffe (BVLC/caffe src/caffe/layers/batch_norm_layer.cpp, Forward_cpu with use_global_stats_
false): per channel over batch and space, ``top = (x - mean) / sqrt(var + eps)`` with the
batch's own mean and (biased) variance. OpenCV's Caffe importer (caffe_importer.cpp) builds
MVN(eps) followed by the BatchNorm with mean 0 and variance 1: eps is applied twice, and the
MVN takes its statistics in one float32 pass (E[x^2] - E[x]^2 from float32 sums)."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("needs OpenCV 4.x (the Caffe importer)", allow_module_level=True)

from protogen import opencv_defects  # noqa: E402
from protogen.caffe import pb  # noqa: E402
from protogen.caffe.caffemodel import write_caffemodel  # noqa: E402

EPS = 1e-5


def caffe_batch_stats(x):
    """batch_norm_layer.cpp with use_global_stats false, in float64."""
    x = np.asarray(x, np.float64)
    mean = x.mean((0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def one_pass_float32(x):
    """The error model of OpenCV's MVN: mean and mean of squares from float32 running sums."""
    c = x.shape[1]
    xs = np.asarray(x, np.float32).transpose(1, 0, 2, 3).reshape(c, -1)
    n = np.float32(xs.shape[1])
    m = np.cumsum(xs, 1, dtype=np.float32)[:, -1] / n
    v = np.cumsum(xs * xs, 1, dtype=np.float32)[:, -1] / n - m * m
    m, v = m.astype(np.float64)[None, :, None, None], v.astype(np.float64)[None, :, None, None]
    return (np.asarray(x, np.float64) - m) / np.sqrt(v + EPS) / np.sqrt(1 + EPS)


def opencv_batchnorm(tmp_path, x):
    c = x.shape[1]
    proto = tmp_path / "bn.prototxt"
    dims = " ".join(f"dim: {d}" for d in x.shape)
    proto.write_text(f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n'
                     'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" '
                     'batch_norm_param { use_global_stats: false } }\n')
    m = pb.NetParameter()
    lp = m.layer.add()
    lp.name, lp.type = "bn", "BatchNorm"
    # stored statistics that Caffe ignores here (mean 0.3, variance 2): OpenCV must too
    write_caffemodel(tmp_path / "bn.caffemodel", m, {"bn": [np.full(c, 0.3, np.float32),
                                                           np.full(c, 2.0, np.float32),
                                                           np.ones(1, np.float32)]})
    net = cv2.dnn.readNetFromCaffe(str(proto), str(tmp_path / "bn.caffemodel"))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return net.forward().astype(np.float64)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_opencv_applies_eps_twice(tmp_path):
    """Zero-mean input (no cancellation in the statistics): OpenCV equals Caffe's output divided
    by sqrt(1 + eps), not Caffe's output."""
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    got = opencv_batchnorm(tmp_path, x)
    want = caffe_batch_stats(x)
    assert rel(got, want / np.sqrt(1 + EPS)) < 1e-6
    assert 0.9 * EPS / 2 < rel(got, want) < 1.1 * EPS / 2


@pytest.mark.parametrize("hw, mean_over_std, lo, hi", [(8, 7.0, 2e-6, 5e-5), (56, 7.0, 2e-5, 3e-4)])
def test_opencv_statistics_are_one_pass_float32(tmp_path, hw, mean_over_std, lo, hi):
    """With a mean of 7 standard deviations OpenCV leaves float64 Caffe by an amount that grows
    with the map (float32 sums of H*W values), and is within a few 1e-6 of the one-pass
    float32 model: rounding of OpenCV's algorithm, on top of the second eps."""
    x = (np.random.default_rng(1).standard_normal((1, 8, hw, hw)) + mean_over_std).astype(np.float32)
    got = opencv_batchnorm(tmp_path, x)
    want = caffe_batch_stats(x)
    assert lo < rel(got, want) < hi
    assert rel(got, one_pass_float32(x)) < 0.2 * rel(got, want)


def test_defect_applies_to_batch_statistics_only():
    from protogen.layers.norm import BatchNormParams
    d = opencv_defects.KNOWN_DEFECTS
    bn = next(k for k in d if k.name == "batchnorm-batch-stats")
    assert bn.applies(BatchNormParams(use_global_stats=False), [(1, 4, 8, 8)])
    assert not bn.applies(BatchNormParams(use_global_stats=True), [(1, 4, 8, 8)])
