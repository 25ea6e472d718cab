"""Measured speed beside the counted cost: latency and per-layer time of a net.

:func:`profile` runs the deploy view of a graph (seeded weights unless it has its own) in
ONNX Runtime: a session without profiling gives the latency (``warmup`` runs, then the
median and spread of ``repeat`` timed runs); a second session with ORT's profiler gives the
kernel time of every node, averaged over its timed runs. protogen's ONNX nodes are named
after the Caffe layer that produced them (``conv1``, ``conv1/bn``, helper nodes
``<layer>/<Op>``; see :mod:`protogen.onnx_io`), and ORT keeps those names on the nodes it runs
(adding suffixes such as ``_nchwc``), so node times are summed per Caffe layer. Layers whose
nodes ORT folded into a neighbour (BatchNorm into a convolution, ReLU into its producer)
report no time of their own and name the layer they were ``fused_into``; nodes ORT inserted
itself (layout reorders) are listed as ``runtime`` time. Each layer also carries its params,
mult-adds and memory access (:mod:`protogen.stats`, per image).

``provider="cuda"`` uses ORT's CUDA provider where this onnxruntime has one; otherwise the
PyTorch reference executor on CUDA (float32, TF32 off), timed with CUDA events per layer, and
the result says so. Without any CUDA the call is refused with a one-line error.

Heavy imports (numpy, onnx, onnxruntime, torch) happen inside the functions.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import ProtogenError
from .ir import Graph

PROVIDERS = ("cpu", "cuda")


# ----------------------------------------------------------------------------- timing
def spread(times_ms: list[float]) -> dict:
    """Median and spread of a list of run times (milliseconds)."""
    ts = sorted(times_ms)
    n = len(ts)

    def q(p):
        return ts[min(n - 1, max(0, round(p * (n - 1))))]
    return {"median": statistics.median(ts), "mean": statistics.fmean(ts), "min": ts[0],
            "max": ts[-1], "p10": q(0.1), "p90": q(0.9),
            "stdev": statistics.stdev(ts) if n > 1 else 0.0, "runs": n}


def time_runs(fn: Callable[[], object], warmup: int, repeat: int,
              sync: Callable[[], None] | None = None) -> list[float]:
    """Wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones (milliseconds)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


# ----------------------------------------------------------------------------- preparation
def prepared(graph: Graph, batch: int, seed: int = 0) -> Graph:
    """The deploy/TEST view at ``batch`` with weights (seeded where the graph has none)."""
    from .verify import deploy_view
    from .weights import init_weights
    g = deploy_view(graph, batch)
    if not any(l.blobs for l in g.layers):
        init_weights(g, seed)
    return g


def _feeds(g: Graph, seed: int) -> dict:
    from .weights import seeded_input
    feeds = {}
    for st in g.steps():
        if st.layer.kind.is_input:
            for v, s in zip(st.layer.tops, st.out_shapes):
                feeds[v] = seeded_input(s, seed + len(feeds))
    return feeds


def _layer_of(name: str, layers: set[str]) -> str | None:
    """The Caffe layer an (ONNX or ORT) node name belongs to: the longest layer name that is
    the node name or a prefix of it followed by '/' (protogen's helper nodes) or '_' (ORT's
    suffixes such as ``_nchwc``)."""
    best = None
    for cand in (name,) + tuple(name[:i] for i in range(len(name) - 1, 0, -1) if name[i] in "/_"):
        if cand in layers:
            best = cand
            break
    return best


def _cost_rows(g: Graph) -> list[dict]:
    """Per-layer cost per image (batch 1), as ``protogen stats`` counts it."""
    from . import stats
    return stats.compute(g)["layers"]


def op_class(layer_type: str, params, in_shapes) -> str:
    """A finer class than the layer type for the speed breakdown: convolutions split into
    depthwise, 1x1 (pointwise) and kxk, read from the params' common fields."""
    kh, kw = getattr(params, "kernel_h", 0), getattr(params, "kernel_w", 0)
    group = getattr(params, "group", 1) or 1
    if not kh or not hasattr(params, "group"):
        return layer_type
    cin = in_shapes[0][1] if in_shapes and len(in_shapes[0]) > 1 else 0
    if group > 1 and group == cin:
        return f"{layer_type} depthwise"
    suffix = " grouped" if group > 1 else ""
    return f"{layer_type} {'1x1' if (kh, kw) == (1, 1) else 'kxk'}{suffix}"


def _fused_into(g: Graph, timed: set[str]) -> dict[str, str]:
    """For each layer without time: the nearest producer (through first inputs) that has."""
    producer = {}
    steps = g.steps()
    for st in steps:
        for v in st.outputs:
            producer[v] = st
    res = {}
    for st in steps:
        if st.layer.name in timed or st.layer.kind.is_input:
            continue
        cur = st
        seen = 0
        while cur.inputs and seen < 10_000:
            cur = producer.get(cur.inputs[0])
            seen += 1
            if cur is None or cur.layer.kind.is_input:
                break
            if cur.layer.name in timed:
                res[st.layer.name] = cur.layer.name
                break
    return res


