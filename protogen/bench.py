"""Measured speed of many nets side by side: the zoo, and the ShuffleNet v2 guidelines.

:func:`bench_zoo` measures every zoo net at its default options (batch 1): params, mult-adds,
memory access (:mod:`protogen.stats`), ONNX Runtime latency and images/s.
:func:`bench_guidelines` runs the experiments of :mod:`protogen.guidelines`.

On a shared machine one slow moment can hit one net and not the next, so :func:`interleaved`
times nets in rounds (every net once per round, ``runs`` calls each) and reports the median
over all rounds. Timings are measurements, never asserted by tests.
"""
from __future__ import annotations

import sys

from .errors import ProtogenError
from .ir import Graph
from .profile import runner, spread, time_runs


def interleaved(graphs: dict[str, Graph], *, provider: str = "cpu", threads: int | None = None,
                rounds: int = 5, runs: int = 3, warmup: int = 2, budget_ms: float = 40.0,
                progress=None) -> dict[str, dict]:
    """Latency spread of each graph, timed round-robin (see the module docstring). A net
    runs at least ``runs`` times per round, more when it is fast (about ``budget_ms`` of
    runs per round, at most 50), so that short runs get enough samples."""
    import math
    import time
    fns, per_round = {}, {}
    desc = ""
    for name, g in graphs.items():
        if progress:
            progress(f"preparing {name}")
        fns[name], desc = runner(g, provider=provider, threads=threads)
        t = []
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            fns[name]()
            t.append((time.perf_counter() - t0) * 1e3)
        per_round[name] = max(runs, min(50, math.ceil(budget_ms / max(min(t), 1e-3))))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        for name, fn in fns.items():
            times[name] += time_runs(fn, 0, per_round[name])
    out = {k: spread(v) for k, v in times.items()}
    for v in out.values():
        v["runtime"] = desc
    return out


def _cost(g: Graph) -> dict:
    from . import stats
    s = stats.compute(g)
    return {"params": s["params"], "macs": s["macs"], "memory_access": s["memory_access"]}


def bench_zoo(models: list[str] | None = None, *, provider: str = "cpu", threads: int | None = None,
              repeat: int = 5, warmup: int = 1, input_size: int | None = None,
              progress=None) -> list[dict]:
    """One row per zoo net (default options, batch 1): model, params, macs, memory_access,
    latency_ms (median of ``repeat``), the spread, images_per_s."""
    from . import zoo
    names = models or list(zoo.models())
    rows = []
    for name in names:
        if progress:
            progress(name)
        opts = {"input_size": input_size} if input_size else {}
        try:
            g = zoo.build(name, **opts).graph
        except ProtogenError as e:
            raise ProtogenError(f"model '{name}': {e}") from None
        fn, desc = runner(g, provider=provider, threads=threads)
        sp = spread(time_runs(fn, warmup, repeat))
        size = [l for l in g.layers if l.kind.is_input][0].params.shape[0][-1]
        rows.append({"model": name, **_cost(g), "latency_ms": sp["median"], "latency": sp,
                     "images_per_s": 1e3 / sp["median"], "input_size": size, "batch": 1,
                     "runtime": desc, "threads": threads})
        del fn
    return rows


