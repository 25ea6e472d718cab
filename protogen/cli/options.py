"""Options shared by every subcommand, with one meaning each, and model loading.

* ``--phase test|train`` (``deploy`` is accepted as another name for ``test``): ``test`` is
  the inference view (Caffe's TEST phase; a zoo model's deploy net), ``train`` Caffe's TRAIN
  phase (a zoo model's train_val net for ``emit``/``diff``). Default: test.
* ``--input-shape N,C,H,W`` (also ``--input-shape -1,3,48,48``: N = -1 means any batch,
  taken as 1; verify uses ``--batch``), or by name, repeated: ``--input-shape
  data=1,3,224,224 --input-shape rois=1,5`` (several inputs; a train net's later data tops
  that the net computes with, e.g. Fast R-CNN's rois, become inputs; an ONNX file's inputs).
* ``--stage NAME`` (repeatable) and ``--level N``: the rest of Caffe's NetState, with
  ``--phase`` selecting a prototxt's layers by their include/exclude rules (as Caffe's
  FilterNet does); added with ``--input-shape`` wherever a model file is read.
* ``--weights FILE.caffemodel``, ``--seed N``, ``--dialect default|bvlc|portable``.
* the model: a zoo name, a ``.prototxt`` (any Caffe format version) or an ``.onnx`` file.

Nothing here imports numpy, torch or onnx at module level: ``emit``/``stats``/``list``
stay light.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..errors import ProtogenError

#: the one meaning of --phase, shown in every subcommand's --help
PHASE_HELP = ("test (default; 'deploy' is another name for it): the inference view, Caffe's "
              "TEST phase; train: Caffe's TRAIN phase")
PHASE_CHOICES = ("test", "train")
_PHASE_ALIASES = {"test": "test", "deploy": "test", "train": "train"}
MODEL_FILE_SUFFIXES = (".prototxt", ".pt", ".txt")
ONNX_SUFFIX = ".onnx"


class Parser(argparse.ArgumentParser):
    """argparse with protogen's one-line error format (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(2, f"protogen: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- arguments
def phase(text: str) -> str:
    """``--phase`` value: 'test' (alias 'deploy') or 'train' (case-insensitive)."""
    p = _PHASE_ALIASES.get(str(text).strip().lower())
    if p is None:
        raise argparse.ArgumentTypeError(f"invalid phase '{text}' (choose test or train; "
                                         "deploy = test)")
    return p


def add_phase(p, extra: str = "", default: str | None = None) -> None:
    """``--phase``; ``extra`` says what it selects in this subcommand."""
    p.add_argument("--phase", type=phase, default=default, metavar="{test,train}",
                   help=PHASE_HELP + (f". {extra}" if extra else ""))


def add_input_shape(p) -> None:
    """``--input-shape`` and the NetState options (``--stage``, ``--level``): how a model
    file is read."""
    p.add_argument("--input-shape", default=None, action="append", metavar="[NAME=]N,C,H,W",
                   help="input shape for a prototxt whose data layer gives no size or an ONNX "
                        "file with dynamic sizes; N = -1 means any batch (taken as 1). Repeat "
                        "as NAME=N,C,H,W for several inputs by name (a train net's data tops "
                        "that feed the net, e.g. --input-shape data=1,3,224,224 "
                        "--input-shape rois=1,5)")
    add_netstate(p)


def add_netstate(p) -> None:
    """``--stage NAME`` (repeatable) and ``--level N``: a prototxt's NetState with --phase."""
    p.add_argument("--stage", action="append", default=None, metavar="NAME",
                   help="a NetState stage (repeatable): a prototxt's layers are kept or dropped "
                        "by their include/exclude stage rules, as in Caffe (default: the net's "
                        "state, else none)")
    p.add_argument("--level", type=int, default=None, metavar="N",
                   help="the NetState level for a prototxt's min_level/max_level rules "
                        "(default: the net's state, else 0)")


def netstate(args) -> dict:
    """``{"stages": [...], "level": N}`` for the NetState options given (empty: none)."""
    out = {}
    if getattr(args, "stage", None):
        out["stages"] = list(args.stage)
    if getattr(args, "level", None) is not None:
        out["level"] = args.level
    return out


def _refuse_netstate(source: str, args) -> None:
    if netstate(args):
        raise ProtogenError("--stage and --level select a prototxt's layers; they do not apply to "
                            f"{'an ONNX file' if is_onnx_file(source) else 'zoo models'}",
                            file=source if is_model_file(source) else None)


def add_weights(p) -> None:
    p.add_argument("--weights", default=None, metavar="FILE.caffemodel",
                   help="real weights for a .prototxt (default: seeded weights)")


def add_seed(p, what: str = "seed of the generated weights") -> None:
    p.add_argument("--seed", type=int, default=0, help=what)


