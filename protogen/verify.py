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

from . import opencv_defects as defects
from . import verify_runtimes as R
from . import verify_sets as VS
from .dialect import DEFAULT, Dialect
from .errors import ProtogenError
from .ir import DEPLOY, TEST, Graph
from .progress import NoProgress

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
#: the OpenCV helpers tests and tools use
opencv_has_caffe = R.opencv_has_caffe
opencv_prototxt = R.opencv_prototxt


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
    #: runtime -> {blob, layer, type, max_rel, note}: where a failing runtime first leaves the
    #: reference (in step order)
    divergence: dict = field(default_factory=dict)
    #: documented OpenCV defects met (reported, not failures; see protogen.opencv_defects)
    known_defects: list = field(default_factory=list)
    #: runtime -> intermediate blobs it exposes but whose values are not the layer's output
    #: (OpenCV reused or overwrote the buffer; the layers reading them agree): not compared
    unobservable: dict = field(default_factory=dict)
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
            status = r.status if r.status != "ran" else (
                "ok" if all(c.ok for c in cs) else "defect" if all(c.ok or c.known_defect for c in cs)
                else "FAIL")
            lines.append(f"  {r.name:<13} {status:<8} {len(cs):>5} {amax:>12.3g} {w.max_rel:>12.3g}  "
                         f"{_short(w.blob, 28):<28} {r.note}")
        for h in self.health:
            sens = "-" if h.sensitivity is None else f"{h.sensitivity:.3g}"
            lines.append(f"  output {h.blob} {tuple(h.shape)}: range [{h.min:.4g}, {h.max:.4g}] "
                         f"spread {h.spread:.3g} input-sensitivity {sens} -> "
                         f"{('healthy' + (f' ({h.note})' if h.note else '')) if h.ok else 'DEGENERATE: ' + h.note}")
        if self.activation_rms:
            lines.append(f"  activation RMS over all blobs: {self.activation_rms[0]:.3g} .. "
                         f"{self.activation_rms[1]:.3g}")
        for name, d in self.divergence.items():
            lines.append(f"  {name}: first diverging blob " + _divergence_text(d))
        for k in self.known_defects:
            lines.append(f"  {k}")
        for name, vs in self.unobservable.items():
            lines.append(f"  {name}: {len(vs)} intermediate blob(s) not observable ({UNOBSERVABLE}), "
                         f"not compared: {', '.join(vs[:4])}{', ...' if len(vs) > 4 else ''}")
        lines.append(f"  result: {'PASS' if self.ok else 'FAIL'} ({self.seconds:.1f}s)")
        for f in self.failures:
            lines.append(f"    - {f}")
        return "\n".join(lines)


def _divergence_text(d: dict) -> str:
    if not d.get("blob"):
        return d.get("note", "not located")
    rel = d.get("max_rel")
    err = f"max rel err {rel:.3g}" if isinstance(rel, float) and math.isfinite(rel) else "non-finite"
    return f"'{d['blob']}' (layer '{d['layer']}', {d['type']}): {d.get('note') or err}"


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


def health(name: str, ref: np.ndarray, other: np.ndarray | None = None) -> Health:
    """Is a reference output informative? Finite, not near-constant, input-dependent (batch
    items differ; or ``other``, the output for a second input, differs: verify_sets)."""
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
    if other is not None:
        sens = VS.sensitivity(a, other, scale)
    elif a.ndim >= 1 and a.shape[0] >= 2:
        sens = float(np.max(np.abs(a[0] - a[1]))) / scale
    notes = []
    if spread < MIN_SPREAD:
        notes.append(f"near-constant (spread {spread:.3g} < {MIN_SPREAD:g})")
    if sens is not None and sens < MIN_SENSITIVITY:
        what = "a second input changes it" if other is not None else "batch items differ"
        notes.append(f"does not depend on the input ({what} by {sens:.3g} < {MIN_SENSITIVITY:g})")
    return Health(name, shape, lo, hi, scale, spread, sens, not notes, "; ".join(notes))


