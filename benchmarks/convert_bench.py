"""Caffe -> ONNX conversion speed and memory on a VGG-16-sized model (~550 MB of weights).

    .venv/bin/python benchmarks/convert_bench.py [--workdir DIR] [--keep] [--fc-width N]
        [--caffe2onnx PYTHON [--caffe2onnx-timeout S]]

The VGG-16 deploy net (Simonyan & Zisserman 2014, configuration D: 13 3x3 convs, 3 FC, 138M
parameters) is written with protogen's own DSL, given seeded weights and saved as
prototxt + caffemodel. Then, each in a fresh subprocess (so peak RSS is per task):

* ``raw``      the baseline: read the caffemodel's bytes into numpy and write them out again;
* ``convert``  ``protogen.convert.convert(prototxt, out.onnx, weights=caffemodel)``
  (weights streamed from the mapped caffemodel into the file);
* ``convert-external`` the same with ONNX external data (``out.onnx`` + ``out.onnx.data``);
* ``in-memory`` the pre-streaming writing path, for comparison: ``export_onnx(graph)`` builds the
  whole ModelProto (numpy_helper.from_array per weight) and ``SerializeToString`` is written;
* ``caffe2onnx`` the PyPI converter ``caffe2onnx`` (2.0.1), only with ``--caffe2onnx PYTHON``
  (or ``$CAFFE2ONNX_PYTHON``): the python of a separate, throwaway venv holding it (never this
  project's venv; see docs/converter.md for how to make one). It is run as
  ``PYTHON -m caffe2onnx.convert`` in a child of a fresh wrapper process, with
  ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` (its bundled caffe_pb2 is old generated code
  that protobuf >= 4's C implementation refuses), killed after ``--caffe2onnx-timeout`` seconds;
  its peak RSS is the wrapper's ``RUSAGE_CHILDREN`` ``ru_maxrss``. Its ONNX file, if any, is
  loaded and run in ONNX Runtime on a seeded input against ``convert``'s.

``--fc-width N`` narrows fc6/fc7 from 4096 to N (VGG-16 otherwise unchanged) so that the slow
caffe2onnx comparison runs in bounded time (``--fc-width 512``: 27.8M parameters, 106 MiB).

Each task runs ``--repeat`` times, interleaved; printed are the best time and the largest peak
RSS (the process's own ``VmHWM``), the ratios to ``raw`` and to the caffemodel size, and
whether ``convert`` wrote exactly the bytes of the in-memory path.
Targets: time <= 2x raw; peak RSS <= 1.5x the caffemodel size.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VGG16_D = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def build_vgg16(fc_width: int = 4096):
    from protogen.dsl import Net
    n = Net("VGG_ILSVRC_16_layers")
    x = n.input("data", (1, 3, 224, 224))
    for b, (ch, reps) in enumerate(VGG16_D, start=1):
        for i in range(1, reps + 1):
            x = n.conv(x, ch, 3, 1, 1, name=f"conv{b}_{i}")
            x = n.relu(x, name=f"relu{b}_{i}")
        x = n.max_pool(x, 2, 2, name=f"pool{b}")
    for i, out in ((6, fc_width), (7, fc_width)):
        x = n.fc(x, out, name=f"fc{i}")
        x = n.relu(x, name=f"relu{i}")
        x = n.dropout(x, name=f"drop{i}")
    x = n.fc(x, 1000, name="fc8")
    n.softmax(x, name="prob")
    return n.graph


def write_model(workdir: Path, fc_width: int = 4096) -> tuple[Path, Path, int]:
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import to_net_param, to_prototxt
    from protogen.util import write_text
    from protogen.weights import init_weights
    g = build_vgg16(fc_width)
    init_weights(g, seed=0)
    proto, model = workdir / "vgg16.prototxt", workdir / "vgg16.caffemodel"
    write_text(proto, to_prototxt(g))
    write_caffemodel(model, to_net_param(g), {l.name: l.blobs for l in g if l.blobs})
    n_params = sum(b.size for l in g for b in (l.blobs or []))
    return proto, model, n_params


def peak_rss_bytes() -> int:
    """This process's own peak RSS (anonymous + mapped file pages).

    Linux's ``ru_maxrss`` is NOT usable here: a child started by fork+exec inherits the
    parent's RSS at fork time as its ``ru_maxrss`` (the benchmark's parent holds the freshly
    built VGG-16 weights, ~900 MiB, which every task then reported). ``VmHWM`` in
    /proc/self/status is the high-water mark of the current address space, which exec resets.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