def add_dialect(p, hidden: bool = False) -> None:
    """``--dialect`` (+ ``--shuffle``/``--depthwise``, the dialect's variants)."""
    sup = argparse.SUPPRESS
    p.add_argument("--dialect", default=None,
                   help="Caffe dialect written, by the runtime it targets: default (upstream Caffe "
                        ">= 2018 + Permute/ReLU6); bvlc (upstream BVLC layer types only); portable "
                        "(upstream Caffe, OpenCV's Caffe importer and pre-2018 forks alike; the "
                        "default of convert from ONNX)")
    p.add_argument("--shuffle", default=None,
                   help=sup if hidden else "channel shuffle form: permute | shufflechannel | slice")
    p.add_argument("--depthwise", default=None,
                   help=sup if hidden else "depthwise type: Convolution | ConvolutionDepthwise")


def add_zoo_sizes(p) -> None:
    """``--input-size``/``--num-classes`` (zoo models) and the model options that follow."""
    p.add_argument("--input-size", type=int, default=None, help="input height/width (zoo models)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (zoo models)")
    p.set_defaults(takes_model_options=True)


def add_model(p, nargs=None, what: str = "zoo model name (see 'protogen list'), "
              "FILE.prototxt (any Caffe version) or FILE.onnx") -> None:
    p.add_argument("model", nargs=nargs, default=None, help=what)


_SHAPE_VALUE = re.compile(r"^-\d+([,x]-?\d+)*$")


def normalize_argv(argv: list[str]) -> list[str]:
    """``--input-shape -1,3,48,48`` -> ``--input-shape=-1,3,48,48`` (argparse would take a
    value starting with '-' for an option)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--input-shape" and i + 1 < len(argv) and _SHAPE_VALUE.match(argv[i + 1]):
            out.append(f"--input-shape={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def input_shape(args) -> tuple[int, ...] | dict | None:
    """``--input-shape`` as a tuple (a leading -1, any batch, becomes 1), or None; given by
    name (``NAME=N,C,H,W``, repeatable) a dict {name: tuple} (load_model's / load_onnx's
    named form)."""
    given = getattr(args, "input_shape", None)
    if given is None:
        return None
    given = [given] if isinstance(given, str) else list(given)
    named = [g for g in given if "=" in g]
    if not named:
        if len(given) > 1:
            raise ProtogenError("--input-shape given several times: name each input "
                                "(--input-shape data=1,3,224,224 --input-shape rois=1,5)")
        return _shape(given[0])
    if len(named) != len(given):
        raise ProtogenError("--input-shape: name every shape (NAME=N,C,H,W) when one is named")
    out = {}
    for g in named:
        name, _, text = g.partition("=")
        name = name.strip()
        if not name or name in out:
            raise ProtogenError(f"--input-shape {g!r}: " + ("a name is needed before '='" if not name
                                                             else f"input '{name}' given twice"))
        out[name] = _shape(text, name)
    return out


def _shape(text: str, name: str | None = None) -> tuple[int, ...]:
    """One ``N,C,H,W`` value of --input-shape (``name``: the input it is for, in errors)."""
    what = f"--input-shape for '{name}'" if name else "--input-shape"
    parts = str(text).strip().replace("x", ",").split(",")
    try:
        dims = [int(s) for s in parts]
    except ValueError:
        raise ProtogenError(f"{what} must be integers like 1,3,224,224, got '{text}'") from None
    if dims and dims[0] == -1:
        dims[0] = 1
    from ..layers.io import check_input_shape
    try:
        return check_input_shape(dims)
    except ProtogenError as e:
        raise ProtogenError(f"{what}: {e.message}") from None


def model_options(extra: list[str]) -> dict:
    """Turn ``--groups 3 --width=0.5`` into {'groups': '3', 'width': '0.5'}."""
    opts = {}
    i = 0
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--"):
            raise ProtogenError(f"unexpected argument '{a}'")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ProtogenError(f"option {a} needs a value")
            k, v = a[2:], extra[i + 1]
            i += 1
        opts[k.replace("-", "_")] = v
        i += 1
    return opts


def dialect(args, default: str = "default"):
    from ..dialect import DEFAULT, Dialect
    if args is None or not hasattr(args, "dialect"):
        return DEFAULT
    return Dialect.make(args.dialect or default, getattr(args, "shuffle", None), getattr(args, "depthwise", None))


# ----------------------------------------------------------------------------- outputs
def check_output(path, kinds: tuple[str, ...] | None = None, what: str = "output") -> Path | None:
    """Refuse, before any work, an output whose suffix is not one of ``kinds`` or whose
    directory does not exist (it is not created). ``None``/``-`` (stdout) pass."""
    if path is None or str(path) == "-":
        return None
    shown = str(path)
    if shown.endswith(("/", os.sep)) or Path(shown).is_dir():
        raise ProtogenError("cannot write: is a directory (name an output file)", file=shown)
    p = Path(shown)
    if kinds is not None and p.suffix.lower() not in kinds:
        raise ProtogenError(f"{what} must end in {', '.join(kinds)}, got '{p.name}'", file=shown)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ProtogenError(f"cannot write: directory '{parent}' does not exist", file=shown)
    return p


# ----------------------------------------------------------------------------- models
def is_onnx_file(source: str) -> bool:
    return str(source).lower().endswith(ONNX_SUFFIX)


def is_model_file(source: str) -> bool:
    """A path to a Caffe prototxt or an ONNX file (rather than a zoo model name)."""
    s = str(source)
    return s.endswith(MODEL_FILE_SUFFIXES) or is_onnx_file(s) or "/" in s


def in_file(source: str, fn):
    """Run ``fn()``; an error about a model file's layers names the file as well."""
    try:
        return fn()
    except ProtogenError as e:
        raise e.with_context(file=source if is_model_file(source) else None) from None