# ----------------------------------------------------------------------------- graph prep
def deploy_view(graph: Graph, batch: int) -> Graph:
    """The deploy/TEST net with every Input's batch dimension set to ``batch``."""
    from .layers.io import InputParams
    g = graph.select(net=DEPLOY, phase=TEST)
    inputs = g.input_layers()
    if not inputs:
        raise ProtogenError("verify needs a net with an input (no Input layer found)")
    layers = []
    for l in g.layers:
        if l.kind.is_input:
            if not isinstance(l.params, InputParams):
                raise ProtogenError(f"verify needs a deploy net with Input layers; '{l.name}' is a "
                                    f"{l.type} layer (use the deploy prototxt)", layer=l.name)
            shapes = tuple((batch,) + tuple(s[1:]) if len(s) else tuple(s) for s in l.params.shape)
            l = l.copy(params=InputParams(shape=shapes))
        layers.append(l)
    return Graph(g.name, layers)


def seeded_inputs(steps, seed: int) -> dict[str, np.ndarray]:
    """One seeded array per input value (input ``k`` drawn with ``seed + k``), by its role
    (:func:`protogen.seed_inputs.seeded_feeds`: a detector's rois/im_info as the layer
    reading them declares); ``steps``: a :class:`protogen.ir.Resolved` or its steps."""
    from .seed_inputs import seeded_feeds
    from .weights import seeded_input
    return seeded_feeds(steps, lambda shape, k: seeded_input(shape, seed + k), seed)


def missing_weights(steps) -> list[str]:
    """Names of every layer that needs weights and has none."""
    return [st.layer.name for st in steps
            if st.layer.kind.weight_shapes(st.layer.params, st.in_shapes) and not st.layer.blobs]


class Session:
    """One verification's fixed facts (deploy view, steps, feeds, what to compare) and its
    runtimes, each runnable again on every blob to find where a failing one diverges."""

    def __init__(self, graph: Graph, batch: int, seed: int, blobs: str, dialect: Dialect, progress):
        self.g = deploy_view(graph, batch)
        self.resolved = self.g.resolve()
        self.steps = self.resolved.steps
        missing = missing_weights(self.steps)
        if missing:
            raise ProtogenError(f"{len(missing)} layer(s) have no weights: "
                                + ", ".join(f"'{m}'" for m in missing))
        self.feeds = seeded_inputs(self.resolved, seed)
        self.outputs = [o for o in self.resolved.outputs if o not in self.feeds]
        self.want_all = blobs == "all"
        #: every non-input SSA value, in step order
        self.values = [v for st in self.steps if not st.layer.kind.is_input for v in st.outputs]
        self.wanted = list(self.values if self.want_all else self.outputs)
        self.shapes = self.resolved.shapes
        self.producer = self.resolved.producer
        self.dialect, self.progress = dialect, progress
        #: set values compared as sets (proposal rows); batch fixed by a layer (verify_sets)
        self.seed, self.sets, self.batch_note = seed, VS.set_values(self.resolved), ""
        self.tmp: Path | None = None
        self._onnx: dict[bool, object] = {}
        #: values of runtimes that failed (all blobs only), for the divergence search
        self.kept: dict[str, dict] = {}

    def onnx(self, every_value: bool):
        if every_value not in self._onnx:
            self._onnx[every_value] = R.onnx_model(self.g, every_value)
        return self._onnx[every_value]

    def _hook(self, name: str):
        n = len(self.steps)
        return lambda st, xs: self.progress.stage(f"{name} layer {st.index + 1}/{n}") \
            if getattr(st, "index", -1) >= 0 else None

    def run(self, name: str, every_value: bool) -> dict[str, np.ndarray]:
        """Runtime ``name`` on the feeds: the wanted values, or every value it exposes."""
        every = every_value or len(self.wanted) > len(self.outputs)
        runners = {
            REFERENCE: lambda: R.run_torch(self.g, self.feeds, every, double=True, hook=self._hook(name)),
            "torch-cpu": lambda: R.run_torch(self.g, self.feeds, every, hook=self._hook(name)),
            "torch-cuda": lambda: R.torch_cuda(self.g, self.feeds, every, hook=self._hook(name)),
            "ort-cpu": lambda: R.run_ort(self.onnx(every), self.feeds, "cpu"),
            "ort-cuda": lambda: R.run_ort(self.onnx(every), self.feeds, "cuda"),
            "opencv-caffe": lambda: R.run_opencv_caffe(self.g, self.dialect, self.feeds,
                                                      self.values if every_value else self.wanted,
                                                      self.tmp, fusion=not every_value,
                                                      resolved=self.resolved),
            "opencv-onnx": lambda: R.run_opencv_onnx(self.onnx(False), self.feeds, self.tmp),
        }
        self.progress.stage(name)
        return runners[name]()


