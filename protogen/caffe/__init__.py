"""Caffe's formats: the generated protobuf bindings (``pb``), prototxt text and caffemodel IO.

``pb`` is imported lazily so that merely importing protogen stays cheap.
"""
from __future__ import annotations

import importlib


def __getattr__(name):
    if name == "pb":
        mod = importlib.import_module(".caffe_pb2", __name__)
        globals()["pb"] = mod
        return mod
    raise AttributeError(name)
