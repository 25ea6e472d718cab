"""The runtimes :mod:`protogen.verify` compares: the PyTorch reference executor, ONNX Runtime
and OpenCV's ``dnn`` (Caffe importer; ONNX importer on OpenCV >= 5).

Each ``run_*`` function takes the deploy view and the seeded feeds and returns
``{SSA value name: array}`` for the values it was asked for (or a subset: a runtime may not
expose every intermediate blob). :class:`Skip` means the runtime cannot run here (not
installed, no such provider, a layer type the runtime lacks): reported, never a failure.
Heavy libraries are imported inside functions only.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .dialect import Dialect
from .ir import DEPLOY, Graph
from .layers import registered_types


class Skip(Exception):
    """This runtime cannot run here; the message says why."""


# ----------------------------------------------------------------------------- PyTorch
def run_torch(g: Graph, feeds, want_all: bool, device: str = "cpu", double: bool = False,
              hook=None) -> dict[str, np.ndarray]:
    """TorchNet on ``feeds``; ``double``: weights and computation in float64 (the reference).
    ``hook(step, xs)`` is called before each layer (progress)."""
    import torch
    from .torch_ref import TorchNet
    net = TorchNet.from_graph(g).eval()
    if double:
        net = net.double()
    net = net.to(device)
    kw = {"hook": hook} if hook is not None else {}
    with torch.no_grad():
        out = net({k: torch.from_numpy(v).to(device) for k, v in feeds.items()}, all_blobs=want_all, **kw)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def torch_cuda(g: Graph, feeds, want_all: bool, hook=None):
    import torch
    if not torch.cuda.is_available():
        raise Skip("torch CUDA not available")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return run_torch(g, feeds, want_all, "cuda", hook=hook)


# ----------------------------------------------------------------------------- ONNX Runtime
def onnx_model(g: Graph, want_all: bool):
    """protogen's ONNX export of ``g`` (every intermediate value an output with ``want_all``)."""
    from .onnx_io import export_onnx
    return export_onnx(g, None, intermediate=want_all)


def by_input_name(feeds, names) -> dict[str, np.ndarray]:
    """``feeds`` keyed by SSA value, re-keyed by a written net's input names: an input blob
    rewritten in place later (a Scale on ``data``) enters as ``data@1`` in the resolved graph
    but is the input ``data`` of the ONNX file and the Caffe prototxt (:func:`protogen.ir.ssa_names`)."""
    blob = {}
    for k in feeds:
        b, at, n = k.rpartition("@")
        blob[b if at and n.isdigit() else k] = k
    out = {}
    for name in names:
        key = name if name in feeds else blob.get(name)
        if key is None:
            raise KeyError(name)
        out[name] = feeds[key]
    return out