# ----------------------------------------------------------------------------- ONNX Runtime
def _ort_providers(provider: str):
    import onnxruntime as ort
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None
        return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(model_bytes: bytes, providers, threads: int | None, prof_prefix: str | None = None,
             optimized_path: str | None = None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if prof_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = prof_prefix
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model_bytes, so, providers=providers)


def _node_times(events: list, warmup: int) -> tuple[dict[str, float], float, int]:
    """Per-node kernel time (ms, mean over the timed runs) and the mean profiled run time."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    kept = runs[warmup:] or runs
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in kept]
    per_node: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        ts = e["ts"]
        if not any(a <= ts <= b for a, b in windows):
            continue
        name = e["name"][:-len("_kernel_time")]
        per_node[name] = per_node.get(name, 0.0) + e["dur"] / 1e3
    n = max(1, len(kept))
    return ({k: v / n for k, v in per_node.items()},
            sum(b - a for a, b in windows) / 1e3 / n, len(kept))


def _ort_profile(g: Graph, feeds: dict, providers, threads, warmup: int, repeat: int,
                 per_layer: bool) -> dict:
    import onnx
    import onnxruntime as ort
    from .onnx_io import export_onnx
    model = export_onnx(g)
    data = model.SerializeToString()
    sess = _session(data, providers, threads)
    used = sess.get_providers()[0]
    if providers[0] != "CPUExecutionProvider" and used != "CUDAExecutionProvider":
        raise ProtogenError(f"ONNX Runtime's CUDA provider did not initialise (session "
                            f"providers: {sess.get_providers()})")
    out_names = [o.name for o in sess.get_outputs()]
    times = time_runs(lambda: sess.run(out_names, feeds), warmup, repeat)
    res = {"runtime": f"onnxruntime {ort.__version__} {used}", "times": times}
    if not per_layer:
        return res
    with tempfile.TemporaryDirectory(prefix="protogen-profile-") as tmp:
        opt = os.path.join(tmp, "optimized.onnx")
        psess = _session(data, providers, threads, os.path.join(tmp, "ort"), opt)
        n_prof = max(3, min(repeat, 20))
        for _ in range(warmup + n_prof):
            psess.run(out_names, feeds)
        events = json.loads(Path(psess.end_profiling()).read_text())
        try:
            kept_nodes = {n.name for n in onnx.load(opt, load_external_data=False).graph.node}
        except Exception:           # an optimized graph ORT could not serialise: no fusion facts
            kept_nodes = None
    node_ms, run_ms, n_runs = _node_times(events, warmup)
    res.update(node_ms=node_ms, profiled_run_ms=run_ms, profiled_runs=n_runs,
               onnx_nodes=[(n.name, n.op_type) for n in model.graph.node], kept_nodes=kept_nodes)
    return res


def runner(graph: Graph, *, provider: str = "cpu", batch: int = 1, threads: int | None = None,
           seed: int = 0) -> tuple[Callable[[], object], str]:
    """A callable running ``graph`` once in ONNX Runtime (or PyTorch CUDA, see
    :func:`profile`), and the runtime's description; for interleaved timing of several nets."""
    g = prepared(graph, batch, seed)
    feeds = _feeds(g, seed)
    providers = _check_provider(provider)
    if providers is None:
        import torch
        from .torch_ref import TorchNet
        net = TorchNet.from_graph(g).eval().to("cuda")
        inputs = {k: torch.from_numpy(v).to("cuda") for k, v in feeds.items()}

        def run_torch():
            with torch.no_grad():
                net(inputs)
            torch.cuda.synchronize()
        return run_torch, f"torch {torch.__version__} CUDA"
    import onnxruntime as ort
    from .onnx_io import export_onnx
    sess = _session(export_onnx(g).SerializeToString(), providers, threads)
    names = [o.name for o in sess.get_outputs()]
    return (lambda: sess.run(names, feeds)), f"onnxruntime {ort.__version__} {sess.get_providers()[0]}"


