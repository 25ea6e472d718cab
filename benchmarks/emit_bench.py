"""Cold ``protogen emit`` latency per zoo net vs a bare interpreter start.

    .venv/bin/python -m benchmarks emit_bench        (or python benchmarks/emit_bench.py)

Each measurement is a fresh subprocess (cold: new interpreter, imports, net build, shape
inference, prototxt text); the best of ``--repeat`` runs is reported, next to
``python -c pass`` measured the same way in the same run. Target: <= 0.5 s for any zoo net.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def _best(cmd, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (user + sys of the child) over ``repeat`` runs."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return best, best_cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="cold protogen emit latency")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("models", nargs="*")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from protogen import zoo
    models = args.models or list(zoo.models())
    py = sys.executable
    base, base_cpu = _best([py, "-c", "pass"], args.repeat)
    imp, imp_cpu = _best([py, "-c", "import protogen.cli"], args.repeat)
    print(f"python -c pass: {base * 1000:.1f} ms wall, {base_cpu * 1000:.1f} ms CPU;  "
          f"import protogen.cli: {imp * 1000:.1f} ms wall ({imp / base:.1f}x), {imp_cpu * 1000:.1f} ms CPU")
    print(f"{'model':<22} {'wall ms':>8} {'x bare':>7} {'CPU ms':>7} {'x bare':>7}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            out = os.path.join(tmp, f"{m}.prototxt")
            t, cpu = _best([py, "-m", "protogen", "emit", m, "-o", out], args.repeat)
            worst = max(worst, t)
            flag = "" if t <= TARGET_S else f"  (over the {TARGET_S} s target)"
            print(f"{m:<22} {t * 1000:8.1f} {t / base:7.1f} {cpu * 1000:7.1f} {cpu / base_cpu:7.1f}{flag}")
    print(f"slowest cold emit: {worst * 1000:.1f} ms (target <= {TARGET_S * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
