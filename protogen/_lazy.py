"""Lazily imported modules: ``numpy`` costs ~100 ms to import, and ``protogen emit`` of a
prototxt never touches an array, so the layer registry imports it on first use."""
from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr):
        mod = importlib.import_module(self.__dict__["_name"])
        return getattr(mod, attr)


numpy = LazyModule("numpy")
