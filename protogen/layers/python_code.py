"""What every registry type read from a Caffe ``Python`` layer shares: its parameters are the
``python_param`` triple (module, layer, param_str), the generic ``Python`` type's ``resolve``
hands the layer over by the code it names, and it is written back as that Python layer.

The types: py-faster-rcnn's ProposalLayer (:mod:`.rcnn`), SSH's ProposalLayer (:mod:`.ssh`)
and a Python loss (:mod:`.train_only`)."""
from __future__ import annotations

import ast

from ..errors import ProtogenError
from .base import LayerType


def parse_param_str(text: str) -> dict:
    """A Python layer's param_str (YAML in Caffe; in practice a Python dict literal, braces
    optional: "'feat_stride': 16"), read with ast.literal_eval."""
    t = text.strip()
    if not t.startswith("{"):
        t = "{" + t + "}"
    try:
        d = ast.literal_eval(t)
    except (ValueError, SyntaxError) as e:
        raise ProtogenError(f"python_param.param_str {text!r} is not a dict literal ({e})") from None
    if not isinstance(d, dict):
        raise ProtogenError(f"python_param.param_str {text!r} is not a dict")
    return d


class PythonCode:
    """Mixin (before :class:`LayerType` in the bases): ``Params`` takes (module, layer,
    param_str) first; ``param_keys`` (when set) are the param_str keys the type knows, of which
    ``required_keys`` must be there; ``code_name`` names the code in errors."""
    param_field = "python_param"
    benign_param_fields = LayerType.benign_param_fields | {"share_in_parallel"}
    param_keys: frozenset | None = None
    required_keys: tuple[str, ...] = ()
    code_name = "the Python layer"

    def parse(self, lp):
        p = self.Params(lp.python_param.module, lp.python_param.layer, lp.python_param.param_str)
        self.validate(p)
        return p

    def validate(self, p):
        if self.param_keys is None:
            return
        d = parse_param_str(p.param_str)
        for k in self.required_keys:
            if k not in d:
                raise ProtogenError(f"{self.code_name}'s param_str needs {k!r}")
        extra = set(d) - self.param_keys
        if extra:
            raise ProtogenError(f"{self.code_name}'s param_str has keys {sorted(extra)} that "
                                f"protogen does not know (known: {sorted(self.param_keys)})")

    def write(self, p, lp):
        lp.python_param.module, lp.python_param.layer = p.module, p.layer
        if p.param_str:
            lp.python_param.param_str = p.param_str

    def caffe_type(self, layer, dialect):
        return "Python"
