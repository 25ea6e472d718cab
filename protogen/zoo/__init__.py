"""The model zoo: every network is a DSL function registered with its options.

``build("shufflenet_v1", groups=3)`` returns a :class:`protogen.dsl.Net`. Options are declared
with their type, default and allowed values, so the CLI lists and checks them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..dialect import DEFAULT, Dialect
from ..dsl import Net, TrainData
from ..errors import ProtogenError


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    choices: tuple = ()
    help: str = ""
    #: inclusive numeric range, when not a fixed set of choices
    range: tuple | None = None

    def convert(self, value):
        try:
            v = self.type(value) if not isinstance(value, self.type) else value
            if self.type is bool and isinstance(value, str):
                v = value.lower() in ("1", "true", "yes", "on")
        except (TypeError, ValueError):
            raise ProtogenError(f"option --{self.name.replace('_', '-')} expects {self.type.__name__}, "
                                f"got {value!r}") from None
        if self.choices and v not in self.choices:
            raise ProtogenError(f"option --{self.name.replace('_', '-')}={value} is not one of "
                                f"{', '.join(str(c) for c in self.choices)}")
        if self.range and not self.range[0] <= v <= self.range[1]:
            raise ProtogenError(f"option --{self.name.replace('_', '-')}={value} is outside "
                                f"{self.range[0]}..{self.range[1]}")
        return v


INPUT_SIZE = Option("input_size", int, 224, range=(32, 2048), help="input height and width")
NUM_CLASSES = Option("num_classes", int, 1000, range=(1, 1_000_000), help="classifier outputs")


@dataclass
class Model:
    name: str
    build_fn: Callable
    options: tuple
    summary: str
    aliases: tuple = ()

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise ProtogenError(f"model '{self.name}' has no option --{name.replace('_', '-')} "
                            f"(it takes: {', '.join('--' + o.name.replace('_', '-') for o in self.options)})")

    def resolve(self, **kw) -> dict:
        opts = {o.name: o.default for o in self.options}
        for k, v in kw.items():
            if v is None:
                continue
            opts[k] = self.option(k).convert(v)
        return opts


_MODELS: dict[str, Model] = {}
_ALIASES: dict[str, str] = {}
_MODULES = ("shufflenet", "mobilenet", "googlenet", "inception", "resnet", "xception")


def model(name: str, *options: Option, summary: str = "", aliases: tuple = ()):
    """Register a zoo builder ``fn(n: Net, x: Blob, **options) -> logits Blob``.

    A builder that adds its own outputs (deploy ``prob``, losses, accuracies) returns None."""
    def deco(fn):
        opts = tuple(options)
        _MODELS[name] = Model(name, fn, opts, summary or (fn.__doc__ or "").strip().split("\n")[0], aliases)
        for a in aliases:
            _ALIASES[a] = name
        return fn
    return deco


def _load_all() -> None:
    for m in _MODULES:
        importlib.import_module(f".{m}", __name__)


def models() -> dict[str, Model]:
    _load_all()
    return dict(sorted(_MODELS.items()))


def get(name: str) -> Model:
    _load_all()
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        raise ProtogenError(f"unknown model '{name}' (see 'protogen list')")
    return _MODELS[key]


def build(name: str, dialect: Dialect = DEFAULT, **options) -> Net:
    """Build zoo model ``name``; the net has a deploy and a train_val form."""
    m = get(name)
    opts = m.resolve(**options)
    suffix = "".join(f"_{k}{v}" for k, v in opts.items()
                     if v != m.option(k).default and k not in ("input_size", "num_classes"))
    n = Net(m.name + suffix, dialect)
    size = opts.get("input_size", 224)
    x = n.input("data", (1, 3, size, size), train=TrainData())
    logits = m.build_fn(n, x, **opts)
    if logits is not None:
        n.classifier_outputs(logits)
    # else: the builder added its own outputs (e.g. GoogLeNet's loss3/loss3 and aux losses)
    return n
