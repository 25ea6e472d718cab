"""``protogen verify``: numerical equality of the PyTorch reference, ONNX Runtime and OpenCV.

    protogen verify MODEL|FILE.prototxt [--weights FILE.caffemodel] [--seed N]
                    [--providers cpu,cuda] [--no-opencv] [--blobs all] [--json]
                    [--report FILE.md|FILE.html] [--dialect ...] [--shuffle ...] [--groups 3 ...]
    protogen verify --zoo   (or: protogen verify all)

Exit status: 0 all passed, 1 a verification failed, 2 a usage/input error.
"""
from __future__ import annotations

import json
import sys
import time


from .errors import ProtogenError


class Progress:
    """A small progress bar on stderr (one line per step when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.width = total, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, done: int, label: str) -> None:
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        msg = f"[{bar}] {done}/{self.total} {time.perf_counter() - self.t0:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r\033[K" + msg)
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _verify_one(args, source: str, extra, dialect):
    from .cli import is_model_file, load_graph
    from .verify import verify
    if is_model_file(source):
        # a Caffe file: upgraded, resolved for the phase, as its inference view (data layers
        # -> Input, losses and labels dropped), with real weights when given
        if extra:
            raise ProtogenError(f"model options {' '.join(extra)} only apply to zoo models")
        if args.input_size is not None or args.num_classes is not None:
            raise ProtogenError("--input-size and --num-classes only apply to zoo models "
                                "(a prototxt takes --input-shape N,C,H,W)", file=source)
        from .caffe.loader import load_model
        graph = load_model(source, args.weights, phase=args.phase, input_shape=args.input_shape)
        net, loaded = None, args.weights is not None
    else:
        if args.weights:
            raise ProtogenError("--weights applies to a .prototxt, not a zoo model")
        graph, net = load_graph(source, args, extra)
        loaded = False
    return verify(graph, seed=args.seed, batch=args.batch, providers=tuple(args.providers.split(",")),
                  opencv=args.opencv, dialect=dialect, blobs=args.blobs, weights_loaded=loaded,
                  model_name=source if net is None else graph.name)


def summary_table(reports) -> str:
    from .verify import REFERENCE
    names = []
    for r in reports:
        for rt in r.runtimes:
            if rt.name != REFERENCE and rt.name not in names:
                names.append(rt.name)
    w = max([len(r.model) for r in reports] + [5])
    head = f"{'model':<{w}}  " + "  ".join(f"{n:>12}" for n in names) + f"  {'spread':>8}  {'time':>6}  result"
    lines = [head, "-" * len(head)]
    for r in reports:
        cells = []
        for n in names:
            rt = next((x for x in r.runtimes if x.name == n), None)
            wc = r.worst(n)
            if rt is None:
                cells.append("-")
            elif rt.status == "skipped":
                cells.append("skipped")
            elif rt.status == "error":
                cells.append("ERROR")
            elif wc is None:
                cells.append("-")
            else:
                cells.append(f"{wc.max_rel:.2e}" + ("" if all(c.ok for c in r.comparisons if c.runtime == n) else "!"))
        spread = min((h.spread for h in r.health), default=float("nan"))
        lines.append(f"{r.model:<{w}}  " + "  ".join(f"{c:>12}" for c in cells)
                     + f"  {spread:>8.3g}  {r.seconds:>5.1f}s  {'PASS' if r.ok else 'FAIL'}")
    passed = sum(r.ok for r in reports)
    lines.append(f"{passed}/{len(reports)} passed (cells: max relative error vs the float64 PyTorch reference; "
                 f"'!' = above tolerance)")
    return "\n".join(lines)


def cmd_verify(args, extra) -> int:
    from . import zoo
    from .cli import _dialect
    from .verify import render_report
    dialect = _dialect(args)
    if args.report and not args.report.endswith((".md", ".html", ".htm")):
        raise ProtogenError("--report must name a .md or .html file")
    for p in args.providers.split(","):
        if p.strip().lower() not in ("cpu", "cuda"):
            raise ProtogenError(f"unknown provider '{p}' (choose from cpu, cuda)")
    run_zoo = args.zoo or args.model == "all"
    if not run_zoo and not args.model:
        raise ProtogenError("name a model or a .prototxt file, or use --zoo")
    reports = []
    if run_zoo:
        if args.weights or extra:
            raise ProtogenError("--zoo verifies every model at its default options; "
                                "--weights and model options do not apply")
        names = list(zoo.models())
        bar = Progress(len(names))
        for i, name in enumerate(names):
            bar.update(i, name)
            reports.append(_verify_one(args, name, [], dialect))
        bar.update(len(names), "done")
        bar.close()
    else:
        reports.append(_verify_one(args, args.model, extra, dialect))
    if args.json:
        data = [r.to_dict() for r in reports]
        print(json.dumps(data if run_zoo else data[0], indent=1))
    else:
        for r in reports:
            if not run_zoo or not r.ok:
                print(r.format_table())
        if run_zoo:
            print(summary_table(reports))
    if args.report:
        from .util import write_text
        fmt = "md" if args.report.endswith(".md") else "html"
        write_text(args.report, render_report(reports, fmt))
    return 0 if all(r.ok for r in reports) else 1


def register(sub) -> None:
    from .cli import _add_net_options
    p = sub.add_parser("verify", help="check PyTorch, ONNX Runtime and OpenCV agree on seeded weights",
                       epilog="Model options (e.g. --groups 3) follow; see 'protogen list'. "
                              "Exit status: 0 pass, 1 a check failed, 2 error.")
    p.add_argument("model", nargs="?", default=None, help="zoo model, .prototxt file, or 'all'")
    p.add_argument("--zoo", action="store_true", help="verify every zoo model (default options)")
    p.add_argument("--weights", default=None, help="a .caffemodel with real weights (for a .prototxt)")
    p.add_argument("--phase", choices=("train", "test"), default=None,
                   help="which phase of a train_val prototxt (default: test)")
    p.add_argument("--input-shape", default=None,
                   help="N,C,H,W for a prototxt whose data layer gives no size")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the input")
    p.add_argument("--batch", type=int, default=2, help="batch size of the seeded input")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers: cpu,cuda")
    p.add_argument("--opencv", dest="opencv", action="store_true", default=True,
                   help="also run OpenCV dnn (Caffe files and ONNX) (default)")
    p.add_argument("--no-opencv", dest="opencv", action="store_false")
    p.add_argument("--blobs", choices=("outputs", "all"), default="outputs",
                   help="compare the net outputs or every intermediate blob")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--report", default=None, help="write a report: FILE.md or FILE.html")
    _add_net_options(p)
    p.set_defaults(fn=cmd_verify)
