"""Binary ``.caffemodel`` IO without per-element Python work.

A caffemodel is a serialized ``NetParameter`` whose layers carry ``BlobProto`` weights; the
floats sit in packed ``data`` fields. Going through ``protobuf`` would copy every float
through Python objects, so this module walks the wire format itself:

* writing: each layer's small metadata is serialized by protobuf, and the blobs are appended
  as hand-encoded fields whose payload is the array's own memory (``f.write(memoryview)``);
* reading: the file is memory-mapped; layer metadata is parsed by protobuf, and each blob's
  packed floats become a zero-copy ``numpy.frombuffer`` view of the mapped bytes.

V2 (``layer``), V1 (``layers``) and V0 (``layers { layer {...} }``) files are read; blob
shapes come from ``shape`` or the legacy num/channels/height/width.

facebookarchive/C3D's caffemodels (V1 ``layers``) store 5-D blobs in C3D's own BlobProto
(src/caffe/proto/caffe.proto: num 1, channels 2, length 3, height 4, width 5, packed float
data 6, diff 7; upstream has height 3, width 4, data 5, diff 6, shape 7). Blob::ToProto
(src/caffe/blob.cpp) always writes all five dimensions, so a varint at field 5 (upstream's
float data is never a varint) marks the C3D form; FromProto reads the shape as (num, channels,
length, height, width) with a missing or zero length taken as 1. Such a file's blobs are
5-D, its ``legacy_rank`` is 5 (C3D's CopyTrainedLayersFrom compares all five dimensions:
an InnerProduct weight is stored 1x1x1xNxK, a bias 1x1x1x1xN), and its V1 layer types 30,
31, 33 (C3D's CONVOLUTION3D, POOLING3D, VIDEO_DATA; upstream's ARGMAX, THRESHOLD, SLICE) are
read as C3D's.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtogenError
from ..util import atomic_open
from ..wire import I32, LEN, VARINT, WireError, fields, len_field, read_varint, varint


# --------------------------------------------------------------------------- writing
def _blob_bytes(arr: np.ndarray) -> tuple[bytes, np.ndarray]:
    shape_ = np.shape(arr)      # before ascontiguousarray, which makes a 0-d array 1-d: a
    # 0-d blob (Normalize's channel-shared scale, Blob(vector<int>(0)) in Caffe) keeps its
    # empty BlobShape, which Caffe's ShapeEquals requires
    a = np.ascontiguousarray(arr, dtype="<f4")
    dims = b"".join(varint(int(d)) for d in shape_)
    shape = len_field(1, len(dims)) + dims if len(shape_) else b""
    body_head = len_field(7, len(shape)) + shape + len_field(5, a.nbytes)
    return body_head, a


def write_caffemodel(path, net_param, blobs: dict[str, list]) -> int:
    """Write ``net_param`` (a V2 NetParameter without blobs) with ``blobs`` by layer name.

    Returns the number of bytes written. The file appears atomically.
    """
    with atomic_open(path, "wb") as f:
        return write_caffemodel_to(f, net_param, blobs)


def write_caffemodel_to(f, net_param, blobs: dict[str, list]) -> int:
    """:func:`write_caffemodel` into an open binary file ``f``."""
    from . import pb
    blob_field = pb.LayerParameter.DESCRIPTOR.fields_by_name["blobs"].number
    layer_field = pb.NetParameter.DESCRIPTOR.fields_by_name["layer"].number
    head = pb.NetParameter()
    head.CopyFrom(net_param)
    del head.layer[:]
    hb = head.SerializeToString()
    f.write(hb)
    total = len(hb)
    for lp in net_param.layer:
        meta = lp.SerializeToString()
        parts = []
        for arr in blobs.get(lp.name, ()):
            body_head, a = _blob_bytes(arr)
            parts.append((len_field(blob_field, len(body_head) + a.nbytes) + body_head, a))
        size = len(meta) + sum(len(h) + a.nbytes for h, a in parts)
        lead = len_field(layer_field, size)
        f.write(lead)
        f.write(meta)
        total += len(lead) + len(meta)
        for h, a in parts:
            f.write(h)
            if a.nbytes:
                f.write(memoryview(a).cast("B"))
            total += len(h) + a.nbytes
    return total


# --------------------------------------------------------------------------- reading
@dataclass
class CaffeModel:
    """A caffemodel's net definition (blobs stripped) and its weights by layer name."""
    net: object                                   # caffe_pb2.NetParameter
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    path: str = ""
    format: str = "V2"                            # V2 | V1 | V0
    _keep: object = None                          # the mmap backing the arrays
    #: rank of legacy-shaped blobs, aligned from the end against a layer's weight shapes:
    #: 4 (num, channels, height, width), 5 in C3D's BlobProto (module doc)
    legacy_rank: int = 4


