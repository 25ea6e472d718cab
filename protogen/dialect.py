"""Caffe dialects: how layer types that upstream BVLC Caffe lacks are written out.

* ``default``: depthwise = ``Convolution`` with ``group``; channel shuffle = Reshape ->
  Permute -> Reshape (Permute as in the SSD fork); ReLU6 as a ``ReLU6`` layer.
* ``--shuffle shufflechannel``: channel shuffle as one ``ShuffleChannel`` layer.
* ``--dialect bvlc``: only upstream layers: shuffle as Slice -> Reshape each -> Concat ->
  Reshape, ReLU6 as ``Clip`` (min 0, max 6).
* ``--depthwise ConvolutionDepthwise``: depthwise convolutions get that fork's type name.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtogenError

SHUFFLE_MODES = ("permute", "shufflechannel", "slice")
DIALECTS = ("default", "bvlc")
DEPTHWISE = ("Convolution", "ConvolutionDepthwise")


@dataclass(frozen=True)
class Dialect:
    name: str = "default"
    shuffle: str = "permute"          # permute | shufflechannel | slice
    relu6: str = "ReLU6"              # ReLU6 | Clip
    depthwise: str = "Convolution"    # Convolution | ConvolutionDepthwise

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
        return Dialect("default", shuffle or "permute", "ReLU6", depthwise or "Convolution")

    @property
    def tag(self) -> str:
        """A short file-name tag: '' for the default dialect."""
        if self == Dialect():
            return ""
        if self.name == "bvlc":
            return "bvlc"
        parts = []
        if self.shuffle != "permute":
            parts.append(self.shuffle)
        if self.depthwise != "Convolution":
            parts.append("dw")
        return "-".join(parts)


DEFAULT = Dialect()
