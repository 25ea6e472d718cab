"""``protogen diff A B``: structural comparison of two nets (zoo names or model files).

Exit status: 0 when equal, 1 with the first difference, 2 on an error (bad file, unknown
model). ``--json`` prints a machine-readable result. See :mod:`protogen.diff`.
"""
from __future__ import annotations

import argparse
import json

from . import options


def add_parser(sub):
    p = sub.add_parser("diff", help="compare two nets structurally (types, parameters, shapes)",
                       description="Compare two nets (zoo model names or model files) layer by "
                       "layer, aligned by dataflow; names, in-place tops, fillers and learning "
                       "rates are ignored. Exits 0 when equal, 1 at the first difference.")
    p.add_argument("a", help="zoo model name, FILE.prototxt or FILE.onnx")
    p.add_argument("b", help="zoo model name, FILE.prototxt or FILE.onnx")
    p.add_argument("--net", choices=("deploy", "train_val"), default="deploy",
                   help="which net of a zoo model, which has two (model files are taken as "
                        "they are)")
    options.add_phase(p, "Here: the phase view of nets with include/exclude rules",
                      default="test")
    p.add_argument("--ignore-dropout", action="store_true",
                   help="drop Dropout layers (identity at test time) before comparing")
    p.add_argument("--input-size", type=int, default=None, help="input size of zoo models")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs of zoo models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _load(source: str, args):
    zoo_model = not options.is_model_file(source)   # --input-size/--num-classes size zoo models only
    ns = argparse.Namespace(input_size=args.input_size if zoo_model else None,
                            num_classes=args.num_classes if zoo_model else None)
    graph, _ = options.load_graph(source, ns, None)
    return graph


def run(args) -> int:
    from ..diff import diff_graphs, summary
    from ..ir import DEPLOY, TEST, TRAIN, TRAIN_VAL
    net = TRAIN_VAL if args.net == "train_val" else DEPLOY
    phase = TRAIN if args.phase == "train" else TEST
    a = _load(args.a, args)
    b = _load(args.b, args)
    d = diff_graphs(a, b, net=net, phase=phase, ignore_dropout=args.ignore_dropout,
                    file_a=args.a, file_b=args.b)
    if args.json:
        out = {"equal": d is None, "net": net, "phase": phase,
               "a": {"source": args.a, **summary(a, net, phase, args.ignore_dropout)},
               "b": {"source": args.b, **summary(b, net, phase, args.ignore_dropout)},
               "difference": d.to_dict() if d else None}
        print(json.dumps(out, indent=1))
    elif d is None:
        sa = summary(a, net, phase, args.ignore_dropout)
        print(f"equal: {args.a} and {args.b} have the same structure "
              f"({sa['layers']} layers compared, {net}, {phase})")
    else:
        print(f"differ: {d.message}")
    return 0 if d is None else 1
