"""Convolution, Deconvolution and InnerProduct."""
from __future__ import annotations

from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from . import conv_nd
from .base import Example, LayerType, he_normal, layer_blobs, numel, register, spatial_pair


@dataclass(frozen=True)
class ConvParams:
    num_output: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    group: int = 1
    bias_term: bool = True
    axis: int = 1
    #: the depth (first spatial) axis of a 3-D convolution, set when the prototxt gives three
    #: values per field (kernel_d 0: one value for every spatial axis, or 2-D; conv_nd.py)
    kernel_d: int = 0
    stride_d: int = 1
    pad_d: int = 0
    dilation_d: int = 1


#: facebookarchive/C3D's ConvolutionParameter fields (proto/caffe.proto, read by layers/c3d.py)
C3D_FIELDS = ("kernel_depth", "temporal_pad", "temporal_stride", "filter_group")


class _ConvBase(LayerType):
    """n bottoms -> n tops through the same weights (Caffe's BaseConvolutionLayer: all bottoms
    of one shape)."""
    param_field = "convolution_param"
    Params = ConvParams
    benign_param_fields = LayerType.benign_param_fields | {"force_nd_im2col"}
    n_bottoms = (1, None)
    n_tops = (1, None)

    def output_shapes(self, p, ins, n_tops):
        if n_tops != len(ins):
            raise ShapeError(f"{self.type} with {len(ins)} bottoms needs {len(ins)} tops, got {n_tops}")
        if any(tuple(s) != tuple(ins[0]) for s in ins[1:]):
            raise ShapeError(f"{self.type} bottoms must share one shape, got {[tuple(s) for s in ins]}")
        return self.shapes(p, ins[:1]) * len(ins)

    def default_params(self):
        raise ProtogenError(f"{self.type} needs num_output and kernel_size")

    def validate(self, p: ConvParams) -> None:
        if p.num_output <= 0:
            raise ProtogenError(f"num_output must be positive, got {p.num_output}")
        if min(p.kernel_h, p.kernel_w) <= 0:
            raise ProtogenError(f"kernel size must be positive, got {p.kernel_h}x{p.kernel_w}")
        if min(p.stride_h, p.stride_w) <= 0 or min(p.dilation_h, p.dilation_w) <= 0:
            raise ProtogenError("stride and dilation must be positive")
        if min(p.pad_h, p.pad_w) < 0:
            raise ProtogenError("pad must be >= 0")
        if p.group <= 0:
            raise ProtogenError("group must be positive")
        if p.num_output % p.group:
            raise ProtogenError(f"num_output {p.num_output} is not divisible by group {p.group}")
        if p.axis != 1:
            raise ProtogenError("only axis 1 (channels) is supported for convolution")
        conv_nd.validate_depth(p)

    def parse(self, lp) -> ConvParams:
        c = lp.convolution_param
        nd = conv_nd.parse_nd(c)
        if nd is not None:
            p = ConvParams(num_output=c.num_output, group=c.group, bias_term=c.bias_term, axis=c.axis, **nd)
            self.validate(p)
            return p
        kh, kw = spatial_pair(tuple(c.kernel_size), c.kernel_h, c.kernel_w, 0, "kernel_size")
        sh, sw = spatial_pair(tuple(c.stride), c.stride_h, c.stride_w, 1, "stride")
        ph, pw = spatial_pair(tuple(c.pad), c.pad_h, c.pad_w, 0, "pad")
        dh, dw = spatial_pair(tuple(c.dilation), 0, 0, 1, "dilation")
        p = ConvParams(num_output=c.num_output, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                       pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw, group=c.group,
                       bias_term=c.bias_term, axis=c.axis)
        self.validate(p)
        return p

    def unsupported(self, lp) -> list[str]:
        c = lp.convolution_param
        bad = []
        if any(len(getattr(c, f)) > 3 for f, _ in conv_nd.ND_FIELDS):
            bad.append("only 2-D and 3-D convolution are supported")
        if c.axis != 1:
            bad.append("convolution_param.axis != 1 is not supported")
        for f in C3D_FIELDS:       # read only by C3D's CONVOLUTION3D (layers/c3d.py)
            if c.HasField(f):
                bad.append(f"convolution_param.{f} is C3D's (CONVOLUTION3D), not {self.type}'s")
        return bad

    def write(self, p: ConvParams, lp) -> None:
        c = lp.convolution_param
        c.num_output = p.num_output
        if not p.bias_term:
            c.bias_term = False
        if p.kernel_d:
            conv_nd.write_nd(p, c)
            if p.group != 1:
                c.group = p.group
            return
        for name, a, b, dflt in (("pad", p.pad_h, p.pad_w, 0), ("kernel", p.kernel_h, p.kernel_w, None),
                                 ("stride", p.stride_h, p.stride_w, 1)):
            if a == b:
                if a != dflt:
                    getattr(c, "kernel_size" if name == "kernel" else name).append(a)
            else:
                setattr(c, f"{name}_h", a)
                setattr(c, f"{name}_w", b)
        if p.group != 1:
            c.group = p.group
        if (p.dilation_h, p.dilation_w) != (1, 1):
            c.dilation.extend([p.dilation_h] if p.dilation_h == p.dilation_w else [p.dilation_h, p.dilation_w])

    def axes(self, p: ConvParams, shape):
        """(kernel, stride, pad, dilation) per spatial axis for an input of ``shape``."""
        return conv_nd.axes(p, len(shape), self.type)

    def caffe_layers(self, layer, dialect, shapes=None) -> list:
        # a 5-D input: every field written with one value per spatial axis (conv_nd.explicit)
        if shapes and not layer.params.kernel_d and len(shapes[0]) == 5:
            layer = layer.copy(params=conv_nd.explicit(layer.params, 5))
        return super().caffe_layers(layer, dialect, shapes)

    def weight_shapes(self, p: ConvParams, ins):
        kernel = self.axes(p, ins[0])[0]
        cin = ins[0][1]
        if cin % p.group:
            raise ShapeError(f"input channels {cin} are not divisible by group {p.group}")
        w = self._weight_shape(p, cin) + kernel
        return [w, (p.num_output,)] if p.bias_term else [w]

    def init_weights(self, p: ConvParams, ins, rng):
        shapes = self.weight_shapes(p, ins)
        fan_in = ins[0][1] // p.group * numel(self.axes(p, ins[0])[0])
        ws = [he_normal(shapes[0], fan_in, rng)]
        if p.bias_term:
            ws.append((rng.standard_normal(shapes[1]) * 0.05).astype(np.float32))
        return ws

    # ONNX op of the lowering (Conv / ConvTranspose share Caffe's weight layout)
    onnx_op = "Conv"

    def to_onnx(self, ctx, step):
        p, l = step.layer.params, step.layer
        w = layer_blobs(step)
        ws = [ctx.const("weight", w[0])] + ([ctx.const("bias", w[1])] if p.bias_term else [])
        kernel, stride, pad, dil = self.axes(p, step.in_shapes[0])    # ONNX Conv is N-D
        pads = list(pad) * 2
        for x, y in zip(step.inputs, step.outputs):     # several bottoms share the weights
            ctx.op(self.onnx_op, [ctx.name(x)] + ws, y, kernel_shape=list(kernel),
                   strides=list(stride), pads=pads if any(pads) else None,
                   dilations=list(dil) if any(d != 1 for d in dil) else None,
                   group=p.group if p.group != 1 else None)

    #: the PyTorch module of the readable source (same weight layout as Caffe)
    torch_module = "nn.Conv2d"

    def torch_source(self, p: ConvParams, src, step):
        w = layer_blobs(step)
        kernel, stride, pad, dil = self.axes(p, step.in_shapes[0])
        args = [str(step.in_shapes[0][1]), str(p.num_output), conv_nd.fmt_tuple(kernel)]
        for name, v, dflt in (("stride", stride, 1), ("padding", pad, 0), ("dilation", dil, 1)):
            if any(a != dflt for a in v):
                args.append(f"{name}={conv_nd.fmt_tuple(v)}")
        if p.group != 1:
            args.append(f"groups={p.group}")
        if not p.bias_term:
            args.append("bias=False")
        weights = {"weight": w[0], "bias": w[1]} if p.bias_term else {"weight": w[0]}
        module = self.torch_module if len(kernel) == 2 else self.torch_module.replace("2d", "3d")
        m = src.module(f"{module}({', '.join(args)})", weights)
        if len(step.inputs) == 1:
            src.assign(f"{m}({src.x()})")
            return
        for i in range(len(step.inputs)):               # several bottoms share the weights
            src.line(f"{src.y(i)} = {m}({src.x(i)})")

    def macs(self, p: ConvParams, ins, outs) -> int:
        # each output element: (Cin/group) * kh * kw multiply-adds (bias not counted)
        cin = ins[0][1]
        return len(ins) * numel(outs[0][1:]) * (cin // p.group) * numel(self.axes(p, ins[0])[0])


@register
class Convolution(_ConvBase):
    type = "Convolution"
    #: DepthwiseConvolution (eric612/MobileNet-YOLO src/caffe/layers/depthwise_conv_layer.cpp,
    #: yonghenglh6/DepthwiseConvolution) is Caffe's convolution with the prototxt's group
    aliases = ("DepthwiseConvolution",)
    examples = (Example(params=dict(num_output=8, kernel_size=3), ins=[(2, 4, 9, 9)]),
                Example(params=dict(num_output=6, kernel_size=3, stride=2, pad=1, group=2),
                        ins=[(2, 4, 9, 8)]),
                Example(params=dict(num_output=5, kernel_h=3, kernel_w=1, pad_h=2, dilation=2,
                                    bias_term=False), ins=[(2, 3, 7, 6)]),
                # 3-D (5-D blobs): one value per spatial axis, and one value for all three
                Example(params=dict(num_output=4, kernel_size=[3, 2, 3], stride=[1, 2, 2],
                                    pad=[1, 0, 1], dilation=[1, 1, 2]), ins=[(2, 3, 5, 7, 8)]),
                Example(params=dict(num_output=4, kernel_size=3, pad=1, stride=2, group=2),
                        ins=[(1, 4, 5, 6, 7)]))

    def caffe_layers(self, layer, dialect, shapes=None) -> list:
        lps = super().caffe_layers(layer, dialect, shapes)
        p = layer.params
        if (dialect.depthwise != "Convolution" and shapes and p.group > 1
                and p.group == p.num_output == shapes[0][1]):
            lps[0].type = dialect.depthwise
        return lps

    @staticmethod
    def _weight_shape(p, cin):
        return (p.num_output, cin // p.group)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch.nn.functional as F
        _, stride, pad, dil = self.axes(p, tuple(xs[0].shape))
        conv = F.conv2d if len(stride) == 2 else F.conv3d
        return [conv(x, blobs[0], blobs[1] if p.bias_term else None, stride, pad, dil, p.group) for x in xs]

    def shapes(self, p: ConvParams, ins):
        kernel, stride, pad, dil = self.axes(p, ins[0])
        n, c, *sizes = ins[0]
        if c % p.group:
            raise ShapeError(f"input channels {c} are not divisible by group {p.group}")
        out = conv_nd.conv_out(sizes, kernel, stride, pad, dil)
        if min(out) <= 0:
            ek = "x".join(str(d * (k - 1) + 1) for k, d in zip(kernel, dil))
            raise ShapeError(f"input {'x'.join(map(str, sizes))} is smaller than the {ek} kernel "
                             f"(pad {','.join(map(str, pad))})")
        return [(n, p.num_output) + out]


@register
class ConvolutionDepthwise(Convolution):
    """A depthwise convolution that ignores ``group``: weights (C, 1, kh, kw), C output
    channels for C input channels (num_output must say C). Read as Convolution with group C.
    semantics: HJiahu/learn_caffe_src src/caffe/layers/conv_dw_layer.cpp (the
    farmingyard/caffe-mobilenet layer)"""
    type = "ConvolutionDepthwise"
    aliases = ()
    schemas = ("depthwise",)
    examples = (Example(params=dict(num_output=4, kernel_size=3, pad=1, group=4), ins=[(2, 4, 7, 7)]),
                Example(params=dict(num_output=3, kernel_size=3, stride=2), ins=[(2, 3, 7, 6)]))

    def shapes(self, p, ins):
        if len(ins[0]) == 4 and ins[0][1] != p.num_output:
            raise ShapeError(f"ConvolutionDepthwise gives as many channels as its input ({ins[0][1]}); "
                             f"num_output says {p.num_output}")
        return super().shapes(p, ins)

    def parse(self, lp) -> ConvParams:
        from dataclasses import replace
        p = super().parse(lp)
        # the forks ignore `group` and use one group per channel; input channels are only
        # known at shape time, and for these layers num_output == input channels
        return replace(p, group=p.num_output)

    def caffe_type(self, layer, dialect) -> str:
        return "Convolution"

    def caffe_layers(self, layer, dialect, shapes=None) -> list:
        return Convolution.caffe_layers(self, layer, dialect, shapes)


@register
class Deconvolution(_ConvBase):
    type = "Deconvolution"
    examples = (Example(params=dict(num_output=6, kernel_size=4, stride=2, pad=1), ins=[(2, 4, 5, 5)]),
                Example(params=dict(num_output=4, kernel_size=3, group=2, bias_term=False),
                        ins=[(2, 4, 4, 6)]),
                Example(params=dict(num_output=3, kernel_size=[2, 3, 3], stride=[1, 2, 2],
                                    pad=[0, 1, 1]), ins=[(2, 4, 3, 4, 5)]),
                Example(params=dict(num_output=2, kernel_size=2, stride=2), ins=[(1, 3, 3, 4, 2)]))

    def macs(self, p: ConvParams, ins, outs) -> int:
        # every input element scatters into (Cout/group) * kh * kw outputs
        return len(ins) * numel(ins[0][1:]) * (p.num_output // p.group) * numel(self.axes(p, ins[0])[0])

    @staticmethod
    def _weight_shape(p, cin):
        return (cin, p.num_output // p.group)

    def init_weights(self, p: ConvParams, ins, rng):
        shapes = self.weight_shapes(p, ins)
        # each output receives about cin/group * k*k / stride^2 contributions
        kernel, stride = self.axes(p, ins[0])[:2]
        fan = max(1, ins[0][1] // p.group * numel(kernel) // numel(stride))
        ws = [he_normal(shapes[0], fan, rng)]
        if p.bias_term:
            ws.append((rng.standard_normal(shapes[1]) * 0.05).astype(np.float32))
        return ws

    onnx_op = "ConvTranspose"
    torch_module = "nn.ConvTranspose2d"

    def opencv_limit_shapes(self, p, ins):
        # measured with OpenCV 4.14 (tests/layers/test_conv3d.py): its Caffe importer reads a
        # 3-D Deconvolution, then refuses to run it ("unsupported on OpenCV backend")
        if ins and len(ins[0]) == 5:
            return "does not implement 3-D Deconvolution (5-D input) on its CPU backend"
        return None

    def torch_forward(self, p, xs, blobs, n_tops=1):
        import torch.nn.functional as F
        _, stride, pad, dil = self.axes(p, tuple(xs[0].shape))
        deconv = F.conv_transpose2d if len(stride) == 2 else F.conv_transpose3d
        return [deconv(x, blobs[0], blobs[1] if p.bias_term else None, stride, pad, 0, p.group, dil)
                for x in xs]

    def shapes(self, p: ConvParams, ins):
        kernel, stride, pad, dil = self.axes(p, ins[0])
        n, c, *sizes = ins[0]
        if c % p.group:
            raise ShapeError(f"input channels {c} are not divisible by group {p.group}")
        out = conv_nd.deconv_out(sizes, kernel, stride, pad, dil)
        if min(out) <= 0:
            raise ShapeError(f"output would be {'x'.join(map(str, out))}")
        return [(n, p.num_output) + out]


@dataclass(frozen=True)
class InnerProductParams:
    num_output: int
    bias_term: bool = True
    axis: int = 1
    transpose: bool = False


@register
class InnerProduct(LayerType):
    type = "InnerProduct"
    examples = (Example(params=dict(num_output=7), ins=[(2, 4, 3, 3)]),
                Example(params=dict(num_output=5, bias_term=False), ins=[(3, 6)]))
    param_field = "inner_product_param"
    Params = InnerProductParams

    def validate(self, p) -> None:
        if p.num_output <= 0:
            raise ProtogenError(f"num_output must be positive, got {p.num_output}")

    def _split(self, p, shape):
        axis = p.axis if p.axis >= 0 else p.axis + len(shape)
        if not 0 <= axis < len(shape):
            raise ShapeError(f"axis {p.axis} out of range for shape {shape}")
        return axis, numel(shape[axis:])

    def shapes(self, p, ins):
        axis, _ = self._split(p, ins[0])
        return [tuple(ins[0][:axis]) + (p.num_output,)]

    def weight_shapes(self, p, ins):
        _, k = self._split(p, ins[0])
        w = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [w, (p.num_output,)] if p.bias_term else [w]

    def init_weights(self, p, ins, rng):
        shapes = self.weight_shapes(p, ins)
        _, k = self._split(p, ins[0])
        ws = [he_normal(shapes[0], k, rng, gain=1.0)]
        if p.bias_term:
            ws.append((rng.standard_normal(shapes[1]) * 0.05).astype(np.float32))
        return ws

    def to_onnx(self, ctx, step):
        p, l = step.layer.params, step.layer
        w = layer_blobs(step)
        x_ssa = step.inputs[0]
        shape = step.in_shapes[0]
        axis, k = self._split(p, shape)
        ctx.static_shape(x_ssa, range(axis, len(shape)))     # K is baked into the weights
        x = ctx.name(x_ssa)
        wt = w[0]
        if axis == 1:
            if len(shape) != 2:
                x = ctx.op("Flatten", [x], axis=1)
            ins = [x, ctx.const("weight", wt)]
            if p.bias_term:
                ins.append(ctx.const("bias", w[1]))
            ctx.op("Gemm", ins, step.outputs[0], transB=0 if p.transpose else 1)
            return
        # any other axis: (.., K) @ W^T (+ b)
        if len(shape) != axis + 1:
            x = ctx.op("Reshape", [x, ctx.ints("shape", [0] * axis + [-1])])
        y = ctx.op("MatMul", [x, ctx.const("weight", wt if p.transpose else wt.T)],
                   None if p.bias_term else step.outputs[0])
        if p.bias_term:
            ctx.op("Add", [y, ctx.const("bias", w[1])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        x = xs[0]
        axis = p.axis if p.axis >= 0 else p.axis + x.dim()
        x = x.reshape(tuple(x.shape[:axis]) + (-1,))
        y = x @ (blobs[0] if p.transpose else blobs[0].t())
        return [y + blobs[1] if p.bias_term else y]

    def torch_source(self, p, src, step):
        w = layer_blobs(step)
        shape = step.in_shapes[0]
        axis, k = self._split(p, shape)
        bias = "" if p.bias_term else ", bias=False"
        weights = {"weight": w[0].T if p.transpose else w[0]}   # nn.Linear: (out, in)
        if p.bias_term:
            weights["bias"] = w[1]
        m = src.module(f"nn.Linear({k}, {p.num_output}{bias})", weights,
                       " (weight stored transposed)" if p.transpose else "")
        x = src.x() if len(shape) == axis + 1 else f"{src.x()}.flatten({axis})"
        src.assign(f"{m}({x})")

    def macs(self, p, ins, outs) -> int:
        axis, k = self._split(p, ins[0])
        return numel(ins[0][1:axis]) * k * p.num_output

