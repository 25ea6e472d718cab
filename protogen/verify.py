"""Numerical verification: run one seeded input through every runtime and compare.

The PyTorch reference executor (:mod:`protogen.torch_ref`), run in float64 on the (float32)
weights, is the reference: each float32 runtime's difference from it is then that runtime's
own rounding, not the sum of two. Against it:

* ``torch-cpu``    the same PyTorch reference in float32 on the CPU;
* ``ort-cpu``      ONNX Runtime, CPU provider, on protogen's ONNX export;
* ``ort-cuda``     ONNX Runtime, CUDA provider (``use_tf32: 0``), when requested and available;
* ``torch-cuda``   the PyTorch reference on the GPU (TF32 off), when CUDA is requested and available;
* ``opencv-caffe`` OpenCV ``dnn`` reading the emitted prototxt + caffemodel (an independent
  Caffe runtime; OpenCV 5 removed its Caffe importer, so this needs OpenCV 4.x), with the
  Winograd convolution switched off (see :func:`_opencv_exact`);
* ``opencv-onnx``  OpenCV ``dnn`` reading the ONNX file (an independent ONNX runtime).

Errors, per compared blob, with ``ref`` the reference values and ``x`` a runtime's values:

* ``max_abs = max |x - ref|``
* ``max_rel = max |x - ref| / max |ref|`` (error relative to the blob's scale)

A runtime fails when ``max_rel > tolerance`` (default 1e-4), when it produces NaN/Inf or a
different shape, or when it crashes. Independently, each net output of the reference must be
*healthy*: finite, not near-constant (``spread = (max - min) / max|ref| >= 1e-3``) and, with a
batch of two or more, dependent on the input (``sensitivity = max |ref[0] - ref[1]| / max|ref|
>= 1e-3``; identical outputs for different inputs prove nothing). Heavy libraries are imported
inside functions only.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .dialect import DEFAULT, Dialect
from .errors import ProtogenError
from .ir import DEPLOY, TEST, Graph

TOLERANCE = 1e-4
#: an output whose (max - min) / max|ref| is below this is near-constant (degenerate)
MIN_SPREAD = 1e-3
#: an output whose batch items differ by less than this (relative) ignores its input
MIN_SENSITIVITY = 1e-3
#: an output whose largest magnitude is below this has underflowed
MIN_SCALE = 1e-20

#: the PyTorch reference executor in float64 (weights are float32 values, computed exactly
#: enough that each float32 runtime's difference from it is that runtime's own rounding)
REFERENCE = "torch"
RUNTIMES = ("torch-cpu", "ort-cpu", "ort-cuda", "torch-cuda", "opencv-caffe", "opencv-onnx")


@dataclass
class RuntimeResult:
    name: str
    status: str = "ran"          # ran | skipped | error
    note: str = ""
    seconds: float = 0.0


@dataclass
class Comparison:
    runtime: str
    blob: str
    shape: tuple
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""
    #: the difference is a documented OpenCV defect (see KNOWN_DEFECTS), not a failure
    known_defect: bool = False


@dataclass
class Health:
    blob: str
    shape: tuple
    min: float
    max: float
    scale: float                 # max |ref|
    spread: float                # (max - min) / scale
    sensitivity: float | None    # max |ref[0] - ref[1]| / scale (batch >= 2)
    ok: bool
    note: str = ""


@dataclass
class Report:
    model: str
    dialect: str
    seed: int
    batch: int
    inputs: dict
    blobs_mode: str
    tolerance: float
    runtimes: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)
    health: list = field(default_factory=list)
    #: (min, max) over all reference blobs of the RMS value (with blobs="all")
    activation_rms: tuple | None = None
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def worst(self, runtime: str) -> Comparison | None:
        cs = [c for c in self.comparisons if c.runtime == runtime]
        if not cs:
            return None
        return max(cs, key=lambda c: (not math.isfinite(c.max_rel), c.max_rel if math.isfinite(c.max_rel) else 0))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        return _jsonable(d)

    def format_table(self) -> str:
        lines = [f"{self.model}  dialect={self.dialect} seed={self.seed} batch={self.batch} "
                 f"inputs={', '.join(f'{k}{tuple(v)}' for k, v in self.inputs.items())}  "
                 f"tolerance={self.tolerance:g} (relative)"]
        lines.append(f"  {'runtime':<13} {'status':<8} {'blobs':>5} {'max abs err':>12} {'max rel err':>12}  "
                     f"{'worst blob':<28} note")
        for r in self.runtimes:
            cs = [c for c in self.comparisons if c.runtime == r.name]
            w = self.worst(r.name)
            if r.name == REFERENCE:
                lines.append(f"  {r.name:<13} {r.status:<8} {'':>5} {'(reference)':>12} {'':>12}  {'':<28} {r.note}")
                continue
            if w is None:
                lines.append(f"  {r.name:<13} {r.status:<8} {0:>5} {'-':>12} {'-':>12}  {'':<28} {r.note}")
                continue
            amax = max(c.max_abs for c in cs)
            status = r.status if r.status != "ran" else ("ok" if all(c.ok for c in cs) else "FAIL")
            lines.append(f"  {r.name:<13} {status:<8} {len(cs):>5} {amax:>12.3g} {w.max_rel:>12.3g}  "
                         f"{_short(w.blob, 28):<28} {r.note}")
        for h in self.health:
            sens = "-" if h.sensitivity is None else f"{h.sensitivity:.3g}"
            lines.append(f"  output {h.blob} {tuple(h.shape)}: range [{h.min:.4g}, {h.max:.4g}] "
                         f"spread {h.spread:.3g} input-sensitivity {sens} -> "
                         f"{'healthy' if h.ok else 'DEGENERATE: ' + h.note}")
        if self.activation_rms:
            lines.append(f"  activation RMS over all blobs: {self.activation_rms[0]:.3g} .. "
                         f"{self.activation_rms[1]:.3g}")
        lines.append(f"  result: {'PASS' if self.ok else 'FAIL'} ({self.seconds:.1f}s)")
        for f in self.failures:
            lines.append(f"    - {f}")
        return "\n".join(lines)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


# ----------------------------------------------------------------------------- metrics
def compare(ref: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|); NaN when x is not finite."""
    ref = np.asarray(ref, np.float64)
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        return math.nan, math.nan
    if ref.size == 0:
        return 0.0, 0.0
    diff = float(np.max(np.abs(x - ref)))
    scale = float(np.max(np.abs(ref)))
    if scale == 0.0:
        return diff, (0.0 if diff == 0.0 else math.inf)
    return diff, diff / scale


