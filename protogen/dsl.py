"""The network-building DSL.

    n = Net("shufflenet_v1_g3")
    x = n.input("data", (1, 3, 224, 224))
    with n.scope("stage2/unit1"):
        y = n.conv(x, 60, 1, bias=False)     # layer 'stage2/unit1/conv1'
        y = n.relu(n.bn(y))                   # in place on 'stage2/unit1/conv1'

* Blocks are plain Python functions taking the net and blobs.
* ``scope`` prefixes names the way published Caffe models do (``inception_3a/1x1``).
* Unnamed layers are numbered per scope and kind (``conv1``, ``conv2``, ``pool1``...).
* Activations, BatchNorm and Scale run in place by default, as in Caffe model files.
* Shapes are inferred as layers are added, so a misuse fails at the line that made it,
  naming the layer.
* ``with n.train_only():`` marks training-only parts (auxiliary heads); ``input`` with a
  ``train=`` spec adds the data layers and label, ``loss``/``accuracy`` the training outputs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

from .dialect import DEFAULT, Dialect
from .errors import ProtogenError
from .ir import BOTH_NETS, DEPLOY, TEST, TRAIN, TRAIN_VAL, Graph, Layer, ParamSpec
from .layers import get_type
from .layers.act import ClipParams, DropoutParams, PowerParams, PReLUParams, ReLUParams
from .layers.conv import ConvParams, InnerProductParams
from .layers.io import AccuracyParams, DataParams, InputParams, SoftmaxWithLossParams
from .layers.norm import BatchNormParams, BiasParams, LRNParams, ScaleParams
from .layers.pool import PoolParams
from .layers.tensor import (ConcatParams, EltwiseParams, FlattenParams, PermuteParams, ReshapeParams,
                            ShuffleChannelParams, SliceParams, SoftmaxParams)


class Blob:
    """A handle on one version of a named blob."""
    __slots__ = ("net", "name", "version", "shape")

    def __init__(self, net: "Net", name: str, version: int, shape: tuple):
        self.net, self.name, self.version, self.shape = net, name, version, tuple(shape)

    @property
    def channels(self) -> int:
        return self.shape[1]

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self.shape})"


@dataclass(frozen=True)
class TrainData:
    """Training-net data layers: an LMDB ``Data`` layer per phase (or ImageData lists)."""
    train_source: str = "examples/imagenet/ilsvrc12_train_lmdb"
    test_source: str = "examples/imagenet/ilsvrc12_val_lmdb"
    train_batch: int = 32
    test_batch: int = 50
    mean_value: tuple = (104.0, 117.0, 123.0)
    scale: float = 1.0


class Net:
    def __init__(self, name: str, dialect: Dialect = DEFAULT):
        self.graph = Graph(name)
        self.dialect = dialect
        self._versions: dict[str, int] = {}
        self._writer: dict[str, str] = {}
        self._shapes: dict[str, tuple] = {}
        self._scope: list[str] = []
        self._counters: dict[tuple, int] = {}
        self._names: set[str] = set()
        self._nets = BOTH_NETS
        self.label: Blob | None = None

    @property
    def name(self) -> str:
        return self.graph.name

    # ------------------------------------------------------------------ naming
    @contextlib.contextmanager
    def scope(self, name: str):
        self._scope.append(name)
        try:
            yield self
        finally:
            self._scope.pop()

    @contextlib.contextmanager
    def train_only(self):
        """Layers added inside belong to the train_val net only (e.g. auxiliary heads)."""
        prev, self._nets = self._nets, frozenset({TRAIN_VAL})
        try:
            yield self
        finally:
            self._nets = prev

    def _full(self, name: str) -> str:
        return "/".join(self._scope + [name]) if self._scope else name

    def _auto(self, prefix: str) -> str:
        key = (tuple(self._scope), prefix)
        while True:
            k = self._counters.get(key, 0) + 1
            self._counters[key] = k
            name = self._full(f"{prefix}{k}")
            if name not in self._names:
                return name

    @staticmethod
    def _base(x: Blob) -> str:
        return x.name

    # ------------------------------------------------------------------ core
    def _resolve(self, x) -> Blob:
        if isinstance(x, str):
            if x not in self._versions:
                raise ProtogenError(f"unknown blob '{x}'")
            return Blob(self, x, self._versions[x], self._shapes[x])
        if not isinstance(x, Blob) or x.net is not self:
            raise ProtogenError(f"expected a blob of net '{self.name}', got {x!r}")
        if self._versions.get(x.name) != x.version:
            raise ProtogenError(f"blob '{x.name}' was modified in place by layer "
                                f"'{self._writer[x.name]}' after this handle was taken")
        return x

    def add(self, type_: str, bottoms: Sequence, params=None, *, name: str | None = None,
            prefix: str | None = None, tops: Sequence[str] | None = None, n_tops: int = 1,
            inplace: bool = False, phases=None, nets=None, loss_weight=(), param_specs=(),
            fillers=None):
        """Append one layer; returns its top Blob (or a list when it has several tops)."""
        kind = get_type(type_)
        if name is None:
            name = self._auto(prefix or type_.lower())
        else:
            name = self._full(name)
        try:
            ins = [self._resolve(b) for b in bottoms]
        except ProtogenError as e:
            raise e.with_context(layer=name)
        if params is None:
            params = kind.default_params()
        try:
            kind.validate(params)
            out_shapes = kind.output_shapes(params, [b.shape for b in ins], len(tops) if tops else n_tops)
            kind.weight_shapes(params, [b.shape for b in ins])
        except ProtogenError as e:
            raise e.with_context(layer=name)
        if tops is None:
            if inplace:
                if not kind.inplace:
                    raise ProtogenError(f"{type_} cannot run in place", layer=name)
                tops = [ins[0].name]
            else:
                tops = [name] if n_tops == 1 else [f"{name}_{i}" for i in range(n_tops)]
        nets = self._nets if nets is None else frozenset(nets)
        if name in self._names and nets == BOTH_NETS:
            raise ProtogenError("duplicate layer name", layer=name)
        for t in tops:
            if t in self._versions and t not in [b.name for b in ins] and nets == BOTH_NETS:
                raise ProtogenError(f"top '{t}' is already produced by layer '{self._writer[t]}'", layer=name)
        self._names.add(name)
        layer = Layer(name=name, type=kind.type, bottoms=[b.name for b in ins], tops=list(tops),
                      params=params, phases=frozenset(phases) if phases else None, nets=nets,
                      loss_weight=list(loss_weight), param_specs=list(param_specs),
                      fillers=dict(fillers or {}))
        self.graph.layers.append(layer)
        outs = []
        for t, s in zip(tops, out_shapes):
            self._versions[t] = self._versions.get(t, 0) + 1
            self._writer[t] = name
            self._shapes[t] = tuple(s)
            outs.append(Blob(self, t, self._versions[t], s))
        return outs[0] if len(outs) == 1 else outs

    # ------------------------------------------------------------------ inputs and outputs
    def input(self, name: str, shape: Sequence[int], train: TrainData | None = None) -> Blob:
        """The net input: an Input layer (deploy) and, with ``train``, Data layers (train_val)."""
        shape = tuple(int(d) for d in shape)
        x = self.add("Input", [], InputParams(shape=(shape,)), name=name, tops=[name], nets={DEPLOY})
        if train is not None:
            if len(shape) != 4 or shape[2] != shape[3]:
                raise ProtogenError("train data layers need a square N,C,H,W input")
            for phase, src, batch, mirror in ((TRAIN, train.train_source, train.train_batch, True),
                                              (TEST, train.test_source, train.test_batch, False)):
                p = DataParams(source=src, batch_size=batch, crop_size=shape[2], channels=shape[1],
                               mirror=mirror, mean_value=train.mean_value, scale=train.scale)
                self.graph.layers.append(Layer(name=name, type="Data", bottoms=[], tops=[name, "label"],
                                               params=p, phases=frozenset({phase}),
                                               nets=frozenset({TRAIN_VAL})))
            self._versions["label"] = 1
            self._writer["label"] = name
            self._shapes["label"] = (shape[0],)
            self.label = Blob(self, "label", 1, (shape[0],))
        return x

    def loss(self, x, name: str | None = None, loss_weight: float = 1.0) -> None:
        """SoftmaxWithLoss against the label (train_val only)."""
        if self.label is None:
            raise ProtogenError("loss() needs an input declared with train=TrainData(...)")
        self.add("SoftmaxWithLoss", [x, self.label], SoftmaxWithLossParams(), name=name, prefix="loss",
                 nets={TRAIN_VAL}, loss_weight=[loss_weight] if loss_weight != 1.0 else [])

    def accuracy(self, x, top_k: int = 1, name: str | None = None) -> None:
        """Accuracy in the TEST phase of the train_val net."""
        if self.label is None:
            raise ProtogenError("accuracy() needs an input declared with train=TrainData(...)")
        self.add("Accuracy", [x, self.label], AccuracyParams(top_k=top_k), name=name, prefix="accuracy",
                 nets={TRAIN_VAL}, phases={TEST})

    def classifier_outputs(self, logits, prefix: str = "", prob: str = "prob") -> None:
        """Softmax ``prob`` for deploy; loss + top-1/top-5 accuracy for train_val."""
        self.add("Softmax", [logits], SoftmaxParams(), name=prob, nets={DEPLOY})
        if self.label is not None:
            self.loss(logits, name=f"{prefix}loss")
            self.accuracy(logits, 1, name=f"{prefix}accuracy")
            self.accuracy(logits, 5, name=f"{prefix}accuracy_top5")

    # ------------------------------------------------------------------ layers
    def conv(self, x, num_output: int, kernel, stride=1, pad=0, *, group: int = 1, dilation=1,
             bias: bool = True, name: str | None = None) -> Blob:
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        ph, pw = _pair(pad)
        dh, dw = _pair(dilation)
        p = ConvParams(num_output=num_output, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                       pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw, group=group, bias_term=bias)
        fillers = {"weight_filler": {"type": "msra"}}
        if bias:
            fillers["bias_filler"] = {"type": "constant", "value": 0.0}
        return self.add("Convolution", [x], p, name=name, prefix="conv", fillers=fillers)

    def deconv(self, x, num_output: int, kernel, stride=1, pad=0, *, group: int = 1,
               bias: bool = True, name: str | None = None) -> Blob:
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        ph, pw = _pair(pad)
        p = ConvParams(num_output=num_output, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                       pad_h=ph, pad_w=pw, group=group, bias_term=bias)
        return self.add("Deconvolution", [x], p, name=name, prefix="deconv")

    def fc(self, x, num_output: int, *, bias: bool = True, name: str | None = None) -> Blob:
        fillers = {"weight_filler": {"type": "xavier"}}
        if bias:
            fillers["bias_filler"] = {"type": "constant", "value": 0.0}
        return self.add("InnerProduct", [x], InnerProductParams(num_output=num_output, bias_term=bias),
                        name=name, prefix="fc", fillers=fillers)

    def pool(self, x, kernel, stride=1, pad=0, *, pool: str = "MAX", round_mode: str = "CEIL",
             name: str | None = None) -> Blob:
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        ph, pw = _pair(pad)
        p = PoolParams(pool=pool, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                       round_mode=round_mode)
        return self.add("Pooling", [x], p, name=name, prefix="pool")

    def max_pool(self, x, kernel, stride=1, pad=0, **kw) -> Blob:
        return self.pool(x, kernel, stride, pad, pool="MAX", **kw)

    def ave_pool(self, x, kernel, stride=1, pad=0, **kw) -> Blob:
        return self.pool(x, kernel, stride, pad, pool="AVE", **kw)

    def global_pool(self, x, pool: str = "AVE", name: str | None = None) -> Blob:
        return self.add("Pooling", [x], PoolParams(pool=pool, global_pooling=True), name=name, prefix="pool")

    def bn(self, x, *, eps: float = 1e-5, scale: bool = True, name: str | None = None,
           scale_name: str | None = None, inplace: bool = True) -> Blob:
        """BatchNorm followed (by default) by its affine Scale (bias_term), in place."""
        x = self._resolve(x)
        base = x.name.split("/")[-1] if self._scope and x.name.startswith(self._full("")) else x.name
        y = self.add("BatchNorm", [x], BatchNormParams(eps=eps), name=name or f"{base}/bn",
                     inplace=inplace)
        if scale:
            y = self.add("Scale", [y], ScaleParams(bias_term=True), name=scale_name or f"{base}/scale",
                         inplace=True)
        return y

    def scale(self, x, *, bias: bool = True, name: str | None = None, inplace: bool = True) -> Blob:
        return self.add("Scale", [x], ScaleParams(bias_term=bias), name=name, prefix="scale", inplace=inplace)

    def _act(self, type_, x, params, name, inplace, suffix):
        x = self._resolve(x)
        if name is None:
            base = x.name.split("/")[-1] if self._scope and x.name.startswith(self._full("")) else x.name
            name = f"{base}/{suffix}"
            if self._full(name) in self._names:
                name = None
        return self.add(type_, [x], params, name=name, prefix=suffix, inplace=inplace)

    def relu(self, x, *, negative_slope: float = 0.0, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("ReLU", x, ReLUParams(negative_slope), name, inplace, "relu")

    def relu6(self, x, *, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("ReLU6", x, None, name, inplace, "relu6")

    def clip(self, x, lo: float, hi: float, *, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("Clip", x, ClipParams(lo, hi), name, inplace, "clip")

    def prelu(self, x, *, channel_shared: bool = False, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("PReLU", x, PReLUParams(channel_shared), name, inplace, "prelu")

    def sigmoid(self, x, *, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("Sigmoid", x, None, name, inplace, "sigmoid")

    def tanh(self, x, *, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("TanH", x, None, name, inplace, "tanh")

    def power(self, x, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, *,
              name: str | None = None, inplace: bool = False) -> Blob:
        return self.add("Power", [x], PowerParams(power, scale, shift), name=name, prefix="power",
                        inplace=inplace)

    def dropout(self, x, ratio: float = 0.5, *, name: str | None = None, inplace: bool = True) -> Blob:
        return self._act("Dropout", x, DropoutParams(ratio), name, inplace, "drop")

    def lrn(self, x, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *,
            within_channel: bool = False, name: str | None = None) -> Blob:
        p = LRNParams(local_size=local_size, alpha=alpha, beta=beta, k=k,
                      norm_region="WITHIN_CHANNEL" if within_channel else "ACROSS_CHANNELS")
        return self.add("LRN", [x], p, name=name, prefix="norm")

    def concat(self, xs: Sequence, *, axis: int = 1, name: str | None = None) -> Blob:
        return self.add("Concat", list(xs), ConcatParams(axis), name=name, prefix="concat")

    def slice(self, x, points: Sequence[int] = (), *, n: int | None = None, axis: int = 1,
              name: str | None = None) -> list[Blob]:
        count = n if n is not None else len(points) + 1
        out = self.add("Slice", [x], SliceParams(axis, tuple(points)), name=name, prefix="slice", n_tops=count)
        return out if isinstance(out, list) else [out]

    def eltwise(self, xs: Sequence, op: str = "SUM", coeff: Sequence[float] = (), *,
                name: str | None = None) -> Blob:
        return self.add("Eltwise", list(xs), EltwiseParams(op, tuple(coeff)), name=name, prefix="eltwise")

    def add_(self, a, b, *, name: str | None = None) -> Blob:
        return self.eltwise([a, b], "SUM", name=name)

    def reshape(self, x, dims: Sequence[int], *, axis: int = 0, num_axes: int = -1,
                name: str | None = None) -> Blob:
        return self.add("Reshape", [x], ReshapeParams(tuple(dims), axis, num_axes), name=name, prefix="reshape")

    def flatten(self, x, *, axis: int = 1, name: str | None = None) -> Blob:
        return self.add("Flatten", [x], FlattenParams(axis), name=name, prefix="flatten")

    def permute(self, x, order: Sequence[int], *, name: str | None = None) -> Blob:
        return self.add("Permute", [x], PermuteParams(tuple(order)), name=name, prefix="permute")

    def channel_shuffle(self, x, groups: int, *, name: str | None = None) -> Blob:
        """ShuffleNet's channel shuffle (written per dialect in Caffe; one op in the IR)."""
        return self.add("ShuffleChannel", [x], ShuffleChannelParams(groups), name=name, prefix="shuffle")

    def softmax(self, x, *, axis: int = 1, name: str | None = None) -> Blob:
        return self.add("Softmax", [x], SoftmaxParams(axis), name=name, prefix="softmax")

    # ------------------------------------------------------------------ outputs
    def deploy_prototxt(self) -> str:
        from .caffe.prototxt import to_prototxt
        return to_prototxt(self.graph, DEPLOY, self.dialect)

    def train_prototxt(self) -> str:
        from .caffe.prototxt import to_prototxt
        return to_prototxt(self.graph, TRAIN_VAL, self.dialect)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ProtogenError(f"expected one value or an (h, w) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)
