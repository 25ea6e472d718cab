"""Fork layer types that are compositions of standard layers, training heads or data sources.

* ``DenseBlock`` — the memory-efficient DenseNet fork (Tongcheng Li's caffe; semantics from
  its DenseBlock_layer.cpp / DenseBlock_layer.cu as copied in senlinuc/caffe_ocr
  src/caffe/layers/). The loader expands it into the standard layers it is equivalent to
  (:meth:`DenseBlock.expand`, called by :mod:`protogen.caffe.fork_rewrite`); its caffemodel
  blobs are distributed to them by :meth:`DenseBlock.split_blobs`. Per transition ``i``
  (``C_i = initChannel + i * growthRate`` channels in, ``X_0`` = bottom)::

      y = ReLU(Scale(BatchNorm(X_i)))                      blobs T+i, 2T+i (scale, bias)
                                                           and 3T+i, 4T+i (mean, var)
      if use_BC: y = ReLU(Scale(BatchNorm(Conv1x1(y))))    4*growthRate outputs, blobs 5T+i
                                                           (filter), 6T..9T+i (BN)
      X_{i+1} = Concat(X_i, Conv3x3(y, pad 1))             growthRate outputs, blob i

  Facts from the source: the forward the fork runs (Forward_gpu) uses cuDNN's
  ``CUDNN_CONVOLUTION`` mode, a true convolution (the kernel flipped in both spatial axes;
  the CPU fallback ``convolution_Fwd`` indexes ``h + 1 - fx`` likewise), so the 3x3 kernels
  are flipped when they become Caffe (cross-correlation) Convolution weights; batch
  normalisation at TEST is ``cudnnBatchNormalizationForwardInference`` with the stored
  mean/variance as they are and epsilon CUDNN_BN_MIN_EPSILON (1e-5; the CPU fallback uses
  1e-5 too); the 1x1/3x3 convolutions have no bias; dropout (use_dropout) acts only in TRAIN.
  The last blob (the "BN timer", blob 10T or 5T) is only read by the CPU fallback, which
  divides the statistics by it; the GPU forward the fork is built for ignores it, and so do
  we. The convolution geometry fields (pad_h, filter_H, strides) are ignored by the fork
  (fixed 3x3, pad 1, stride 1 descriptors).
* ``MarginInnerProduct`` — SphereFace's A-Softmax head (wy1iu/sphereface
  tools/caffe-sphereface/src/caffe/layers/margin_inner_product_layer.cpp). Its forward reads
  the label: the label's logit of each sample is replaced by |x| * psi(theta) (the angular
  margin), and all logits are mixed with the plain ones by lambda, which it also anneals
  with the iteration count; the weights are L2-normalised in place on every call. Without a
  label it computes nothing, and its output only feeds the loss: a training head. The
  inference view drops it with the labels (``is_metric``); the face embedding users extract
  is its input (``fc5``).
* ``ImageLabelmapData`` — HED's image + edge-map list (s9xie/hed
  src/caffe/layers/image_labelmap_data_layer.cpp): image_data_param as ImageData (batch_size,
  is_color, new_height/new_width, then transform_param's crop), and a 1-channel label map of
  the same height and width.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import LayerType, register
from .io import ImageData


# ----------------------------------------------------------------------------- ImageLabelmapData
@register
class ImageLabelmapData(ImageData):
    """HED's image + label-map list: data like ImageData, label N x 1 x H x W."""
    type = "ImageLabelmapData"
    param_field = "image_data_param"
    schemas = ("hed",)

    def output_shapes(self, p, ins, n_tops):
        data = super().output_shapes(p, ins, 1)[0]
        return [data, (data[0], 1, data[2], data[3])][:n_tops]


# ----------------------------------------------------------------------------- MarginInnerProduct
@dataclass(frozen=True)
class MarginInnerProductParams:
    num_output: int = 0
    type: str = "SINGLE"
    axis: int = 1


