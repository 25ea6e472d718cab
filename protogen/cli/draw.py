"""``protogen draw``: a picture of the net (SVG, PNG or Graphviz .dot), no system package needed.

    protogen draw MODEL|FILE.prototxt -o net.svg|net.png|net.dot [--depth N] [--rankdir TB|LR]
                  [--phase test|train]
"""
from __future__ import annotations

from ..errors import ProtogenError
from . import options

SUFFIXES = (".svg", ".png", ".dot")


def add_parser(sub):
    p = sub.add_parser("draw", help="draw the net: a node per layer with type, kernel/stride/"
                       "group, output shape and cost (SVG, PNG or .dot)",
                       epilog="Model options (e.g. --groups 3) follow; see 'protogen list'.")
    options.add_model(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE.svg|FILE.png|FILE.dot",
                   help="the picture; .dot is Graphviz text (render with 'dot -Tsvg')")
    p.add_argument("--depth", type=int, default=None,
                   help="collapse layers named a/b/c... below N name parts into one box per "
                        "scope (e.g. 1: every inception module or stage one box)")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="top to bottom (default) or left to right")
    options.add_phase(p, "Here: test draws a zoo model's deploy net (a prototxt's TEST-phase "
                         "layers); train the train_val net in the TRAIN phase, with training-only "
                         "parts dashed")
    options.add_input_shape(p)
    options.add_dialect(p, hidden=True)
    options.add_zoo_sizes(p)
    return p


def run(args) -> int:
    out = options.check_output(args.output, SUFFIXES, "draw output")
    if out is None:
        raise ProtogenError("draw needs -o FILE.svg|FILE.png|FILE.dot")
    if args.depth is not None and args.depth < 1:
        raise ProtogenError(f"--depth must be >= 1, got {args.depth}")
    if options.is_model_file(args.model) and args.input_shape:
        graph, _, _ = options.in_file(args.model, lambda: options.load_inference(
            args.model, args, args.model_options))
    else:
        graph, _ = options.in_file(args.model, lambda: options.load_graph(
            args.model, args, args.model_options))
    from ..draw import render
    from ..util import write_bytes
    phase = "train" if args.phase == "train" else "deploy"
    data = options.in_file(args.model, lambda: render(graph, out.suffix.lower(), phase=phase,
                                                      depth=args.depth, rankdir=args.rankdir))
    write_bytes(args.output, data)
    return 0
