"""caffemodel write + read of a ~550 MB model vs raw ``numpy.tofile`` / ``numpy.fromfile``.

    .venv/bin/python -m benchmarks caffemodel_io [--workdir DIR]

The net: Input (1, 4096) -> InnerProduct 16384 -> InnerProduct 4096 -> InnerProduct 1000, with
seeded weights (138.3M float32 = 553 MB). Each task runs in a fresh subprocess so that peak RSS
is its own:

* ``write``    ``write_caffemodel`` of the net           vs ``tofile``   of the same arrays;
* ``read``     ``read_caffemodel`` + a sum over every blob (touches every byte: reading is a
               zero-copy mmap, so the sum is what pulls the pages in)
                                                        vs ``fromfile`` + the same sum.

Printed: seconds, peak RSS, and ratios protogen/raw (target: within 2x). Generating the
weights happens before the timed part and its memory counts in both writers' peak RSS.
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
LAYERS = ((16384, "fc1"), (4096, "fc2"), (1000, "fc3"))


def _graph():
    sys.path.insert(0, str(ROOT))
    from protogen import Net
    from protogen.weights import init_weights
    n = Net("bigfc")
    x = n.input("data", (1, 4096))
    for out, name in LAYERS:
        x = n.fc(x, out, name=name)
    init_weights(n.graph, seed=0)
    return n


def _task(kind: str, workdir: Path) -> dict:
    import numpy as np
    model, raw = workdir / "big.caffemodel", workdir / "big.raw"
    res = {}
    if kind in ("write", "tofile"):
        n = _graph()
        arrays = [b for l in n.graph.layers if l.blobs for b in l.blobs]
        res["bytes"] = sum(a.nbytes for a in arrays)
        t = time.perf_counter()
        if kind == "write":
            from protogen.caffe.caffemodel import write_caffemodel
            from protogen.caffe.prototxt import to_net_param
            write_caffemodel(model, to_net_param(n.graph), {l.name: l.blobs for l in n.graph.layers if l.blobs})
        else:
            with open(raw, "wb") as f:
                for a in arrays:
                    a.tofile(f)
        res["seconds"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        total = 0.0
        if kind == "read":
            sys.path.insert(0, str(ROOT))
            from protogen.caffe.caffemodel import read_caffemodel
            m = read_caffemodel(model)
            for arrs in m.blobs.values():
                for a in arrs:
                    total += float(a.sum(dtype=np.float64))
        else:
            a = np.fromfile(raw, dtype="<f4")
            total = float(a.sum(dtype=np.float64))
        res["seconds"] = time.perf_counter() - t
        res["checksum"] = total
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _run(kind: str, workdir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--task", kind, "--workdir", str(workdir)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="caffemodel IO vs raw numpy file IO")
    ap.add_argument("--task", choices=("write", "tofile", "read", "fromfile"))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    if args.task:
        print(json.dumps(_task(args.task, Path(args.workdir))))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        r = {k: _run(k, tmp) for k in ("tofile", "write", "fromfile", "read")}
        size = (tmp / "big.caffemodel").stat().st_size
        print(f"weights: {r['write']['bytes'] / 1e6:.1f} MB; caffemodel {size / 1e6:.1f} MB "
              f"(+{size - r['write']['bytes']} bytes of metadata)")
        for ours, raw in (("write", "tofile"), ("read", "fromfile")):
            a, b = r[ours], r[raw]
            print(f"{ours:>6}: {a['seconds']:.3f} s, peak RSS {a['peak_rss_mb']:.0f} MB | "
                  f"{raw}: {b['seconds']:.3f} s, peak RSS {b['peak_rss_mb']:.0f} MB | "
                  f"time ratio {a['seconds'] / b['seconds']:.2f}x (target <= 2x), "
                  f"RSS ratio {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")
        if abs(r["read"]["checksum"] - r["fromfile"]["checksum"]) > 1e-6 * max(1.0, abs(r["fromfile"]["checksum"])):
            print("checksum mismatch between read_caffemodel and fromfile!")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
