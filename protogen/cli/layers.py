"""``protogen layers``: every supported Caffe layer type, the schemas (upstream BVLC Caffe or
which forks) that define it, and the ONNX ops it lowers to (protogen.layer_table)."""
from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("layers", help="supported Caffe layer types, their schemas (upstream / "
                                      "forks) and the ONNX ops they lower to")
    p.add_argument("--json", action="store_true",
                   help="machine-readable: type, aliases, schemas, param_field, onnx_ops, role "
                        "(layer | input | training-only) of every type")
    p.add_argument("--markdown", action="store_true", help="the coverage table as Markdown")
    return p


def run(args) -> int:
    from ..layer_table import as_json, build_rows, coverage_markdown, format_table
    rows = build_rows()
    if args.json:
        print(json.dumps(as_json(rows), indent=2))
    elif args.markdown:
        print(coverage_markdown(rows))
    else:
        print(format_table(rows))
    return 0
