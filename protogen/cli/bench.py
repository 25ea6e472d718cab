"""``protogen bench``: measured speed of many nets beside their mult-adds and MAC.

    protogen bench --zoo [--models a,b] [--provider cpu|cuda] [--threads N] [--repeat N]
                   [--input-size N] [--json] [--plot FILE.png|FILE.svg]
    protogen bench --guidelines [--rounds N] [--scales 1,2,4] [--json] [--plot FILE.png]
"""
from __future__ import annotations

import json

from ..errors import ProtogenError
from . import options


def add_parser(sub):
    p = sub.add_parser("bench", help="latency of every zoo net beside mult-adds and MAC, or the "
                       "ShuffleNet v2 guideline experiments")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--zoo", action="store_true", help="every zoo net at its default options")
    what.add_argument("--guidelines", action="store_true",
                      help="ShuffleNet v2 Tables 1-4 (G1-G4), ours beside the paper's figures")
    p.add_argument("--models", default=None, help="with --zoo: only these (comma-separated)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: runtime's choice; --guidelines: 1)")
    p.add_argument("--repeat", type=int, default=5, help="--zoo: timed runs per net (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="--zoo: untimed runs first (default 1)")
    p.add_argument("--input-size", type=int, default=None,
                   help="--zoo: one input size for every net (default: each net's own)")
    p.add_argument("--rounds", type=int, default=5,
                   help="--guidelines: interleaved rounds (default 5, 3 runs each)")
    p.add_argument("--scales", default="1,2,4", help="--guidelines: channel scales (default 1,2,4)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", default=None, metavar="FILE.png|FILE.svg",
                   help="--zoo: latency against mult-adds and against MAC; --guidelines: one "
                        "file per experiment (FILE-G1.png ...)")
    return p


def _positive(name: str, v) -> None:
    if v is not None and v < 1:
        raise ProtogenError(f"--{name} must be >= 1, got {v}")


def run(args) -> int:
    from ..plots import PLOT_FORMATS
    options.check_output(args.plot, PLOT_FORMATS, "--plot")
    for name in ("threads", "repeat", "input_size", "rounds"):
        _positive(name.replace("_", "-"), getattr(args, name))
    from .. import bench
    if args.zoo:
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        if models:
            from .. import zoo
            for m in models:
                zoo.get(m)
        rows = bench.bench_zoo(models, provider=args.provider, threads=args.threads,
                               repeat=args.repeat, warmup=args.warmup, input_size=args.input_size,
                               progress=bench.stderr_progress)
        bench.stderr_progress("")
        if args.plot:
            from ..plots import bench_plot
            bench_plot(rows, args.plot, title=f"{rows[0]['runtime']}, batch 1")
        print(json.dumps(rows, indent=1) if args.json else bench.format_bench(rows))
        return 0
    if args.models or args.input_size:
        raise ProtogenError("--models and --input-size apply to --zoo")
    try:
        scales = tuple(int(s) for s in args.scales.split(","))
    except ValueError:
        raise ProtogenError(f"--scales must be integers like 1,2,4, got '{args.scales}'") from None
    if not scales or any(s not in (1, 2, 4) for s in scales):
        raise ProtogenError(f"--scales must be among 1,2,4 (the paper's x1/x2/x4), got '{args.scales}'")
    tables = bench.bench_guidelines(provider=args.provider, threads=args.threads or 1,
                                    rounds=args.rounds, scales=scales, progress=bench.stderr_progress)
    bench.stderr_progress("")
    if args.plot:
        from ..plots import guideline_plot
        stem, dot, ext = args.plot.rpartition(".")
        for t in tables:
            guideline_plot(t, f"{stem}-{t['id']}.{ext}")
    print(json.dumps(tables, indent=1) if args.json else bench.format_guidelines(tables))
    return 0
