"""IR -> readable PyTorch source: an ``nn.Module`` file plus its ``state_dict``.

:func:`graph_to_torch_source` walks the deploy view of a graph and asks each layer type for
its ``torch_source`` (the counterpart of ``torch_forward``, in the same class): the layer
declares its weights (an ``nn.Conv2d``, ``nn.BatchNorm2d``, an ``nn.Parameter``...) through a
:class:`SourceContext` and writes one forward line. The module is rendered from
``templates/torch_module.py.j2``; it imports only torch. :func:`write_torch` writes
``OUT.py`` and ``OUT.pth`` (the ``state_dict``, loadable with ``torch.load(path,
weights_only=True)``), both atomically, after everything has been generated.

Python names: every blob is one local variable (its Caffe name made a safe identifier, see
:func:`identifier`, unique); an in-place Caffe layer reassigns the variable, which reproduces
Caffe's in-order semantics. Layers with weights become attributes named after the layer (safe
and unique the same way; the Caffe name is kept in the line's comment). Shape-dependent constants
(Caffe's ceil-mode pooling windows, slice sizes) are baked for the net's declared input
size; the batch size may vary.
"""
from __future__ import annotations

import builtins
import keyword
import re
from pathlib import Path

import numpy as np

from .errors import ProtogenError, UnsupportedError
from .fmt import num, pair, printable  # noqa: F401  (num/pair: formatters re-exported for layer types)
from .ir import DEPLOY, Dataflow, Graph, Resolved, Step
from .util import unique_name

#: names the generated file uses itself, and Python's builtins (a blob named 'sum' or
#: 'input' would shadow one): variables and attributes never take them
RESERVED = frozenset({"self", "torch", "nn", "F", "FLT_MAX", "input_names", "output_names"}
                     | set(dir(builtins)))


def identifier(name: str) -> str:
    """``name`` made a safe Python identifier (``inception_3a/1x1`` -> ``inception_3a_1x1``):
    ASCII letters, digits and single underscores only, never starting with ``_`` (a ``__x``
    attribute would be name-mangled inside the class) or a digit, never a keyword or a name
    the generated file uses itself. Distinct names may map to the same identifier
    (``свёртка/1`` -> ``v_1``): callers make them unique (:func:`protogen.util.unique_name`)."""
    s = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")
    if not s or s[0].isdigit():
        s = "v_" + s if s else "v"
    if keyword.iskeyword(s) or s in RESERVED or keyword.issoftkeyword(s):
        s += "_"
    return s


