"""Conversion: Caffe (any version) or ONNX -> ONNX, PyTorch source or canonical prototxt.

* ``.onnx``: protogen's ONNX exporter (seeded weights when no caffemodel is given);
* ``.py``: a readable ``torch.nn.Module`` source (templates/torch_module.py.j2) plus its
  ``state_dict`` in ``OUT.pth`` (``torch.load(..., weights_only=True)``);
* ``.prototxt``: the upgraded canonical V2 text, plus ``OUT.caffemodel`` beside it when
  weights are given (legacy blob shapes normalised to the net's weight shapes); from an ONNX
  file, the imported net and its weights.

The whole model is checked first and every unsupported layer type or parameter is listed at
once. Outputs appear atomically: a failed conversion leaves no partial file.
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import ProtogenError

OUT_KINDS = (".onnx", ".py", ".prototxt")
_CAFFE_SUFFIXES = (".prototxt", ".pt", ".txt")


def load_source(src, weights=None, phase=None, input_shape=None, seed: int = 0, dialect=None,
                netstate=None):
    """(graph with weights, whether they are real) for a Caffe prototxt or an ONNX file."""
    src = str(src)
    if src.lower().endswith(".onnx"):
        if weights:
            raise ProtogenError("--weights is for Caffe inputs; an ONNX file carries its weights",
                                file=src)
        from .caffe.loader import parse_input_shape
        from .onnx_import import load_onnx
        # an ONNX graph with dynamic height/width needs the concrete input shape here
        from .dialect import PORTABLE
        graph = load_onnx(src, dialect=dialect or PORTABLE,
                          input_shapes=({k: parse_input_shape(v) for k, v in input_shape.items()}
                                        if isinstance(input_shape, dict)     # by input name
                                        else parse_input_shape(input_shape) if input_shape else None))
        return graph, True
    from .caffe.loader import load_model
    if not src.endswith(_CAFFE_SUFFIXES) and "/" not in src and not Path(src).exists():
        from . import zoo
        if src in zoo.models() or any(src in m.aliases for m in zoo.models().values()):
            raise ProtogenError(f"convert reads model files; for the zoo model '{src}' use "
                                f"'protogen emit {src} --format onnx|prototxt|caffemodel'")
    graph = load_model(src, weights, phase=phase, input_shape=input_shape, **(netstate or {}))
    if weights is None:
        from .weights import seeded_weights     # the one way (calibrated BatchNorm too)
        seeded_weights(graph, seed)
    return graph, weights is not None


def _write_prototxt(src, out: Path, graph, weights, dialect) -> list[str]:
    from google.protobuf import text_format

    from .caffe.caffemodel import read_caffemodel, write_caffemodel_to
    from .caffe.loader import read_net
    from .util import atomic_open, write_text
    if str(src).lower().endswith(".onnx"):
        from .onnx_import import write_caffe      # the one ONNX -> Caffe files writer
        return [str(p) for p in write_caffe(graph, out, dialect)]
    net = read_net(src)
    blobs = {}
    if weights is not None:
        blobs = {k: v for k, v in read_caffemodel(weights).blobs.items()}
        blobs.update({l.name: l.blobs for l in graph if l.blobs})   # normalised shapes
    text = text_format.MessageToString(net)
    if weights is None:
        write_text(out, text)
        return [str(out)]
    # both files go to temporary files first; the prototxt is renamed into place, then the
    # caffemodel: an error before that leaves neither (nor any earlier pair) half-written
    cm = out.with_suffix(".caffemodel")
    with atomic_open(cm, "wb") as fc:
        write_caffemodel_to(fc, net, {lp.name: blobs[lp.name] for lp in net.layer if lp.name in blobs})
        with atomic_open(out, "w") as ft:
            ft.write(text)
    return [str(out), str(cm)]


def check_output(output) -> Path:
    """The output path, refused (before any work) when it names a directory or its kind is
    not one of :data:`OUT_KINDS`."""
    if str(output).endswith(("/", "\\")) or Path(output).is_dir():
        raise ProtogenError("cannot write: is a directory (name an output file)", file=str(output))
    out = Path(output)
    if out.suffix.lower() not in OUT_KINDS:
        raise ProtogenError(f"output must end in {', '.join(OUT_KINDS)}, got '{out.name}'")
    return out


def convert(src, output, *, weights=None, phase=None, input_shape=None, seed: int = 0,
            dialect=None, verify: bool = False, progress=None, netstate=None) -> dict:
    """Convert ``src`` to ``output`` (kind from its suffix). Returns a summary dict; with
    ``verify``, ``summary["verify"]`` is the :class:`protogen.verify.Report`. ``progress``:
    a :class:`protogen.progress.Progress` told each stage (read, write, verify). ``netstate``:
    ``{"stages": [...], "level": N}`` for a prototxt's include/exclude rules."""
    from .progress import NoProgress
    progress = progress or NoProgress()
    from .dialect import DEFAULT
    t0 = time.perf_counter()
    out = check_output(output)
    kind = out.suffix.lower()
    if dialect is None:      # ONNX -> Caffe is for deployment: every runtime loads the portable form
        from .dialect import PORTABLE
        dialect = PORTABLE if str(src).lower().endswith(".onnx") else DEFAULT
    progress.stage(f"reading {Path(str(src)).name}" + (" + weights" if weights else ""))
    graph, real = load_source(src, weights, phase, input_shape, seed, dialect=dialect, netstate=netstate)
    progress.stage(f"writing {out.name} ({len(graph.layers)} layers)")
    if kind == ".onnx":
        from .onnx_io import export_onnx
        export_onnx(graph, str(out))
        written = [str(out)]
    elif kind == ".py":
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            raise ProtogenError("PyTorch source output (.py) needs torch (pip install torch)") from None
        from .torch_codegen import write_torch
        written = write_torch(graph, out)     # OUT.py + OUT.pth, generated fully before writing
    else:
        written = _write_prototxt(src, out, graph, weights, dialect)
    onnx_in = str(src).lower().endswith(".onnx")
    summary = {"input": str(src), "outputs": written, "layers": len(graph.layers),
               "weights": "caffemodel" if weights else ("onnx" if onnx_in else f"seeded ({seed})"),
               "seconds": round(time.perf_counter() - t0, 3),
               # what the loader ignored or assumed (training-only fields, initial values of
               # layers the caffemodel lacks, repeated names, dropped losses)
               "notes": list(getattr(graph, "notes", ()))}
    if verify:
        from .verify import verify as run_verify
        summary["verify"] = run_verify(graph, seed=seed, weights_loaded=True, dialect=dialect,
                                       model_name=Path(str(src)).name, progress=progress)
    return summary