# ----------------------------------------------------------------------------- tasks (subprocess)
def task_raw(proto: Path, model: Path, out: Path) -> None:
    import numpy as np
    a = np.fromfile(model, dtype=np.uint8)
    with open(out, "wb") as f:
        f.write(memoryview(a))


def task_convert(proto: Path, model: Path, out: Path) -> None:
    from protogen.convert import convert
    convert(proto, out, weights=model)


def task_caffe2onnx(proto: Path, model: Path, out: Path) -> dict:
    """Run caffe2onnx in a child of this (fresh, small) process; time it, read its peak RSS.

    ``ru_maxrss`` of RUSAGE_CHILDREN is the largest peak RSS of the waited-for children; a child
    starts from its parent's RSS at fork, but this wrapper imports nothing heavy (tens of MiB),
    so the figure is caffe2onnx's own. A child killed at the timeout is waited for, so it counts.
    """
    python = os.environ["CAFFE2ONNX_PYTHON"]
    timeout = float(os.environ.get("CAFFE2ONNX_TIMEOUT", "480"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAFFE2ONNX_PYTHON")}
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    cmd = [python, "-m", "caffe2onnx.convert", "--prototxt", str(proto),
           "--caffemodel", str(model), "--onnx", str(out)]
    t = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent,
                             timeout=timeout)
        timed_out, rc, err = False, res.returncode, res.stderr
    except subprocess.TimeoutExpired:
        timed_out, rc, err = True, None, ""
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024   # Linux: KiB
    r = {"seconds": dt, "peak_rss": peak, "timed_out": timed_out}
    if rc:
        r["error"] = f"caffe2onnx exit {rc}: " + ((err or "").strip().splitlines() or ["?"])[-1]
    elif not timed_out and not out.exists():
        r["error"] = "caffe2onnx wrote no ONNX file"
    return r


def task_convert_external(proto: Path, model: Path, out: Path) -> None:
    from protogen.caffe.loader import load_model
    from protogen.onnx_io import export_onnx
    export_onnx(load_model(proto, model), out, external_data=True)


def task_in_memory(proto: Path, model: Path, out: Path) -> None:
    from protogen.caffe.loader import load_model
    from protogen.onnx_io import export_onnx
    from protogen.util import write_bytes
    write_bytes(out, export_onnx(load_model(proto, model)).SerializeToString())


TASKS = {"raw": task_raw, "convert": task_convert, "convert-external": task_convert_external,
         "in-memory": task_in_memory, "caffe2onnx": task_caffe2onnx}


def run_task(name: str, proto: Path, model: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--task", name, str(proto), str(model), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"task": name, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare_outputs(ours: Path, theirs: Path, seed: int = 0) -> str:
    """Run both ONNX files in ONNX Runtime on one seeded input; describe how far they agree.

    Inputs and outputs are matched by position: caffe2onnx renames the net input (``data`` ->
    ``data_input``) and lists every initializer as a graph input too (those are skipped).
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    try:
        m = onnx.load(str(theirs))
    except Exception as e:                                # noqa: BLE001 - report, don't crash
        return f"caffe2onnx's file does not load in onnx: {type(e).__name__}: {e}"

    def session(model):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.log_severity_level = 3                 # caffe2onnx's initializers-as-inputs warnings
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    s_ours, note = session(str(ours)), ""
    try:
        s_theirs = session(str(theirs))
    except Exception as e:                                # noqa: BLE001
        note = (f"caffe2onnx's file does not load in ONNX Runtime "
                f"({str(e).splitlines()[0][-140:]}); ")
        # To still check its numbers: Dropout (an identity at inference) written with the
        # opset-6 'ratio' attribute under a newer opset is what ORT rejects; make it Identity.
        for node in m.graph.node:
            if node.op_type == "Dropout":
                node.op_type = "Identity"
                del node.attribute[:]
                del node.output[1:]
        try:
            s_theirs = session(m.SerializeToString())
        except Exception as e2:                           # noqa: BLE001
            return note + f"nor with Dropout -> Identity: {str(e2).splitlines()[0][-140:]}"
        note += "with its Dropout nodes made Identity: "
    inits = {i.name for i in m.graph.initializer}
    in_ours = s_ours.get_inputs()
    in_theirs = [i for i in s_theirs.get_inputs() if i.name not in inits]
    if len(in_ours) != len(in_theirs):
        return f"input count differs: ours {len(in_ours)}, caffe2onnx {len(in_theirs)}"
    rng = np.random.default_rng(seed)
    feeds = [rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
             .astype(np.float32) for i in in_ours]
    y_ours = s_ours.run(None, {i.name: x for i, x in zip(in_ours, feeds)})
    try:
        y_theirs = s_theirs.run(None, {i.name: x for i, x in zip(in_theirs, feeds)})
    except Exception as e:                                # noqa: BLE001
        return f"caffe2onnx's model fails in ONNX Runtime: {str(e).splitlines()[0]}"
    parts = []
    for k, (a, b) in enumerate(zip(y_ours, y_theirs)):
        if a.shape != b.shape:
            parts.append(f"output {k}: shape {a.shape} vs {b.shape}")
            continue
        rel = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
        parts.append(f"output {k} {s_ours.get_outputs()[k].name!r} {a.shape}: max |diff| / "
                     f"max |ours| = {rel:.2e}, argmax equal: "
                     f"{bool((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).all())}")
    return note + ("; ".join(parts) or "no outputs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--repeat", type=int, default=3, help="runs per task (best time, max RSS)")
    ap.add_argument("--fc-width", type=int, default=4096,
                    help="width of fc6/fc7 (4096 = VGG-16; smaller for a bounded caffe2onnx run)")
    ap.add_argument("--caffe2onnx", metavar="PYTHON", default=os.environ.get("CAFFE2ONNX_PYTHON"),
                    help="python of a separate venv with caffe2onnx installed (runs it once)")
    ap.add_argument("--caffe2onnx-timeout", type=float, default=480.0,
                    help="kill caffe2onnx after this many seconds (reported as '> S s')")
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.task:                                   # inside the measuring subprocess
        proto, model, out = (Path(p) for p in args.paths)
        t = time.perf_counter()
        r = TASKS[args.task](proto, model, out) or {}
        dt = time.perf_counter() - t
        print(json.dumps({"task": args.task, "seconds": dt, "peak_rss": peak_rss_bytes(),
                          "out_bytes": out.stat().st_size if out.exists() else 0, **r}))
        return 0

    tmp = tempfile.TemporaryDirectory(dir=args.workdir) if not args.keep else None
    work = Path(tmp.name if tmp else (args.workdir or tempfile.mkdtemp()))
    t = time.perf_counter()
    proto, model, n_params = write_model(work, args.fc_width)
    size = model.stat().st_size
    label = "VGG-16" if args.fc_width == 4096 else f"VGG-16 with fc6/fc7 width {args.fc_width}"
    print(f"{label}: {n_params:,} parameters, caffemodel {size / 2**20:.1f} MiB "
          f"(written in {time.perf_counter() - t:.1f}s) in {work}")
    names = ["raw", "convert", "convert-external", "in-memory"]
    import filecmp
    if args.caffe2onnx:
        if not Path(args.caffe2onnx).exists():
            print(f"caffe2onnx: {args.caffe2onnx} does not exist (skipped)")
        else:
            names.append("caffe2onnx")
            os.environ["CAFFE2ONNX_PYTHON"] = args.caffe2onnx
            os.environ["CAFFE2ONNX_TIMEOUT"] = str(args.caffe2onnx_timeout)
    else:
        print("caffe2onnx: skipped (give --caffe2onnx PYTHON, the python of a separate venv "
              "with caffe2onnx installed; this benchmark never installs it)")
    runs: dict[str, list] = {n: [] for n in names}
    same = None
    agree = None
    for rep in range(args.repeat):
        for name in names:
            if name == "caffe2onnx" and rep > 0:            # minutes per run: once is enough
                continue
            out = work / f"out_{name}.{'bin' if name == 'raw' else 'onnx'}"
            r = run_task(name, proto, model, out)
            runs[name].append(r)
            if rep == 0 and name == "in-memory" and "error" not in r:
                ours = work / "out_convert.onnx"
                same = ours.exists() and filecmp.cmp(ours, out, shallow=False)
            if name == "caffe2onnx" and "error" not in r and not r.get("timed_out") \
                    and out.exists():
                agree = compare_outputs(work / "out_convert.onnx", out)
            for p in (out, out.with_name(out.name + ".data")):
                if p.exists() and not (rep == 0 and p.name == "out_convert.onnx"):
                    p.unlink()
        (work / "out_convert.onnx").unlink(missing_ok=True)
    results = {}
    for name in names:
        ok = [r for r in runs[name] if "error" not in r]
        if not ok:
            print(f"{name:>16}: FAILED: {runs[name][0]['error']}")
            results[name] = runs[name][0]
            continue
        r = {"seconds": min(x["seconds"] for x in ok), "peak_rss": max(x["peak_rss"] for x in ok),
             "out_bytes": ok[0]["out_bytes"], "timed_out": ok[0].get("timed_out", False)}
        results[name] = r
        when = f"> {args.caffe2onnx_timeout:.0f} s" if r["timed_out"] else f"{r['seconds']:7.2f} s"
        print(f"{name:>16}: {when:>9}   peak RSS {r['peak_rss'] / 2**20:8.1f} MiB "
              f"({r['peak_rss'] / size:.2f}x caffemodel)   output {r['out_bytes'] / 2**20:.1f} MiB")
    raw = results.get("raw", {})
    for name in names[1:]:
        r = results[name]
        if "error" in r or "error" in raw:
            continue
        gt = ">" if r.get("timed_out") else ""
        print(f"{name + ' / raw time:':>28} {gt}{r['seconds'] / raw['seconds']:.2f}x (target <= 2x);  "
              f"peak RSS / caffemodel: {r['peak_rss'] / size:.2f}x (target <= 1.5x)")
    c2o, ours = results.get("caffe2onnx", {}), results.get("convert", {})
    if c2o and "error" not in c2o and "error" not in ours:
        gt = ">" if c2o.get("timed_out") else ""
        print(f"{'caffe2onnx / convert:':>28} time {gt}{c2o['seconds'] / ours['seconds']:.1f}x, "
              f"peak RSS {c2o['peak_rss'] / ours['peak_rss']:.1f}x")
        if "error" not in raw:
            print(f"{'caffe2onnx / raw:':>28} time {gt}{c2o['seconds'] / raw['seconds']:.1f}x, "
                  f"peak RSS {c2o['peak_rss'] / raw['peak_rss']:.1f}x")
        if c2o.get("timed_out"):
            print(f"caffe2onnx: killed after {args.caffe2onnx_timeout:.0f} s (peak RSS so far)")
    if agree is not None:
        print(f"caffe2onnx vs convert in ONNX Runtime (seeded input): {agree}")
    if same is not None:
        print(f"convert's file is byte-identical to the in-memory path's: {same}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
