"""Plots (matplotlib, imported lazily; Agg backend, no display needed).

Every function takes plain dicts (the JSON of ``profile``, ``bench``, ``verify``) and writes
``path`` (.png or .svg, atomically), or returns the image bytes when ``path`` is None.
"""
from __future__ import annotations

import io

from .errors import ProtogenError

PLOT_FORMATS = (".png", ".svg")
#: colours per layer type, cycled for types not listed
TYPE_COLOURS = {"Convolution": "#4e79a7", "InnerProduct": "#f28e2b", "Pooling": "#b07aa1",
                "Concat": "#edc948", "Eltwise": "#e15759", "ShuffleChannel": "#ff9da7",
                "Slice": "#9c755f", "BatchNorm": "#76b7b2", "Scale": "#76b7b2", "ReLU": "#59a14f",
                "ReLU6": "#59a14f", "Softmax": "#bab0ac"}
OTHER = ("#86bcb6", "#d4a6c8", "#fabfd2", "#8cd17d", "#b6992d", "#499894", "#d37295")


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise ProtogenError("plots need matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    return Figure


def plot_format(path: str) -> str:
    for ext in PLOT_FORMATS:
        if str(path).lower().endswith(ext):
            return ext[1:]
    raise ProtogenError(f"plot file must end in {' or '.join(PLOT_FORMATS)}: '{path}'")


def _save(fig, path: str | None, fmt: str = "png") -> bytes:
    from .util import write_bytes
    if path is not None:
        fmt = plot_format(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight", facecolor="white",
                metadata={"Date": None} if fmt == "svg" else None)
    data = buf.getvalue()
    if path is not None:
        write_bytes(path, data)
    return data


def _colour(t: str, seen: dict) -> str:
    if t in TYPE_COLOURS:
        return TYPE_COLOURS[t]
    if t not in seen:
        seen[t] = OTHER[len(seen) % len(OTHER)]
    return seen[t]


def profile_plot(p: dict, path: str | None = None, fmt: str = "png") -> bytes:
    """Two panels: time per layer through the depth of the net (bars coloured by type), and
    per layer type its share of time beside its share of mult-adds and of memory access."""
    Figure = _mpl()
    fig = Figure(figsize=(11, 7.5))
    ax1, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.1, 1]})
    layers = [l for l in p["layers"] if l["time_ms"] > 0 or l["macs"] > 0]
    extra = {}
    cols = [_colour(l["type"], extra) for l in layers]
    ax1.bar(range(len(layers)), [l["time_ms"] for l in layers], color=cols, width=1.0)
    ax1.set_xlabel("layer (in net order; layers fused by the runtime omitted)")
    ax1.set_ylabel("time per run (ms)")
    ax1.set_title(f"{p['model']}: {p['runtime']}, batch {p['batch']}: "
                  f"{p['latency_ms']:.2f} ms median", fontsize=10)
    top = sorted(range(len(layers)), key=lambda i: -layers[i]["time_ms"])[:3]
    for i in top:
        ax1.annotate(layers[i]["name"], (i, layers[i]["time_ms"]), fontsize=7,
                     xytext=(4, -4), textcoords="offset points", clip_on=True)
    ax1.margins(y=0.12)
    groups = p.get("by_op") or p["by_type"]
    types = [t for t in groups if t["time_ms"] > 0 or t["macs"] > 0 or t["memory_access"] > 0]
    tot_macs = sum(t["macs"] for t in groups) or 1
    tot_mac = sum(t["memory_access"] for t in groups) or 1
    x = range(len(types))
    w = 0.27
    ax2.bar([i - w for i in x], [100 * t["share"] for t in types], w, label="time", color="#e15759")
    ax2.bar(list(x), [100 * t["macs"] / tot_macs for t in types], w, label="mult-adds", color="#4e79a7")
    ax2.bar([i + w for i in x], [100 * t["memory_access"] / tot_mac for t in types], w,
            label="memory access", color="#59a14f")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([t["type"] for t in types], rotation=25, ha="right", fontsize=8)
    ax2.set_ylabel("share (%)")
    ax2.legend(fontsize=8)
    ax2.set_title("share by layer type, convolutions by kind (layers the runtime fused into "
                  "their producer, e.g. BatchNorm/Scale/ReLU, show no time of their own)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, fmt)


def bench_plot(rows: list[dict], path: str | None = None, fmt: str = "png",
               title: str = "") -> bytes:
    """Latency against mult-adds and against memory access, one labelled point per net."""
    Figure = _mpl()
    fig = Figure(figsize=(13, 5.8))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "macs", "mult-adds (G)"),
                           (axes[1], "memory_access", "memory access (M elements)")):
        div = 1e9 if key == "macs" else 1e6
        xs = [r[key] / div for r in rows]
        ys = [r["latency_ms"] for r in rows]
        ax.scatter(xs, ys, s=22, color="#4e79a7", zorder=3)
        for r, xv, yv in zip(rows, xs, ys):
            ax.annotate(r["model"], (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter, ScalarFormatter
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label + ", log scale")
        ax.set_ylabel("latency (ms), log scale")
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, fmt)


def guideline_plot(table: dict, path: str | None = None, fmt: str = "png") -> bytes:
    """One guideline experiment: speed of each configuration relative to the first row, ours
    beside the paper's (GPU and ARM/CPU columns), per scale."""
    Figure = _mpl()
    scales = table["scales"]
    fig = Figure(figsize=(4.2 * len(scales), 3.8))
    axes = fig.subplots(1, len(scales), squeeze=False)[0]
    for ax, si in zip(axes, range(len(scales))):
        labels = [r["label"] for r in table["rows"]]
        series = [("ours (this CPU)", [r["ours"][si] for r in table["rows"]], "#e15759")]
        for key, name, col in (("paper_gpu", "paper GPU", "#4e79a7"),
                               ("paper_cpu", "paper " + table.get("paper_cpu_name", "CPU"), "#59a14f")):
            if all(r.get(key) for r in table["rows"]):
                series.append((name, [r[key][si] for r in table["rows"]], col))
        w = 0.8 / len(series)
        for j, (name, vals, col) in enumerate(series):
            rel = [v / vals[0] if vals[0] else 0 for v in vals]
            ax.bar([i + (j - (len(series) - 1) / 2) * w for i in range(len(labels))], rel, w,
                   label=name, color=col)
        ax.axhline(1.0, color="#333", lw=0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{table['id']}: {scales[si]}", fontsize=9)
        ax.set_ylabel("speed relative to the first row")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, path, fmt)


def blob_error_plot(rows: list[dict], path: str | None = None, fmt: str = "png",
                    title: str = "", tolerance: float | None = None) -> bytes:
    """Per-blob relative error through the depth of the net, one line per runtime.
    ``rows``: dicts with ``blob``, ``runtime``, ``max_rel`` in net order."""
    Figure = _mpl()
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    blobs: list[str] = []
    for r in rows:
        if r["blob"] not in blobs:
            blobs.append(r["blob"])
    pos = {b: i for i, b in enumerate(blobs)}
    by_rt: dict[str, list] = {}
    for r in rows:
        if r.get("max_rel") is not None:
            by_rt.setdefault(r["runtime"], []).append((pos[r["blob"]], max(r["max_rel"], 1e-12)))
    for rt, pts in by_rt.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", ms=3, lw=0.8, label=rt)
    if tolerance:
        ax.axhline(tolerance, color="#b00", lw=0.8, ls="--", label=f"tolerance {tolerance:g}")
    ax.set_yscale("log")
    ax.set_xlabel("blob (in net order)")
    ax.set_ylabel("max error / max |reference|")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, fmt)
