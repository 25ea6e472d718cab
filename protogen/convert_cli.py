"""``protogen convert``: Caffe (any version) or ONNX -> ONNX, PyTorch source or canonical prototxt.

    protogen convert IN.prototxt [--weights IN.caffemodel] -o OUT.onnx|OUT.py|OUT.prototxt
                     [--phase train|test] [--input-shape N,C,H,W] [--verify] [--dialect ...]
    protogen convert IN.onnx -o OUT.prototxt          (when protogen.onnx_import is present)

* ``.onnx``: protogen's ONNX exporter (seeded weights when no caffemodel is given);
* ``.py``: a readable ``torch.nn.Module`` source (templates/torch_module.py.j2) plus its
  ``state_dict`` in ``OUT.pth`` (``torch.load(..., weights_only=True)``);
* ``.prototxt``: the upgraded canonical V2 text, plus ``OUT.caffemodel`` beside it when
  weights are given (legacy blob shapes normalised to the net's weight shapes).

The whole model is checked first and every unsupported layer type or parameter is listed at
once. Outputs appear atomically: a failed conversion leaves no partial file.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .errors import ProtogenError

OUT_KINDS = (".onnx", ".py", ".prototxt")


def load_source(src, weights=None, phase=None, input_shape=None, seed: int = 0):
    """(graph with weights, whether they are real) for a Caffe prototxt or an ONNX file."""
    src = str(src)
    if src.endswith(".onnx"):
        if weights:
            raise ProtogenError("--weights is for Caffe inputs; an ONNX file carries its weights",
                                file=src)
        try:
            from .onnx_import import load_onnx
        except ModuleNotFoundError as e:
            if e.name != "protogen.onnx_import":
                raise
            raise ProtogenError("ONNX input needs protogen.onnx_import, which is not available",
                                file=src) from None
        # an ONNX graph with dynamic height/width needs the concrete input shape here
        from .caffe.loader import parse_input_shape
        graph = load_onnx(src, input_shapes=parse_input_shape(input_shape) if input_shape else None)
        if phase is not None:
            from .caffe.loader import resolve_phase
            graph = resolve_phase(graph, phase)
        return graph, True
    from .caffe.loader import load_model
    from .cli import is_model_file
    if not is_model_file(src) and not Path(src).exists():
        from . import zoo
        if src in zoo.models() or any(src in m.aliases for m in zoo.models().values()):
            raise ProtogenError(f"convert reads model files; for the zoo model '{src}' use "
                                f"'protogen emit {src} --format onnx|prototxt|caffemodel'")
    graph = load_model(src, weights, phase=phase, input_shape=input_shape)
    if weights is None:
        from .weights import init_weights
        init_weights(graph, seed)
    return graph, weights is not None


def _write_prototxt(src, out: Path, graph, weights, dialect) -> list[str]:
    from google.protobuf import text_format

    from .caffe.caffemodel import read_caffemodel, write_caffemodel_to
    from .caffe.loader import read_net
    from .util import atomic_open, write_text
    if str(src).endswith(".onnx"):
        from .caffe.prototxt import to_net_param
        from .ir import DEPLOY
        net = to_net_param(graph, DEPLOY, dialect)
        blobs = {l.name: l.blobs for l in graph if l.blobs}
    else:
        net = read_net(src)
        blobs = {}
        if weights is not None:
            blobs = {k: v for k, v in read_caffemodel(weights).blobs.items()}
            blobs.update({l.name: l.blobs for l in graph if l.blobs})   # normalised shapes
    text = text_format.MessageToString(net)
    if weights is None and not str(src).endswith(".onnx"):
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


def convert(src, output, *, weights=None, phase=None, input_shape=None, seed: int = 0,
            dialect=None, verify: bool = False) -> dict:
    """Convert ``src`` to ``output`` (kind from its suffix). Returns a summary dict."""
    from .dialect import DEFAULT
    t0 = time.perf_counter()
    if str(output).endswith(("/", "\\")):
        raise ProtogenError("cannot write: is a directory (name an output file)", file=str(output))
    out = Path(output)
    kind = out.suffix.lower()
    if kind not in OUT_KINDS:
        raise ProtogenError(f"output must end in {', '.join(OUT_KINDS)}, got '{out.name}'")
    dialect = dialect or DEFAULT
    graph, real = load_source(src, weights, phase, input_shape, seed)
    if kind == ".onnx":
        try:
            from .onnx_io import export_onnx
        except ModuleNotFoundError as e:
            if e.name != "protogen.onnx_io":
                raise
            raise ProtogenError("ONNX output needs protogen.onnx_io, which is not available") from None
        export_onnx(graph, str(out))
        written = [str(out)]
    elif kind == ".py":
        from .torch_codegen import write_torch
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            raise ProtogenError("PyTorch source output (.py) needs torch (pip install torch)") from None
        written = write_torch(graph, out)     # OUT.py + OUT.pth, generated fully before writing
    else:
        written = _write_prototxt(src, out, graph, weights, dialect)
    summary = {"input": str(src), "outputs": written, "layers": len(graph.layers),
               "weights": "caffemodel" if weights else ("onnx" if str(src).endswith(".onnx") else f"seeded ({seed})"),
               "seconds": round(time.perf_counter() - t0, 3)}
    if verify:
        try:
            from .verify import verify as run_verify
        except ModuleNotFoundError as e:
            if e.name != "protogen.verify":
                raise
            raise ProtogenError("--verify needs protogen.verify, which is not available") from None
        rep = run_verify(graph, seed=seed, weights_loaded=True, dialect=dialect,
                         model_name=Path(str(src)).name)
        summary["verify"] = rep
    return summary


def cmd_convert(args, extra) -> int:
    from .cli import _dialect
    res = convert(args.input, args.output, weights=args.weights, phase=args.phase,
                  input_shape=args.input_shape, seed=args.seed, dialect=_dialect(args),
                  verify=args.verify)
    for path in res["outputs"]:
        print(f"wrote {path}")
    print(f"{res['layers']} layers, weights: {res['weights']}, {res['seconds']:.2f}s")
    rep = res.get("verify")
    if rep is not None:
        print(rep.format_table())
        return 0 if rep.ok else 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a Caffe model (any version) or ONNX file to "
                       "ONNX, PyTorch source or canonical prototxt",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("input", help="IN.prototxt (V0/V1/V2) or IN.onnx")
    p.add_argument("-o", "--output", required=True, help="OUT.onnx | OUT.py | OUT.prototxt")
    p.add_argument("--weights", default=None, help="IN.caffemodel (else seeded weights)")
    p.add_argument("--phase", choices=("train", "test"), default=None,
                   help="phase of a train_val net (default: test)")
    p.add_argument("--input-shape", default=None,
                   help="N,C,H,W: input shape (needed for data layers without crop_size)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated weights")
    p.add_argument("--verify", action="store_true",
                   help="run protogen verify on the converted model (exit 1 if it fails)")
    p.add_argument("--dialect", default="default", help="prototxt dialect for ONNX -> Caffe")
    p.add_argument("--shuffle", default=None, help=argparse_suppress())
    p.add_argument("--depthwise", default=None, help=argparse_suppress())
    p.set_defaults(fn=cmd_convert)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":   # pragma: no cover
    from .cli import main
    sys.exit(main(["convert", *sys.argv[1:]]))
