"""``protogen verify``: numerical equality of the PyTorch reference, ONNX Runtime and OpenCV.

    protogen verify MODEL|FILE.prototxt|FILE.onnx [--weights FILE.caffemodel] [--seed N]
                    [--providers cpu,cuda] [--no-opencv] [--blobs all] [--json]
                    [--report FILE.md|FILE.html] [--dialect ...] [--shuffle ...] [--groups 3 ...]
    protogen verify --zoo   (or: protogen verify all)

Exit status: 0 all passed, 1 a verification failed, 2 a usage/input error.
"""
from __future__ import annotations

import json

from ..errors import ProtogenError
from ..progress import Progress
from . import options


def add_parser(sub):
    p = sub.add_parser("verify", help="check PyTorch, ONNX Runtime and OpenCV agree on seeded weights",
                       epilog="Model options (e.g. --groups 3) follow; see 'protogen list'. "
                              "Exit status: 0 pass, 1 a check failed, 2 error.")
    options.add_model(p, nargs="?", what="zoo model name, FILE.prototxt, FILE.onnx, or 'all'")
    p.add_argument("--zoo", action="store_true", help="verify every zoo model (default options)")
    options.add_weights(p)
    options.add_phase(p, "Here: the phase of a train_val prototxt whose inference view is "
                         "verified")
    options.add_input_shape(p)
    options.add_seed(p, "seed of the weights and the input")
    p.add_argument("--batch", type=int, default=2, help="batch size of the seeded input")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers: cpu,cuda")
    p.add_argument("--opencv", dest="opencv", action="store_true", default=True,
                   help="also run OpenCV dnn (Caffe files and ONNX) (default)")
    p.add_argument("--no-opencv", dest="opencv", action="store_false")
    p.add_argument("--blobs", choices=("outputs", "all"), default="outputs",
                   help="compare the net outputs or every intermediate blob")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--report", default=None, help="write a report: FILE.md or FILE.html")
    options.add_dialect(p)
    options.add_zoo_sizes(p)
    return p


def _verify_one(args, source: str, extra, dialect, progress=None):
    from ..verify import verify
    if progress is not None and options.is_model_file(source):
        progress.stage(f"reading {source}")
    graph, net, loaded = options.in_file(source, lambda: options.load_inference(source, args, extra))
    return verify(graph, seed=args.seed, batch=args.batch, providers=tuple(args.providers.split(",")),
                  opencv=args.opencv, dialect=dialect, blobs=args.blobs, weights_loaded=loaded,
                  model_name=source if net is None else graph.name, progress=progress)


def summary_table(reports) -> str:
    from ..verify import REFERENCE
    names = []
    for r in reports:
        for rt in r.runtimes:
            if rt.name != REFERENCE and rt.name not in names:
                names.append(rt.name)
    w = max([len(r.model) for r in reports] + [5])
    head = f"{'model':<{w}}  " + "  ".join(f"{n:>12}" for n in names) + f"  {'spread':>8}  {'time':>6}  result"
    lines = [head, "-" * len(head)]
    for r in reports:
        cells = [_cell(r, n) for n in names]
        spread = min((h.spread for h in r.health), default=float("nan"))
        lines.append(f"{r.model:<{w}}  " + "  ".join(f"{c:>12}" for c in cells)
                     + f"  {spread:>8.3g}  {r.seconds:>5.1f}s  {'PASS' if r.ok else 'FAIL'}")
    passed = sum(r.ok for r in reports)
    lines.append(f"{passed}/{len(reports)} passed (cells: max relative error vs the float64 PyTorch reference; "
                 f"'!' = above tolerance, '*' = a known OpenCV defect)")
    return "\n".join(lines)


def _cell(r, name: str) -> str:
    rt = next((x for x in r.runtimes if x.name == name), None)
    wc = r.worst(name)
    if rt is None:
        return "-"
    if rt.status in ("skipped", "error"):
        return "skipped" if rt.status == "skipped" else "ERROR"
    if wc is None:
        return "-"
    cs = [c for c in r.comparisons if c.runtime == name]
    mark = "" if all(c.ok for c in cs) else ("*" if all(c.ok or c.known_defect for c in cs) else "!")
    return f"{wc.max_rel:.2e}{mark}"


def run(args) -> int:
    from .. import zoo
    from ..verify import render_report
    dialect = options.dialect(args)
    if args.report:
        options.check_output(args.report, (".md", ".html", ".htm"), "--report")
    for p in args.providers.split(","):
        if p.strip().lower() not in ("cpu", "cuda"):
            raise ProtogenError(f"unknown provider '{p}' (choose from cpu, cuda)")
    run_zoo = args.zoo or args.model == "all"
    if not run_zoo and not args.model:
        raise ProtogenError("name a model or a model file, or use --zoo")
    reports = []
    if run_zoo:
        if args.weights or args.model_options:
            raise ProtogenError("--zoo verifies every model at its default options; "
                                "--weights and model options do not apply")
        names = list(zoo.models())
        with Progress(len(names), "verify --zoo") as bar:
            for i, name in enumerate(names):
                bar.update(i, name)
                reports.append(_verify_one(args, name, [], dialect, bar))
    else:
        with Progress(title=f"verify {args.model}") as bar:
            reports.append(_verify_one(args, args.model, args.model_options, dialect, bar))
    _print(args, reports, run_zoo)
    if args.report:
        from ..util import write_text
        fmt = "md" if args.report.endswith(".md") else "html"
        write_text(args.report, render_report(reports, fmt))
    return 0 if all(r.ok for r in reports) else 1


def _print(args, reports, run_zoo: bool) -> None:
    if args.json:
        data = [r.to_dict() for r in reports]
        print(json.dumps(data if run_zoo else data[0], indent=1))
        return
    for r in reports:
        if not run_zoo or not r.ok:
            print(r.format_table())
    if run_zoo:
        print(summary_table(reports))
