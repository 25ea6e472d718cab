"""ShuffleNet v2's guidelines (Tables 1-4) and MobileNet v1 vs v2, measured here; docs/speed.md.

    .venv/bin/python -m benchmarks guidelines                  # quick: x1 only, prints ratios
    .venv/bin/python benchmarks/guidelines.py --write-docs     # full: docs/speed.md + docs/img/

Everything runs in ONNX Runtime on the CPU with one intra-op thread, batch 1, timed in
interleaved rounds (each configuration once per round) and reported as the fastest run (the one
least disturbed by the other jobs of a shared machine; medians are kept too). Prints ratios (speed relative
to the paper's preferred configuration; MobileNet v2 latency / v1 latency), never asserts.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "speed.md"
IMG = ROOT / "docs" / "img"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def mobilenets(threads_list=(1, None), rounds: int = 8, runs: int = 3) -> list[dict]:
    """MobileNet v1 vs v2 (224, batch 1), interleaved, for each thread setting."""
    from protogen import stats, zoo
    from protogen.bench import interleaved
    graphs = {m: zoo.build(m).graph for m in ("mobilenet_v1", "mobilenet_v2")}
    cost = {m: stats.compute(g) for m, g in graphs.items()}
    out = []
    for th in threads_list:
        meas = interleaved(graphs, threads=th, rounds=rounds, runs=runs, warmup=3)
        v1, v2 = meas["mobilenet_v1"], meas["mobilenet_v2"]
        out.append({"threads": th, "runtime": v1["runtime"],
                    "v1_ms": v1["min"], "v2_ms": v2["min"],
                    "v1_median": v1["median"], "v2_median": v2["median"],
                    "ratio": v2["min"] / v1["min"], "ratio_median": v2["median"] / v1["median"],
                    "v1_macs": cost["mobilenet_v1"]["macs"], "v2_macs": cost["mobilenet_v2"]["macs"],
                    "v1_mac": cost["mobilenet_v1"]["memory_access"],
                    "v2_mac": cost["mobilenet_v2"]["memory_access"]})
    return out


def print_ratios(tables: list[dict], mob: list[dict]) -> None:
    from protogen.bench import format_guidelines
    print(format_guidelines(tables))
    for m in mob:
        th = m["threads"] or "runtime default"
        print(f"MobileNet v2 / v1 latency (best of runs), threads {th}: {m['ratio']:.2f} "
              f"({m['v2_ms']:.1f} / {m['v1_ms']:.1f} ms; mult-adds ratio "
              f"{m['v2_macs'] / m['v1_macs']:.2f}, memory access ratio {m['v2_mac'] / m['v1_mac']:.2f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-docs", action="store_true", help="full run; write docs/speed.md and plots")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--from-json", default=None, metavar="FILE",
                    help="re-write docs/speed.md from a saved run (build/speed-results.json)")
    args = ap.parse_args(argv)
    from protogen.bench import bench_guidelines
    t0 = time.perf_counter()
    if not args.write_docs:
        tables = bench_guidelines(threads=1, rounds=args.rounds or 3, scales=(1,))
        print_ratios(tables, mobilenets(threads_list=(1,), rounds=args.rounds or 3))
        return 0
    from benchmarks._speed_doc import write_doc, zoo_section
    saved = ROOT / "build" / "speed-results.json"
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
        write_doc(d["tables"], d["mob"], d["zoo"], cpu=d["cpu"], seconds=d["seconds"])
        return 0
    tables = bench_guidelines(threads=1, rounds=args.rounds or 7, progress=_progress)
    mob = mobilenets(rounds=args.rounds or 10)
    print_ratios(tables, mob)
    zoo = zoo_section(progress=_progress)
    d = {"tables": tables, "mob": mob, "zoo": zoo, "cpu": _cpu(), "seconds": time.perf_counter() - t0}
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(d))
    write_doc(d["tables"], d["mob"], d["zoo"], cpu=d["cpu"], seconds=d["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
