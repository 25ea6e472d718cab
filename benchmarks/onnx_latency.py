"""ONNX Runtime CPU latency of protogen's ONNX vs ``torch.onnx.export`` of the PyTorch reference.

    .venv/bin/python -m benchmarks onnx_latency [--models a,b] [--runs N] [--batch N]

For each net (same seeded weights in both): protogen's ``export_onnx`` and
``torch.onnx.export(TorchNet)`` (TorchScript exporter, constant folding on) are run by the same
ONNX Runtime CPU session options in this process, interleaved, median of ``--runs`` after a
warm-up. Prints both latencies, the ratio protogen / torch (target <= 1.0) and the node count
by op type of each graph. Nets not in the zoo yet are skipped with a note.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("resnet50", "mobilenet_v2", "shufflenet_v2", "mobilenet_v1", "shufflenet_v1")
TARGET = 1.0


def _torch_onnx(graph, shape):
    import onnx
    import torch
    from protogen.torch_ref import TorchNet
    net = TorchNet.from_graph(graph).eval()
    inp = graph.input_layers()[0].tops[0]
    out = graph.outputs()[0]

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net({inp: x})[out]

    f = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(), (torch.zeros(shape),), f, input_names=[inp], output_names=[out],
                          opset_version=17, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(f.getvalue())


def _session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def bench(name: str, runs: int, batch: int) -> dict | None:
    import numpy as np
    from protogen import zoo
    from protogen.onnx_io import export_onnx
    from protogen.verify import deploy_view
    from protogen.weights import init_weights, seeded_input
    if name not in zoo.models():
        print(f"{name:<14} skipped: not in the zoo yet")
        return None
    graph = zoo.build(name).graph
    init_weights(graph, 0)
    g = deploy_view(graph, batch)
    inp = g.input_layers()[0].tops[0]
    shape = g.steps()[0].out_shapes[0]
    ours = export_onnx(g)
    theirs = _torch_onnx(g, shape)
    x = seeded_input(shape, 0)
    s1, s2 = _session(ours), _session(theirs)
    feed = {inp: x}
    o1 = s1.run(None, feed)[0]
    o2 = s2.run(None, feed)[0]
    agree = float(np.max(np.abs(o1 - o2)) / max(float(np.max(np.abs(o2))), 1e-30))
    for _ in range(3):
        s1.run(None, feed)
        s2.run(None, feed)
    t1, t2 = [], []
    for _ in range(runs):               # interleaved: both see the same machine state
        t = time.perf_counter()
        s1.run(None, feed)
        t1.append(time.perf_counter() - t)
        t = time.perf_counter()
        s2.run(None, feed)
        t2.append(time.perf_counter() - t)
    m1, m2 = statistics.median(t1), statistics.median(t2)
    return {"model": name, "protogen_ms": m1 * 1e3, "torch_ms": m2 * 1e3, "ratio": m1 / m2,
            "agree": agree, "ops_protogen": _ops(ours), "ops_torch": _ops(theirs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args(argv)
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__} CPU, batch {a.batch}, median of {a.runs} runs (interleaved)")
    print(f"{'model':<14} {'protogen ms':>11} {'torch ms':>9} {'ratio':>6}  {'max rel diff':>12}  nodes (protogen | torch.onnx)")
    worst = 0.0
    for name in a.models.split(","):
        r = bench(name.strip(), a.runs, a.batch)
        if r is None:
            continue
        worst = max(worst, r["ratio"])
        n1, n2 = sum(r["ops_protogen"].values()), sum(r["ops_torch"].values())
        print(f"{r['model']:<14} {r['protogen_ms']:>11.2f} {r['torch_ms']:>9.2f} {r['ratio']:>6.2f}  "
              f"{r['agree']:>12.2e}  {n1} | {n2}")
        for ops, label in ((r["ops_protogen"], "protogen"), (r["ops_torch"], "torch.onnx")):
            print(f"{'':<14}   {label:<10} " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    print(f"worst ratio {worst:.2f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
