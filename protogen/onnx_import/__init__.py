"""ONNX -> IR import (a raising into Caffe semantics), and ONNX -> Caffe files.

``load_onnx(path_or_model)`` turns an ONNX graph made of operations that the converter
registry can express into an IR :class:`~protogen.ir.Graph` whose layers carry their weights
in ``layer.blobs``. ``onnx_to_caffe(onnx_path, prototxt_path)`` writes the deploy prototxt
and the caffemodel beside it.

The package:

* :mod:`.registry`: :class:`OpConverter` and the ``@onnx_op`` decorator; one converter per
  ONNX op (or op family) holds its attribute schema, static checks, constant folding and
  conversion;
* :mod:`.context`: :class:`ImportContext`, the state of one import and the helpers the
  converters share;
* :mod:`.driver`: check every node first, fold constants, convert in node order, raise every
  problem at once, write Caffe files;
* ``ops_*.py``: the converters, by family (conv, pool, act, compose, norm, elementwise,
  shape, pad, resize, const).

``onnx_to_caffe`` writes the ``portable`` dialect by default (what upstream Caffe, OpenCV's
Caffe importer and older forks all load). How an op is added, and the mapping table:
docs/onnx-import.md ("Adding an ONNX import op").
"""
from __future__ import annotations

from .driver import load_onnx, onnx_to_caffe, write_caffe
from .registry import OpConverter, Refuse, onnx_op, supported_ops

__all__ = ["load_onnx", "onnx_to_caffe", "write_caffe", "SUPPORTED_OPS", "OpConverter", "Refuse", "onnx_op"]


def __getattr__(name):
    if name == "SUPPORTED_OPS":         # computed when asked: loads every op module
        return supported_ops()
    raise AttributeError(name)
