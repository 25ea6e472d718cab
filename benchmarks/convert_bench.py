"""Caffe -> ONNX conversion speed and memory on a VGG-16-sized model (~550 MB of weights).

    .venv/bin/python benchmarks/convert_bench.py [--workdir DIR] [--keep]

The VGG-16 deploy net (Simonyan & Zisserman 2014, configuration D: 13 3x3 convs, 3 FC, 138M
parameters) is written with protogen's own DSL, given seeded weights and saved as
prototxt + caffemodel. Then, each in a fresh subprocess (so peak RSS is per task):

* ``raw``      the baseline: read the caffemodel's bytes into numpy and write them out again;
* ``convert``  ``protogen.convert_cli.convert(prototxt, out.onnx, weights=caffemodel)``
  (weights streamed from the mapped caffemodel into the file);
* ``convert-external`` the same with ONNX external data (``out.onnx`` + ``out.onnx.data``);
* ``in-memory`` the pre-streaming writing path, for comparison: ``export_onnx(graph)`` builds the
  whole ModelProto (numpy_helper.from_array per weight) and ``SerializeToString`` is written;
* ``caffe2onnx`` the PyPI converter, only if it is already installed (never installed here).

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


def build_vgg16():
    from protogen.dsl import Net
    n = Net("VGG_ILSVRC_16_layers")
    x = n.input("data", (1, 3, 224, 224))
    for b, (ch, reps) in enumerate(VGG16_D, start=1):
        for i in range(1, reps + 1):
            x = n.conv(x, ch, 3, 1, 1, name=f"conv{b}_{i}")
            x = n.relu(x, name=f"relu{b}_{i}")
        x = n.max_pool(x, 2, 2, name=f"pool{b}")
    for i, out in ((6, 4096), (7, 4096)):
        x = n.fc(x, out, name=f"fc{i}")
        x = n.relu(x, name=f"relu{i}")
        x = n.dropout(x, name=f"drop{i}")
    x = n.fc(x, 1000, name="fc8")
    n.softmax(x, name="prob")
    return n.graph


def write_model(workdir: Path) -> tuple[Path, Path, int]:
    from protogen.caffe.caffemodel import write_caffemodel
    from protogen.caffe.prototxt import to_net_param, to_prototxt
    from protogen.util import write_text
    from protogen.weights import init_weights
    g = build_vgg16()
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
    from protogen.convert_cli import convert
    convert(proto, out, weights=model)


def task_caffe2onnx(proto: Path, model: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "caffe2onnx.convert", "--prototxt", str(proto),
                    "--caffemodel", str(model), "--onnx", str(out)], check=True,
                   capture_output=True)


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--repeat", type=int, default=3, help="runs per task (best time, max RSS)")
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.task:                                   # inside the measuring subprocess
        proto, model, out = (Path(p) for p in args.paths)
        t = time.perf_counter()
        TASKS[args.task](proto, model, out)
        dt = time.perf_counter() - t
        print(json.dumps({"task": args.task, "seconds": dt, "peak_rss": peak_rss_bytes(),
                          "out_bytes": out.stat().st_size if out.exists() else 0}))
        return 0

    tmp = tempfile.TemporaryDirectory(dir=args.workdir) if not args.keep else None
    work = Path(tmp.name if tmp else (args.workdir or tempfile.mkdtemp()))
    t = time.perf_counter()
    proto, model, n_params = write_model(work)
    size = model.stat().st_size
    print(f"VGG-16: {n_params:,} parameters, caffemodel {size / 2**20:.1f} MiB "
          f"(written in {time.perf_counter() - t:.1f}s) in {work}")
    names = ["raw", "convert", "convert-external", "in-memory"]
    import filecmp
    import importlib.util
    if importlib.util.find_spec("caffe2onnx") is not None:
        names.append("caffe2onnx")
    else:
        print("caffe2onnx: not installed (skipped; this benchmark never installs it)")
    runs: dict[str, list] = {n: [] for n in names}
    same = None
    for rep in range(args.repeat):
        for name in names:
            out = work / f"out_{name}.{'bin' if name == 'raw' else 'onnx'}"
            r = run_task(name, proto, model, out)
            runs[name].append(r)
            if rep == 0 and name == "in-memory" and "error" not in r:
                ours = work / "out_convert.onnx"
                same = ours.exists() and filecmp.cmp(ours, out, shallow=False)
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
             "out_bytes": ok[0]["out_bytes"]}
        results[name] = r
        print(f"{name:>16}: {r['seconds']:7.2f} s   peak RSS {r['peak_rss'] / 2**20:8.1f} MiB "
              f"({r['peak_rss'] / size:.2f}x caffemodel)   output {r['out_bytes'] / 2**20:.1f} MiB")
    raw = results.get("raw", {})
    for name in names[1:]:
        r = results[name]
        if "error" in r or "error" in raw:
            continue
        print(f"{name + ' / raw time:':>28} {r['seconds'] / raw['seconds']:.2f}x (target <= 2x);  "
              f"peak RSS / caffemodel: {r['peak_rss'] / size:.2f}x (target <= 1.5x)")
    if same is not None:
        print(f"convert's file is byte-identical to the in-memory path's: {same}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
