"""Documented defects of OpenCV's ``dnn`` Caffe importer that :mod:`protogen.verify` recognises.

OpenCV is an independent witness, not the reference: where it is known to compute something
other than Caffe, and the first blob where it leaves the float64 reference is made by a layer
that hits one of these defects, while every other runtime agrees with the reference, verify
reports the difference as that defect (with its hint) instead of failing. Each defect has a
minimal reproduction in tests/verify/test_opencv_defects.py that shows OpenCV alone is off
against a numpy float64 transcription of Caffe's forward.

A defect is keyed by the Caffe layer type it concerns (OpenCV implements per Caffe type).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ProtogenError

#: the runtime these defects belong to
RUNTIME = "opencv-caffe"


@dataclass(frozen=True)
class KnownDefect:
    name: str
    layer_type: str
    summary: str
    hint: str
    #: applies(params, in_shapes) -> True when a layer with these params and input shapes
    #: hits the defect
    applies: Callable

    def message(self, layer: str) -> str:
        return f"known OpenCV defect at layer '{layer}': {self.summary}. Hint: {self.hint}"


def _lrn_k(p, ins) -> bool:
    # Caffe (BVLC/caffe src/caffe/layers/lrn_layer.cpp) computes scale = k + alpha/n * sum x^2
    # across channels; OpenCV (opencv/opencv modules/dnn/src/layers/lrn_layer.cpp) reads a
    # parameter named "bias" (default 1), never Caffe's "k". WITHIN_CHANNEL ignores k in Caffe.
    return getattr(p, "norm_region", "") == "ACROSS_CHANNELS" and float(p.k) != 1.0


def _lrn_default_alpha(p, ins) -> bool:
    # Caffe's LRNParameter has alpha [default = 1]; protogen writes a field only where it
    # differs from Caffe's default, and OpenCV (4.14, measured: tests/verify/
    # test_opencv_defects.py) computes an LRN whose prototxt omits alpha with alpha = 1e-4
    return getattr(p, "norm_region", "") == "ACROSS_CHANNELS" and float(p.alpha) == 1.0


def _depthwise_3x3_on_1x1(p, ins) -> bool:
    # measured with OpenCV 4.14 (tests/verify/test_opencv_defects.py): a depthwise (group =
    # channels > 1) 3x3 convolution with pad 1 on a 1x1 feature map returns values of the
    # order 1e+30 (stride 1 or 2); 2x2 and larger maps, and group 1, are exact
    if not ins or len(ins[0]) != 4:
        return False
    _, c, h, w = ins[0]
    return (h, w) == (1, 1) and c > 1 and p.group == c and (p.kernel_h, p.kernel_w) == (3, 3) \
        and (p.pad_h, p.pad_w) == (1, 1)


def _prior_box_float_sizes(p, ins) -> bool:
    # Caffe's PriorBox truncates min_size/max_size to int (weiliu89/caffe prior_box_layer.cpp:
    # int min_size_ = min_sizes_[s]); OpenCV's PriorBoxLayer keeps the floats (Pelee-SSD's
    # 30.4, 60.8, ...). Reproduction: tests/layers/test_ssd.py::test_opencv_prior_box_float_sizes
    return any(float(v) != int(v) for v in tuple(p.min_size) + tuple(p.max_size))


def _detection_output_refinedet(p, ins) -> bool:
    # OpenCV's DetectionOutputLayer::forward reads loc, conf and priors only: RefineDet's
    # arm_conf / arm_loc bottoms (objectness filter, prior refinement) are ignored.
    # Reproduction: tests/layers/test_ssd.py::test_opencv_ignores_refinedet_bottoms
    return len(ins) > 3


def _detection_output_eta(p, ins) -> bool:
    # OpenCV's DetectionOutputLayer calls its NMS with eta fixed to 1.0 (opencv modules/dnn/
    # src/layers/detection_output_layer.cpp); Caffe's ApplyNMSFast shrinks the threshold by eta.
    # Reproduction: tests/layers/test_adaptive_nms.py::test_opencv_ignores_eta
    return float(getattr(p, "eta", 1.0)) < 1.0


def _batchnorm_batch_stats(p, ins) -> bool:
    # Caffe's BatchNorm with use_global_stats: false (BVLC/caffe src/caffe/layers/
    # batch_norm_layer.cpp) normalises with the batch's statistics: (x - mean) / sqrt(var + eps).
    # OpenCV's Caffe importer (modules/dnn/src/caffe/caffe_importer.cpp) builds it as an MVN
    # layer (eps) followed by the BatchNorm with its blobs set to mean 0, variance 1, which
    # applies eps a second time (a factor 1/sqrt(1 + eps): 5e-6 for eps 1e-5); and its MVN
    # takes the mean and the mean of squares in one float32 pass, so the normalised output is
    # off by ~ (float32 sum error of H*W values) * (mean/std)^2 (measured: 5e-5 at 56x56 with
    # mean = 7 std). Reproduction: tests/verify/test_opencv_batchnorm_stats.py
    return getattr(p, "use_global_stats", None) is False


def _axpy(p, ins) -> bool:
    # the SENet fork's Axpy (hujie-frank/SENet src/caffe/layers/axpy_layer.cpp) computes
    # top = bottom[0] * bottom[1] + bottom[2] (a * X + Y); OpenCV's Caffe importer builds
    # Scale(bottom[2], bottom[0]) + bottom[1], i.e. a * Y + X. Reproduction:
    # tests/verify/test_opencv_axpy.py
    return True


KNOWN_DEFECTS = (
    KnownDefect("lrn-ignores-k", "LRN",
                "OpenCV's LRN ignores Caffe's 'k' (it always uses k = 1)",
                "torch and ONNX Runtime follow Caffe's lrn_layer.cpp, which uses k; "
                "OpenCV agrees only for k: 1", _lrn_k),
    KnownDefect("lrn-default-alpha", "LRN",
                "OpenCV takes an LRN without 'alpha' (Caffe's default 1, not written) as "
                "alpha = 0.0001",
                "torch and ONNX Runtime follow Caffe's default; OpenCV agrees when the "
                "prototxt states alpha (any value other than 1 is written)", _lrn_default_alpha),
    KnownDefect("depthwise-3x3-on-1x1", "Convolution",
                "OpenCV 4.x returns garbage for a 3x3 pad-1 depthwise convolution on a 1x1 "
                "feature map",
                "the other runtimes are right; to check with OpenCV as well, use a larger "
                "input (e.g. --input-size 64)", _depthwise_3x3_on_1x1),
    KnownDefect("prior-box-float-sizes", "PriorBox",
                "OpenCV's PriorBox keeps a non-integer min_size/max_size, Caffe truncates it "
                "to int", "torch and ONNX Runtime follow Caffe's prior_box_layer.cpp; OpenCV "
                "agrees for integer sizes", _prior_box_float_sizes),
    KnownDefect("detection-output-refinedet", "DetectionOutput",
                "OpenCV's DetectionOutput ignores RefineDet's arm_conf/arm_loc bottoms",
                "torch and ONNX Runtime apply RefineDet's objectness filter and prior "
                "refinement; OpenCV checks the head blobs only (--blobs all)",
                _detection_output_refinedet),
    KnownDefect("detection-output-ignores-eta", "DetectionOutput",
                "OpenCV's DetectionOutput ignores nms_param.eta (adaptive NMS; it uses eta = 1)",
                "torch and ONNX Runtime shrink the NMS threshold by eta as Caffe's ApplyNMSFast "
                "does; OpenCV agrees only for eta: 1", _detection_output_eta),
    KnownDefect("batchnorm-batch-stats", "BatchNorm",
                "OpenCV computes a BatchNorm with use_global_stats: false as MVN then a second "
                "eps (x 1/sqrt(1 + eps)), with one-pass float32 statistics",
                "torch and ONNX Runtime follow Caffe's batch_norm_layer.cpp; OpenCV's error grows "
                "with the map size and |mean|/std of the BatchNorm's input",
                _batchnorm_batch_stats),
    KnownDefect("axpy-swaps-x-y", "Axpy",
                "OpenCV computes Axpy as a * bottom[2] + bottom[1] (the SENet fork: a * bottom[1] "
                "+ bottom[2])", "torch and ONNX Runtime follow axpy_layer.cpp; OpenCV agrees only "
                "where bottom[1] equals bottom[2]", _axpy),
)


def find(layer, in_shapes) -> KnownDefect | None:
    """The known OpenCV defect that ``layer`` (with these input shapes) hits, if any. A fork
    spelling of a type (e.g. ConvolutionDepthwise) counts as the type it subclasses."""
    for d in KNOWN_DEFECTS:
        if _is_type(layer, d.layer_type) and d.applies(layer.params, in_shapes):
            return d
    return None


def _is_type(layer, type_name: str) -> bool:
    from .layers import get_type
    try:
        return layer.type == type_name or isinstance(layer.kind, type(get_type(type_name)))
    except Exception:   # noqa: BLE001 - an unknown type name is simply not this type
        return False