# ----------------------------------------------------------------------------- verify
def verify(graph: Graph, *, seed: int = 0, batch: int = 2, providers=("cpu",), opencv: bool = True,
           dialect: Dialect = DEFAULT, blobs: str = "outputs", weights_loaded: bool = False,
           tolerance: float = TOLERANCE, model_name: str | None = None, progress=None,
           runtimes=None) -> Report:
    """Run the seeded input through every runtime and compare with the PyTorch reference.

    ``providers``: ONNX Runtime providers, "cpu" and/or "cuda". ``opencv``: also run OpenCV's
    dnn (its Caffe importer; its ONNX importer with OpenCV >= 5). ``blobs``: "outputs" (net
    outputs) or "all" (every intermediate value each runtime exposes). ``weights_loaded``:
    keep ``layer.blobs`` as they are (a real caffemodel); otherwise seeded weights are drawn
    with ``seed``. ``progress``: a :class:`protogen.progress.Progress` (runtime, layer).
    A failing runtime's first diverging blob is named; a documented OpenCV defect
    (:mod:`protogen.opencv_defects`) is reported as such when the other runtimes agree.
    ``runtimes``: run only these of :data:`RUNTIMES` (default: all that the options select;
    the float64 reference always runs), e.g. without ``torch-cpu`` (the reference executor in
    float32) where a net is costly and ONNX Runtime and OpenCV are the independent checks.
    """
    t0 = time.perf_counter()
    only = _check_runtimes(runtimes)
    providers = _check_options(blobs, providers, batch)
    batch, batch_note = VS.fixed_batch(graph, batch)
    progress = progress or NoProgress()
    if not weights_loaded:
        progress.stage("seeded weights")
        _seed_weights(graph, seed, batch)
    s = Session(graph, batch, seed, blobs, dialect, progress)
    s.batch_note = batch_note
    rep = Report(model=model_name or s.g.name, dialect=_dialect_name(dialect), seed=seed, batch=batch,
                 inputs={k: tuple(v.shape) for k, v in s.feeds.items()}, blobs_mode=blobs,
                 tolerance=tolerance)
    ref = _reference(s, rep)
    if ref is not None:
        with tempfile.TemporaryDirectory(prefix="protogen-verify-") as td:
            s.tmp = Path(td)
            for name, why_not in _runtimes(providers, opencv):
                if only is not None and name not in only:
                    continue
                if why_not:
                    rep.runtimes.append(RuntimeResult(name, "skipped", f"skipped: {why_not}"))
                else:
                    _record(rep, s, ref, name, tolerance)
            _explain_failures(rep, s, ref, tolerance)
    rep.seconds = time.perf_counter() - t0
    rep.graph = s.g     # for the HTML report's drawing (protogen.pictures); not a field, not serialised
    return rep


def _check_options(blobs: str, providers, batch: int) -> tuple[str, ...]:
    if blobs not in ("outputs", "all"):
        raise ProtogenError(f"blobs must be 'outputs' or 'all', got {blobs!r}")
    providers = tuple(p.strip().lower() for p in providers if p.strip())
    for p in providers:
        if p not in ("cpu", "cuda"):
            raise ProtogenError(f"unknown provider '{p}' (choose from cpu, cuda)")
    if batch < 1:
        raise ProtogenError("batch must be >= 1")
    return providers


def _check_runtimes(runtimes) -> frozenset | None:
    if runtimes is None:
        return None
    only = frozenset(runtimes)
    unknown = sorted(only - set(RUNTIMES))
    if unknown:
        raise ProtogenError(f"unknown runtime(s) {', '.join(unknown)} (choose from {', '.join(RUNTIMES)})")
    return only


def _seed_weights(graph: Graph, seed: int, batch: int) -> None:
    from .weights import seeded_weights      # the one way (emit, convert, verify alike)
    seeded_weights(graph, seed, batch=batch)