def format_bench(rows: list[dict]) -> str:
    from .stats import human
    head = ("model", "size", "params", "mult-adds", "mem access", "latency ms", "p10-p90 ms",
            "min ms", "images/s", "ns/mult-add")
    table = [head]
    for r in rows:
        sp = r["latency"]
        table.append((r["model"], str(r["input_size"]), human(r["params"]), human(r["macs"]),
                      human(r["memory_access"]), f"{r['latency_ms']:.2f}",
                      f"{sp['p10']:.2f}-{sp['p90']:.2f}", f"{sp['min']:.2f}", f"{r['images_per_s']:.1f}",
                      f"{1e6 * r['latency_ms'] / r['macs']:.3f}" if r["macs"] else ""))
    w = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(t)) for t in table]
    lines.insert(1, "  ".join("-" * x for x in w))
    if rows:
        lines.append(f"{rows[0]['runtime']}, batch 1"
                     + (f", threads {rows[0]['threads']}" if rows[0].get("threads") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- guidelines
def bench_guidelines(*, provider: str = "cpu", threads: int | None = 1, rounds: int = 5,
                     runs: int = 3, scales=None, only: list[str] | None = None,
                     stat: str = "min", progress=None) -> list[dict]:
    """Each experiment as a table: rows with our images/s per scale beside the paper's.

    ``stat``: which statistic of the ``rounds * runs`` timings gives our speed: "min" (the
    default: on a shared machine the fastest run is the one least disturbed by other jobs,
    as ``timeit`` advises) or "median"."""
    from . import guidelines
    scales = tuple(scales or guidelines.SCALES)
    confs = guidelines.configurations(scales)
    tables = []
    for gid, rows in confs.items():
        if only and gid not in only:
            continue
        title, cpu_name, paper_rows = guidelines.PAPER[gid]
        graphs = {f"{label}@{s}": n.graph for label, s, n in rows}
        meas = interleaved(graphs, provider=provider, threads=threads, rounds=rounds, runs=runs,
                           progress=(lambda m, gid=gid: progress(f"{gid}: {m}")) if progress else None)
        out_rows = []
        for label, gpu, cpu in paper_rows:
            costs = [_cost(graphs[f"{label}@{s}"]) for s in scales]
            idx = [guidelines.SCALES.index(s) for s in scales]
            out_rows.append({
                "label": label,
                "ours": [1e3 / meas[f"{label}@{s}"][stat] for s in scales],
                "latency_ms": [meas[f"{label}@{s}"][stat] for s in scales],
                "latency_median_ms": [meas[f"{label}@{s}"]["median"] for s in scales],
                "macs": [c["macs"] for c in costs],
                "memory_access": [c["memory_access"] for c in costs],
                "paper_gpu": [gpu[i] for i in idx], "paper_cpu": [cpu[i] for i in idx]})
        tables.append({"id": gid, "title": title, "paper_cpu_name": cpu_name,
                       "scales": [f"x{s}" for s in scales], "rows": out_rows,
                       "runtime": next(iter(meas.values()))["runtime"], "threads": threads,
                       "statistic": stat,
                       "samples": min(meas[k]["runs"] for k in meas),
                       "verdict": verdict(gid, out_rows, len(scales))})
    return tables


#: speed differences below this fraction are called a tie (the noise of a shared machine)
TIE = 0.05


def verdict(gid: str, rows: list[dict], n_scales: int) -> list[str]:
    """Per scale: is the paper's preferred configuration (the first row; for G4 the last,
    'neither') the fastest here by more than ``TIE``, tied with the fastest, or beaten."""
    best_row = len(rows) - 1 if gid == "G4" else 0
    out = []
    for si in range(n_scales):
        speeds = [r["ours"][si] for r in rows]
        ref = speeds[best_row]
        others = [i for i in range(len(rows)) if i != best_row]
        rel = ", ".join(f"{rows[i]['label']} {speeds[i] / ref:.2f}" for i in others)
        top = max(others, key=lambda i: speeds[i])
        if speeds[top] > ref * (1 + TIE):
            word = f"does not hold ({rows[top]['label']} faster)"
        elif speeds[top] > ref * (1 - TIE):
            word = f"tie ({rows[top]['label']} within {TIE:.0%})"
        else:
            word = "holds"
        out.append(f"{word}; speed relative to {rows[best_row]['label']}: {rel}")
    return out


def format_guidelines(tables: list[dict]) -> str:
    from .stats import human
    lines = []
    for t in tables:
        lines.append(f"{t['id']} {t['title']} (ours: {t['statistic']} of >= {t['samples']} runs)")
        head = ["config"] + [f"ours {s} img/s" for s in t["scales"]] + \
               [f"paper {t['paper_cpu_name']} {s}" for s in t["scales"]] + ["mult-adds x1", "MAC x1"]
        rows = [head]
        for r in t["rows"]:
            rows.append([r["label"]] + [f"{v:.1f}" for v in r["ours"]]
                        + [f"{v}" for v in r["paper_cpu"]] + [human(r["macs"][0]), human(r["memory_access"][0])])
        w = [max(len(x[i]) for x in rows) for i in range(len(head))]
        for k, x in enumerate(rows):
            lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(x)))
            if k == 0:
                lines.append("  ".join("-" * v for v in w))
        for s, v in zip(t["scales"], t["verdict"]):
            lines.append(f"  {s}: {v}")
        lines.append("")
    return "\n".join(lines)


def stderr_progress(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{msg}")
        sys.stderr.flush()