#: C3D's BlobProto field numbers (facebookarchive/C3D src/caffe/proto/caffe.proto)
_C3D_DIMS, _C3D_DATA = (1, 2, 3, 4, 5), 6
#: C3D's V1 LayerType values that upstream's enum gives other meanings (C3D's proto) ->
#: the fork names in protogen's schema; None: a C3D type protogen does not read (cleared)
_C3D_V1_TYPES = {30: "CONVOLUTION3D", 31: "POOLING3D", 32: None, 33: "VIDEO_DATA", 34: None,
                 35: None, 36: None, 37: None, 38: None, 39: None, 40: None}


def _blob_form(buf, start: int, end: int) -> str | None:
    """"C3D" when field 5 (C3D's width) is a varint, "upstream" when a field only upstream's
    BlobProto has is there (float data at 5, shape 7, double data 8), None when neither (an
    empty blob, which reads the same either way)."""
    form = None
    for no, wire, _s, _e, _ in fields(buf, start, end):
        if no == 5 and wire == VARINT:
            return "C3D"
        if no == 5 or (no in (7, 8) and wire == LEN):
            form = "upstream"
    return form


def _is_c3d_blob(buf, start: int, end: int) -> bool:
    return _blob_form(buf, start, end) == "C3D"


def _parse_c3d_blob(buf, start: int, end: int, where: str) -> np.ndarray:
    """C3D's Blob::FromProto: shape (num, channels, length or 1, height, width); diff ignored."""
    dims = dict.fromkeys(_C3D_DIMS, 0)
    data = None
    floats: list[float] = []
    for no, wire, s, e, _ in fields(buf, start, end):
        if no in dims and wire == VARINT:
            dims[no], _ = read_varint(buf, s, e)
        elif no == _C3D_DATA and wire == LEN:
            if (e - s) % 4:
                raise WireError(f"{where}: packed float data of {e - s} bytes is not a multiple of 4")
            data = np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s)
        elif no == _C3D_DATA and wire == I32:
            floats.append(float(np.frombuffer(buf, "<f4", 1, s)[0]))
    if data is None:
        data = np.asarray(floats, np.float32)
    # int32 fields: a negative dimension arrives as a 64-bit two's complement varint
    shape = tuple(v - (1 << 64) if v >= 1 << 63 else v for v in (dims[1], dims[2], dims[3] or 1, dims[4], dims[5]))
    if min(shape) < 0:
        raise WireError(f"{where}: negative dimension in C3D blob shape {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    if n != data.size:
        raise WireError(f"{where}: C3D blob shape (num, channels, length, height, width) {shape} "
                        f"needs {n} values but the blob holds {data.size}")
    return data.reshape(shape)


def _parse_blob(buf, start: int, end: int, where: str) -> np.ndarray:
    legacy = [None, None, None, None]
    shape = None
    data = None
    floats: list[float] = []
    doubles = None
    for no, wire, s, e, _ in fields(buf, start, end):
        if no in (1, 2, 3, 4) and wire == VARINT:
            v, _ = read_varint(buf, s, e)
            legacy[no - 1] = v
        elif no == 7 and wire == LEN:
            dims = []
            for dno, dwire, ds, de, _ in fields(buf, s, e):
                if dno != 1:
                    continue
                if dwire == LEN:           # packed
                    p = ds
                    while p < de:
                        v, p = read_varint(buf, p, de)
                        dims.append(v)
                elif dwire == VARINT:
                    v, _ = read_varint(buf, ds, de)
                    dims.append(v)
            shape = tuple(dims)
        elif no == 5 and wire == LEN:
            if (e - s) % 4:
                raise WireError(f"{where}: packed float data of {e - s} bytes is not a multiple of 4")
            data = np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s)
        elif no == 5 and wire == I32:            # unpacked floats (very old writers)
            floats.append(float(np.frombuffer(buf, "<f4", 1, s)[0]))
        elif no == 8 and wire == LEN:
            if (e - s) % 8:
                raise WireError(f"{where}: packed double data of {e - s} bytes is not a multiple of 8")
            doubles = np.frombuffer(buf, dtype="<f8", count=(e - s) // 8, offset=s)
    if data is None:
        if floats:
            data = np.asarray(floats, np.float32)
        elif doubles is not None:
            data = doubles.astype(np.float32)
        else:
            data = np.zeros(0, np.float32)
    if shape is None:
        if any(v is not None for v in legacy):
            shape = tuple(1 if v is None else v for v in legacy)
        else:
            shape = (data.size,)
    n = 1
    for d in shape:
        n *= d
    if n != data.size:
        raise WireError(f"{where}: shape {shape} needs {n} values but the blob holds {data.size}")
    return data.reshape(shape)


def _parse_layer_meta(lp, meta: bytes) -> None:
    """A caffemodel layer's metadata (blobs lifted out). Layer parameters stored in a
    caffemodel are never used (the prototxt's win), and forks number some parameter fields
    differently (SegNet's upsample_param is upstream's embed_param, 137; OpenCV's ceil_mode
    is round_mode, 13): when the bytes do not parse with our schema, keep only the fields
    that identify the layer (name, type, bottoms, tops, phase rules)."""
    try:
        lp.ParseFromString(meta)
        return
    except Exception:     # protobuf DecodeError and friends
        lp.Clear()
    keep = {"name", "type", "bottom", "top", "include", "exclude", "layer"}
    fields_by_number = {fd.number: fd for fd in lp.DESCRIPTOR.fields if fd.name in keep}
    kept = bytearray()
    for no, _wire, _s, e, fs in fields(memoryview(meta), 0, len(meta)):
        if no in fields_by_number:
            kept += meta[fs:e]
    try:
        lp.ParseFromString(bytes(kept))
    except Exception:
        lp.Clear()
        raise


def read_caffemodel(path) -> CaffeModel:
    """Read a binary caffemodel; weights are zero-copy views of the memory-mapped file."""
    from . import pb
    path = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ProtogenError("empty caffemodel", file=path)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ProtogenError(f"cannot read: {e.strerror}", file=path) from None
    buf = memoryview(mm)
    net_d = pb.NetParameter.DESCRIPTOR.fields_by_name
    v2_layer, v1_layers = net_d["layer"].number, net_d["layers"].number
    lp_blobs = pb.LayerParameter.DESCRIPTOR.fields_by_name["blobs"].number
    v1_d = pb.V1LayerParameter.DESCRIPTOR.fields_by_name
    v1_blobs, v1_v0 = v1_d["blobs"].number, v1_d["layer"].number
    v0_blobs = pb.V0LayerParameter.DESCRIPTOR.fields_by_name["blobs"].number

    head = bytearray()
    layer_metas: list[tuple[int, bytes, list[tuple[int, int]]]] = []
    fmt = "V2"
    try:
        for no, wire, s, e, fs in fields(buf, 0, len(buf)):
            if wire == LEN and no in (v2_layer, v1_layers):
                blob_no = lp_blobs if no == v2_layer else v1_blobs
                meta = bytearray()
                ranges = []
                for lno, lwire, ls, le, lfs in fields(buf, s, e):
                    if lwire == LEN and lno == blob_no:
                        ranges.append((ls, le))
                    elif no == v1_layers and lwire == LEN and lno == v1_v0:
                        # a V0 layer nested in a V1 message: lift its blobs out as well
                        fmt = "V0"
                        inner = bytearray()
                        for ino, iwire, is_, ie, ifs in fields(buf, ls, le):
                            if iwire == LEN and ino == v0_blobs:
                                ranges.append((is_, ie))
                            else:
                                inner += buf[ifs:ie]
                        meta += len_field(lno, len(inner)) + inner
                    else:
                        meta += buf[lfs:le]
                if no == v1_layers and fmt == "V2":
                    fmt = "V1"
                layer_metas.append((no, bytes(meta), ranges))
            else:
                head += buf[fs:e]
    except WireError as t:
        hint = ""
        if all(32 <= c < 127 or c in (9, 10, 13) for c in bytes(buf[:256])):
            hint = "; it looks like a text file (a prototxt?), not a binary caffemodel"
        raise ProtogenError(f"truncated or corrupt caffemodel ({t}){hint}", file=path) from None

    net = pb.NetParameter()
    forms: set[str] = set()
    try:
        net.ParseFromString(bytes(head))
        blobs: dict[str, list[np.ndarray]] = {}
        for no, meta, ranges in layer_metas:
            container = net.layer if no == v2_layer else net.layers
            lp = container.add()
            _parse_layer_meta(lp, meta)
            name = lp.name if no == v2_layer else (lp.name or lp.layer.name)
            arrays = []
            for i, (s, e) in enumerate(ranges):
                try:
                    form = _blob_form(buf, s, e)
                    if form:
                        forms.add(form)
                    arrays.append((_parse_c3d_blob if form == "C3D" else _parse_blob)(buf, s, e, f"blob {i}"))
                except WireError as t:
                    raise ProtogenError(f"corrupt weights ({t})", file=path, layer=name) from None
            if arrays:
                blobs[name] = arrays
    except ProtogenError:
        raise
    except Exception as e:  # protobuf DecodeError and friends
        raise ProtogenError(f"corrupt caffemodel: {type(e).__name__}: {e}", file=path) from None
    if len(forms) > 1:
        raise ProtogenError("corrupt caffemodel: it mixes C3D's 5-D BlobProto (length at field 3) "
                            "with upstream Caffe's", file=path)
    rank = 4
    if "C3D" in forms:
        rank = 5
        _c3d_layer_types(net)
    return CaffeModel(net=net, blobs=blobs, path=path, format=fmt, _keep=mm, legacy_rank=rank)


def _c3d_layer_types(net) -> None:
    """A C3D caffemodel's V1 layer types read as C3D numbers them (module doc)."""
    from . import pb
    for lp in net.layers:
        raw = int(lp.type) if lp.HasField("type") else None
        if raw in _C3D_V1_TYPES:
            name = _C3D_V1_TYPES[raw]
            if name is None:
                lp.ClearField("type")
            else:
                lp.type = pb.V1LayerParameter.LayerType.Value(name)