@register
class MarginInnerProduct(LayerType):
    """SphereFace's A-Softmax training head (reads the label; see the module docstring)."""
    type = "MarginInnerProduct"
    param_field = "margin_inner_product_param"
    Params = MarginInnerProductParams
    schemas = ("sphereface",)
    n_bottoms = (2, 2)
    n_tops = (1, 2)
    is_metric = True     # reads labels; its output only feeds the loss: dropped with them
    benign_param_fields = LayerType.benign_param_fields | {
        "base", "gamma", "power", "iteration", "lambda_min"}

    def validate(self, p):
        if p.num_output <= 0:
            raise ProtogenError("margin_inner_product_param needs a positive num_output")

    def output_shapes(self, p, ins, n_tops):
        axis = p.axis % len(ins[0])
        return [tuple(ins[0][:axis]) + (p.num_output,), (1,)][:n_tops]

    def weight_shapes(self, p, ins):
        axis = p.axis % len(ins[0])
        k = 1
        for d in ins[0][axis:]:
            k *= d
        return [(p.num_output, k)]


# ----------------------------------------------------------------------------- DenseBlock
@dataclass(frozen=True)
class DenseBlockParams:
    numTransition: int = 40
    initChannel: int = 16
    growthRate: int = 12
    use_dropout: bool = False
    dropout_amount: float = 0.0
    use_BC: bool = False


#: fields of denseblock_param the fork reads but that change nothing at inference
_BENIGN = frozenset({"Filter_Filler", "BN_Scaler_Filler", "BN_Bias_Filler", "gpuIdx",
                     "BC_ultra_space_efficient", "workspace_MB", "moving_average_fraction"})
#: convolution geometry fields the fork's layer ignores (fixed 3x3, pad 1, stride 1)
_IGNORED_GEOMETRY = {"pad_h": 1, "pad_w": 1, "conv_verticalStride": 1,
                     "conv_horizentalStride": 1, "filter_H": 3, "filter_W": 3}


