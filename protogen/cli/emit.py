"""``protogen emit``: write a zoo net (or a model file) as prototxt, caffemodel, solver or ONNX."""
from __future__ import annotations

import sys

from ..errors import ProtogenError
from . import options

FORMATS = ("prototxt", "caffemodel", "solver", "onnx")
#: the output file suffixes each format may be written under
SUFFIXES = {"prototxt": options.MODEL_FILE_SUFFIXES, "solver": options.MODEL_FILE_SUFFIXES,
            "caffemodel": (".caffemodel",), "onnx": (".onnx",)}


def add_parser(sub):
    p = sub.add_parser("emit", help="write a zoo net (or a prototxt) as prototxt, caffemodel, "
                       "solver or ONNX",
                       epilog="Model options (e.g. --groups 3 --width 0.5) follow; see 'protogen list'.")
    options.add_model(p, what="zoo model name (see 'protogen list') or FILE.prototxt to rewrite")
    p.add_argument("--format", choices=FORMATS, default="prototxt",
                   help="prototxt: net text (default, to stdout without -o); caffemodel: seeded "
                        "weights (needs -o FILE.caffemodel); solver: a solver.prototxt for the "
                        "train_val net; onnx: ONNX model with the same seeded weights (needs -o FILE.onnx)")
    options.add_phase(p, "Here: test writes the deploy net, train the train_val net "
                         "(both phases, with data and loss layers)", default="test")
    options.add_seed(p)
    p.add_argument("--net-path", default=None, help="net file named in the solver")
    p.add_argument("-o", "--output", default=None,
                   help="output file, its suffix matching --format (default: stdout for text)")
    options.add_dialect(p)
    options.add_zoo_sizes(p)
    return p


def _out_bytes(args, data: bytes, binary: bool) -> None:
    from ..util import write_bytes
    if args.output and args.output != "-":
        write_bytes(args.output, data)
        return
    if binary and sys.stdout.isatty():
        raise ProtogenError("refusing to write binary output to a terminal; use -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def run(args) -> int:
    if args.format in ("caffemodel", "onnx") and (not args.output or args.output == "-"):
        raise ProtogenError(f"--format {args.format} needs -o FILE{SUFFIXES[args.format][0]}")
    options.check_output(args.output, SUFFIXES[args.format], f"--format {args.format} output")
    return options.in_file(args.model, lambda: _emit(args))


def _emit(args) -> int:
    from ..ir import DEPLOY, TRAIN_VAL
    graph, net = options.load_graph(args.model, args, args.model_options)
    which = DEPLOY if args.phase == "test" else TRAIN_VAL
    dialect = options.dialect(args)
    if args.format == "prototxt":
        from ..caffe.prototxt import to_prototxt
        _out_bytes(args, to_prototxt(graph, which, dialect).encode(), False)
    elif args.format == "solver":
        from ..solver import solver_prototxt
        family = args.model if net is not None else None
        text = solver_prototxt(graph.name, args.net_path or f"{graph.name}_train_val.prototxt", family)
        _out_bytes(args, text.encode(), False)
    elif args.format == "caffemodel":
        from ..caffe.caffemodel import write_caffemodel
        from ..caffe.prototxt import to_net_param
        from ..weights import seeded_weights
        seeded_weights(graph, args.seed, which)
        blobs = {l.name: l.blobs for l in graph.select(net=which) if l.blobs}
        write_caffemodel(args.output, to_net_param(graph, which, dialect), blobs)
    else:
        from ..onnx_io import export_onnx
        from ..weights import seeded_weights
        seeded_weights(graph, args.seed)
        export_onnx(graph, args.output)
    return 0