def health(name: str, ref: np.ndarray) -> Health:
    """Is a reference output informative? Finite, not near-constant, input-dependent."""
    a = np.asarray(ref, np.float64)
    shape = tuple(a.shape)
    if a.size == 0:
        return Health(name, shape, 0, 0, 0, 0, None, False, "empty output")
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        return Health(name, shape, math.nan, math.nan, math.nan, 0, None, False,
                      f"{bad} non-finite value(s) (NaN/Inf)")
    lo, hi = float(a.min()), float(a.max())
    scale = float(np.max(np.abs(a)))
    if scale < MIN_SCALE:
        return Health(name, shape, lo, hi, scale, 0.0, None, False,
                      f"all values are ~0 (max |x| = {scale:.3g})")
    spread = (hi - lo) / scale
    sens = None
    if a.ndim >= 1 and a.shape[0] >= 2:
        sens = float(np.max(np.abs(a[0] - a[1]))) / scale
    notes = []
    if spread < MIN_SPREAD:
        notes.append(f"near-constant (spread {spread:.3g} < {MIN_SPREAD:g})")
    if sens is not None and sens < MIN_SENSITIVITY:
        notes.append(f"does not depend on the input (batch items differ by {sens:.3g} < {MIN_SENSITIVITY:g})")
    return Health(name, shape, lo, hi, scale, spread, sens, not notes, "; ".join(notes))


