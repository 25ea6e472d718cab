"""torchvision's model definitions for the tests, with the pinned CPU torch.

PyPI's torchvision wheels are built against the CUDA torch; beside the pinned CPU torch their
compiled extension (``torchvision/_C.so``, which links libtorch_cuda/libc10_cuda) does not
load. torchvision tolerates that for every op except two: ``_meta_registrations`` registers
fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and torch
refuses a fake kernel for an operator that was never defined ("operator torchvision::nms does
not exist"). The classifiers need neither op, so when (and only when) that exact import error
happens the two operator *schemas* are declared here (no kernel: calling nms would still
fail loudly) and torchvision is imported again. With a torchvision whose extension loads
(e.g. the +cpu wheel from PyTorch's index), nothing is declared.
"""
from __future__ import annotations

import sys

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIB = []


def torchvision_models():
    """``torchvision.models`` or None when torchvision is not installed."""
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        return None
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        import torch
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        lib = torch.library.Library("torchvision", "DEF")      # kept alive: the schemas live with it
        for s in _SCHEMAS:
            lib.define(s)
        _LIB.append(lib)
        import torchvision  # noqa: F401
    import torchvision.models as models
    return models