def _runtimes(providers, opencv: bool) -> list[tuple[str, str]]:
    """(runtime, reason it cannot run or '') in report order."""
    out = []
    if "cpu" in providers:
        out += [("torch-cpu", ""), ("ort-cpu", "")]
    if "cuda" in providers:
        out += [("ort-cuda", ""), ("torch-cuda", "")]
    if opencv:
        if R.opencv_version() is None:
            out.append(("opencv-caffe", "OpenCV (cv2) is not installed"))
        else:
            out.append(("opencv-caffe", ""))
            if R.opencv_can_run_onnx():       # OpenCV 4: no row (see opencv_can_run_onnx)
                out.append(("opencv-onnx", ""))
    return out


def _reference(s: Session, rep: Report) -> dict | None:
    """The float64 reference on the wanted values (+ health of the outputs), or None when it
    crashed (a failure of the whole verification)."""
    t = time.perf_counter()
    rr = RuntimeResult(REFERENCE, note=s.batch_note)
    rep.runtimes.append(rr)
    try:
        ref = s.run(REFERENCE, s.want_all)
    except Exception as e:  # noqa: BLE001 - a reference crash is a failure of the whole verification
        rr.status, rr.note = "error", f"{type(e).__name__}: {e}"
        rep.failures.append(f"the PyTorch reference failed: {rr.note}")
        return None
    rr.seconds = time.perf_counter() - t
    other = VS.other_input_outputs(s) if VS.needs_other_input(s) else {}
    for o in s.outputs:
        if o not in ref:
            rep.failures.append(f"the reference did not produce output '{o}'")
            continue
        h = health(o, ref[o], other.get(o))
        judged = _judge_by_input(s, o, h, ref) if not h.ok else None
        rep.health += list(judged) if judged else [h]
        h = judged[0] if judged else h
        if not h.ok:
            rep.failures.append(f"output '{o}' is degenerate: {h.note}")
    if s.want_all:
        rms = [float(np.sqrt(np.mean(np.square(ref[v], dtype=np.float64)))) for v in s.values
               if v in ref and ref[v].size]
        if rms:
            rep.activation_rms = (min(rms), max(rms))
    return ref


def _judge_by_input(s: Session, o: str, h: Health, ref: dict) -> tuple[Health, Health] | None:
    """A degenerate output that its last layer makes constant BY CONSTRUCTION (e.g. a Softmax
    over one class gives 1 for any input) is judged by that layer's input instead, which
    every runtime then also has to match. The layer is re-run on three random inputs of the
    same scale: it is constant by construction when all give the reference output exactly.
    Returns (the output's health, now ok with a note, the input's health) or None."""
    st = s.producer.get(o)
    if st is None or len(st.inputs) != 1 or st.inputs[0] in s.feeds:
        return None
    x_name = st.inputs[0]
    if x_name not in ref:
        ref.update({k: v for k, v in s.run(REFERENCE, True).items() if k == x_name})
    x = np.asarray(ref[x_name], np.float64)
    if not _constant_layer(st, x, np.asarray(ref[o], np.float64)):
        return None
    hx = health(x_name, x)
    if not hx.ok:
        return None
    if x_name not in s.wanted:
        s.wanted.append(x_name)
    note = (f"constant by construction (layer '{st.layer.name}' ({st.layer.type}) gives it for any "
            f"input): judged by its input '{x_name}', spread {hx.spread:.3g}, input-sensitivity "
            f"{hx.sensitivity if hx.sensitivity is None else format(hx.sensitivity, '.3g')}")
    return Health(h.blob, h.shape, h.min, h.max, h.scale, h.spread, h.sensitivity, True, note), hx


def _constant_layer(st, x: np.ndarray, y: np.ndarray) -> bool:
    import torch
    blobs = [torch.as_tensor(np.asarray(b, np.float64)) for b in (st.layer.blobs or [])]
    rng = np.random.default_rng(0)
    scale = float(np.max(np.abs(x))) or 1.0
    for _ in range(3):
        xi = torch.as_tensor(x + scale * rng.standard_normal(x.shape))
        with torch.no_grad():
            out = st.layer.kind.torch_forward(st.layer.params, [xi], blobs, n_tops=1)
        if not np.array_equal(out[0].numpy(), y):
            return False
    return True


