"""Comparing detection lists (SSD DetectionOutput rows) between runtimes.

A detection output is a set of rows (image, label, score, xmin, ymin, xmax, ymax) whose count
depends on the data, so an element-wise comparison of two runs is meaningless when one
runtime orders equal scores differently or when a score sits next to a threshold. Two runs
agree here when they give the same number of rows and the rows can be paired, within each
(image, label), so that paired rows have the same image and label and scores and
coordinates within ``tol`` (absolute, scaled by the largest magnitude of the reference
coordinates when it exceeds 1: normalised boxes lie in about [0, 1]). Rows are paired in
order of score (descending), each with the unpaired row of the other run that is closest
among those of equal image and label whose score is within ``tol``.

Caffe's "no detection" output, one row (i, -1, -1, -1, -1, -1, -1) per image, is compared
like any other row. OpenCV's dnn (DetectionOutputLayer) writes its detections into a blob
pre-sized to keep_top_k rows per image and leaves the unused rows all zero, also when there is
no detection at all: ``zero_padded=True`` drops all-zero rows of ``got`` and Caffe's -1 marker
rows of ``want`` before comparing (for comparing OpenCV with Caffe's convention). Only numpy is
needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DetectionDiff:
    """The outcome of :func:`compare_detections`."""
    ok: bool
    count_got: int
    count_want: int
    max_score_err: float = 0.0
    max_box_err: float = 0.0
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        head = (f"{self.count_got} vs {self.count_want} detections, max score err "
                f"{self.max_score_err:.3g}, max box err {self.max_box_err:.3g}")
        return head if self.ok else head + ": " + "; ".join(self.problems[:3])


def as_rows(a) -> np.ndarray:
    """A detection blob of any leading shape ([1, 1, N, 7] in Caffe) as (N, 7) float64."""
    a = np.asarray(a, np.float64)
    if a.size % 7:
        raise ValueError(f"a detection blob has a multiple of 7 values, got shape {a.shape}")
    return a.reshape(-1, 7)


def sort_rows(rows) -> np.ndarray:
    """Rows ordered by image, label, score (descending), then the box."""
    r = as_rows(rows)
    if not len(r):
        return r
    order = np.lexsort((r[:, 6], r[:, 5], r[:, 4], r[:, 3], -r[:, 2], r[:, 1], r[:, 0]))
    return r[order]


def compare_detections(got, want, tol: float = 1e-4, zero_padded: bool = False) -> DetectionDiff:
    """Compare detection rows ``got`` against the reference ``want`` (see the module doc)."""
    g, w = sort_rows(got), sort_rows(want)
    if zero_padded:
        g = g[np.any(g != 0, axis=1)]
        w = w[w[:, 1] >= 0]
    res = DetectionDiff(ok=True, count_got=len(g), count_want=len(w))
    if not (np.isfinite(g).all() and np.isfinite(w).all()):
        res.ok = False
        res.problems.append("non-finite values")
        return res
    if len(g) != len(w):
        res.ok = False
        res.problems.append(f"{len(g)} detections, expected {len(w)}")
    scale = max(1.0, float(np.abs(w[:, 3:]).max()) if len(w) else 1.0)
    box_tol = tol * scale
    used = np.zeros(len(g), bool)
    for i, row in enumerate(w):
        same = (~used) & (g[:, 0] == row[0]) & (g[:, 1] == row[1]) if len(g) else np.zeros(0, bool)
        cand = np.nonzero(same & (np.abs(g[:, 2] - row[2]) <= tol))[0] if len(g) else []
        if not len(cand):
            res.ok = False
            res.problems.append(f"no match for image {row[0]:g} label {row[1]:g} score {row[2]:.6g}")
            continue
        dist = np.abs(g[cand, 3:] - row[3:]).max(axis=1)
        j = cand[int(np.argmin(dist))]
        used[j] = True
        res.max_score_err = max(res.max_score_err, float(abs(g[j, 2] - row[2])))
        res.max_box_err = max(res.max_box_err, float(dist.min()))
        if dist.min() > box_tol:
            res.ok = False
            res.problems.append(f"image {row[0]:g} label {row[1]:g} score {row[2]:.6g}: box differs "
                                f"by {dist.min():.3g}")
    return res


def count_detections(rows) -> int:
    """Rows that are detections (Caffe's empty marker rows have label -1)."""
    r = as_rows(rows)
    return int(np.sum(r[:, 1] >= 0))


def compare_for_verify(ref, got, tolerance: float, zero_padded: bool = False):
    """``protogen verify``'s comparison of a detection output (a layer type with
    ``is_detection_output``): ``(max abs err, max rel err, ok, note)`` where the errors are the
    largest score/box difference of paired rows (relative to the coordinates' scale, at least
    1) and NaN when the rows cannot be paired. ``zero_padded`` for OpenCV's pre-sized output."""
    d = compare_detections(got, ref, tol=tolerance, zero_padded=zero_padded)
    r = as_rows(ref)
    scale = max(1.0, float(np.abs(r[:, 3:]).max()) if len(r) else 1.0)
    err = max(d.max_score_err, d.max_box_err)
    n = count_detections(ref)
    if d.ok:
        note = f"{n} detections match" + ("" if n else " (none in the reference: a weak check)")
        return err, err / scale, True, note
    if d.count_got != d.count_want:
        return math.nan, math.nan, False, f"detections differ: {d.summary()}"
    return err, err / scale, False, f"detections differ: {d.summary()}"
