"""Command line: ``protogen list | emit | stats | verify | convert | diff``.

The pattern (one module per subcommand, registered in :data:`COMMANDS` below)::

    # protogen/cli/mycmd.py
    \"\"\"``protogen mycmd``: one line saying what it does.\"\"\"
    from . import options

    def add_parser(sub):
        p = sub.add_parser("mycmd", help="what it does (shown by 'protogen --help')")
        options.add_model(p)                 # the model: zoo name | FILE.prototxt | FILE.onnx
        options.add_phase(p, "what --phase selects here")
        options.add_input_shape(p)           # --input-shape N,C,H,W (also -1,3,48,48)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    def run(args) -> int:                    # 0 ok, 1 a check failed; errors raise
        graph, net, real = options.load_inference(args.model, args, args.model_options)
        ...
        return 0

then add ``mycmd`` to the import and to :data:`COMMANDS`. Rules:

* Shared options come from :mod:`protogen.cli.options`, so ``--phase`` (test|train, 'deploy'
  = test), ``--input-shape``, ``--weights``, ``--seed``, ``--dialect`` mean the same in every
  subcommand. Zoo model options (``--groups 3``) reach ``args.model_options`` only for
  subcommands that call ``options.add_zoo_sizes``; elsewhere they are an error.
* Bad input raises :class:`protogen.errors.ProtogenError` (one line, exit 2); check outputs
  with ``options.check_output`` before any work; write them with ``protogen.util.atomic_open``.
* Import torch, onnx, onnxruntime, cv2 and plotting libraries inside ``run`` only: a module
  is imported whenever the CLI starts (``emit``/``stats``/``list`` must stay light).
"""
from __future__ import annotations

import sys

from ..errors import ProtogenError
from . import bench, convert, diff, draw, emit, layers, listing, options, profile, stats, verify

#: every subcommand, in the order of 'protogen --help'
COMMANDS = (listing, emit, stats, verify, convert, diff, profile, bench, draw, layers)


def build_parser() -> options.Parser:
    ap = options.Parser(prog="protogen", description="Describe CNNs in Python; emit Caffe "
                        "prototxt and ONNX; convert Caffe models; verify numerically.")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=options.Parser)
    for mod in COMMANDS:
        p = mod.add_parser(sub)
        p.set_defaults(run=mod.run)
    return ap


def main(argv=None) -> int:
    argv = options.normalize_argv(list(sys.argv[1:] if argv is None else argv))
    ap = build_parser()
    try:
        args, extra = ap.parse_known_args(argv)
    except SystemExit as e:          # --help (0) or a usage error, already printed (2)
        return int(e.code or 0)
    args.model_options = extra
    try:
        if extra and not getattr(args, "takes_model_options", False):
            raise ProtogenError(f"unrecognized arguments: {' '.join(extra)}")
        return int(args.run(args) or 0)
    except ProtogenError as e:
        print(f"protogen: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