# ----------------------------------------------------------------------------- graph prep
def deploy_view(graph: Graph, batch: int) -> Graph:
    """The deploy/TEST net with every Input's batch dimension set to ``batch``."""
    from .layers.io import InputParams
    g = graph.select(net=DEPLOY, phase=TEST)
    inputs = g.input_layers()
    if not inputs:
        raise ProtogenError("verify needs a net with an input (no Input layer found)")
    for l in inputs:
        if l.type != "Input":
            raise ProtogenError(f"verify needs a deploy net with Input layers; '{l.name}' is a "
                                f"{l.type} layer (use the deploy prototxt)", layer=l.name)
    layers = []
    for l in g.layers:
        if l.type == "Input":
            shapes = tuple((batch,) + tuple(s[1:]) if len(s) else tuple(s) for s in l.params.shape)
            l = l.copy(params=InputParams(shape=shapes))
        layers.append(l)
    return Graph(g.name, layers)


def _inputs(steps, seed: int) -> dict[str, np.ndarray]:
    from .weights import seeded_input
    feeds = {}
    for st in steps:
        if st.layer.kind.is_input:
            for v, s in zip(st.outputs, st.out_shapes):
                feeds[v] = seeded_input(s, seed + len(feeds))
    return feeds


def _caffe_ssa(net_param) -> dict[str, tuple[str, int]]:
    """SSA value name -> (Caffe layer name, top index) for a NetParameter, with the IR's
    naming (the last write of a blob keeps its name, earlier writes are ``blob@k``)."""
    n_writes: dict[str, int] = {}
    for lp in net_param.layer:
        for t in lp.top:
            n_writes[t] = n_writes.get(t, 0) + 1
    seen: dict[str, int] = {}
    out = {}
    for lp in net_param.layer:
        for i, t in enumerate(lp.top):
            k = seen.get(t, 0) + 1
            seen[t] = k
            out[t if k == n_writes[t] else f"{t}@{k}"] = (lp.name, i)
    return out


# ----------------------------------------------------------------------------- runtimes
def _run_torch(g: Graph, feeds, want_all: bool, device: str = "cpu",
               double: bool = False) -> dict[str, np.ndarray]:
    """TorchNet on ``feeds``; ``double``: weights and computation in float64 (the reference)."""
    import torch
    from .torch_ref import TorchNet
    net = TorchNet.from_graph(g).eval()
    if double:
        net = net.double()
    net = net.to(device)
    with torch.no_grad():
        out = net({k: torch.from_numpy(v).to(device) for k, v in feeds.items()}, all_blobs=want_all)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def _onnx_model(g: Graph, want_all: bool):
    from .onnx_io import export_onnx
    return export_onnx(g, None, intermediate=want_all)


def _run_ort(model, feeds, provider: str) -> tuple[dict[str, np.ndarray], str]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if provider == "cuda":
        providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    used = sess.get_providers()
    if provider == "cuda" and (not used or used[0] != "CUDAExecutionProvider"):
        raise _Skip(f"CUDAExecutionProvider did not initialise (session providers: {used})")
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(names, {k: v for k, v in feeds.items()})
    return dict(zip(names, vals)), ""


class _Skip(Exception):
    pass


def opencv_has_caffe() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2.dnn, "readNetFromCaffe")


def opencv_prototxt(net_param) -> str:
    """Prototxt text for OpenCV's Caffe importer.

    OpenCV's bundled caffe.proto predates ``round_mode`` and has ``bool ceil_mode = 13``
    in PoolingParameter instead, so ``round_mode: FLOOR`` is written as ``ceil_mode: false``.
    """
    from google.protobuf import text_format
    text = text_format.MessageToString(net_param)
    return text.replace("round_mode: FLOOR", "ceil_mode: false").replace("round_mode: CEIL", "ceil_mode: true")


def _weights_only(net_param):
    """A NetParameter with just name/type per layer: OpenCV takes layer parameters from the
    prototxt and only the blobs from the caffemodel (and field 13 differs, see above)."""
    from .caffe import pb
    m = pb.NetParameter()
    m.name = net_param.name
    for lp in net_param.layer:
        q = m.layer.add()
        q.name = lp.name
        q.type = lp.type
    return m