def _check_provider(provider: str):
    """ORT providers for ``provider``; None: PyTorch CUDA instead; refuses without CUDA."""
    if provider not in PROVIDERS:
        raise ProtogenError(f"--provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    providers = _ort_providers(provider)
    if provider == "cuda" and providers is None:
        import torch
        if not torch.cuda.is_available():
            raise ProtogenError("--provider cuda: no CUDA here (onnxruntime has no "
                                "CUDAExecutionProvider and torch.cuda.is_available() is False)")
    return providers


# ----------------------------------------------------------------------------- PyTorch CUDA
def _clock(torch, device: str):
    """(mark, elapsed_ms, sync) for ``device``: CUDA events on the GPU, perf_counter on the CPU."""
    if device == "cuda":
        def mark():
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return mark, lambda a, b: a.elapsed_time(b), torch.cuda.synchronize
    return time.perf_counter, lambda a, b: (b - a) * 1e3, None


def _torch_profile(g: Graph, feeds: dict, threads, warmup: int, repeat: int,
                   per_layer: bool, device: str = "cuda") -> dict:
    """The PyTorch reference executor (float32, TF32 off) timed on ``device``; per layer
    through its step hook (a mark before each step, one at the end)."""
    import torch
    from .torch_ref import TorchNet
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    net = TorchNet.from_graph(g).eval().to(device)
    inputs = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    mark, elapsed, sync = _clock(torch, device)

    def run():
        with torch.no_grad():
            return net(inputs)
    times = time_runs(run, warmup, repeat, sync)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    res = {"runtime": f"torch {torch.__version__} {device.upper()} ({name}), PyTorch reference "
                      "executor, float32, TF32 off", "times": times}
    if not per_layer:
        return res
    per = {st.layer.name: 0.0 for st in net.steps}
    n_runs = max(3, min(repeat, 20))
    run_ms = 0.0
    for k in range(warmup + n_runs):
        marks = []

        def hook(st, xs, marks=marks):
            marks.append((st.layer.name, mark()))
        start = mark()
        with torch.no_grad():
            net(inputs, hook=hook)
        end = mark()
        if sync:
            sync()
        if k >= warmup:
            run_ms += elapsed(start, end)
            for (lname, a), (_, b) in zip(marks, marks[1:] + [("", end)]):
                per[lname] += elapsed(a, b)
    res.update(node_ms={k: v / n_runs for k, v in per.items()}, profiled_run_ms=run_ms / n_runs,
               profiled_runs=n_runs, onnx_nodes=None, kept_nodes=None)
    return res


# ----------------------------------------------------------------------------- main entry
def profile(graph: Graph, *, provider: str = "cpu", batch: int = 1, threads: int | None = None,
            repeat: int = 20, warmup: int = 3, seed: int = 0, per_layer: bool = True) -> dict:
    """Measure ``graph``; see the module docstring. Returns a JSON-ready dict."""
    for opt, v, lo in (("batch", batch, 1), ("repeat", repeat, 1), ("warmup", warmup, 0)):
        if v < lo:
            raise ProtogenError(f"--{opt} must be >= {lo}, got {v}")
    if threads is not None and threads < 1:
        raise ProtogenError(f"--threads must be >= 1, got {threads}")
    note = ""
    providers = _check_provider(provider)
    if providers is None:
        note = ("onnxruntime has no CUDAExecutionProvider here: the timings are PyTorch CUDA "
                "(the reference executor, float32), not ONNX Runtime")
    g = prepared(graph, batch, seed)
    feeds = _feeds(g, seed)
    if providers is None:
        raw = _torch_profile(g, feeds, threads, warmup, repeat, per_layer, "cuda")
    else:
        raw = _ort_profile(g, feeds, providers, threads, warmup, repeat, per_layer)
    sp = spread(raw["times"])
    cost = _cost_rows(g)
    res = {"model": graph.name, "provider": provider, "runtime": raw["runtime"], "batch": batch,
           "threads": threads, "warmup": warmup, "repeat": repeat,
           "latency_ms": sp["median"], "latency": sp,
           "images_per_s": batch * 1e3 / sp["median"] if sp["median"] > 0 else None,
           "params": sum(r["params"] for r in cost), "macs": sum(r["macs"] for r in cost),
           "memory_access": sum(r["memory_access"] for r in cost)}
    if note:
        res["note"] = note
    if per_layer:
        res.update(_per_layer(g, raw, cost))
    return res


def _per_layer(g: Graph, raw: dict, cost: list[dict]) -> dict:
    names = [r["name"] for r in cost]
    name_set = set(names)
    layer_ms = {n: 0.0 for n in names}
    layer_ops: dict[str, list[str]] = {n: [] for n in names}
    runtime_ms: dict[str, float] = {}
    for node, ms in raw["node_ms"].items():
        owner = _layer_of(node, name_set)
        if owner is None:
            runtime_ms[node] = runtime_ms.get(node, 0.0) + ms
        else:
            layer_ms[owner] += ms
    nodes_alive: set[str] = set()
    if raw.get("onnx_nodes") is not None:
        for nname, op in raw["onnx_nodes"]:
            owner = _layer_of(nname, name_set)
            if owner is not None:
                layer_ops[owner].append(op)
                if raw["kept_nodes"] is None or nname in raw["kept_nodes"]:
                    nodes_alive.add(owner)
    opc = {st.layer.name: op_class(st.layer.type, st.layer.params, st.in_shapes) for st in g.steps()}
    timed = {n for n, ms in layer_ms.items() if ms > 0}
    fused = _fused_into(g, timed)
    total = sum(layer_ms.values()) + sum(runtime_ms.values())
    layers, by_type, by_op = [], {}, {}
    for r in cost:
        n = r["name"]
        row = {"name": n, "type": r["type"], "time_ms": layer_ms[n],
               "share": layer_ms[n] / total if total else 0.0,
               "params": r["params"], "macs": r["macs"], "memory_access": r["memory_access"],
               "output_shapes": r["output_shapes"], "onnx_ops": layer_ops[n]}
        if n not in timed and n in fused and (n not in nodes_alive or raw.get("kept_nodes") is None):
            row["fused_into"] = fused[n]
        layers.append(row)
        for group, key in ((by_type, r["type"]), (by_op, opc[n])):
            t = group.setdefault(key, {"type": key, "layers": 0, "time_ms": 0.0,
                                       "macs": 0, "memory_access": 0, "params": 0})
            t["layers"] += 1
            t["time_ms"] += layer_ms[n]
            for k in ("macs", "memory_access", "params"):
                t[k] += r[k]
    for t in list(by_type.values()) + list(by_op.values()):
        t["share"] = t["time_ms"] / total if total else 0.0
    return {"profiled_run_ms": raw["profiled_run_ms"], "profiled_runs": raw["profiled_runs"],
            "layer_time_ms": sum(layer_ms.values()),
            "runtime_ms": sum(runtime_ms.values()),
            "runtime_nodes": [{"name": k, "time_ms": v} for k, v in sorted(runtime_ms.items())],
            "layers": layers,
            "by_type": sorted(by_type.values(), key=lambda t: -t["time_ms"]),
            "by_op": sorted(by_op.values(), key=lambda t: -t["time_ms"])}


# ----------------------------------------------------------------------------- text
def _ms(v: float) -> str:
    return f"{v:.3f}"


def format_profile(p: dict, top: int | None = None) -> str:
    """A per-layer table, a by-type table and the totals, as text."""
    from .stats import human
    lines = []
    if "layers" in p:
        rows = [("layer", "type", "time ms", "share", "params", "mult-adds", "mem access", "")]
        layers = p["layers"]
        if top:
            layers = sorted(layers, key=lambda r: -r["time_ms"])[:top]
        for r in layers:
            rows.append((r["name"], r["type"], _ms(r["time_ms"]), f"{100 * r['share']:.1f}%",
                         f"{r['params']:,}", f"{r['macs']:,}", f"{r['memory_access']:,}",
                         f"fused into {r['fused_into']}" if "fused_into" in r else ""))
        if p.get("runtime_ms"):
            rows.append(("(runtime: layout reorders etc.)", "", _ms(p["runtime_ms"]),
                         f"{100 * p['runtime_ms'] / max(1e-12, p['layer_time_ms'] + p['runtime_ms']):.1f}%",
                         "", "", "", ""))
        lines += _table(rows, right=(2, 3, 4, 5, 6))
        lines.append("")
        rows = [("type (convolutions by kind)", "layers", "time ms", "share", "mult-adds",
                 "mem access", "ns/mult-add")]
        for t in p["by_op"]:
            per = f"{1e6 * t['time_ms'] / t['macs']:.3f}" if t["macs"] else ""
            rows.append((t["type"], str(t["layers"]), _ms(t["time_ms"]), f"{100 * t['share']:.1f}%",
                         human(t["macs"]), human(t["memory_access"]), per))
        lines += _table(rows, right=(1, 2, 3, 4, 5, 6))
        lines.append("")
        lines.append(f"per-layer kernel time {p['layer_time_ms']:.3f} ms + runtime "
                     f"{p['runtime_ms']:.3f} ms, within a profiled run of "
                     f"{p['profiled_run_ms']:.3f} ms (mean of {p['profiled_runs']})")
    lat = p["latency"]
    lines.append(f"{p['model']}: {p['runtime']}, batch {p['batch']}"
                 + (f", threads {p['threads']}" if p.get("threads") else "")
                 + f": latency {lat['median']:.3f} ms median of {lat['runs']} "
                   f"(p10 {lat['p10']:.3f}, p90 {lat['p90']:.3f}, min {lat['min']:.3f}, "
                   f"max {lat['max']:.3f}; {p['warmup']} warm-up), "
                   f"{p['images_per_s']:.1f} images/s")
    lines.append(f"cost: {human(p['params'])} params, {human(p['macs'])} mult-adds, "
                 f"{human(p['memory_access'])} memory access (per image, as 'protogen stats' counts)")
    if p.get("note"):
        lines.append(f"note: {p['note']}")
    return "\n".join(lines)


def _table(rows: list[tuple], right=()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