def class_identifier(name: str) -> str:
    """A CamelCase class name from a net name (``resnet50_v1.5`` -> ``Resnet50V15``)."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    s = "".join(p[0].upper() + p[1:] for p in parts) or "Net"
    if s[0].isdigit():
        s = "Net" + s
    return s if not keyword.iskeyword(s) else s + "_"


class SourceContext(Dataflow):
    """What a layer's ``torch_source`` sees: Python names of its bottoms and tops, weight
    declarations (``__init__`` lines + state_dict entries) and forward lines."""

    def __init__(self, resolved: Resolved):
        import torch.nn
        self._module_attrs = set(dir(torch.nn.Module))
        self._init_dataflow(resolved)
        self.init_lines: list[str] = []
        self.forward_lines: list[str] = []
        self.state: dict[str, np.ndarray] = {}
        self.uses: set[str] = set()          # module-level helpers used (e.g. FLT_MAX)
        self._vars: dict[str, str] = {}      # blob name -> variable
        self._var_names: set[str] = set()
        self._attrs: set[str] = set()
        self._layer_attr: dict[int, str] = {}
        self.current: Step | None = None

    # ------------------------------------------------------------------ names
    def var(self, blob: str) -> str:
        """The local variable holding blob ``blob``."""
        v = self._vars.get(blob)
        if v is None:
            v = unique_name(identifier(blob), self._var_names)
            self._vars[blob] = v
        return v

    def x(self, i: int = 0) -> str:
        return self.var(self.current.layer.bottoms[i])

    def xs(self) -> list[str]:
        return [self.var(b) for b in self.current.layer.bottoms]

    def y(self, i: int = 0) -> str:
        return self.var(self.current.layer.tops[i])

    def ys(self) -> list[str]:
        return [self.var(t) for t in self.current.layer.tops]

    def attr(self, suffix: str = "") -> str:
        """The attribute name of the current layer (``suffix`` appended), unique and not
        shadowing an ``nn.Module`` member."""
        l = self.current.layer
        base = identifier(l.name + (f"_{suffix}" if suffix else ""))
        if base in self._module_attrs:          # e.g. a layer named 'train' or 'forward'
            base += "_"
        return unique_name(base, self._attrs)

    def _comment(self, extra: str = "") -> str:
        l = self.current.layer
        return f"  # {printable(l.name)} ({l.type}){extra}"

    # ------------------------------------------------------------------ weights
    def module(self, ctor: str, weights: dict, comment: str = "") -> str:
        """Declare ``self.<layer> = <ctor>`` (an ``nn`` module) whose state_dict entries
        ``<attr>.<key>`` are ``weights[key]``; returns ``self.<attr>``."""
        a = self.attr()
        self.init_lines.append(f"self.{a} = {ctor}{self._comment(comment)}")
        for k, w in weights.items():
            self.state[f"{a}.{k}"] = np.asarray(w)
        return f"self.{a}"

    def parameter(self, suffix: str, value, buffer: bool = False) -> str:
        """Declare an ``nn.Parameter`` (or a buffer) of the current layer holding ``value``
        (shape kept); returns ``self.<attr>``."""
        a = self.attr(suffix)
        arr = np.asarray(value, np.float32)
        shape = ", ".join(str(d) for d in arr.shape) + ("," if arr.ndim == 1 else "")
        if buffer:
            self.init_lines.append(f"self.register_buffer({a!r}, torch.zeros({shape})){self._comment()}")
        else:
            self.init_lines.append(f"self.{a} = nn.Parameter(torch.zeros({shape})){self._comment()}")
        self.state[a] = arr
        return f"self.{a}"

    def constant(self, suffix: str, code: str, why: str = "") -> str:
        """A constant tensor written as literal code in ``__init__`` (a non-persistent buffer:
        it follows ``.to(device)`` but is not part of the state_dict)."""
        a = self.attr(suffix)
        self.init_lines.append(f"self.register_buffer({a!r}, {code}, persistent=False)"
                               f"{self._comment(f': {why}' if why else '')}")
        return f"self.{a}"

    # ------------------------------------------------------------------ forward
    def line(self, code: str, comment: bool = False) -> None:
        self.forward_lines.append(code + (self._comment() if comment else ""))

    def assign(self, expr: str, comment: bool | None = None) -> None:
        """``<top> = <expr>`` (several tops: ``a, b = <expr>``). The layer's name is added as
        a comment when the line names no attribute of that layer."""
        if comment is None:
            l = self.current.layer
            comment = "self." not in expr and not (len(l.tops) == 1 and identifier(l.name) == self.y())
        self.line(f"{', '.join(self.ys())} = {expr}", comment)

    def alias(self, comment: str = "") -> None:
        """Every top is the first bottom (identity at inference: Dropout, Split, no-op views)."""
        x = self.x()
        tops = [t for t in self.ys() if t != x]
        l = self.current.layer
        note = f"  # {printable(l.name)} ({l.type}){': ' + comment if comment else ''}"
        if tops:
            self.forward_lines.append(" = ".join(tops) + f" = {x}" + note)
        else:
            self.forward_lines.append(note.strip())


def _lower(graph: Graph, input_shapes=None):
    res = graph.resolve(net=DEPLOY, input_shapes=input_shapes)
    if not res.inputs:
        raise ProtogenError("the deploy net has no Input layer")
    ctx = SourceContext(res)
    args = [ctx.var(blob) for blob, _, _ in res.inputs]
    problems = []
    for st in res.steps:
        l = st.layer
        if l.kind.is_input or ctx.done(st):
            continue
        ctx.current = st
        try:
            l.kind.torch_source(l.params, ctx, st)
        except UnsupportedError as e:
            problems.extend([(l.name, l.type, "no PyTorch source form")] if not e.items else
                            [(l.name, t, m) for _, t, m in e.items])
        except ProtogenError as e:
            raise e.with_context(layer=l.name)
    if problems:
        raise UnsupportedError(problems)
    ctx.current = None
    return res, ctx, args


def graph_to_torch_source(graph: Graph, class_name: str | None = None, *, weights_file: str | None = None,
                          input_shapes: dict | None = None, _ctx_out: list | None = None) -> str:
    """The source of a ``torch.nn.Module`` computing the deploy view of ``graph`` exactly as
    Caffe does (weights are declared, not embedded: see :func:`torch_state_dict`)."""
    from .templating import render
    res, ctx, args = _lower(graph, input_shapes)
    if _ctx_out is not None:
        _ctx_out.append(ctx)
    g = res.graph
    cls = class_name or class_identifier(g.name or "net")
    if not cls.isidentifier() or keyword.iskeyword(cls):
        raise ProtogenError(f"'{cls}' is not a valid Python class name")
    shapes = res.blob_shapes()
    return render("torch_module.py.j2", class_name=cls, net_name=printable(g.name),
                  weights_file=printable(weights_file or f"{cls}.pth"),
                  inputs=[{"blob": t, "doc": printable(t), "var": v, "shape": "x".join(str(d) for d in s)}
                          for (t, _, s), v in zip(res.inputs, args)],
                  outputs=[{"blob": o, "doc": printable(o), "var": ctx.var(o),
                            "shape": "x".join(str(d) for d in shapes[o])} for o in res.outputs],
                  init_lines=ctx.init_lines, forward_lines=ctx.forward_lines,
                  uses_flt_max="FLT_MAX" in ctx.uses)


def torch_state_dict(ctx: SourceContext) -> dict:
    """The ``state_dict`` (name -> tensor) of the module generated through ``ctx``. Tensors
    share memory with the graph's blobs where they can (read-only caffemodel views included:
    they are only read, by ``torch.save``)."""
    import warnings

    import torch
    sd = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for k, v in ctx.state.items():
            a = np.asarray(v)
            if a.dtype.kind == "f" and a.dtype != np.float32:
                a = a.astype(np.float32)
            sd[k] = torch.from_numpy(np.ascontiguousarray(a))
    return sd


def write_torch(graph: Graph, out_py, class_name: str | None = None,
                input_shapes: dict | None = None) -> list[str]:
    """Write ``OUT.py`` (the module source) and ``OUT.pth`` (its state_dict). The source is
    generated and compiled first, so every error about the net comes before any file is
    touched; both are written to temporary files beside them (the state_dict streamed, not
    held in memory) and renamed into place only when both are complete. Returns the paths."""
    import torch

    from .util import atomic_open
    out_py = Path(out_py)
    if out_py.suffix != ".py":
        raise ProtogenError(f"PyTorch source output must end in .py, got '{out_py.name}'")
    out_pth = out_py.with_suffix(".pth")
    ctxs: list = []
    src = graph_to_torch_source(graph, class_name, weights_file=out_pth.name,
                                input_shapes=input_shapes, _ctx_out=ctxs)
    compile(src, str(out_py), "exec")       # a generator bug must not reach the user's disk
    state = torch_state_dict(ctxs[0])
    # both go to temporary files; OUT.py is renamed into place, then OUT.pth: a failure
    # before that leaves any earlier OUT.py / OUT.pth as they were
    with atomic_open(out_pth, "wb") as fp:
        torch.save(state, fp)
        with atomic_open(out_py, "w") as fy:
            fy.write(src)
    return [str(out_py), str(out_pth)]

