"""``protogen convert``: Caffe (any version) or ONNX -> ONNX, PyTorch source or canonical prototxt.

    protogen convert IN.prototxt [--weights IN.caffemodel] -o OUT.onnx|OUT.py|OUT.prototxt
                     [--phase test|train] [--input-shape N,C,H,W] [--verify] [--dialect ...]
    protogen convert IN.onnx [--input-shape N,C,H,W] -o OUT.prototxt   (+ OUT.caffemodel)

See :mod:`protogen.convert`.
"""
from __future__ import annotations

import sys

from . import options

DESCRIPTION = ("Convert a Caffe model (prototxt V0/V1/V2 + optional caffemodel) or an ONNX file. "
               "OUT.onnx: ONNX (seeded weights without --weights); OUT.py: a torch.nn.Module "
               "source plus OUT.pth (its state_dict); OUT.prototxt: the canonical V2 text, plus "
               "OUT.caffemodel when there are weights (always from ONNX). Every unsupported "
               "layer or parameter is listed at once; a failed conversion leaves no file.")


def add_parser(sub):
    p = sub.add_parser("convert", help="convert a Caffe model (any version) or ONNX file to "
                       "ONNX, PyTorch source or canonical prototxt", description=DESCRIPTION)
    p.add_argument("input", help="IN.prototxt (V0/V1/V2) or IN.onnx")
    p.add_argument("-o", "--output", required=True, help="OUT.onnx | OUT.py | OUT.prototxt")
    options.add_weights(p)
    options.add_phase(p, "Here: the phase of a train_val prototxt whose inference view is "
                         "converted")
    options.add_input_shape(p)
    options.add_seed(p)
    p.add_argument("--verify", action="store_true",
                   help="run protogen verify on the converted model (exit 1 if it fails)")
    options.add_dialect(p, hidden=True)
    return p


def run(args) -> int:
    from ..convert import OUT_KINDS, convert
    from ..progress import Progress
    options.check_output(args.output, OUT_KINDS)
    with Progress(title="convert") as bar:
        res = convert(args.input, args.output, weights=args.weights, phase=args.phase,
                      input_shape=options.input_shape(args), seed=args.seed, netstate=options.netstate(args),
                      dialect=options.dialect(args, "portable" if str(args.input).lower().endswith(".onnx")
                                              else "default"), verify=args.verify, progress=bar)
    for note in res.get("notes", ()):
        print(f"note: {note}", file=sys.stderr)
    for path in res["outputs"]:
        print(f"wrote {path}")
    print(f"{res['layers']} layers, weights: {res['weights']}, {res['seconds']:.2f}s")
    rep = res.get("verify")
    if rep is not None:
        print(rep.format_table())
        return 0 if rep.ok else 1
    return 0