def _record(rep: Report, s: Session, ref: dict, name: str, tolerance: float) -> None:
    """Run one runtime and compare every wanted value it gives with the reference."""
    r = RuntimeResult(name)
    rep.runtimes.append(r)
    t = time.perf_counter()
    try:
        got = s.run(name, s.want_all)
    except R.Skip as e:
        r.status, r.note = "skipped", f"skipped: {e}"
        return
    except Exception as e:  # noqa: BLE001 - a runtime crash is that runtime's failure
        msg = str(e).strip()
        r.status, r.note = "error", f"{type(e).__name__}: {msg.splitlines()[-1] if msg else ''}"
        rep.failures.append(f"{name} failed to run: {r.note}")
        return
    finally:
        r.seconds = time.perf_counter() - t
    cs = [c for c in (_compare_value(s, ref, got, name, v, tolerance) for v in s.wanted) if c is not None]
    hidden = _unobservable(s, name, got, {c.blob for c in cs if not c.ok})
    if hidden:
        rep.unobservable[name] = hidden
    n = 0
    for c in cs:
        if c.blob in hidden:
            continue
        rep.comparisons.append(c)
        n += not c.note.startswith(("output missing", "shape"))
        if not c.ok:
            rep.failures.append(f"{name}: '{c.blob}' {c.note}")
    if s.want_all:
        r.note = (r.note + " " if r.note else "") + f"{n} of {len(s.wanted)} blobs exposed" + (
            f", {len(hidden)} not observable" if hidden else "")
        if any(not c.ok for c in rep.comparisons if c.runtime == name):
            s.kept[name] = got


def _compare_value(s: Session, ref: dict, got: dict, name: str, v: str, tolerance: float):
    if v not in got or v not in ref:
        if v in s.outputs and v in ref:
            return Comparison(name, v, s.shapes[v], math.nan, math.nan, False, "output missing")
        return None
    if getattr(s.producer[v].layer.kind, "is_detection_output", False):
        # detection rows (image, label, score, box): compared as sets, count first
        from .detections import compare_for_verify
        mabs, mrel, ok, note = compare_for_verify(ref[v], got[v], tolerance, zero_padded=name.startswith("opencv"))
        return Comparison(name, v, tuple(np.shape(ref[v])), mabs, mrel, ok, note)
    if v in s.sets:     # proposal rows (verify_sets): compared as sets
        return Comparison(name, v, tuple(np.shape(ref[v])), *VS.compare(s.sets, v, ref, got, tolerance))
    a, b = np.asarray(ref[v]), np.asarray(got[v])
    if a.shape != b.shape:
        if a.size != b.size:
            return Comparison(name, v, tuple(a.shape), math.nan, math.nan, False,
                              f"shape {tuple(b.shape)} != reference {tuple(a.shape)}")
        b = b.reshape(a.shape)
    mabs, mrel = compare(a, b)
    ok = math.isfinite(mrel) and mrel <= tolerance
    note = "" if ok else ("non-finite values" if not math.isfinite(mabs) else
                          f"differs from the reference: max rel err {mrel:.3g} > {tolerance:g} "
                          f"(max abs {mabs:.3g})")
    return Comparison(name, v, tuple(a.shape), mabs, mrel, ok, note)


#: why an exposed intermediate blob of OpenCV is not compared
UNOBSERVABLE = ("OpenCV hands back reused or overwritten buffers for them; the layers reading "
                "them agree with the reference")


def _read_right(s: Session, got: dict, bad: set, v: str) -> bool:
    """Did the layers reading ``v`` get the right value? True when it has readers and all
    their outputs are exposed and agree (``bad``: the values that do not)."""
    readers = s.resolved.consumers(v)
    return bool(readers) and all(o in got and o not in bad for c in readers for o in c.outputs)


def _unobservable(s: Session, name: str, got: dict, bad: set) -> list[str]:
    """The differing intermediate blobs of OpenCV (``name``) that are not observable there:
    what OpenCV hands back for them is a buffer it reused after the layers reading them ran
    (e.g. the second top of a Slice), so their value there is not the layer's output. Only
    OpenCV; never a net output (an output's difference is always a failure)."""
    if not name.startswith("opencv") or not s.want_all:
        return []
    return [v for v in s.values if v in bad and v not in s.outputs and _read_right(s, got, bad, v)]