def _refuse_zoo_options(source: str, args, extra) -> None:
    if extra:
        raise ProtogenError(f"model options {' '.join(extra)} only apply to zoo models", file=source)
    why = {"input_size": "a model file has its own input shape (or give --input-shape N,C,H,W)",
           "num_classes": "a model file's classifier is taken as written"}
    for opt in ("input_size", "num_classes"):
        if args is not None and getattr(args, opt, None) is not None:
            raise ProtogenError(f"--{opt.replace('_', '-')} only applies to zoo models; {why[opt]}",
                                file=source)


def load_zoo(source: str, args=None, extra=None):
    """A zoo model -> (graph, net object)."""
    from .. import zoo
    model = zoo.get(source)
    for a in extra or []:       # an unknown option is named as such, even without a value
        if a.startswith("--"):
            model.option(a[2:].split("=", 1)[0].replace("-", "_"))
    opts = model_options(extra or [])
    for opt in ("input_size", "num_classes"):
        if args is not None and getattr(args, opt, None) is not None:
            opts[opt] = getattr(args, opt)
    net = zoo.build(source, dialect(args), **opts)
    return net.graph, net


def load_graph(source: str, args=None, extra=None):
    """A zoo model name or a model file, as written (every phase) -> (graph, net or None).

    A prototxt keeps its data and loss layers and phase rules; an ONNX file is imported
    (protogen.onnx_import) with its weights."""
    if not is_model_file(source) or is_onnx_file(source):
        _refuse_netstate(source, args)
    if not is_model_file(source):
        return load_zoo(source, args, extra)
    _refuse_zoo_options(source, args, extra)
    if is_onnx_file(source):
        return load_onnx(source, args), None
    if netstate(args):     # --stage/--level: the layers of that NetState (and --phase), as written
        from ..caffe.loader import load_model
        return load_model(source, phase=getattr(args, "phase", None), inference=False,
                          **netstate(args)), None
    from ..caffe.loader import load_prototxt
    return load_prototxt(source), None


def load_onnx(source: str, args=None):
    """An ONNX file as an IR graph with its weights (``--input-shape`` for dynamic sizes)."""
    if args is not None and getattr(args, "weights", None):
        raise ProtogenError("--weights is for Caffe inputs; an ONNX file carries its weights",
                            file=source)
    from ..onnx_import import load_onnx as _load
    shape = input_shape(args) if args is not None else None
    return _load(source, input_shapes=shape)


def load_inference(source: str, args, extra=None):
    """The inference (test-phase) view of a model, for stats/verify/convert: a prototxt is
    upgraded, resolved for ``--phase``, its data layers become inputs (``--input-shape``)
    and losses are dropped, with ``--weights`` attached; an ONNX file is imported.
    Returns (graph, net object or None, whether the weights are real)."""
    weights = getattr(args, "weights", None)
    if not is_model_file(source) or is_onnx_file(source):
        _refuse_netstate(source, args)
    if not is_model_file(source):
        if weights:
            raise ProtogenError("--weights applies to a model file, not a zoo model")
        if getattr(args, "input_shape", None) or getattr(args, "phase", None) == "train":
            raise ProtogenError("--input-shape and --phase train apply to model files; zoo "
                                "models take --input-size (and 'emit --phase train')")
        graph, net = load_zoo(source, args, extra)
        return graph, net, False
    _refuse_zoo_options(source, args, extra)
    if is_onnx_file(source):
        graph = load_onnx(source, args)
        return graph, None, True
    from ..caffe.loader import load_model
    graph = load_model(source, weights, phase=getattr(args, "phase", None),
                       input_shape=input_shape(args), **netstate(args))
    for note in getattr(graph, "notes", ()):   # what the loader ignored or assumed
        print(f"note: {note}", file=sys.stderr)
    return graph, None, weights is not None
