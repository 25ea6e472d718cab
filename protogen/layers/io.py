"""Data sources and training-only layers: Input, Data, ImageData, SoftmaxWithLoss, Accuracy."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import LayerType, register


#: the most elements an input blob may have: refused before anything is allocated
MAX_INPUT_ELEMENTS = 2 ** 36


def check_input_shape(dims) -> tuple[int, ...]:
    """``dims`` as a tuple of ints, or a clear error for an empty, non-positive or absurd shape."""
    dims = tuple(int(d) for d in dims)
    if not dims or any(d <= 0 for d in dims):
        raise ProtogenError(f"input shape {dims} must be non-empty with positive dimensions")
    n = 1
    for d in dims:
        n *= d
    if n > MAX_INPUT_ELEMENTS:
        raise ProtogenError(f"absurd input shape {dims} ({n} elements)")
    return dims


@dataclass(frozen=True)
class InputParams:
    shape: tuple = ()     # one shape (tuple of dims) per top


@register
class Input(LayerType):
    type = "Input"
    param_field = "input_param"
    Params = InputParams
    n_bottoms = (0, 0)
    n_tops = (1, None)
    is_input = True
    is_deploy_input = True

    def validate(self, p):
        for s in p.shape:
            check_input_shape(s)

    def parse(self, lp):
        p = InputParams(shape=tuple(tuple(int(d) for d in s.dim) for s in lp.input_param.shape))
        self.validate(p)
        return p

    def write(self, p, lp):
        for s in p.shape:
            lp.input_param.shape.add().dim.extend(s)

    def to_onnx(self, ctx, step):
        # graph inputs carry the blob names; the exporter makes batch (and H/W) symbolic
        for v, s in zip(step.outputs, step.out_shapes):
            ctx.input(v, s)

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return list(xs)   # TorchNet feeds the input tensors itself

    def output_shapes(self, p, ins, n_tops):
        if len(p.shape) == 1:
            return [p.shape[0]] * n_tops
        if len(p.shape) != n_tops:
            raise ShapeError(f"{len(p.shape)} input shapes for {n_tops} tops")
        return list(p.shape)


@dataclass(frozen=True)
class DataParams:
    """A database/image-list data layer. ``crop_size``/``channels`` give its blob shape;
    ``transform`` holds Caffe's transform_param fields (mirror, mean_value, scale...)."""
    source: str = ""
    batch_size: int = 1
    backend: str = "LMDB"
    crop_size: int = 0
    channels: int = 3
    mirror: bool = False
    mean_value: tuple = ()
    scale: float = 1.0
    new_height: int = 0
    new_width: int = 0
    shuffle: bool = False


@register
class Data(LayerType):
    type = "Data"
    param_field = "data_param"
    Params = DataParams
    n_bottoms = (0, 0)
    n_tops = (1, 2)
    is_input = True
    benign_fields = frozenset({"transform_param"})

    def validate(self, p):
        if p.batch_size <= 0:
            raise ProtogenError("batch_size must be positive")

    def _param_msg(self, lp):
        return getattr(lp, self.param_field)

    def parse(self, lp):
        d = self._param_msg(lp)
        t = lp.transform_param
        kw = dict(source=d.source, batch_size=d.batch_size or 1, crop_size=t.crop_size,
                  mirror=t.mirror, mean_value=tuple(t.mean_value), scale=t.scale)
        kw.update(self._read_source(d))
        return DataParams(**kw)

    def _read_source(self, d) -> dict:
        """The fields of this type's own param message (data_param: the DB backend)."""
        return {"backend": d.DB.Name(d.backend)}

    def _write_source(self, p, d) -> None:
        d.backend = d.DB.Value(p.backend)

    def unsupported(self, lp):
        return []

    def write(self, p, lp):
        d = self._param_msg(lp)
        d.source = p.source
        d.batch_size = p.batch_size
        self._write_source(p, d)
        t = lp.transform_param
        if p.mirror:
            t.mirror = True
        if p.crop_size:
            t.crop_size = p.crop_size
        t.mean_value.extend(p.mean_value)
        if p.scale != 1.0:
            t.scale = p.scale

    def output_shapes(self, p, ins, n_tops):
        size = p.crop_size or p.new_height
        if not size:
            raise ShapeError("the data blob's size is unknown: the layer has no crop_size "
                             "(give the input shape, e.g. --input-shape N,C,H,W)")
        w = p.crop_size or p.new_width
        shapes = [(p.batch_size, p.channels, size, w), (p.batch_size,)]
        return shapes[:n_tops]


@register
class ImageData(Data):
    type = "ImageData"
    param_field = "image_data_param"

    def _read_source(self, d) -> dict:
        return dict(new_height=d.new_height, new_width=d.new_width, shuffle=d.shuffle,
                    channels=3 if d.is_color else 1)

    def _write_source(self, p, d) -> None:
        if p.new_height:
            d.new_height, d.new_width = p.new_height, p.new_width
        if p.shuffle:
            d.shuffle = True


@dataclass(frozen=True)
class SoftmaxWithLossParams:
    axis: int = 1


@register
class SoftmaxWithLoss(LayerType):
    type = "SoftmaxWithLoss"
    param_field = "softmax_param"
    Params = SoftmaxWithLossParams
    n_bottoms = (2, 2)
    n_tops = (1, 2)
    is_loss = True
    benign_fields = frozenset({"loss_param"})

    def output_shapes(self, p, ins, n_tops):
        return [()] + [ins[0]] * (n_tops - 1)


@dataclass(frozen=True)
class AccuracyParams:
    top_k: int = 1
    axis: int = 1


@register
class Accuracy(LayerType):
    type = "Accuracy"
    is_metric = True
    param_field = "accuracy_param"
    Params = AccuracyParams
    n_bottoms = (2, 2)
    n_tops = (1, 2)
    benign_param_fields = LayerType.benign_param_fields | {"ignore_label"}

    def output_shapes(self, p, ins, n_tops):
        return [()] + [(ins[0][p.axis],)] * (n_tops - 1)