@register
class DenseBlock(LayerType):
    """Tongcheng Li's memory-efficient dense block; expanded by the loader into BatchNorm,
    Scale, ReLU, Convolution, (Dropout) and Concat layers (see the module docstring)."""
    type = "DenseBlock"
    param_field = "denseblock_param"
    Params = DenseBlockParams
    schemas = ("densenet-tongcheng",)
    benign_param_fields = LayerType.benign_param_fields | _BENIGN | set(_IGNORED_GEOMETRY)
    #: the standard types the loader rewrites it into (listed by ``protogen layers``)
    expands_into = ("BatchNorm", "Scale", "ReLU", "Convolution", "Dropout", "Concat")

    def validate(self, p):
        if p.numTransition < 1 or p.growthRate < 1 or p.initChannel < 1:
            raise ProtogenError("denseblock_param needs positive numTransition, initChannel "
                                "and growthRate")

    def output_shapes(self, p, ins, n_tops):
        n, c, h, w = ins[0]
        if c != p.initChannel:
            raise ShapeError(f"denseblock_param.initChannel is {p.initChannel} but the bottom "
                             f"has {c} channels")
        return [(n, c + p.numTransition * p.growthRate, h, w)]

    def weight_shapes(self, p, ins):
        """The fork's blob order (LayerSetUp): filters, scalers, biases, means, variances
        (T each), with use_BC the 1x1 filters and the bottleneck's scalers, biases, means,
        variances (T each), then the one "BN timer" blob."""
        t, g, c0 = p.numTransition, p.growthRate, p.initChannel
        cs = [c0 + i * g for i in range(t)]
        k = 4 * g if p.use_BC else None
        out = [(g, k if p.use_BC else c, 3, 3) for c in cs]
        for _ in range(4):
            out += [(1, c, 1, 1) for c in cs]
        if p.use_BC:
            out += [(4 * g, c, 1, 1) for c in cs]
            out += [(1, 4 * g, 1, 1)] * (4 * t)
        return out + [(1,)]

    # ------------------------------------------------------------- expansion
    def sub_names(self, name: str, i: int, bc: bool) -> dict:
        """Names of transition ``i``'s layers (also their top blobs)."""
        b = f"{name}/t{i}"
        d = {k: f"{b}/{k}" for k in ("bn", "scale", "relu", "conv3", "concat", "dropout")}
        if bc:
            d.update({k: f"{b}/{k}" for k in ("conv1", "bn1", "scale1", "relu1")})
        return d

    def expand(self, lp) -> list:
        """The standard LayerParameters equivalent to DenseBlock layer ``lp`` (TEST and TRAIN
        forward: BatchNorm follows the phase as the fork's BN does)."""
        from ..caffe import pb
        p = self.parse(lp)
        if len(lp.bottom) != 1 or len(lp.top) != 1:
            raise ProtogenError("DenseBlock takes one bottom and one top")
        if lp.top[0] == lp.bottom[0]:
            raise ProtogenError("DenseBlock cannot run in place (its top has more channels)")
        out = []

        def layer(name, type_, bottoms, tops):
            l = pb.LayerParameter(name=name, type=type_)
            l.bottom.extend(bottoms)
            l.top.extend(tops)
            l.include.extend(lp.include)
            l.exclude.extend(lp.exclude)
            out.append(l)
            return l

        x = lp.bottom[0]
        for i in range(p.numTransition):
            n = self.sub_names(lp.name, i, p.use_BC)
            y = self._bn_relu(layer, x, n["bn"], n["scale"], n["relu"])
            if p.use_BC:
                c1 = layer(n["conv1"], "Convolution", [y], [n["conv1"]])
                c1.convolution_param.num_output = 4 * p.growthRate
                c1.convolution_param.bias_term = False
                c1.convolution_param.kernel_size.append(1)
                y = self._bn_relu(layer, n["conv1"], n["bn1"], n["scale1"], n["relu1"])
            c3 = layer(n["conv3"], "Convolution", [y], [n["conv3"]])
            c3.convolution_param.num_output = p.growthRate
            c3.convolution_param.bias_term = False
            c3.convolution_param.kernel_size.append(3)
            c3.convolution_param.pad.append(1)
            if p.use_dropout:
                d = layer(n["dropout"], "Dropout", [n["conv3"]], [n["conv3"]])
                d.dropout_param.dropout_ratio = p.dropout_amount
            last = i == p.numTransition - 1
            layer(n["concat"], "Concat", [x, n["conv3"]], [lp.top[0] if last else n["concat"]])
            x = n["concat"]
        return out

    @staticmethod
    def _bn_relu(layer, x, bn, scale, relu) -> str:
        b = layer(bn, "BatchNorm", [x], [bn])
        b.batch_norm_param.eps = 1e-5            # CUDNN_BN_MIN_EPSILON (cuDNN <= 7)
        s = layer(scale, "Scale", [bn], [bn])
        s.scale_param.bias_term = True
        layer(relu, "ReLU", [bn], [bn])
        return bn

    def split_blobs(self, lp, blobs: list, file=None) -> dict:
        """The caffemodel blobs of DenseBlock ``lp`` (the fork's order) as blobs of the
        expanded layers, by name: 3x3 kernels flipped (cuDNN CUDNN_CONVOLUTION is a true
        convolution), statistics as stored with a scale factor of 1."""
        import numpy as np
        p = self.parse(lp)
        t, g = p.numTransition, p.growthRate
        want = len(self.weight_shapes(p, [(1, p.initChannel, 1, 1)]))
        if len(blobs) != want:
            raise ProtogenError(f"the caffemodel has {len(blobs)} blobs for this DenseBlock; "
                                f"the fork's layer has {want} (numTransition {t}, use_BC "
                                f"{str(p.use_BC).lower()})", file=file, layer=lp.name)

        def vec(i, c):
            a = np.asarray(blobs[i], np.float32)
            if a.size != c:
                raise ProtogenError(f"DenseBlock blob {i} has {a.size} values, expected {c}",
                                    file=file, layer=lp.name)
            return a.reshape(c)

        one = np.ones(1, np.float32)
        out = {}
        for i in range(t):
            n = self.sub_names(lp.name, i, p.use_BC)
            c = p.initChannel + i * g
            k3 = np.asarray(blobs[i], np.float32)
            out[n["conv3"]] = [np.ascontiguousarray(k3[:, :, ::-1, ::-1])]
            out[n["bn"]] = [vec(3 * t + i, c), vec(4 * t + i, c), one]
            out[n["scale"]] = [vec(t + i, c), vec(2 * t + i, c)]
            if p.use_BC:
                out[n["conv1"]] = [np.asarray(blobs[5 * t + i], np.float32)]
                out[n["bn1"]] = [vec(8 * t + i, 4 * g), vec(9 * t + i, 4 * g), one]
                out[n["scale1"]] = [vec(6 * t + i, 4 * g), vec(7 * t + i, 4 * g)]
        return out

    def unsupported(self, lp):
        bad = super().unsupported(lp)
        if not bad:
            bad.append("DenseBlock is expanded into standard layers by "
                       "protogen.caffe.fork_rewrite (load_model/load_prototxt); this reader "
                       "did not expand it")
        return bad