def _run_opencv_caffe(g: Graph, dialect: Dialect, feeds, wanted: list[str], tmp: Path):
    import cv2
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise _Skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5); "
                    "install opencv-python-headless<5 for this check")
    from .caffe.caffemodel import write_caffemodel
    from .caffe.prototxt import to_net_param
    np_ = to_net_param(g, DEPLOY, dialect)
    proto = tmp / f"{g.name.replace('/', '_')}.prototxt"
    model = tmp / f"{g.name.replace('/', '_')}.caffemodel"
    proto.write_text(opencv_prototxt(np_))
    write_caffemodel(model, _weights_only(np_), {l.name: l.blobs for l in g.layers if l.blobs})
    try:
        return _opencv_caffe_forward(cv2, np_, proto, model, feeds, wanted)
    except cv2.error as e:
        import re
        m = re.search(r'Can\'t create layer "[^"]*" of type "([^"]+)"', str(e))
        if m:   # a layer type OpenCV lacks (e.g. BVLC's Clip): OpenCV's limit, not ours
            raise _Skip(f"OpenCV {cv2.__version__} has no Caffe layer type '{m.group(1)}'") from None
        raise


def _opencv_exact(net) -> None:
    """Switch off OpenCV's Winograd F(6x6, 3x3) convolution (on by default since 4.7): its
    float32 transforms round several times worse than direct convolution (from a float64
    reference, with the earlier seeded-weight calibration: ResNet-152 9.8e-05 vs 2.4e-05,
    Inception-v4 7.2e-04 vs 9.3e-05; docs/verify.md). verify checks the semantics of the
    emitted files, not the accuracy of a fast approximate kernel."""
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)


def _opencv_caffe_forward(cv2, np_, proto, model, feeds, wanted):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    _opencv_exact(net)
    input_names = [t for lp in np_.layer if lp.type == "Input" for t in lp.top]
    ssa = _caffe_ssa(np_)
    want = [v for v in wanted if v in ssa and v not in input_names]
    if len(want) > len([v for v in wanted if v not in input_names]) / 2 and len(wanted) > 50:
        net.enableFusion(False)   # every intermediate blob is requested: keep each layer separate
    for name in input_names:
        net.setInput(feeds[name], name)
    layer_names = sorted({ssa[v][0] for v in want})
    outs = net.forwardAndRetrieve(layer_names)
    by_layer = {n: o for n, o in zip(layer_names, outs)}
    res = {}
    for v in want:
        lname, idx = ssa[v]
        mats = by_layer[lname]
        if idx < len(mats):
            res[v] = np.asarray(mats[idx])
    return res


def _run_opencv_onnx(model, feeds, tmp: Path):
    import cv2
    if not hasattr(cv2.dnn, "readNetFromONNX"):
        raise _Skip(f"OpenCV {cv2.__version__} has no ONNX importer")
    if int(cv2.__version__.split(".")[0]) < 5:
        # OpenCV 4's ONNX importer lacks 5-D Reshape/Transpose (channel shuffle) and more;
        # with OpenCV 4 the Caffe importer (opencv-caffe) is the OpenCV check
        raise _Skip(f"OpenCV {cv2.__version__}: the ONNX check needs OpenCV >= 5 (opencv-caffe runs instead)")
    path = tmp / "model.onnx"
    path.write_bytes(model.SerializeToString())
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)   # OpenCV 5's new engine: CPU only
    _opencv_exact(net)
    for name, v in feeds.items():
        net.setInput(v, name)
    names = [o.name for o in model.graph.output]
    outs = net.forward(names)
    return {n: np.asarray(o) for n, o in zip(names, outs)}


