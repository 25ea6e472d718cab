"""GoogLeNet / Inception v1 (Szegedy et al. 2014, arXiv:1409.4842), as the BVLC Caffe release.

Follows ``models/bvlc_googlenet/{deploy,train_val}.prototxt`` of BVLC Caffe layer for layer:
LRN after pool1 and conv2, no BatchNorm, real 5x5 branches, max pools with Caffe's ceil
rounding (112 -> 56 -> 28 -> 14 -> 7 at 224), average pool 7x7, dropout 0.4, and in the
train net the two auxiliary classifiers (after inception_4a and inception_4d: AVE 5x5/3 ->
1x1 conv 128 + ReLU -> FC 1024 + ReLU -> dropout 0.7 -> FC, loss_weight 0.3), three losses
and their top-1/top-5 accuracies. Layer names are BVLC's (``inception_3a/1x1``,
``loss3/classifier``, ``prob``); fillers and lr/decay multipliers are BVLC's too.
"""
from __future__ import annotations

from ..ir import ParamSpec
from . import NUM_CLASSES, Option, model

#: the auxiliary heads' 5x5 average pool needs a 5x5 map after inception_4a: >= 79 input
INPUT_SIZE = Option("input_size", int, 224, range=(79, 2048), help="input height and width")

#: Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _bvlc_learning(n, bias: float = 0.2) -> None:
    """BVLC's fillers and multipliers on the layer just added (xavier, bias const, lr 1/2)."""
    layer = n.graph.layers[-1]
    layer.fillers = {"weight_filler": {"type": "xavier"},
                     "bias_filler": {"type": "constant", "value": bias}}
    layer.param_specs = [ParamSpec(1.0, 1.0), ParamSpec(2.0, 0.0)]


def conv_relu(n, x, out, k, stride=1, pad=0, *, name, relu_name, bias=0.2):
    y = n.conv(x, out, k, stride, pad, name=name)
    _bvlc_learning(n, bias)
    return n.relu(y, name=relu_name)


def inception(n, x, c1, c3r, c3, c5r, c5, proj):
    """One Inception module (Fig. 2b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max -> 1x1, concat."""
    b1 = conv_relu(n, x, c1, 1, name="1x1", relu_name="relu_1x1")
    b2 = conv_relu(n, x, c3r, 1, name="3x3_reduce", relu_name="relu_3x3_reduce")
    b2 = conv_relu(n, b2, c3, 3, 1, 1, name="3x3", relu_name="relu_3x3")
    b3 = conv_relu(n, x, c5r, 1, name="5x5_reduce", relu_name="relu_5x5_reduce")
    b3 = conv_relu(n, b3, c5, 5, 1, 2, name="5x5", relu_name="relu_5x5")
    b4 = n.max_pool(x, 3, 1, 1, name="pool")
    b4 = conv_relu(n, b4, proj, 1, name="pool_proj", relu_name="relu_pool_proj")
    return n.concat([b1, b2, b3, b4], name="output")


def aux_head(n, x, num_classes):
    """Auxiliary classifier (train net only), as loss1/* and loss2/* of BVLC train_val."""
    y = n.ave_pool(x, 5, 3, name="ave_pool")
    y = conv_relu(n, y, 128, 1, name="conv", relu_name="relu_conv")
    y = n.fc(y, 1024, name="fc")
    _bvlc_learning(n)
    y = n.relu(y, name="relu_fc")
    y = n.dropout(y, 0.7, name="drop_fc")
    y = n.fc(y, num_classes, name="classifier")
    _bvlc_learning(n, 0.0)
    return y


def losses(n, logits, prefix: str, weight: float) -> None:
    """SoftmaxWithLoss (weight) + top-1/top-5 accuracy, named as BVLC's ``lossK/...``."""
    n.loss(logits, name=f"{prefix}/loss" if prefix != "loss3" else "loss3/loss3", loss_weight=weight)
    n.accuracy(logits, 1, name=f"{prefix}/top-1")
    n.accuracy(logits, 5, name=f"{prefix}/top-5")


@model("googlenet", INPUT_SIZE, NUM_CLASSES, aliases=("inception_v1", "bvlc_googlenet"),
       summary="GoogLeNet / Inception v1 (Szegedy et al. 2014) as BVLC Caffe: LRN, 5x5 branches, "
               "2 auxiliary heads in the train net")
def googlenet(n, x, input_size=224, num_classes=1000):
    """GoogLeNet as models/bvlc_googlenet; returns None (adds its own outputs and losses)."""
    x = conv_relu(n, x, 64, 7, 2, 3, name="conv1/7x7_s2", relu_name="conv1/relu_7x7")
    x = n.max_pool(x, 3, 2, name="pool1/3x3_s2")
    x = n.lrn(x, 5, 1e-4, 0.75, name="pool1/norm1")
    x = conv_relu(n, x, 64, 1, name="conv2/3x3_reduce", relu_name="conv2/relu_3x3_reduce")
    x = conv_relu(n, x, 192, 3, 1, 1, name="conv2/3x3", relu_name="conv2/relu_3x3")
    x = n.lrn(x, 5, 1e-4, 0.75, name="conv2/norm2")
    x = n.max_pool(x, 3, 2, name="pool2/3x3_s2")
    for key, cfg in MODULES.items():
        if key == "4a":
            x = n.max_pool(x, 3, 2, name="pool3/3x3_s2")
        elif key == "5a":
            x = n.max_pool(x, 3, 2, name="pool4/3x3_s2")
        with n.scope(f"inception_{key}"):
            x = inception(n, x, *cfg)
        if key in ("4a", "4d") and n.label is not None:
            prefix = "loss1" if key == "4a" else "loss2"
            with n.train_only():
                with n.scope(prefix):
                    aux = aux_head(n, x, num_classes)
                losses(n, aux, prefix, 0.3)
    # the last map is 7x7 at 224; a window as large as the map = global average pooling
    x = n.ave_pool(x, (x.shape[2], x.shape[3]), 1, name="pool5/7x7_s1")
    x = n.dropout(x, 0.4, name="pool5/drop_7x7_s1")
    logits = n.fc(x, num_classes, name="loss3/classifier")
    _bvlc_learning(n, 0.0)
    n.add("Softmax", [logits], name="prob", nets={"deploy"})
    if n.label is not None:
        losses(n, logits, "loss3", 1.0)
    return None
