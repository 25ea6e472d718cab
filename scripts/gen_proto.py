#!/usr/bin/env python3
"""Regenerate protogen/caffe/caffe_pb2.py from proto/caffe.proto.

Run from anywhere (paths are resolved relative to the repository root):

    .venv/bin/python scripts/gen_proto.py

Needs the ``grpcio-tools`` package (it bundles ``protoc``).  The generated
module is committed, so only this script -- not the runtime -- needs it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = PROTO_DIR / "caffe.proto"
DEFAULT_OUT = REPO_ROOT / "protogen" / "caffe"


def generate(out_dir: Path = DEFAULT_OUT) -> Path:
    """Compile caffe.proto into ``out_dir``; return the path of caffe_pb2.py.

    Raises ImportError if grpc_tools is unavailable and RuntimeError if
    protoc reports a failure.
    """
    from grpc_tools import protoc  # imported lazily: optional dependency

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # -I must be the proto/ directory so the descriptor's file name is plain
    # "caffe.proto", the same name upstream Caffe's bindings use.
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        str(PROTO_FILE),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}")
    return out_dir / "caffe_pb2.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    try:
        target = generate(args.out)
    except ImportError:
        print(
            "error: grpc_tools is not installed; install it with\n"
            "    pip install grpcio-tools\n"
            "(it is only needed to regenerate the bindings, not at runtime)",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
