"""YOLO fork layers: Reorg (YOLO v2 passthrough) and the eric612/MobileNet-YOLO detection
outputs (YoloDetectionOutput for v2, Yolov3DetectionOutput for v3).

Semantics from the forks' C++ (named on each class); the PyTorch reference and the generated
source share :mod:`protogen.layers.detect_torch`, the ONNX lowering uses standard operators
(:mod:`protogen.layers.detect_onnx`). The detection outputs have a data-dependent row count:
the shape rule gives Caffe's no-detection form (1, 1, N, 7) (N = batch; Caffe's own Reshape says
(1, 1, 1, 7)), whose row axis follows the batch and is therefore symbolic in ONNX.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, _f32, register, require_rank

_YOLO_SCHEMAS = ("yolo", "mobilenet-yolo")


@dataclass(frozen=True)
class ReorgParams:
    stride: int = 0
    reverse: bool = False


@register
class Reorg(LayerType):
    """Darknet's reorg as the Caffe YOLO forks implement it (BVLC/caffe intel branch and
    eric612/Caffe-YOLOv3-Windows src/caffe/layers/reorg_layer.cpp; reorg_cpu in their
    reorg_layer.hpp). The element order is darknet's, not space-to-depth's: see
    :func:`protogen.layers.detect_torch.reorg` (OpenCV's reorg_layer.cpp implements the same)."""
    type = "Reorg"
    param_field = "reorg_param"
    Params = ReorgParams
    schemas = _YOLO_SCHEMAS
    examples = (
        Example(params=dict(stride=2), ins=[(2, 8, 4, 6)]),
        Example(params=dict(stride=2, reverse=True), ins=[(1, 12, 2, 3)]),
        Example(params=dict(stride=3), ins=[(1, 9, 3, 6)]),
    )

    def validate(self, p):
        if p.stride <= 0:
            raise ProtogenError("Reorg needs reorg_param.stride > 0 (Caffe checks has_stride)")

    def shapes(self, p, ins):
        require_rank(ins, 4, "Reorg")
        n, c, h, w = ins[0]
        s = p.stride
        if c % (s * s):
            raise ShapeError(f"Reorg: {c} channels are not a multiple of stride^2 = {s * s}")
        if p.reverse:
            return [(n, c // (s * s), h * s, w * s)]
        if h % s or w % s:
            raise ShapeError(f"Reorg: input {h}x{w} is not a multiple of the stride {s}")
        return [(n, c * s * s, h // s, w // s)]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x = step.inputs[0]
        s = p.stride
        c = ctx.static(x, 1)
        h, w = ctx.static(x, 2), ctx.static(x, 3)
        c2 = c // (s * s)
        if not p.reverse:
            v = ctx.op("Reshape", [ctx.name(x), ctx.ints("as6", [0, c2, h, s, w, s])])
            v = ctx.op("Transpose", [v], perm=[0, 3, 5, 1, 2, 4])
            ctx.op("Reshape", [v, ctx.ints("shape", [0, c * s * s, h // s, w // s])], step.outputs[0])
            return
        v = ctx.op("Reshape", [ctx.name(x), ctx.ints("as6", [0, s, s, c2, h, w])])
        v = ctx.op("Transpose", [v], perm=[0, 3, 4, 1, 5, 2])
        ctx.op("Reshape", [v, ctx.ints("shape", [0, c2, h * s, w * s])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import reorg
        return [reorg(xs[0], p.stride, p.reverse)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "reorg")
        src.assign(f"{fn}({src.x()}, {p.stride}, {p.reverse})", comment=True)


def _yolo_data(rng, shapes):
    """Logits that give a few confident boxes per map (objectness mostly low)."""
    import numpy as np
    out = []
    for s in shapes:
        a = rng.standard_normal(s).astype(np.float32)
        out.append(a * np.float32(2.0))
    return out


@dataclass(frozen=True)
class YoloV2Params:
    side: int = 13
    num_classes: int = 20
    num_box: int = 5
    coords: int = 4
    confidence_threshold: float = _f32(0.01)   # float32 values, as parse() reads them
    nms_threshold: float = _f32(0.45)
    biases: tuple = ()
    label_map_file: str = ""


def _square(ins, what):
    require_rank(ins, 4, what)
    for s in ins:
        if s[2] != s[3]:
            raise ShapeError(f"{what} reads a square map (side = width, cells side*side); "
                             f"got {s[2]}x{s[3]}")


@register
class YoloDetectionOutput(LayerType):
    """YOLO v2 region decode + class-agnostic NMS: eric612/MobileNet-YOLO
    src/caffe/layers/yolo_detection_output_layer.cpp (Forward_cpu; see
    :func:`protogen.layers.detect_torch.yolo2_detect`). One or two bottoms (the same
    anchors for both); ``side`` is ignored (the code takes the bottom's width);
    ``label_map_file`` only names classes in logs."""
    type = "YoloDetectionOutput"
    param_field = "yolo_detection_output_param"
    Params = YoloV2Params
    n_bottoms = (1, 2)
    schemas = _YOLO_SCHEMAS
    #: rows (image, label, score, box): verify compares them as detection sets
    is_detection_output = True
    examples = (
        Example(params=dict(num_classes=3, num_box=2, confidence_threshold=0.2, nms_threshold=0.45,
                            biases=[1.0, 1.5, 2.5, 2.0]),
                ins=[(1, 16, 5, 5)], data=_yolo_data, skip=("shape",),
                why="the row count is data-dependent (the rule gives the no-detection form)"),
        Example(params=dict(num_classes=2, num_box=1, confidence_threshold=0.99, biases=[1.0, 1.0]),
                ins=[(2, 7, 3, 3)]),
    )

    def opencv_limit(self, p):
        """OpenCV has no YoloDetectionOutput; its Caffe importer does not even get to say so
        (it aborts on the unknown yolo_detection_output_param: 'UnknownField should have at
        least 2 items'), so the skip is declared here."""
        return "has no Caffe layer type 'YoloDetectionOutput'"

    def validate(self, p):
        if p.num_box <= 0 or p.num_classes <= 0:
            raise ProtogenError("YoloDetectionOutput needs num_box > 0 and num_classes > 0")
        if len(p.biases) < 2 * p.num_box:
            raise ProtogenError(f"YoloDetectionOutput needs 2 biases per box: {len(p.biases)} "
                                f"for num_box {p.num_box}")

    def shapes(self, p, ins):
        _square(ins, "YoloDetectionOutput")
        for s in ins:
            c = s[1]
            if c % p.num_box or c // p.num_box < 5 + p.num_classes:
                raise ShapeError(f"YoloDetectionOutput: {c} channels do not hold {p.num_box} boxes "
                                 f"of 5 + {p.num_classes} values")
        return [(1, 1, ins[0][0], 7)]

    def to_onnx(self, ctx, step):
        import numpy as np
        from .detect_onnx import yolo_rows
        p = step.layer.params
        nb, nc = p.num_box, p.num_classes
        parts = []
        for v in step.inputs:
            c, side = ctx.static(v, 1), ctx.static(v, 3)
            length = c // nb
            t = ctx.op("Reshape", [ctx.name(v), ctx.ints("as5", [0, nb, length, side, side])])
            t = ctx.op("Transpose", [t], perm=[0, 3, 4, 1, 2])          # b, j, i, anchor, k

            def part(a, b):
                return ctx.op("Slice", [t, ctx.ints("s", [a]), ctx.ints("e", [b]), ctx.ints("a", [4])])
            fs = ctx.const("side", np.float32(side))
            gx = ctx.const("grid_x", np.arange(side, dtype=np.float32).reshape(1, 1, side, 1, 1))
            gy = ctx.const("grid_y", np.arange(side, dtype=np.float32).reshape(1, side, 1, 1, 1))
            bw = ctx.const("bias_w", np.asarray(p.biases[0::2][:nb], np.float32).reshape(1, 1, 1, nb, 1))
            bh = ctx.const("bias_h", np.asarray(p.biases[1::2][:nb], np.float32).reshape(1, 1, 1, nb, 1))
            cx = ctx.op("Div", [ctx.op("Add", [gx, ctx.op("Sigmoid", [part(0, 1)])]), fs])
            cy = ctx.op("Div", [ctx.op("Add", [gy, ctx.op("Sigmoid", [part(1, 2)])]), fs])
            ww = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [part(2, 3)]), bw]), fs])
            hh = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [part(3, 4)]), bh]), fs])
            prob = ctx.op("Softmax", [part(5, 5 + nc)], axis=-1)
            best = ctx.op("ReduceMax", [prob], axes=[-1], keepdims=1)
            cls = ctx.op("Cast", [ctx.op("ArgMax", [prob], axis=-1, keepdims=1)], to=1)
            conf = ctx.op("Mul", [ctx.op("Sigmoid", [part(4, 5)]), best])
            c6 = ctx.op("Concat", [cls, conf, cx, cy, ww, hh], axis=-1)
            parts.append(ctx.op("Reshape", [c6, ctx.ints("rows6", [-1, 6])]))
        cands = parts[0] if len(parts) == 1 else ctx.op("Concat", parts, axis=0)
        conf = ctx.op("Reshape", [ctx.op("Slice", [cands, ctx.ints("s", [1]), ctx.ints("e", [2]),
                                                   ctx.ints("a", [1])]), ctx.ints("flat", [-1])])
        ok = ctx.op("GreaterOrEqual", [conf, ctx.const("thr", np.float32(p.confidence_threshold))])
        cands = ctx.op("Compress", [cands, ok], axis=0)
        yolo_rows(ctx, cands, ctx.name(step.inputs[0]), p.nms_threshold, step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import yolo2_detect
        return [yolo2_detect(xs, list(p.biases), p.num_classes, p.num_box,
                             p.confidence_threshold, p.nms_threshold)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "yolo2_detect")
        src.assign(f"{fn}([{', '.join(src.xs())}], {[float(b) for b in p.biases]!r}, {p.num_classes}, {p.num_box}, "
                   f"{float(p.confidence_threshold)!r}, {float(p.nms_threshold)!r})", comment=True)


@dataclass(frozen=True)
class YoloV3Params:
    num_classes: int = 20
    num_box: int = 3
    confidence_threshold: float = _f32(0.01)   # float32 values, as parse() reads them
    nms_threshold: float = _f32(0.45)
    biases: tuple = ()
    anchors_scale: tuple = ()
    mask_group_num: int = 2
    mask: tuple = ()


@register
class Yolov3DetectionOutput(LayerType):
    """YOLO v3 decode (one bottom per scale) + class-agnostic NMS: eric612/MobileNet-YOLO
    src/caffe/layers/yolov3_detection_output_layer.cpp (Forward_cpu; see
    :func:`protogen.layers.detect_torch.yolo3_detect`): anchors mask[n + t * groups] with
    groups = len(mask) / mask_group_num, box sizes divided by side * anchors_scale[t]; one
    candidate per class above the threshold."""
    type = "Yolov3DetectionOutput"
    param_field = "yolov3_detection_output_param"
    Params = YoloV3Params
    n_bottoms = (1, None)
    schemas = _YOLO_SCHEMAS
    #: rows (image, label, score, box): verify compares them as detection sets
    is_detection_output = True
    examples = (
        Example(params=dict(num_classes=2, num_box=2, confidence_threshold=0.3, nms_threshold=0.5,
                            biases=[10, 14, 23, 27, 37, 58, 81, 82], anchors_scale=[32, 16],
                            mask_group_num=2, mask=[2, 3, 0, 1]),
                ins=[(1, 14, 3, 3), (1, 14, 6, 6)], data=_yolo_data, skip=("shape",),
                why="the row count is data-dependent (the rule gives the no-detection form)"),
        Example(params=dict(num_classes=1, num_box=1, confidence_threshold=0.999,
                            biases=[10, 14], anchors_scale=[8], mask_group_num=1, mask=[0]),
                ins=[(2, 6, 4, 4)]),
    )

    def opencv_limit(self, p):
        """OpenCV has no Yolov3DetectionOutput (declared here rather than left to the
        importer's error, as for YoloDetectionOutput)."""
        return "has no Caffe layer type 'Yolov3DetectionOutput'"

    def validate(self, p):
        if p.mask_group_num <= 0 or p.num_box <= 0:
            raise ProtogenError("Yolov3DetectionOutput needs mask_group_num > 0 and num_box > 0")
        groups = len(p.mask) // p.mask_group_num
        need = (p.mask_group_num - 1) * groups + p.num_box
        if len(p.mask) < need:
            raise ProtogenError(f"Yolov3DetectionOutput: mask has {len(p.mask)} entries, the "
                                f"anchors of {p.mask_group_num} scales x {p.num_box} boxes need {need}")
        if any(2 * m + 1 >= len(p.biases) for m in p.mask):
            raise ProtogenError("Yolov3DetectionOutput: a mask entry points past the biases")
        if len(p.anchors_scale) < p.mask_group_num:
            raise ProtogenError("Yolov3DetectionOutput needs one anchors_scale per bottom")

    def shapes(self, p, ins):
        _square(ins, "Yolov3DetectionOutput")
        if len(ins) != p.mask_group_num:
            raise ShapeError(f"Yolov3DetectionOutput has {len(ins)} bottoms, mask_group_num is "
                             f"{p.mask_group_num} (Caffe checks they are equal)")
        for s in ins:
            if s[1] != p.num_box * (5 + p.num_classes):
                raise ShapeError(f"Yolov3DetectionOutput: {s[1]} channels, expected num_box x "
                                 f"(5 + num_classes) = {p.num_box * (5 + p.num_classes)}")
        return [(1, 1, ins[0][0], 7)]

    def to_onnx(self, ctx, step):
        import numpy as np
        from .detect_onnx import yolo_rows
        p = step.layer.params
        nb, nc = p.num_box, p.num_classes
        groups = len(p.mask) // p.mask_group_num
        parts = []
        for t_i, v in enumerate(step.inputs):
            side = ctx.static(v, 3)
            length = 5 + nc
            t = ctx.op("Reshape", [ctx.name(v), ctx.ints("as5", [0, nb, length, side, side])])
            t = ctx.op("Transpose", [t], perm=[0, 3, 4, 1, 2])          # b, y, x, anchor, k

            def part(a, b):
                return ctx.op("Slice", [t, ctx.ints("s", [a]), ctx.ints("e", [b]), ctx.ints("a", [4])])
            m = [int(p.mask[k + t_i * groups]) for k in range(nb)]
            fs = ctx.const("side", np.float32(side))
            fscale = ctx.const("scale", np.float32(side * int(p.anchors_scale[t_i])))
            gx = ctx.const("grid_x", np.arange(side, dtype=np.float32).reshape(1, 1, side, 1, 1))
            gy = ctx.const("grid_y", np.arange(side, dtype=np.float32).reshape(1, side, 1, 1, 1))
            bw = ctx.const("bias_w", np.asarray([p.biases[2 * k] for k in m], np.float32).reshape(1, 1, 1, nb, 1))
            bh = ctx.const("bias_h", np.asarray([p.biases[2 * k + 1] for k in m], np.float32).reshape(1, 1, 1, nb, 1))
            cx = ctx.op("Div", [ctx.op("Add", [gx, ctx.op("Sigmoid", [part(0, 1)])]), fs])
            cy = ctx.op("Div", [ctx.op("Add", [gy, ctx.op("Sigmoid", [part(1, 2)])]), fs])
            ww = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [part(2, 3)]), bw]), fscale])
            hh = ctx.op("Div", [ctx.op("Mul", [ctx.op("Exp", [part(3, 4)]), bh]), fscale])
            conf = ctx.op("Mul", [ctx.op("Sigmoid", [part(5, length)]), ctx.op("Sigmoid", [part(4, 5)])])
            # one row per (cell, anchor, class): class, confidence, box
            box = ctx.op("Concat", [cx, cy, ww, hh], axis=-1)                       # .., nb, 4
            shp = ctx.op("Shape", [conf])                                           # .., nb, nc
            box = ctx.op("Expand", [ctx.op("Unsqueeze", [box, ctx.ints("ax", [-2])]),
                                    ctx.op("Concat", [shp, ctx.ints("four", [4])], axis=0)])
            cls = ctx.op("Expand", [ctx.const("classes", np.arange(nc, dtype=np.float32)), shp])
            c6 = ctx.op("Concat", [ctx.op("Unsqueeze", [cls, ctx.ints("ax", [-1])]),
                                   ctx.op("Unsqueeze", [conf, ctx.ints("ax", [-1])]), box], axis=-1)
            parts.append(ctx.op("Reshape", [c6, ctx.ints("rows6", [-1, 6])]))
        cands = parts[0] if len(parts) == 1 else ctx.op("Concat", parts, axis=0)
        conf = ctx.op("Reshape", [ctx.op("Slice", [cands, ctx.ints("s", [1]), ctx.ints("e", [2]),
                                                   ctx.ints("a", [1])]), ctx.ints("flat", [-1])])
        ok = ctx.op("Greater", [conf, ctx.const("thr", np.float32(p.confidence_threshold))])
        cands = ctx.op("Compress", [cands, ok], axis=0)
        yolo_rows(ctx, cands, ctx.name(step.inputs[0]), p.nms_threshold, step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        from .detect_torch import yolo3_detect
        groups = len(p.mask) // p.mask_group_num
        return [yolo3_detect(xs, list(p.biases), list(p.mask), list(p.anchors_scale), p.num_box,
                             groups, p.num_classes, p.confidence_threshold, p.nms_threshold)]

    def torch_source(self, p, src, step):
        from .detect_torch import emit
        fn = emit(src, "yolo3_detect")
        groups = len(p.mask) // p.mask_group_num
        src.assign(f"{fn}([{', '.join(src.xs())}], {[float(b) for b in p.biases]!r}, {[int(m) for m in p.mask]!r}, "
                   f"{[int(a) for a in p.anchors_scale]!r}, {p.num_box}, {groups}, {p.num_classes}, "
                   f"{float(p.confidence_threshold)!r}, {float(p.nms_threshold)!r})", comment=True)


# ----------------------------------------------------------------------------- Region
@dataclass(frozen=True)
class RegionParams:
    coords: int = 4
    classes: int = 20
    num: int = 1


def region_activate(x, coords: int, classes: int, num: int):
    """YOLO v2 Region as openvinotoolkit/training_toolbox_caffe src/caffe/layers/region_layer.cpp
    computes it (Forward_cpu): per image and anchor (channels = num blocks of coords + 1 +
    classes maps), logistic on entries 0 and 1 (x, y) and on entry ``coords`` (objectness),
    softmax over the ``classes`` maps after it at every location; the other coordinates (w, h)
    pass unchanged. No decoding, threshold or NMS (that is the application's, or
    YoloDetectionOutput's, job). Output shape = input shape."""
    import torch
    n = x.shape[0]
    t = x.reshape(n, num, coords + 1 + classes, -1)
    parts = [t[:, :, :2].sigmoid(), t[:, :, 2:coords], t[:, :, coords:coords + 1].sigmoid()]
    if classes:
        parts.append(t[:, :, coords + 1:].softmax(2))
    return torch.cat(parts, 2).reshape(x.shape)


@register
class Region(LayerType):
    """YOLO v2 "Region" of the Caffe YOLO forks, in the form openvinotoolkit/
    training_toolbox_caffe defines (region_param 214: coords, classes, num; semantics:
    :func:`region_activate`). Other forks' Region layers differ and are not read: BirdeeChen/
    caffe_yolo_v2 (boxes_of_each_grid, softmax; transposes the blob), sokeeffe/caffe_yolo (the
    same activation, fields side/num_classes), Cambricon's (decode + NMS for one class)."""
    type = "Region"
    param_field = "region_param"
    Params = RegionParams
    schemas = ("yolo",)
    examples = (
        Example(params=dict(coords=4, classes=3, num=2), ins=[(2, 16, 3, 5)]),
        Example(params=dict(coords=4, classes=20, num=5), ins=[(1, 125, 4, 4)]),
        Example(params=dict(coords=6, classes=2, num=1), ins=[(2, 9, 2, 3)]),
        Example(params=dict(coords=4, classes=0, num=3), ins=[(1, 15, 2, 2)]),
    )

    def validate(self, p):
        if p.num <= 0 or p.classes < 0:
            raise ProtogenError("Region needs region_param.num > 0 and classes >= 0")
        if p.coords < 2:
            raise ProtogenError(f"Region coords {p.coords} < 2: the C++ layer's x/y logistic "
                                "would overlap the objectness entry (not supported)")

    def opencv_limit(self, p):
        """OpenCV's "Region" (modules/dnn/src/layers/region_layer.cpp) is darknet's region
        *decode* (boxes, class scores, NMS) configured by its Darknet importer: its Caffe
        importer ignores region_param and the layer then asserts its anchors blob. Its decode
        is still used as an independent check of the activations (tests/layers/test_region.py)."""
        return ("has no Caffe form of Region: its Region is darknet's decode layer (anchors blob "
                "from the Darknet importer; region_param is not read)")

    def shapes(self, p, ins):
        require_rank(ins, 4, "Region")
        c = ins[0][1]
        if c != p.num * (p.coords + 1 + p.classes):
            raise ShapeError(f"Region: {c} channels, region_param says num x (coords + 1 + classes) "
                             f"= {p.num * (p.coords + 1 + p.classes)} (the C++ layer indexes by the latter)")
        return [tuple(ins[0])]

    def to_onnx(self, ctx, step):
        p = step.layer.params
        x = ctx.name(step.inputs[0])
        t = ctx.op("Reshape", [x, ctx.ints("as4", [0, p.num, p.coords + 1 + p.classes, -1])])

        def part(a, b):
            return ctx.op("Slice", [t, ctx.ints("s", [a]), ctx.ints("e", [b]), ctx.ints("a", [2])])
        parts = [ctx.op("Sigmoid", [part(0, 2)])]
        if p.coords > 2:
            parts.append(part(2, p.coords))
        parts.append(ctx.op("Sigmoid", [part(p.coords, p.coords + 1)]))
        if p.classes:
            parts.append(ctx.op("Softmax", [part(p.coords + 1, p.coords + 1 + p.classes)], axis=2))
        y = ctx.op("Concat", parts, axis=2)
        ctx.op("Reshape", [y, ctx.op("Shape", [x])], step.outputs[0])

    def torch_forward(self, p, xs, blobs, n_tops=1):
        return [region_activate(xs[0], p.coords, p.classes, p.num)]

    def torch_source(self, p, src, step):
        import inspect
        if "yolo.region_activate" not in src.uses:
            src.uses.add("yolo.region_activate")
            for ln in inspect.getsource(region_activate).rstrip("\n").split("\n"):
                src.line(ln)
        src.assign(f"region_activate({src.x()}, {p.coords}, {p.classes}, {p.num})", comment=True)

