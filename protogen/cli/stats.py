"""``protogen stats``: per-layer shapes, params, mult-adds and memory access."""
from __future__ import annotations

import json

from . import options


def add_parser(sub):
    p = sub.add_parser("stats", help="per-layer shapes, params, mult-adds and memory access")
    options.add_model(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    options.add_input_shape(p)
    options.add_phase(p, "Here: with --phase or --input-shape a prototxt is counted as its "
                         "inference view (data layers -> inputs, losses dropped); without, "
                         "as written")
    options.add_dialect(p)
    options.add_zoo_sizes(p)
    return p


def run(args) -> int:
    from .. import stats
    from ..progress import Progress
    src = args.model
    with Progress(title="stats") as bar:
        if options.is_model_file(src):
            bar.stage(f"reading {src}")
        if options.is_model_file(src) and not options.is_onnx_file(src) \
                and not (args.input_shape or args.phase or options.netstate(args)):
            graph, _ = options.load_graph(src, args, args.model_options)     # as written
        else:
            graph, _, _ = options.load_inference(src, args, args.model_options)
        bar.stage(f"counting {len(graph.layers)} layers")
        s = options.in_file(src, lambda: stats.compute(graph))
    print(json.dumps(s, indent=1) if args.json else stats.format_table(s))
    return 0
