"""``protogen profile``: measured latency and per-layer time beside params, mult-adds, MAC.

    protogen profile MODEL|FILE.prototxt|FILE.onnx [--weights W] [--provider cpu|cuda]
                     [--batch N] [--threads N] [--repeat N] [--warmup N] [--json] [--plot F.png|F.svg]
"""
from __future__ import annotations

import json

from . import options


def add_parser(sub):
    p = sub.add_parser("profile", help="measured latency (ONNX Runtime) and time per Caffe layer "
                       "beside params, mult-adds and memory access",
                       epilog="Model options (e.g. --groups 3) follow; see 'protogen list'.")
    options.add_model(p)
    options.add_weights(p)
    options.add_phase(p, "Here: the phase of a train_val prototxt whose inference view is timed")
    options.add_input_shape(p)
    options.add_seed(p, "seed of the generated weights and the input")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="ONNX Runtime provider; cuda falls back to PyTorch CUDA timings where "
                        "onnxruntime has no CUDA provider (said so in the output)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: the runtime's choice)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--top", type=int, default=None, help="show only the N slowest layers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", default=None, metavar="FILE.png|FILE.svg",
                   help="write a plot: time per layer through the net, shares by layer type")
    options.add_zoo_sizes(p)
    return p


def run(args) -> int:
    from ..plots import PLOT_FORMATS
    options.check_output(args.plot, PLOT_FORMATS, "--plot")
    graph, _, _ = options.in_file(args.model, lambda: options.load_inference(
        args.model, args, args.model_options))
    from ..profile import format_profile, profile
    p = options.in_file(args.model, lambda: profile(
        graph, provider=args.provider, batch=args.batch, threads=args.threads,
        repeat=args.repeat, warmup=args.warmup, seed=args.seed))
    if args.plot:
        from ..plots import profile_plot
        profile_plot(p, args.plot)
    print(json.dumps(p, indent=1) if args.json else format_profile(p, args.top))
    return 0
