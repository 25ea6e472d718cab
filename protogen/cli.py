"""Command line: ``protogen list | emit | stats | verify | convert | diff``.

Heavy libraries (onnx, onnxruntime, torch, cv2) are imported only by the commands that need
them: ``emit --format prototxt`` and ``stats`` need protobuf and numpy alone.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import ProtogenError

FORMATS = ("prototxt", "caffemodel", "solver", "onnx")


def _model_options(extra: list[str]) -> dict:
    """Turn ``--groups 3 --width=0.5`` into {'groups': '3', 'width': '0.5'}."""
    opts = {}
    i = 0
    while i < len(extra):
        a = extra[i]
        if not a.startswith("--"):
            raise ProtogenError(f"unexpected argument '{a}'")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        else:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ProtogenError(f"option {a} needs a value")
            k, v = a[2:], extra[i + 1]
            i += 1
        opts[k.replace("-", "_")] = v
        i += 1
    return opts


def _dialect(args):
    from .dialect import Dialect
    return Dialect.make(args.dialect, args.shuffle, getattr(args, "depthwise", None))


def is_model_file(source: str) -> bool:
    """A path to a Caffe prototxt (rather than a zoo model name)."""
    return source.endswith((".prototxt", ".pt", ".txt")) or "/" in source


def load_graph(source: str, args=None, extra=None):
    """A zoo model name or a .prototxt path -> (graph, net object or None)."""
    from . import zoo
    if is_model_file(source):
        if extra:
            raise ProtogenError(f"model options {' '.join(extra)} only apply to zoo models")
        for opt in ("input_size", "num_classes"):
            if args is not None and getattr(args, opt, None) is not None:
                raise ProtogenError(f"--{opt.replace('_', '-')} only applies to zoo models; "
                                    "a prototxt's own input shape is used", file=source)
        from .caffe.loader import load_prototxt
        graph = load_prototxt(source, phase=getattr(args, "phase_rule", None))
        return graph, None
    model = zoo.get(source)
    for a in extra or []:       # an unknown option is named as such, even without a value
        if a.startswith("--"):
            model.option(a[2:].split("=", 1)[0].replace("-", "_"))
    opts = _model_options(extra or [])
    if args is not None and getattr(args, "input_size", None) is not None:
        opts["input_size"] = args.input_size
    if args is not None and getattr(args, "num_classes", None) is not None:
        opts["num_classes"] = args.num_classes
    from .dialect import DEFAULT
    dialect = _dialect(args) if args is not None and hasattr(args, "dialect") else DEFAULT
    net = zoo.build(source, dialect, **opts)
    return net.graph, net


def cmd_list(args, extra):
    from . import zoo
    ms = zoo.models()
    if args.json:
        out = [{"name": m.name, "aliases": list(m.aliases), "summary": m.summary,
                "options": [{"name": o.name, "type": o.type.__name__, "default": o.default,
                             "choices": list(o.choices), "range": list(o.range) if o.range else None,
                             "help": o.help} for o in m.options]} for m in ms.values()]
        print(json.dumps(out, indent=2))
        return 0
    for m in ms.values():
        alias = f" (alias: {', '.join(m.aliases)})" if m.aliases else ""
        print(f"{m.name}{alias}: {m.summary}")
        for o in m.options:
            allowed = (" {" + ",".join(str(c) for c in o.choices) + "}") if o.choices else \
                      (f" [{o.range[0]}..{o.range[1]}]" if o.range else "")
            print(f"    --{o.name.replace('_', '-'):<14} {o.type.__name__:<5} default {o.default}{allowed}  {o.help}")
    return 0


def _out_bytes(args, data: bytes, binary: bool):
    from .util import write_bytes
    if args.output and args.output != "-":
        write_bytes(args.output, data)
        return
    if binary and sys.stdout.isatty():
        raise ProtogenError("refusing to write binary output to a terminal; use -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _in_file(source: str, fn):
    """Run ``fn()``; an error about a prototxt's layers names the file as well."""
    try:
        return fn()
    except ProtogenError as e:
        raise e.with_context(file=source if is_model_file(source) else None) from None


def cmd_emit(args, extra):
    return _in_file(args.model, lambda: _emit(args, extra))


