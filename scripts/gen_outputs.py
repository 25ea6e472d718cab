#!/usr/bin/env python3
"""Regenerate outputs/: for every zoo net at default options, ``outputs/<name>/deploy.prototxt``,
``train_val.prototxt`` and ``solver.prototxt`` (whose net is ``train_val.prototxt``).

    python scripts/gen_outputs.py            # or: make outputs
    python scripts/gen_outputs.py --check    # exit 1 if anything is stale or missing

tests/test_outputs.py regenerates the same texts in memory and compares.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = REPO / "outputs"
FILES = ("deploy.prototxt", "train_val.prototxt", "solver.prototxt")


def generate_model(name: str) -> dict[str, str]:
    """{file name: text} for zoo model ``name`` at its default options."""
    from protogen import zoo
    from protogen.caffe.prototxt import to_prototxt
    from protogen.ir import DEPLOY, TRAIN_VAL
    from protogen.solver import solver_prototxt
    net = zoo.build(name)
    return {
        "deploy.prototxt": to_prototxt(net.graph, DEPLOY, net.dialect),
        "train_val.prototxt": to_prototxt(net.graph, TRAIN_VAL, net.dialect),
        "solver.prototxt": solver_prototxt(net.graph.name, "train_val.prototxt", name),
    }


def generate() -> dict[str, str]:
    """{path relative to outputs/: text} for every zoo net."""
    from protogen import zoo
    out = {}
    for name in zoo.models():
        for fname, text in generate_model(name).items():
            out[f"{name}/{fname}"] = text
    return out


def main(argv=None) -> int:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report stale or missing files")
    ap.add_argument("--outputs", default=str(OUTPUTS), help="folder to write (default: outputs/)")
    args = ap.parse_args(argv)
    from protogen.util import write_text
    root = Path(args.outputs)
    stale = []
    for rel, text in generate().items():
        path = root / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            write_text(path, text)
    verb = "stale or missing" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}" + "".join(f"\n  {s}" for s in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
