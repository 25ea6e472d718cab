"""GPU check of the two backends (run on a machine with CUDA; prints one line per check).

* TorchNet on CUDA (TF32 off) == TorchNet on CPU, shufflenet_v1 / mobilenet_v1, batch 2;
* ORT CUDAExecutionProvider (use_tf32 0) on our ONNX == TorchNet CPU (whole nets), and on
  every pooling corner of tests/test_backends_layers.py (the lowering must be exact on every EP).
Usage: python scripts/backends_gpu_check.py
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from protogen import zoo  # noqa: E402
from protogen.onnx_io import export_onnx  # noqa: E402
from protogen.torch_ref import TorchNet  # noqa: E402
from protogen.weights import init_weights, seeded_input  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
bad = 0


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def report(what, r, tol):
    global bad
    ok = r <= tol
    bad += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}: rel {r:.2e} (tol {tol:g})", flush=True)


try:
    import onnxruntime as ort
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
except ImportError:
    ort, cuda_ep = None, False
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "ort cuda", cuda_ep, flush=True)


def ort_cuda(m):
    return ort.InferenceSession(m.SerializeToString(), providers=[("CUDAExecutionProvider", {"use_tf32": 0})])


for name in ("shufflenet_v1", "mobilenet_v1"):
    g = zoo.build(name).graph
    init_weights(g, 1)
    net = TorchNet.from_graph(g)
    x = seeded_input((2, 3, 224, 224), 0)
    with torch.no_grad():
        cpu = net({"data": torch.from_numpy(x)}, all_blobs=True)
        logits = [l.tops[0] for l in g.select(net="deploy") if l.type == "InnerProduct"][-1]
        if torch.cuda.is_available():
            gpu = net.to("cuda")({"data": torch.from_numpy(x).cuda()}, all_blobs=True)
            report(f"{name} TorchNet cuda vs cpu (logits)", rel(gpu[logits].cpu().numpy(), cpu[logits].numpy()), 1e-4)
            net.to("cpu")
    if cuda_ep:
        m = export_onnx(g, intermediate=True)
        s = ort_cuda(m)
        names = [o.name for o in s.get_outputs()]
        out = dict(zip(names, s.run(None, {"data": x})))
        worst = max(rel(out[k], cpu[k].numpy()) for k in names)
        report(f"{name} ORT CUDA vs TorchNet cpu (every value)", worst, 1e-4)

if cuda_ep:
    import test_backends_layers as T
    from protogen.ir import Layer
    from protogen.layers.pool import PoolParams
    for case in T.POOL_CASES + T._random_pool_cases(30):
        pool, (h, w), (kh, kw), (sh, sw), (ph, pw), mode = case
        x = T.rand((2, 3, h, w), 1)
        p = PoolParams(pool=pool, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, round_mode=mode)
        g = T.make_graph({"data": x}, [Layer("pool", "Pooling", ["data"], ["out"], p)])
        want = T.caffe_pool_ref(x, pool, kh, kw, sh, sw, ph, pw, ceil=mode == "CEIL")
        y = ort_cuda(export_onnx(g)).run(None, {"data": x})[0]
        report(f"pool {case} ORT CUDA vs Caffe loops", rel(y, want), 1e-5)
print("bad", bad)
sys.exit(1 if bad else 0)
