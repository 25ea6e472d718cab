"""Fork layers and fields rewritten into the standard layers they compute, before the graph
is built (called by :func:`protogen.caffe.loader.load_model` and ``load_prototxt``).

* ``DenseBlock`` (Tongcheng Li's DenseNet fork): expanded by
  :meth:`protogen.layers.fork_misc.DenseBlock.expand`; its caffemodel blobs are moved to the
  expanded layers by :func:`split_model_blobs`.
* ``convolution_param.fuse_type: FUSED_CONV_RELU`` (BVLC/caffe opencl branch,
  include/caffe/layers/conv_spatial_layer.hpp + src/caffe/layers/conv_layer_spatial.cpp:
  the spatial engine applies ReLU with ``convolution_param.relu_param.negative_slope`` to
  the convolution's output; the branch's models/inference_optimize fusion script makes it
  from a Convolution followed by a ReLU) becomes that Convolution and an in-place ReLU.
  The other fusions (with an Eltwise or max pooling) are refused by name.
* ``lrn_param.fuse_type: FUSED_POOL_MAX`` (same branch; src/caffe/test/test_lrn_layer.cpp
  checks it equals an LRN followed by a Pooling layer with ``lrn_param.pooling_param``)
  becomes that LRN and Pooling.
* ``quantization_param`` (intel/caffe): read only by the MKL-DNN layers (the MKLDNNLayer
  constructor, src/caffe/mkldnn_memory.cpp); with the default engine
  (src/caffe/layer_factory.cpp picks ConvolutionLayer) the layer runs in FP32 and ignores
  it. It is cleared with a note: the int8 scales are not applied.
* ``MarginInnerProduct`` (SphereFace): a training head; a note says why the inference view
  drops it (see :mod:`protogen.layers.fork_misc`).
"""
from __future__ import annotations

from ..errors import ProtogenError, UnsupportedError


def rewrite_fork_layers(net, file=None) -> tuple[list[str], dict]:
    """Rewrite ``net`` (a V2 NetParameter) in place. Returns (notes, blob maps): the maps
    say, per rewritten layer name, how its caffemodel blobs become the new layers' blobs
    (``{name: (kind, original LayerParameter)}``, see :func:`split_model_blobs`)."""
    from . import pb
    from ..layers.base import _REGISTRY
    notes: list[str] = []
    maps: dict = {}
    problems = []
    layers = []
    dense, fused, lrn_fused, quant, heads = [], [], [], [], []
    names = {lp.name for lp in net.layer}
    blobs = {t for lp in net.layer for t in list(lp.top) + list(lp.bottom)}
    for lp in net.layer:
        kind = _REGISTRY.get(lp.type)
        if lp.HasField("quantization_param"):
            lp.ClearField("quantization_param")
            quant.append(lp.name)
        if lp.type == "DenseBlock" and kind is not None:
            try:
                new = kind.expand(lp)
            except ProtogenError as e:
                raise e.with_context(file=file, layer=lp.name)
            keep = pb.LayerParameter()
            keep.CopyFrom(lp)
            maps[lp.name] = (kind, keep)
            layers.extend(new)
            dense.append(lp.name)
            continue
        if lp.HasField("convolution_param") and lp.convolution_param.HasField("fuse_type"):
            why = _conv_fusion(lp, layers, names)
            if why:
                problems.append((lp.name, lp.type, why))
            else:
                fused.append(lp.name)
            continue
        if lp.HasField("lrn_param") and lp.lrn_param.HasField("fuse_type"):
            _lrn_fusion(lp, layers, names, blobs)
            lrn_fused.append(lp.name)
            continue
        if lp.type == "MarginInnerProduct":
            heads.append(f"'{lp.name}' (reads {', '.join(repr(b) for b in lp.bottom[1:])})")
        layers.append(lp)
    if problems:
        raise UnsupportedError(problems, file=file)
    if dense or fused or lrn_fused:
        del net.layer[:]
        net.layer.extend(layers)
    if dense:
        notes.append(f"DenseBlock layer(s) {_names(dense)} expanded into BatchNorm/Scale/ReLU/"
                     "Convolution/Concat layers as the fork's GPU forward computes them "
                     "(3x3 kernels flipped: cuDNN CUDNN_CONVOLUTION; statistics as stored, "
                     "eps 1e-5)")
    if fused:
        notes.append(f"convolution(s) {_names(fused)} with fuse_type FUSED_CONV_RELU (opencl "
                     "branch) written as Convolution + ReLU")
    if lrn_fused:
        notes.append(f"LRN layer(s) {_names(lrn_fused)} with fuse_type FUSED_POOL_MAX (opencl "
                     "branch) written as LRN + Pooling")
    if quant:
        notes.append(f"quantization_param on {len(quant)} layer(s) ({_names(quant)}) ignored: "
                     "intel/caffe applies these int8 scales only in its MKL-DNN engine; the "
                     "default-engine FP32 forward, converted here, does not read them")
    if heads:
        notes.append(f"MarginInnerProduct {', '.join(heads)} is SphereFace's training head: "
                     "its forward needs the label (the label's logit gets the angular margin), "
                     "so the inference view drops it with the loss; the embedding is its "
                     "first bottom")
    return notes, maps


