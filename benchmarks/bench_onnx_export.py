"""ONNX export: our lowering vs torch.onnx.export of the PyTorch reference, same weights.

Prints, per zoo net: export time, node count, ORT CPU latency (batch 1, median), and the
ratios ours/torch measured in the same process. Run: .venv/bin/python benchmarks/bench_onnx_export.py
"""
from __future__ import annotations

import io
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from protogen import zoo  # noqa: E402
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402
from protogen.weights import init_weights, seeded_input  # noqa: E402


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net({"data": x})["prob"]


def latency(model_bytes, x, runs=30):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        s.run(None, {s.get_inputs()[0].name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {s.get_inputs()[0].name: x})
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), s.run(None, {s.get_inputs()[0].name: x})[0]


def main(names=("mobilenet_v1", "shufflenet_v1")):
    for name in names:
        g = zoo.build(name).graph
        init_weights(g, 1)
        x = seeded_input((1, 3, 224, 224), 0)
        t = time.perf_counter()
        ours = export_onnx(g)
        t_ours = time.perf_counter() - t
        net = _Wrap(TorchNet.from_graph(g)).eval()
        t = time.perf_counter()
        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(net, (torch.from_numpy(x),), buf, opset_version=17, dynamo=False,
                              input_names=["data"], output_names=["prob"],
                              dynamic_axes={"data": {0: "N"}, "prob": {0: "N"}})
        t_torch = time.perf_counter() - t
        theirs = onnx.load_from_string(buf.getvalue())
        lo, yo = latency(ours.SerializeToString(), x)
        lt, yt = latency(buf.getvalue(), x)
        err = float(np.abs(yo - yt).max() / np.abs(yt).max())
        print(f"{name}: nodes ours {len(ours.graph.node)} torch {len(theirs.graph.node)} "
              f"(ratio {len(ours.graph.node) / len(theirs.graph.node):.2f}); export s ours {t_ours:.3f} "
              f"torch {t_torch:.3f} (ratio {t_ours / t_torch:.2f}); ORT batch-1 ms ours {lo * 1e3:.2f} "
              f"torch {lt * 1e3:.2f} (ratio {lo / lt:.2f}); outputs rel diff {err:.1e}")
        print("   ours :", dict(Counter(n.op_type for n in ours.graph.node)))
        print("   torch:", dict(Counter(n.op_type for n in theirs.graph.node)))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("mobilenet_v1", "shufflenet_v1"))
