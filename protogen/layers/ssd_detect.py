"""SSD's DetectionOutput (weiliu89/caffe fork): decode the box regressions against the priors,
per-class greedy NMS, keep_top_k across classes, rows (image, label, score, xmin, ymin, xmax,
ymax) in a (1, 1, N, 7) blob.

semantics: weiliu89/caffe src/caffe/layers/detection_output_layer.cpp (Forward_cpu) and
src/caffe/util/bbox_util.cpp (DecodeBBox, GetMaxScoreIndex, ApplyNMSFast, JaccardOverlap).
The facts this module relies on:

* loc is per image, per prior, per loc class (1 when share_location), 4 values; conf per
  image, per prior, per class; the prior blob holds num_priors*4 box values then as many
  variances (its axis 2 is num_priors*4);
* candidates of one class: score > confidence_threshold (strict; -FLT_MAX when unset),
  stable-sorted by score descending (ties: lower prior index first), the first top_k kept,
  then greedy NMS: a candidate is kept when its overlap with every kept box is <=
  the threshold (eta < 1 lowers the threshold after each keep while it is > 0.5);
* JaccardOverlap of normalised boxes has no +1; a box with xmax < xmin or ymax < ymin has
  size 0 and overlaps nothing;
* keep_top_k > -1 and more detections than that: the keep_top_k best scores of the image
  survive (Caffe's std::sort leaves the order of equal scores unspecified; here ties go to the
  lower label, then NMS order);
* rows are ordered by image, label ascending, then score descending; no detection at all in
  the batch gives one row (i, -1, -1, -1, -1, -1, -1) per image.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from .._lazy import numpy as np

from ..errors import ProtogenError, ShapeError
from .base import Example, LayerType, register

FLT_MAX = 3.4028234663852886e38
CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


def caffe_detection_output(loc, conf, prior, num_classes: int, share_location: bool = True,
                           background_label_id: int = 0, nms_threshold: float = 0.3,
                           top_k: int = -1, eta: float = 1.0, code_type: str = "CORNER",
                           variance_encoded_in_target: bool = False, keep_top_k: int = -1,
                           confidence_threshold: float = -3.4028234663852886e38,
                           arm_conf=None, arm_loc=None, objectness_score: float = 0.01):
    """Caffe SSD DetectionOutput (weiliu89/caffe detection_output_layer.cpp) on tensors;
    with ``arm_conf``/``arm_loc``, RefineDet's form (sfzhang15/RefineDet)."""
    import torch
    # no gradient (Caffe's Backward is not implemented either); keeps float() quiet
    loc, conf, prior = loc.detach(), conf.detach(), prior.detach()
    arm_conf = None if arm_conf is None else arm_conf.detach()
    arm_loc = None if arm_loc is None else arm_loc.detach()
    n, num_priors = loc.shape[0], prior.shape[2] // 4
    n_loc = 1 if share_location else num_classes
    loc = loc.reshape(n, num_priors, n_loc, 4)
    conf = conf.reshape(n, num_priors, num_classes)
    pr = prior.reshape(-1)[: 2 * num_priors * 4].reshape(2, num_priors, 1, 4)
    var = torch.ones_like(pr[0]) if variance_encoded_in_target else pr[1]

    def decode(pb, offsets):
        t = var * offsets
        pw, ph = pb[..., 2] - pb[..., 0], pb[..., 3] - pb[..., 1]
        if code_type == "CORNER":
            return pb + t
        if code_type == "CORNER_SIZE":
            return pb + t * torch.stack([pw, ph, pw, ph], -1)
        cx = t[..., 0] * pw + (pb[..., 0] + pb[..., 2]) / 2                # CENTER_SIZE
        cy = t[..., 1] * ph + (pb[..., 1] + pb[..., 3]) / 2
        w, h = torch.exp(t[..., 2]) * pw, torch.exp(t[..., 3]) * ph
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)

    pb = pr[0]
    if arm_loc is not None:         # RefineDet: priors refined by the ARM's offsets first
        pb = decode(pb, arm_loc.reshape(n, num_priors, n_loc, 4))
    boxes = decode(pb, loc)                                          # (n, P, n_loc, 4)
    if arm_conf is not None:        # RefineDet: anchors the ARM calls background
        drop = arm_conf.reshape(n, num_priors, 2)[:, :, 1] < objectness_score
        bg = torch.zeros(num_classes, dtype=conf.dtype)
        if 0 <= background_label_id < num_classes:
            bg[background_label_id] = 1.0
        conf = torch.where(drop[:, :, None], bg, conf)

    def overlaps(b):                # JaccardOverlap for every pair of rows of b (K, 4)
        size = torch.where((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]), torch.zeros_like(b[:, 0]),
                           (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        x0 = torch.maximum(b[:, None, 0], b[None, :, 0])
        y0 = torch.maximum(b[:, None, 1], b[None, :, 1])
        iw = torch.minimum(b[:, None, 2], b[None, :, 2]) - x0
        ih = torch.minimum(b[:, None, 3], b[None, :, 3]) - y0
        disjoint = ((b[None, :, 0] > b[:, None, 2]) | (b[None, :, 2] < b[:, None, 0])
                    | (b[None, :, 1] > b[:, None, 3]) | (b[None, :, 3] < b[:, None, 1]))
        inter = iw * ih
        iou = inter / (size[:, None] + size[None, :] - inter)
        return torch.where(disjoint | (iw <= 0) | (ih <= 0), torch.zeros_like(iou), iou)

    rows = []
    for i in range(n):
        found = []                  # (label, [prior indices in NMS order])
        for c in range(num_classes):
            if c == background_label_id:
                continue
            scores = conf[i, :, c]
            bx = boxes[i, :, 0 if share_location else c]
            cand = torch.nonzero(scores > confidence_threshold).reshape(-1)
            order = torch.sort(scores[cand], descending=True, stable=True).indices
            cand = cand[order]
            if -1 < top_k < cand.numel():
                cand = cand[:top_k]
            iou = overlaps(bx[cand]).tolist()
            kept, thr = [], nms_threshold
            for a in range(cand.numel()):
                keep = all(iou[a][k] <= thr for k in kept)
                if keep:
                    kept.append(a)
                    if eta < 1 and thr > 0.5:      # float adaptive_threshold *= float eta
                        thr = float(torch.tensor(thr, dtype=torch.float32) * torch.tensor(eta, dtype=torch.float32))
            found.append((c, [int(cand[a]) for a in kept]))
        dets = [(float(conf[i, j, c]), c, j) for c, idx in found for j in idx]
        if -1 < keep_top_k < len(dets):
            order = sorted(range(len(dets)), key=lambda d: -dets[d][0])     # stable
            chosen = [dets[d] for d in order[:keep_top_k]]
            dets = [d for c, _ in found for d in chosen if d[1] == c]       # label ascending
        for _, c, j in dets:
            b = boxes[i, j, 0 if share_location else c]
            rows.append(torch.cat([torch.stack([torch.tensor(float(i), dtype=b.dtype),
                                                torch.tensor(float(c), dtype=b.dtype),
                                                conf[i, j, c].to(b.dtype)]), b]))
    if not rows:
        out = torch.full((n, 7), -1.0, dtype=loc.dtype)
        out[:, 0] = torch.arange(n, dtype=loc.dtype)
    else:
        out = torch.stack(rows).to(loc.dtype)
    return out.reshape(1, 1, -1, 7)


@dataclass(frozen=True)
class DetectionOutputParams:
    num_classes: int = 0
    share_location: bool = True
    background_label_id: int = 0
    nms_threshold: float = 0.3
    top_k: int | None = None            # nms_param.top_k; None = -1 (no limit)
    eta: float = 1.0
    code_type: str = "CORNER"
    variance_encoded_in_target: bool = False
    keep_top_k: int = -1
    confidence_threshold: float | None = None      # None = -FLT_MAX
    objectness_score: float = 0.01                 # RefineDet (4/5 bottoms)

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`caffe_detection_output`."""
        return dict(num_classes=self.num_classes, share_location=self.share_location,
                    background_label_id=self.background_label_id,
                    nms_threshold=float(np.float32(self.nms_threshold)),
                    top_k=-1 if self.top_k is None else int(self.top_k),
                    eta=float(np.float32(self.eta)), code_type=self.code_type,
                    variance_encoded_in_target=self.variance_encoded_in_target,
                    keep_top_k=int(self.keep_top_k),
                    confidence_threshold=-FLT_MAX if self.confidence_threshold is None
                    else float(np.float32(self.confidence_threshold)),
                    objectness_score=float(np.float32(self.objectness_score)))


_TOP = ("num_classes", "share_location", "background_label_id", "code_type",
        "variance_encoded_in_target", "keep_top_k", "confidence_threshold", "objectness_score")
_NMS = ("nms_threshold", "top_k", "eta")


def _det_data(rng, shapes):
    """loc small offsets, conf probabilities, priors (valid boxes); RefineDet's arm_conf as
    probabilities, arm_loc small offsets."""
    loc = rng.standard_normal(shapes[0]) * 0.5
    conf = rng.uniform(0.0, 1.0, shapes[1])
    n_p = shapes[2][2] // 4
    c = rng.uniform(0.1, 0.9, (n_p, 2))
    wh = rng.uniform(0.05, 0.5, (n_p, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).reshape(-1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], n_p)
    arm = [rng.uniform(0.0, 1.0, s) for s in shapes[3:4]] + [rng.standard_normal(s) * 0.5 for s in shapes[4:]]
    return [loc, conf, np.stack([boxes, var])[None]] + arm


@register
class DetectionOutput(LayerType):
    __doc__ = __doc__
    type = "DetectionOutput"
    schemas = ("ssd",)
    param_field = "detection_output_param"
    Params = DetectionOutputParams
    #: RefineDet adds arm_conf (4th) and arm_loc (5th)
    n_bottoms = (3, 5)
    #: the output is a list of detections (image, label, score, box): verify compares it as such
    is_detection_output = True
    benign_param_fields = LayerType.benign_param_fields | {
        "save_output_param", "visualize", "visualize_threshold", "save_file"}
    examples = (
        Example(params=dict(num_classes=3, share_location=True, background_label_id=0,
                            nms_param=dict(nms_threshold=0.45, top_k=10), code_type="CENTER_SIZE",
                            keep_top_k=8, confidence_threshold=0.3),
                ins=[(2, 24), (2, 18), (1, 2, 24)], data=_det_data, skip=("shape",),
                why="the number of detections depends on the data (Caffe reshapes at forward)"),
        Example(params=dict(num_classes=3, share_location=False, background_label_id=-1,
                            nms_param=dict(nms_threshold=0.3), code_type="CORNER",
                            confidence_threshold=0.5),
                ins=[(2, 36), (2, 9), (1, 2, 12)], data=_det_data, skip=("shape",),
                why="the number of detections depends on the data (Caffe reshapes at forward)"),
        Example(params=dict(num_classes=3, nms_param=dict(nms_threshold=0.45, top_k=20), code_type="CENTER_SIZE",
                            keep_top_k=10, confidence_threshold=0.2, objectness_score=0.4),
                ins=[(2, 40), (2, 30), (1, 2, 40), (2, 20), (2, 40)], data=_det_data, skip=("shape",),
                why="the number of detections depends on the data (Caffe reshapes at forward)"),
    )

    # ------------------------------------------------------------------ params
    def parse(self, lp):
        m = lp.detection_output_param
        kw = {}
        for f in _TOP:
            if m.HasField(f):
                v = getattr(m, f)
                kw[f] = m.DESCRIPTOR.fields_by_name[f].enum_type.values_by_number[v].name \
                    if f == "code_type" else v
        if m.HasField("nms_param"):
            for f in _NMS:
                if m.nms_param.HasField(f):
                    kw[f] = getattr(m.nms_param, f)
        p = DetectionOutputParams(**kw)
        self.validate(p)
        return p

    def unsupported(self, lp):
        m = lp.detection_output_param
        bad = [f"detection_output_param.{fd.name} is not supported" for fd, _ in m.ListFields()
               if fd.name not in _TOP + ("nms_param",) and fd.name not in self.benign_param_fields]
        if m.HasField("nms_param"):
            bad += [f"detection_output_param.nms_param.{fd.name} is not supported"
                    for fd, _ in m.nms_param.ListFields() if fd.name not in _NMS]
        return bad

    #: written even at Caffe's default: OpenCV's importer requires them
    _ALWAYS = frozenset({"share_location", "background_label_id", "code_type", "keep_top_k"})

    def write(self, p, lp):
        m = lp.detection_output_param
        d = DetectionOutputParams()
        m.num_classes = p.num_classes
        for f in _TOP[1:]:
            v = getattr(p, f)
            if v is not None and (v != getattr(d, f) or f in self._ALWAYS):
                setattr(m, f, m.DESCRIPTOR.fields_by_name[f].enum_type.values_by_name[v].number
                        if f == "code_type" else v)
        for f in _NMS:
            v = getattr(p, f)
            if v is not None and (f == "nms_threshold" or v != getattr(d, f)):
                setattr(m.nms_param, f, v)

    def validate(self, p):
        if p.num_classes <= 0:
            raise ProtogenError("DetectionOutput needs num_classes > 0")
        if p.nms_threshold < 0:
            raise ProtogenError("DetectionOutput nms_threshold must be non-negative")
        if not 0 < p.eta <= 1:
            raise ProtogenError("DetectionOutput nms_param.eta must be in (0, 1]")
        if p.code_type not in CODE_TYPES:
            raise ProtogenError(f"DetectionOutput code_type {p.code_type} is unknown")

    # ------------------------------------------------------------------ shapes
    def shapes(self, p, ins):
        loc, conf, prior = ins[:3]
        if len(prior) < 3 or prior[2] % 4:
            raise ShapeError(f"DetectionOutput prior blob {prior} has no axis 2 of num_priors*4")
        n_p = prior[2] // 4
        n_loc = 1 if p.share_location else p.num_classes
        if loc[0] != conf[0]:
            raise ShapeError(f"DetectionOutput loc and conf batch sizes differ: {loc}, {conf}")
        if int(np.prod(loc[1:])) != n_p * n_loc * 4:
            raise ShapeError(f"DetectionOutput: loc {loc} does not hold {n_p} priors x {n_loc} x 4")
        if int(np.prod(conf[1:])) != n_p * p.num_classes:
            raise ShapeError(f"DetectionOutput: conf {conf} does not hold {n_p} priors x {p.num_classes} classes")
        if len(ins) > 3 and int(np.prod(ins[3][1:])) != n_p * 2:
            raise ShapeError(f"DetectionOutput: arm_conf {ins[3]} does not hold {n_p} priors x 2")
        if len(ins) > 4 and not p.share_location:
            raise ShapeError("DetectionOutput with arm_loc (RefineDet) needs share_location")
        if len(ins) > 4 and int(np.prod(ins[4][1:])) != n_p * n_loc * 4:
            raise ShapeError(f"DetectionOutput: arm_loc {ins[4]} does not hold {n_p} priors x {n_loc} x 4")
        # the row count is known only at forward (Caffe's Reshape says (1, 1, 1, 7)); the rule
        # gives the no-detection form (1, 1, N, 7), N = batch, as the YOLO/R-CNN detection types
        # do: the row axis follows the batch and is symbolic in ONNX
        return [(1, 1, loc[0], 7)]

    # ------------------------------------------------------------------ torch
    def torch_forward(self, p, xs, blobs, n_tops=1):
        arm = dict(arm_conf=xs[3] if len(xs) > 3 else None, arm_loc=xs[4] if len(xs) > 4 else None)
        return [caffe_detection_output(*xs[:3], **p.kwargs(), **arm)]

    def torch_source(self, p, src, step):
        fn = src.attr("detect")
        for line in inspect.getsource(caffe_detection_output).splitlines():
            src.init_lines.append(line)
        src.init_lines.append(f"self.{fn} = caffe_detection_output  # {step.layer.name} (DetectionOutput)")
        kw = ", ".join(f"{k}={v!r}" for k, v in p.kwargs().items())
        xs = src.xs()
        arm = "".join(f", {k}={x}" for k, x in zip(("arm_conf", "arm_loc"), xs[3:]))
        src.assign(f"self.{fn}({', '.join(xs[:3])}, {kw}{arm})")

    # ------------------------------------------------------------------ ONNX
    def to_onnx(self, ctx, step):
        from .ssd_onnx import detection_output_onnx
        detection_output_onnx(ctx, step, step.layer.params)     # eta < 1: ssd_onnx.adaptive_nms