def _names(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(repr(n) for n in names[:3]) + more


def _fresh(base: str, used: set) -> str:
    name = base
    while name in used:
        name += "_"
    used.add(name)
    return name


def _conv_fusion(lp, layers: list, used: set) -> str | None:
    """Convolution + ReLU for FUSED_CONV_RELU (appended to ``layers``); else the reason."""
    from . import pb
    cp = lp.convolution_param
    kind = cp.FuseType.Name(cp.fuse_type)
    if kind == "UNFUSED":
        cp.ClearField("fuse_type")
        cp.ClearField("relu_param")
        layers.append(lp)
        return None
    if kind != "FUSED_CONV_RELU":
        return (f"convolution_param.fuse_type {kind} (opencl branch fused kernel) is not "
                "supported; only FUSED_CONV_RELU is")
    if len(lp.top) != 1:
        return "fuse_type FUSED_CONV_RELU on a convolution with several tops is not supported"
    slope = cp.relu_param.negative_slope
    cp.ClearField("fuse_type")
    cp.ClearField("relu_param")
    layers.append(lp)
    relu = pb.LayerParameter(name=_fresh(f"{lp.name}/relu", used), type="ReLU")
    relu.bottom.append(lp.top[0])
    relu.top.append(lp.top[0])
    relu.include.extend(lp.include)
    relu.exclude.extend(lp.exclude)
    if slope:
        relu.relu_param.negative_slope = slope
    layers.append(relu)
    return None


def _lrn_fusion(lp, layers: list, names: set, blobs: set) -> None:
    from . import pb
    fp = lp.lrn_param
    if fp.FuseType.Name(fp.fuse_type) == "UNFUSED":
        fp.ClearField("fuse_type")
        fp.ClearField("pooling_param")
        layers.append(lp)
        return
    pool = pb.LayerParameter(name=_fresh(f"{lp.name}/pool", names), type="Pooling")
    pool.pooling_param.CopyFrom(fp.pooling_param)
    mid = _fresh(lp.name, blobs)
    pool.bottom.append(mid)
    pool.top.append(lp.top[0])
    pool.include.extend(lp.include)
    pool.exclude.extend(lp.exclude)
    fp.ClearField("fuse_type")
    fp.ClearField("pooling_param")
    del lp.top[:]
    lp.top.append(mid)
    layers.extend([lp, pool])


def split_model_blobs(model, maps: dict, file=None, graph=None, prototxt=None) -> None:
    """Move the caffemodel blobs of each rewritten layer (``maps`` from
    :func:`rewrite_fork_layers`) to the layers it became (in place on ``model.blobs``).
    With ``graph`` (the loaded graph), also check what the rewritten layers assumed of their
    input shapes (a DenseBlock's initChannel: the fork reads that many channels)."""
    if graph is not None and maps:
        _check_shapes(graph, maps, prototxt)
    if model is None or not maps:
        return
    for name, (kind, lp) in maps.items():
        blobs = model.blobs.pop(name, None)
        if blobs:
            model.blobs.update(kind.split_blobs(lp, blobs, file=file))


def _check_shapes(graph, maps: dict, prototxt) -> None:
    steps = {st.layer.name: st for st in graph.steps()}
    for name, (kind, lp) in maps.items():
        first = steps.get(kind.sub_names(name, 0, False)["bn"])
        if first is None:
            continue
        try:
            kind.output_shapes(kind.parse(lp), [first.in_shapes[0]], 1)
        except ProtogenError as e:
            raise e.with_context(file=prototxt, layer=name)