# ----------------------------------------------------------------------------- verify
def verify(graph: Graph, *, seed: int = 0, batch: int = 2, providers=("cpu",), opencv: bool = True,
           dialect: Dialect = DEFAULT, blobs: str = "outputs", weights_loaded: bool = False,
           tolerance: float = TOLERANCE, model_name: str | None = None, progress=None) -> Report:
    """Run the seeded input through every runtime and compare with the PyTorch reference.

    ``providers``: ONNX Runtime providers, "cpu" and/or "cuda". ``opencv``: also run OpenCV's
    dnn (Caffe files and ONNX). ``blobs``: "outputs" (net outputs) or "all" (every
    intermediate value each runtime exposes). ``weights_loaded``: keep ``layer.blobs`` as they
    are (a real caffemodel); otherwise seeded weights are drawn with ``seed``.
    """
    t0 = time.perf_counter()
    if blobs not in ("outputs", "all"):
        raise ProtogenError(f"blobs must be 'outputs' or 'all', got {blobs!r}")
    providers = tuple(p.strip().lower() for p in providers if p.strip())
    for p in providers:
        if p not in ("cpu", "cuda"):
            raise ProtogenError(f"unknown provider '{p}' (choose from cpu, cuda)")
    if batch < 1:
        raise ProtogenError("batch must be >= 1")
    if not weights_loaded:
        from .weights import calibrate_batchnorm, init_weights
        init_weights(graph, seed)
        if any(l.type == "BatchNorm" for l in graph.layers):
            calibrate_batchnorm(graph, seed, batch)
    g = deploy_view(graph, batch)
    steps = g.steps()
    missing = [st.layer.name for st in steps
               if st.layer.kind.weight_shapes(st.layer.params, st.in_shapes) and not st.layer.blobs]
    if missing:
        raise ProtogenError(f"{len(missing)} layer(s) have no weights, e.g. '{missing[0]}'")
    feeds = _inputs(steps, seed)
    outputs = [o for o in g.outputs() if o not in feeds]
    want_all = blobs == "all"
    values = [v for st in steps if not st.layer.kind.is_input for v in st.outputs]
    wanted = values if want_all else outputs
    shapes = {v: s for st in steps for v, s in zip(st.outputs, st.out_shapes)}

    rep = Report(model=model_name or g.name, dialect=_dialect_name(dialect), seed=seed, batch=batch,
                 inputs={k: tuple(v.shape) for k, v in feeds.items()}, blobs_mode=blobs,
                 tolerance=tolerance)

    # the reference
    t = time.perf_counter()
    rr = RuntimeResult(REFERENCE)
    rep.runtimes.append(rr)
    try:
        ref = _run_torch(g, feeds, want_all, double=True)
    except Exception as e:  # a reference crash is a failure of the whole verification
        rr.status, rr.note = "error", f"{type(e).__name__}: {e}"
        rep.failures.append(f"the PyTorch reference failed: {rr.note}")
        rep.seconds = time.perf_counter() - t0
        return rep
    rr.seconds = time.perf_counter() - t
    for o in outputs:
        if o not in ref:
            rep.failures.append(f"the reference did not produce output '{o}'")
            continue
        h = health(o, ref[o])
        rep.health.append(h)
        if not h.ok:
            rep.failures.append(f"output '{o}' is degenerate: {h.note}")
    if want_all:
        rms = [float(np.sqrt(np.mean(np.square(ref[v], dtype=np.float64)))) for v in values
               if v in ref and ref[v].size]
        if rms:
            rep.activation_rms = (min(rms), max(rms))

    def record(name: str, fn):
        if progress is not None:
            progress.stage(name)
        r = RuntimeResult(name)
        rep.runtimes.append(r)
        t = time.perf_counter()
        try:
            got = fn()
        except _Skip as e:
            r.status, r.note = "skipped", f"skipped: {e}"
            return
        except Exception as e:
            r.status, r.note = "error", f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            rep.failures.append(f"{name} failed to run: {r.note}")
            return
        finally:
            r.seconds = time.perf_counter() - t
        n = 0
        for v in wanted:
            if v not in got or v not in ref:
                if v in outputs and v in ref:
                    rep.comparisons.append(Comparison(name, v, shapes[v], math.nan, math.nan, False,
                                                      "output missing"))
                    rep.failures.append(f"{name}: output '{v}' missing")
                continue
            a, b = np.asarray(ref[v]), np.asarray(got[v])
            if a.shape != b.shape:
                if a.size == b.size:
                    b = b.reshape(a.shape)
                else:
                    rep.comparisons.append(Comparison(name, v, tuple(a.shape), math.nan, math.nan, False,
                                                      f"shape {tuple(b.shape)} != {tuple(a.shape)}"))
                    rep.failures.append(f"{name}: '{v}' has shape {tuple(b.shape)}, reference {tuple(a.shape)}")
                    continue
            mabs, mrel = compare(a, b)
            ok = math.isfinite(mrel) and mrel <= tolerance
            c = Comparison(name, v, tuple(a.shape), mabs, mrel, ok,
                           "" if ok else ("non-finite values" if not math.isfinite(mabs) else "above tolerance"))
            rep.comparisons.append(c)
            n += 1
            if not ok:
                rep.failures.append(f"{name}: '{v}' differs from the reference: max rel err "
                                    f"{mrel:.3g} > {tolerance:g} (max abs {mabs:.3g})")
        if want_all:
            r.note = (r.note + " " if r.note else "") + f"{n} of {len(wanted)} blobs exposed"

    onnx_model = None

    def get_onnx():
        nonlocal onnx_model
        if onnx_model is None:
            onnx_model = _onnx_model(g, want_all)
        return onnx_model

    if "cpu" in providers:
        record("torch-cpu", lambda: _run_torch(g, feeds, want_all))
        record("ort-cpu", lambda: _run_ort(get_onnx(), feeds, "cpu")[0])
    if "cuda" in providers:
        def ort_cuda():
            import onnxruntime as ort
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise _Skip("CUDAExecutionProvider not available")
            try:   # cuDNN/cuBLAS from the nvidia-* wheels that torch installs (ORT >= 1.21)
                import torch  # noqa: F401
                if hasattr(ort, "preload_dlls"):
                    ort.preload_dlls()
            except Exception:
                pass
            return _run_ort(get_onnx(), feeds, "cuda")[0]
        record("ort-cuda", ort_cuda)

        def torch_cuda():
            import torch
            if not torch.cuda.is_available():
                raise _Skip("torch CUDA not available")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            return _run_torch(g, feeds, want_all, "cuda")
        record("torch-cuda", torch_cuda)
    if opencv:
        try:
            import cv2  # noqa: F401
            have_cv = True
        except ImportError:
            have_cv = False
        with tempfile.TemporaryDirectory(prefix="protogen-verify-") as td:
            if not have_cv:
                for name in ("opencv-caffe", "opencv-onnx"):
                    rep.runtimes.append(RuntimeResult(name, "skipped", "skipped: OpenCV (cv2) is not installed"))
            else:
                record("opencv-caffe", lambda: _run_opencv_caffe(g, dialect, feeds, wanted, Path(td)))
                record("opencv-onnx", lambda: _run_opencv_onnx(get_onnx(), feeds, Path(td)))
    rep.seconds = time.perf_counter() - t0
    return rep


def _dialect_name(d: Dialect) -> str:
    return d.name if d.tag in ("", "bvlc") else f"{d.name}+{d.tag}"


def render_report(reports: list[Report], fmt: str) -> str:
    """Markdown ('md') or HTML ('html') report of one or more verifications."""
    from .templating import render
    if fmt not in ("md", "html"):
        raise ProtogenError(f"report format must be md or html, got {fmt!r}")
    rows = []
    for r in reports:
        rows.append({"report": r, "dict": r.to_dict(),
                     "runtimes": [{"r": rt, "worst": r.worst(rt.name),
                                   "n": sum(1 for c in r.comparisons if c.runtime == rt.name),
                                   "max_abs": max((c.max_abs for c in r.comparisons if c.runtime == rt.name),
                                                  default=None)}
                                  for rt in r.runtimes]})
    return render(f"verify_report.{fmt}.j2", reports=rows, tolerance=TOLERANCE,
                  min_spread=MIN_SPREAD, min_sensitivity=MIN_SENSITIVITY,
                  passed=sum(r.ok for r in reports), total=len(reports))
