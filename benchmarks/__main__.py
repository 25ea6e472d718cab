"""Run every benchmarks/*.py module's main() (or only those named on the command line)."""
from __future__ import annotations

import importlib
import inspect
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    chosen = [n for n in names if not argv or n in argv]
    unknown = set(argv) - set(names)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {', '.join(names)}")
        return 2
    rc = 0
    for name in chosen:
        mod = importlib.import_module(f"benchmarks.{name}")
        fn = getattr(mod, "main", None)
        if fn is None:
            continue
        print(f"=== benchmarks/{name}.py")
        t = time.perf_counter()
        saved, sys.argv = sys.argv, [str(HERE / f"{name}.py")]
        try:
            params = inspect.signature(fn).parameters
            r = fn([]) if "argv" in params else fn()
        finally:
            sys.argv = saved
        rc = rc or (r if isinstance(r, int) else 0)
        print(f"=== {name}: {time.perf_counter() - t:.1f} s\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
