"""Caffe dialects: how layer types that upstream BVLC Caffe lacks are written out, by the
runtime each targets.

* ``default`` (protogen's own form; upstream Caffe >= 2018 with the SSD fork's Permute and a
  ReLU6 layer, as OpenCV's Caffe importer reads them once ``round_mode`` is rewritten):
  depthwise = ``Convolution`` with ``group``; channel shuffle = Reshape -> Permute -> Reshape;
  ReLU6 as a ``ReLU6`` layer; floor pooling as ``round_mode: FLOOR``.
* ``--shuffle shufflechannel``: channel shuffle as one ``ShuffleChannel`` layer (the
  ShuffleNet fork, OpenCV).
* ``--dialect bvlc`` (upstream BVLC Caffe only): shuffle as Slice -> Reshape each -> Concat
  -> Reshape, ReLU6 as ``Clip`` (min 0, max 6).
* ``--dialect portable`` (what upstream BVLC Caffe, OpenCV's dnn Caffe importer and Caffe
  forks whose schema predates ``round_mode`` all load and compute alike; the default of
  ONNX -> Caffe): the bvlc shuffle; floor pooling as ceil pooling + a Slice dropping the
  surplus row/column where the two sizes differ (no ``round_mode`` field is ever written);
  ReLU6 and Clip as in-place ReLU/Power chains (:func:`protogen.layers.act.clip_chain`, the
  one recipe, also used by the ONNX importer, which lowers HardSwish/... into ReLU, Power,
  Sigmoid, Eltwise and Scale layers for it).
* ``--depthwise ConvolutionDepthwise``: depthwise convolutions get that fork's type name.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtogenError

SHUFFLE_MODES = ("permute", "shufflechannel", "slice")
DIALECTS = ("default", "bvlc", "portable")
#: the runtime each dialect targets (for --help and docs)
TARGETS = {
    "default": "upstream Caffe (>= 2018, round_mode) + the SSD fork's Permute and ReLU6",
    "bvlc": "upstream BVLC Caffe layer types only",
    "portable": "upstream BVLC Caffe, OpenCV's dnn Caffe importer and pre-2018 forks alike",
}
DEPTHWISE = ("Convolution", "ConvolutionDepthwise")


@dataclass(frozen=True)
class Dialect:
    name: str = "default"
    shuffle: str = "permute"          # permute | shufflechannel | slice
    relu6: str = "ReLU6"              # ReLU6 | Clip (portable: ReLU/Power chain, see .portable)
    depthwise: str = "Convolution"    # Convolution | ConvolutionDepthwise
    floor_pool: str = "round_mode"    # round_mode | slice (ceil pooling + Slice off the surplus)

    @staticmethod
    def make(dialect: str = "default", shuffle: str | None = None,
             depthwise: str | None = None) -> "Dialect":
        if dialect not in DIALECTS:
            raise ProtogenError(f"unknown dialect '{dialect}' (choose from {', '.join(DIALECTS)})")
        if shuffle is not None and shuffle not in SHUFFLE_MODES:
            raise ProtogenError(f"unknown shuffle form '{shuffle}' (choose from {', '.join(SHUFFLE_MODES)})")
        if depthwise is not None and depthwise not in DEPTHWISE:
            raise ProtogenError(f"unknown depthwise form '{depthwise}' (choose from {', '.join(DEPTHWISE)})")
        if dialect == "bvlc":
            if shuffle not in (None, "slice") or depthwise not in (None, "Convolution"):
                raise ProtogenError("the bvlc dialect allows only upstream Caffe layers "
                                    "(shuffle 'slice', depthwise 'Convolution')")
            return Dialect("bvlc", "slice", "Clip", "Convolution")
        if dialect == "portable":
            if shuffle not in (None, "slice") or depthwise not in (None, "Convolution"):
                raise ProtogenError("the portable dialect allows only layers every Caffe runtime "
                                    "has (shuffle 'slice', depthwise 'Convolution')")
            return Dialect("portable", "slice", "ReLU6", "Convolution", "slice")
        return Dialect("default", shuffle or "permute", "ReLU6", depthwise or "Convolution")

    @property
    def portable(self) -> bool:
        """Only layer types and fields every Caffe runtime shares (no ReLU6, Clip, round_mode)."""
        return self.name == "portable"

    @property
    def has_permute(self) -> bool:
        """Whether a general Permute layer (SSD fork) may be written."""
        return self.name == "default"

    @property
    def has_interp(self) -> bool:
        """Whether the DeepLab/PSPNet fork's Interp layer (align-corners bilinear) may be written."""
        return self.name == "default"

    @property
    def tag(self) -> str:
        """A short file-name tag: '' for the default dialect."""
        if self == Dialect():
            return ""
        if self.name in ("bvlc", "portable"):
            return self.name
        parts = []
        if self.shuffle != "permute":
            parts.append(self.shuffle)
        if self.depthwise != "Convolution":
            parts.append("dw")
        return "-".join(parts)


DEFAULT = Dialect()
PORTABLE = Dialect.make("portable")