# ----------------------------------------------------------------------------- failures explained
def _explain_failures(rep: Report, s: Session, ref: dict, tolerance: float) -> None:
    """Name each failing runtime's first diverging blob; excuse a documented OpenCV defect."""
    failing = [rt.name for rt in rep.runtimes if rt.status == "ran"
               and any(not c.ok for c in rep.comparisons if c.runtime == rt.name)]
    if not failing:
        return
    ref_all = ref if s.want_all else None
    for name in failing:
        try:
            if ref_all is None:
                ref_all = s.run(REFERENCE, True)
            got = s.kept.get(name) or s.run(name, True)
        except Exception as e:  # noqa: BLE001 - the failure stands; only its location is unknown
            rep.divergence[name] = {"blob": None, "note": f"not located ({type(e).__name__}: {e})"}
            continue
        d = first_divergence(s, ref_all, got, tolerance)
        if d is not None:
            rep.divergence[name] = d
    _excuse_known_defects(rep, s)


def first_divergence(s: Session, ref: dict, got: dict, tolerance: float) -> dict | None:
    """The first value, in step order, where ``got`` leaves the reference. A value whose
    readers all produce values that agree is not it: what the next layers consumed was right,
    only the runtime's exposure of it differs (OpenCV can hand back a reused buffer for an
    intermediate it was asked to retrieve, e.g. the second top of a Slice)."""
    bad: dict[str, dict] = {}
    for st in s.steps:
        if st.layer.kind.is_input:
            continue
        for v in st.outputs:
            if v not in got or v not in ref or (v in s.sets and VS.compare(s.sets, v, ref, got, tolerance)[2]):
                continue
            a, b = np.asarray(ref[v]), np.asarray(got[v])
            if a.size != b.size:
                bad[v] = {"blob": v, "layer": st.layer.name, "type": st.layer.type, "max_rel": math.nan,
                          "note": f"shape {tuple(b.shape)} != reference {tuple(a.shape)}"}
                continue
            _, mrel = compare(a, b.reshape(a.shape))
            if not (math.isfinite(mrel) and mrel <= tolerance):
                bad[v] = {"blob": v, "layer": st.layer.name, "type": st.layer.type, "max_rel": mrel,
                          "note": ""}
    for v, d in bad.items():       # in step order
        if not _read_right(s, got, set(bad), v):
            return d
    return None


def _excuse_known_defects(rep: Report, s: Session) -> None:
    d = rep.divergence.get(defects.RUNTIME)
    if not d or not d.get("layer"):
        return
    st = s.resolved.step(d["layer"])
    defect = defects.find(st.layer, st.in_shapes)
    if defect is None:
        return
    d["defect"] = defect.name
    others = [rt.name for rt in rep.runtimes if rt.status == "ran"
              and rt.name not in (REFERENCE, defects.RUNTIME)]
    if not others or any(not c.ok for c in rep.comparisons if c.runtime in others):
        return      # nothing independent agrees with the reference: the failure stands
    for c in rep.comparisons:
        if c.runtime == defects.RUNTIME and not c.ok:
            c.known_defect = True
    prefix = f"{defects.RUNTIME}: "
    rep.failures = [f for f in rep.failures if not f.startswith(prefix)]
    rep.known_defects.append(f"{defects.RUNTIME}: {defect.message(st.layer.name)} "
                             f"({', '.join(others)} agree with the reference: not a failure)")
    for rt in rep.runtimes:
        if rt.name == defects.RUNTIME:
            rt.note = (rt.note + " " if rt.note else "") + f"known OpenCV defect ({defect.name})"


def _dialect_name(d: Dialect) -> str:
    return d.name if d.tag in ("", d.name) else f"{d.name}+{d.tag}"


def _pictures(r: Report) -> dict:
    """The HTML report's net drawing and per-blob error plot (:mod:`protogen.pictures`)."""
    from .pictures import verify_pictures
    return verify_pictures(r, getattr(r, "graph", None))


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
                                  for rt in r.runtimes],
                     "pictures": _pictures(r) if fmt == "html" else {}})
    return render(f"verify_report.{fmt}.j2", reports=rows, tolerance=TOLERANCE,
                  min_spread=MIN_SPREAD, min_sensitivity=MIN_SENSITIVITY,
                  passed=sum(r.ok for r in reports), total=len(reports))
