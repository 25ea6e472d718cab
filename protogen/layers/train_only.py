"""Layers that only exist for training or evaluation: losses and metrics that read labels.

They have no inference meaning: the inference view (protogen.caffe.loader.inference_view)
drops every layer whose type ``is_loss`` (with a note), together with what depends on it, so a
training net converts whatever its losses are. Their parameters are training settings and are
not checked. Each keeps Caffe's top shape (a scalar loss, as every upstream LossLayer::Reshape
gives; the metrics' own Reshape), so a whole train/test net still infers its shapes.

Upstream BVLC/caffe (src/caffe/layers/*_loss_layer.cpp): EuclideanLoss,
SigmoidCrossEntropyLoss, ContrastiveLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss.
Forks: SmoothL1Loss (py-faster-rcnn smooth_L1_loss_layer.cpp), MultiBoxLoss (weiliu89/caffe),
CenterLoss (ydwen/caffe-face center_loss_layer.cpp), SegAccuracy (DeepLab
seg_accuracy_layer.cpp), DetectionEvaluate (weiliu89/caffe detection_evaluate_layer.cpp: top
1 x 1 x N x 5), EvalDetection (intel/caffe YOLO evaluation). A ``type: "Python"`` layer with
a nonzero loss_weight on every top (PythonLoss: Caffe's own rule for what a loss is).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import LayerType, register
from .python_code import PythonCode


class _TrainOnly(LayerType):
    n_bottoms = (1, None)
    n_tops = (0, None)
    is_loss = True
    benign_fields = frozenset({"loss_param", "loss_weight"})

    def unsupported(self, lp):
        return []            # training settings: never affect an inference net

    def output_shapes(self, p, ins, n_tops):
        return [()] * n_tops


def _make(name: str, field: str | None, schemas=("upstream",), bottoms=(2, None), doc=""):
    cls = type(name, (_TrainOnly,), {"type": name, "param_field": field, "schemas": schemas,
                                     "n_bottoms": bottoms, "__doc__": doc or f"{name}: training only."})
    return register(cls)


EuclideanLoss = _make("EuclideanLoss", None, bottoms=(2, 2))
SigmoidCrossEntropyLoss = _make("SigmoidCrossEntropyLoss", None, bottoms=(2, 2))
ContrastiveLoss = _make("ContrastiveLoss", "contrastive_loss_param", bottoms=(3, 3))
HingeLoss = _make("HingeLoss", "hinge_loss_param", bottoms=(2, 2))
InfogainLoss = _make("InfogainLoss", "infogain_loss_param", bottoms=(2, 3))
MultinomialLogisticLoss = _make("MultinomialLogisticLoss", None, bottoms=(2, 2))
SmoothL1Loss = _make("SmoothL1Loss", "smooth_l1_loss_param", ("py-faster-rcnn",), bottoms=(2, 4))
MultiBoxLoss = _make("MultiBoxLoss", "multibox_loss_param", ("ssd",), bottoms=(4, 4))
CenterLoss = _make("CenterLoss", None, ("caffe-face",), bottoms=(2, 2),
                   doc="CenterLoss: training only (its centers blob is not used at inference).")
SegAccuracy = _make("SegAccuracy", "seg_accuracy_param", ("deeplab",), bottoms=(2, 2))
EvalDetection = _make("EvalDetection", "eval_detection_param", ("yolo",), bottoms=(2, 3))


@dataclass(frozen=True)
class PythonLossParams:
    module: str = ""
    layer: str = ""
    param_str: str = ""


def is_python_loss(lp) -> bool:
    """A ``type: "Python"`` LayerParameter that Caffe treats as a loss: it has bottoms and a
    nonzero ``loss_weight`` for every top (Layer::SetLossWeights, BVLC/caffe
    include/caffe/layer.hpp: a top with a nonzero loss weight is added to the net's objective;
    a PythonLayer is no LossLayer, so the weight is how a prototxt makes it one, as pycaffe's
    examples/pycaffe/linreg.prototxt says)."""
    return bool(lp.bottom) and len(lp.loss_weight) == len(lp.top) > 0 and all(w != 0 for w in lp.loss_weight)


@register
class PythonLoss(PythonCode, _TrainOnly):
    """A Python layer that is a loss (:func:`is_python_loss`): its code is not known, but a
    loss has no inference meaning, so the inference view drops it like the losses above (with
    the same note). Read through the ``Python`` type's resolve; written back as that Python
    layer with its loss_weight."""
    type = "Python:loss"
    Params = PythonLossParams


@register
class DetectionEvaluate(_TrainOnly):
    """SSD's evaluation against ground truth (reads the label): top 1 x 1 x N x 5."""
    type = "DetectionEvaluate"
    param_field = "detection_evaluate_param"
    schemas = ("ssd",)
    n_bottoms = (2, 2)

    def output_shapes(self, p, ins, n_tops):
        return [(1, 1, 1, 5)] * n_tops