def _emit(args, extra):
    from .ir import DEPLOY, TRAIN_VAL
    graph, net = load_graph(args.model, args, extra)
    which = DEPLOY if args.phase == "deploy" else TRAIN_VAL
    dialect = _dialect(args)
    if args.format == "prototxt":
        from .caffe.prototxt import to_prototxt
        _out_bytes(args, to_prototxt(graph, which, dialect).encode(), False)
    elif args.format == "solver":
        from .solver import solver_prototxt
        family = args.model if net is not None else None
        text = solver_prototxt(graph.name, args.net_path or f"{graph.name}_train_val.prototxt", family)
        _out_bytes(args, text.encode(), False)
    elif args.format == "caffemodel":
        from .caffe.caffemodel import write_caffemodel
        from .caffe.prototxt import to_net_param
        from .weights import init_weights
        if not args.output or args.output == "-":
            raise ProtogenError("--format caffemodel needs -o FILE")
        init_weights(graph, args.seed, which)
        blobs = {l.name: l.blobs for l in graph.select(net=which) if l.blobs}
        write_caffemodel(args.output, to_net_param(graph, which, dialect), blobs)
    elif args.format == "onnx":
        from .onnx_io import export_onnx
        from .weights import init_weights
        if not args.output or args.output == "-":
            raise ProtogenError("--format onnx needs -o FILE")
        init_weights(graph, args.seed)
        export_onnx(graph, args.output)
    return 0


def cmd_stats(args, extra):
    from . import stats
    if is_model_file(args.model) and (args.input_shape or args.phase):
        # a train/test net whose data layer gives no size: its inference view at that shape
        load_graph(args.model, args, extra)          # the same option checks as without
        from .caffe.loader import load_model
        graph = load_model(args.model, None, phase=args.phase, input_shape=args.input_shape)
    elif args.input_shape or args.phase:
        raise ProtogenError("--input-shape/--phase apply to prototxt files; zoo models take "
                            "--input-size")
    else:
        graph, _ = load_graph(args.model, args, extra)
    s = _in_file(args.model, lambda: stats.compute(graph))
    print(json.dumps(s, indent=1) if args.json else stats.format_table(s))
    return 0


def _add_net_options(p, phase=True):
    p.add_argument("--dialect", default="default", help="default | bvlc (upstream Caffe layers only)")
    p.add_argument("--shuffle", default=None, help="channel shuffle form: permute | shufflechannel | slice")
    p.add_argument("--depthwise", default=None, help="depthwise type: Convolution | ConvolutionDepthwise")
    p.add_argument("--input-size", type=int, default=None, help="input height/width (zoo models)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (zoo models)")


class _Parser(argparse.ArgumentParser):
    """argparse with protogen's one-line error format (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(2, f"protogen: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="protogen", description="Describe CNNs in Python; emit Caffe "
                                 "prototxt and ONNX; convert Caffe models; verify numerically.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="zoo models and their options")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("emit", help="write a zoo net (or a prototxt) as prototxt, caffemodel, solver or ONNX",
                       epilog="Model options (e.g. --groups 3 --width 0.5) follow; see 'protogen list'.")
    p.add_argument("model")
    p.add_argument("--format", choices=FORMATS, default="prototxt")
    p.add_argument("--phase", choices=("deploy", "train"), default="deploy",
                   help="deploy net or train_val net")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated weights")
    p.add_argument("--net-path", default=None, help="net file named in the solver")
    p.add_argument("-o", "--output", default=None, help="output file (default: stdout for text)")
    _add_net_options(p)
    p.set_defaults(fn=cmd_emit)

    p = sub.add_parser("stats", help="per-layer shapes, params, mult-adds and memory access")
    p.add_argument("model", help="zoo model name or .prototxt file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--input-shape", default=None,
                   help="N,C,H,W for a prototxt whose data layer gives no size")
    p.add_argument("--phase", choices=("train", "test"), default=None,
                   help="which phase of a train_val prototxt (default: test)")
    _add_net_options(p)
    p.set_defaults(fn=cmd_stats)

    for mod in ("verify_cli", "convert_cli", "diff_cli"):
        try:
            m = __import__(f"protogen.{mod}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"protogen.{mod}":
                raise
            continue
        m.register(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    try:
        if extra and args.cmd not in ("emit", "stats", "verify"):
            raise ProtogenError(f"unrecognized arguments: {' '.join(extra)}")
        return int(args.fn(args, extra) or 0)
    except ProtogenError as e:
        msg = str(e)
        print(f"protogen: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