def run_ort(model, feeds, provider: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("CUDAExecutionProvider not available")
        try:   # cuDNN/cuBLAS from the nvidia-* wheels that torch installs (ORT >= 1.21)
            import torch  # noqa: F401
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        except Exception:   # noqa: BLE001 - best effort; the session below says what failed
            pass
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if provider == "cuda":
        providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    used = sess.get_providers()
    if provider == "cuda" and (not used or used[0] != "CUDAExecutionProvider"):
        raise Skip(f"CUDAExecutionProvider did not initialise (session providers: {used})")
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(names, by_input_name(feeds, [i.name for i in sess.get_inputs()]))
    return dict(zip(names, vals))


# ----------------------------------------------------------------------------- OpenCV
def opencv_version() -> tuple[int, ...] | None:
    """OpenCV's version, or None when cv2 is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", cv2.__version__)[:3])


def opencv_has_caffe() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2.dnn, "readNetFromCaffe")


def opencv_can_run_onnx() -> bool:
    """OpenCV 4's ONNX importer lacks 5-D Reshape/Transpose (channel shuffle) and more; with
    OpenCV 4 the Caffe importer (opencv-caffe) is the OpenCV check, so no opencv-onnx row."""
    v = opencv_version()
    return v is not None and v[0] >= 5


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


def caffe_ssa(net_param, resolved=None) -> dict[str, tuple[str, int]]:
    """SSA value name -> (Caffe layer name, top index) for a NetParameter, with the IR's
    naming (the last write of a blob keeps its name, earlier writes are ``blob@k``).

    With ``resolved`` (the IR the NetParameter was written from), each IR value is aligned
    with the Caffe layer that writes it, also where a layer was written as several Caffe
    layers rewriting its blob in place (e.g. portable ReLU6: ReLU/Power in place): the write
    by the layer of the same name, else the last write by one named ``LAYER/...`` (e.g.
    floor pooling's Slice) before the next IR writer's own."""
    from .ir import ssa_names
    out = {}
    for lp, names in zip(net_param.layer, ssa_names(list(lp.top) for lp in net_param.layer)):
        for i, v in enumerate(names):
            out[v] = (lp.name, i)
    if resolved is None:
        return out
    writes: dict[str, list[tuple[str, int]]] = {}
    for lp in net_param.layer:
        for i, t in enumerate(lp.top):
            writes.setdefault(t, []).append((lp.name, i))
    for blob, ws in writes.items():
        versions = resolved.versions(blob)
        pos = 0
        for j, v in enumerate(versions):
            name = resolved.producer[v].layer.name
            k = next((k for k in range(pos, len(ws)) if ws[k][0] == name), None)
            if k is None:
                nxt = resolved.producer[versions[j + 1]].layer.name if j + 1 < len(versions) else None
                stop = next((k for k in range(pos, len(ws)) if ws[k][0] == nxt), len(ws))
                k = next((k for k in reversed(range(pos, stop)) if ws[k][0].startswith(name + "/")), None)
            if k is None:       # named otherwise in the Caffe net: the write-count rule stands
                continue
            out[v] = ws[k]
            pos = k + 1
    return out


def opencv_exact(net) -> None:
    """Switch off OpenCV's Winograd F(6x6, 3x3) convolution (on by default since 4.7): its
    float32 transforms round several times worse than direct convolution (from a float64
    reference, with the earlier seeded-weight calibration: ResNet-152 9.8e-05 vs 2.4e-05,
    Inception-v4 7.2e-04 vs 9.3e-05; docs/verify.md). verify checks the semantics of the
    emitted files, not the accuracy of a fast approximate kernel."""
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)


def run_opencv_caffe(g: Graph, dialect: Dialect, feeds, wanted: list[str], tmp: Path,
                     fusion: bool = True, resolved=None):
    """OpenCV's Caffe importer on the emitted prototxt + caffemodel. ``fusion=False`` keeps
    every layer separate (each intermediate blob as Caffe defines it)."""
    import cv2
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise Skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5); "
                   "install opencv-python-headless<5 for this check")
    from .caffe.caffemodel import write_caffemodel
    from .caffe.prototxt import to_net_param
    for l in g.layers:      # forms OpenCV's importer reads otherwise than Caffe (LayerType.opencv_limit)
        why = l.kind.opencv_limit(l.params) if hasattr(l.kind, "opencv_limit") else None
        if why:
            raise Skip(f"OpenCV {cv2.__version__} {why} (layer '{l.name}')")
    for st in (resolved or g.resolve()).steps:     # limits that depend on the input shapes
        why = st.layer.kind.opencv_limit_shapes(st.layer.params, st.in_shapes) \
            if hasattr(st.layer.kind, "opencv_limit_shapes") else None
        if why:
            raise Skip(f"OpenCV {cv2.__version__} {why} (layer '{st.layer.name}')")
    np_ = to_net_param(g, DEPLOY, dialect)
    proto = tmp / f"{g.name.replace('/', '_')}.prototxt"
    model = tmp / f"{g.name.replace('/', '_')}.caffemodel"
    proto.write_text(opencv_prototxt(np_))
    write_caffemodel(model, _weights_only(np_), {l.name: l.blobs for l in g.layers if l.blobs})
    try:
        return _opencv_caffe_forward(cv2, np_, proto, model, feeds, wanted, fusion,
                                     resolved or g.resolve())
    except cv2.error as e:
        m = re.search(r'Can\'t create layer "[^"]*" of type "([^"]+)"', str(e))
        if m:   # a layer type OpenCV lacks (e.g. BVLC's Clip): OpenCV's limit, not ours
            raise Skip(f"OpenCV {cv2.__version__} has no Caffe layer type '{m.group(1)}'") from None
        raise


def _opencv_caffe_forward(cv2, np_, proto, model, feeds, wanted, fusion: bool, resolved=None):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    opencv_exact(net)
    kinds = registered_types()
    input_names = [t for lp in np_.layer
                   if getattr(kinds.get(lp.type), "is_deploy_input", False) for t in lp.top]
    ssa = caffe_ssa(np_, resolved)
    want = [v for v in wanted if v in ssa and v not in input_names]
    many = len(want) > len([v for v in wanted if v not in input_names]) / 2 and len(wanted) > 50
    if not fusion or many:
        net.enableFusion(False)   # every intermediate blob is requested: keep each layer separate
    for name, v in by_input_name(feeds, input_names).items():
        net.setInput(v, name)
    layer_names = sorted({ssa[v][0] for v in want})
    cv_name = _opencv_layer_names(net, np_)
    outs = net.forwardAndRetrieve([cv_name.get(n, n) for n in layer_names])
    by_layer = dict(zip(layer_names, outs))
    res = {}
    for v in want:
        lname, idx = ssa[v]
        mats = by_layer[lname]
        if idx < len(mats):
            res[v] = np.asarray(mats[idx])
    return res


def _opencv_layer_names(net, np_) -> dict[str, str]:
    """Caffe layer name -> the name OpenCV's net gives it. OpenCV 4.14's Caffe importer names
    a layer that is not in place after its first top (measured: a Convolution "c" with top
    "mid" is the layer "mid"; the OpenPose hand net's "Mconv7_stage6" is "net_output"), keeps
    the name of an in-place one; where the name is taken, the layer keeps its own."""
    have = set(net.getLayerNames())
    tops = {}
    for lp in np_.layer:
        for t in lp.top[:1]:
            if t not in lp.bottom:
                tops.setdefault(t, []).append(lp.name)
    out = {}
    for lp in np_.layer:
        if lp.name in have or not lp.top:
            continue
        t = lp.top[0]
        if t in have and t not in lp.bottom and len(tops[t]) == 1:
            out[lp.name] = t
    return out


def run_opencv_onnx(model, feeds, tmp: Path):
    import cv2
    if not hasattr(cv2.dnn, "readNetFromONNX") or not opencv_can_run_onnx():
        raise Skip(f"OpenCV {cv2.__version__}: the ONNX check needs OpenCV >= 5")
    path = tmp / "model.onnx"
    path.write_bytes(model.SerializeToString())
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)   # OpenCV 5's new engine: CPU only
    opencv_exact(net)
    for name, v in feeds.items():
        net.setInput(v, name)
    names = [o.name for o in model.graph.output]
    outs = net.forward(names)
    return {n: np.asarray(o) for n, o in zip(names, outs)}
