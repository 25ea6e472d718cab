"""Data-source layer types beyond Input/Data/ImageData (those are in :mod:`.io`).

They only matter for the shape of the net's input: the inference view
(:func:`protogen.caffe.loader.inference_view`) turns each into an ``Input`` for its first
top, with the shape the layer itself states, or ``--input-shape`` where it states none.
Sources:

* HDF5Data, MemoryData, WindowData, DummyData: upstream BVLC/caffe
  (src/caffe/layers/hdf5_data_layer.cpp, memory_data_layer.cpp, window_data_layer.cpp,
  dummy_data_layer.cpp);
* DenseImageData: SegNet (alexgkendall/caffe-segnet src/caffe/layers/dense_image_data_layer.cpp:
  images resized to new_height x new_width, then transform_param's crop; the label top is
  N x 1 x H x W);
* AnnotatedData: SSD (weiliu89/caffe src/caffe/layers/annotated_data_layer.cpp: data_param's
  batch_size, transform_param.resize_param height/width, then crop_size);
* Python: upstream's Python layer (python_layer.hpp); with no bottoms it is a data source
  whose shape only its Python code knows, so it needs ``--input-shape``. A Python layer WITH
  bottoms runs arbitrary code: refused (it is dropped first when it belongs to another phase).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import LayerType, register
from .io import DataParams, ImageData

_NO_SIZE = ("the data blob's size is unknown: the layer does not state it "
            "(give the input shape, e.g. --input-shape N,C,H,W)")


class _Source(LayerType):
    """Shared behaviour: no bottoms, any number of tops, a data source (never run)."""
    n_bottoms = (0, 0)
    n_tops = (1, None)
    is_input = True
    benign_fields = frozenset({"transform_param"})

    def unsupported(self, lp):
        return []


# ----------------------------------------------------------------------------- HDF5Data
@dataclass(frozen=True)
class HDF5DataParams:
    source: str = ""
    batch_size: int = 1
    shuffle: bool = False


@register
class HDF5Data(_Source):
    """HDF5 files name their datasets after the tops; the prototxt says nothing of their
    shape, so the input shape comes from ``--input-shape``."""
    type = "HDF5Data"
    param_field = "hdf5_data_param"
    Params = HDF5DataParams

    def parse(self, lp):
        d = lp.hdf5_data_param
        return HDF5DataParams(source=d.source, batch_size=d.batch_size or 1, shuffle=d.shuffle)

    def write(self, p, lp):
        d = lp.hdf5_data_param
        d.source, d.batch_size = p.source, p.batch_size
        if p.shuffle:
            d.shuffle = True

    def output_shapes(self, p, ins, n_tops):
        raise ShapeError(_NO_SIZE)


# ----------------------------------------------------------------------------- MemoryData
@dataclass(frozen=True)
class MemoryDataParams:
    batch_size: int = 1
    channels: int = 0
    height: int = 0
    width: int = 0


@register
class MemoryData(_Source):
    """Tops: data (batch_size, channels, height, width) and label (batch_size,) — upstream
    memory_data_layer.cpp DataLayerSetUp (label shape {batch_size})."""
    type = "MemoryData"
    param_field = "memory_data_param"
    Params = MemoryDataParams
    n_tops = (1, 2)

    def parse(self, lp):
        d = lp.memory_data_param
        return MemoryDataParams(d.batch_size, d.channels, d.height, d.width)

    def write(self, p, lp):
        d = lp.memory_data_param
        d.batch_size, d.channels, d.height, d.width = p.batch_size, p.channels, p.height, p.width

    def output_shapes(self, p, ins, n_tops):
        if min(p.batch_size, p.channels, p.height, p.width) <= 0:
            raise ShapeError("memory_data_param needs positive batch_size, channels, height "
                             "and width")
        return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size,)][:n_tops]


# ----------------------------------------------------------------------------- DenseImageData
@register
class DenseImageData(ImageData):
    """SegNet's image + label-image list: like ImageData, with an N x 1 x H x W label."""
    type = "DenseImageData"
    param_field = "dense_image_data_param"
    schemas = ("segnet",)

    def output_shapes(self, p, ins, n_tops):
        data = super().output_shapes(p, ins, 1)[0]
        return [data, (data[0], 1, data[2], data[3])][:n_tops]


# ----------------------------------------------------------------------------- WindowData
@dataclass(frozen=True)
class WindowDataParams:
    source: str = ""
    batch_size: int = 1
    crop_size: int = 0


@register
class WindowData(_Source):
    """R-CNN windows warped to crop_size x crop_size (window_data_layer.cpp: crop_size from
    transform_param, legacy window_data_param.crop_size upgraded into it); label (N,)."""
    type = "WindowData"
    param_field = "window_data_param"
    Params = WindowDataParams
    n_tops = (1, 2)

    def parse(self, lp):
        d = lp.window_data_param
        crop = lp.transform_param.crop_size or d.crop_size
        return WindowDataParams(source=d.source, batch_size=d.batch_size or 1, crop_size=crop)

    def write(self, p, lp):
        d = lp.window_data_param
        d.source, d.batch_size = p.source, p.batch_size
        if p.crop_size:
            lp.transform_param.crop_size = p.crop_size

    def output_shapes(self, p, ins, n_tops):
        if not p.crop_size:
            raise ShapeError(_NO_SIZE)
        return [(p.batch_size, 3, p.crop_size, p.crop_size), (p.batch_size,)][:n_tops]


# ----------------------------------------------------------------------------- AnnotatedData
@dataclass(frozen=True)
class AnnotatedDataParams:
    source: str = ""
    batch_size: int = 1
    height: int = 0     # transform_param.resize_param
    width: int = 0
    crop_size: int = 0  # transform_param.crop_size (after the resize)


@register
class AnnotatedData(_Source):
    """SSD's images + boxes. Data: batch_size x 3 x H x W with H, W from the resize policy
    (then crop_size when given); the label top's shape depends on the boxes in each batch."""
    type = "AnnotatedData"
    param_field = "annotated_data_param"
    Params = AnnotatedDataParams
    n_tops = (1, 2)
    schemas = ("ssd",)
    benign_fields = frozenset({"transform_param", "data_param"})

    def parse(self, lp):
        t = lp.transform_param
        r = t.resize_param
        return AnnotatedDataParams(source=lp.data_param.source,
                                   batch_size=lp.data_param.batch_size or 1,
                                   height=r.height, width=r.width, crop_size=t.crop_size)

    def write(self, p, lp):
        lp.annotated_data_param.SetInParent()
        lp.data_param.source, lp.data_param.batch_size = p.source, p.batch_size
        if p.height:
            lp.transform_param.resize_param.height = p.height
            lp.transform_param.resize_param.width = p.width
        if p.crop_size:
            lp.transform_param.crop_size = p.crop_size

    def output_shapes(self, p, ins, n_tops):
        h, w = (p.crop_size, p.crop_size) if p.crop_size else (p.height, p.width)
        if not (h and w):
            raise ShapeError(_NO_SIZE)
        # the label's shape depends on the boxes of each batch (1 x 1 x boxes x 8); its
        # set-up shape has one box. Only the data top has an inference meaning.
        return [(p.batch_size, 3, h, w), (1, 1, 1, 8)][:n_tops]


# ----------------------------------------------------------------------------- DummyData
@dataclass(frozen=True)
class DummyDataParams:
    shape: tuple = ()     # one shape per top (or one for all)


@register
class DummyData(_Source):
    """Blobs of the stated shapes filled by data_filler (dummy_data_layer.cpp: 1 or N shapes,
    or the legacy num/channels/height/width lists). As an inference input its content is the
    caller's, not the filler's."""
    type = "DummyData"
    param_field = "dummy_data_param"
    Params = DummyDataParams

    def parse(self, lp):
        d = lp.dummy_data_param
        if d.shape:
            shapes = tuple(tuple(int(x) for x in s.dim) for s in d.shape)
        else:
            n = max(len(d.num), len(d.channels), len(d.height), len(d.width))
            if n and not (len(d.num) == len(d.channels) == len(d.height) == len(d.width) == n):
                raise ProtogenError("dummy_data_param num/channels/height/width must be "
                                    "given the same number of times")
            shapes = tuple((d.num[i], d.channels[i], d.height[i], d.width[i]) for i in range(n))
        return DummyDataParams(shape=shapes)

    def write(self, p, lp):
        for s in p.shape:
            lp.dummy_data_param.shape.add().dim.extend(s)

    def output_shapes(self, p, ins, n_tops):
        if not p.shape:
            raise ShapeError(_NO_SIZE)
        if len(p.shape) == 1:
            return [p.shape[0]] * n_tops
        if len(p.shape) != n_tops:
            raise ShapeError(f"{len(p.shape)} shapes for {n_tops} tops")
        return list(p.shape)


# ----------------------------------------------------------------------------- Python
@dataclass(frozen=True)
class PythonParams:
    module: str = ""
    layer: str = ""
    param_str: str = ""


@register
class Python(_Source):
    """A Python data layer (no bottoms): its shape is set by its Python code, so the input
    shape comes from ``--input-shape``. With bottoms it is refused."""
    type = "Python"
    param_field = "python_param"
    Params = PythonParams
    n_bottoms = (0, None)
    benign_param_fields = LayerType.benign_param_fields | {"share_in_parallel"}

    def resolve(self, lp):
        # a Python layer whose code protogen implements is the registry type named
        # "Python:<module>.<layer>" (e.g. py-faster-rcnn's ProposalLayer, layers/rcnn.py)
        from .base import registered_types
        from .train_only import is_python_loss
        p = lp.python_param
        kind = registered_types().get(f"Python:{p.module}.{p.layer}")
        if kind is None and is_python_loss(lp):     # a loss whatever its code: dropped (train_only.py)
            kind = registered_types()["Python:loss"]
        return kind or self

    def unsupported(self, lp):
        if len(lp.bottom):
            p = lp.python_param
            return [f"a Python layer with inputs ({p.module}.{p.layer}) runs arbitrary Python "
                    "code: it has no inference meaning protogen can reproduce"]
        return []

    def parse(self, lp):
        p = lp.python_param
        return PythonParams(p.module, p.layer, p.param_str)

    def write(self, p, lp):
        lp.python_param.module, lp.python_param.layer = p.module, p.layer
        if p.param_str:
            lp.python_param.param_str = p.param_str

    def output_shapes(self, p, ins, n_tops):
        raise ShapeError(_NO_SIZE)


__all__ = ["HDF5Data", "MemoryData", "DenseImageData", "WindowData", "AnnotatedData",
           "DummyData", "Python", "DataParams"]
