"""protogen.detections: detection rows compared as sets (count, image, label, score, box)."""
from __future__ import annotations

import numpy as np
import pytest

from protogen.detections import as_rows, compare_detections, count_detections, sort_rows

ROWS = np.array([[0, 1, 0.9, 0.1, 0.1, 0.4, 0.4],
                 [0, 1, 0.5, 0.5, 0.5, 0.9, 0.9],
                 [0, 2, 0.7, 0.2, 0.3, 0.6, 0.8],
                 [1, 1, 0.8, 0.0, 0.0, 1.0, 1.0]])


def test_same_rows_in_another_order_agree():
    got = ROWS[[3, 1, 2, 0]].reshape(1, 1, -1, 7)
    d = compare_detections(got, ROWS.reshape(1, 1, -1, 7))
    assert d.ok and d.count_got == d.count_want == 4 and d.max_box_err == 0


def test_round_off_within_tolerance_agrees():
    got = ROWS + 3e-5
    got[:, :2] = ROWS[:, :2]
    d = compare_detections(got, ROWS, tol=1e-4)
    assert d.ok and 2e-5 < d.max_box_err < 4e-5


def test_equal_scores_paired_by_box():
    a = np.array([[0, 1, 0.5, 0.1, 0.1, 0.2, 0.2], [0, 1, 0.5, 0.6, 0.6, 0.7, 0.7]])
    assert compare_detections(a[::-1], a).ok


@pytest.mark.parametrize("change,what", [
    (lambda r: r[:-1], "3 detections, expected 4"),
    (lambda r: np.vstack([r, r[:1]]), "5 detections, expected 4"),
    (lambda r: np.where(np.arange(7) == 1, 3, r) * (np.arange(4)[:, None] == 2) + r * (np.arange(4)[:, None] != 2), "no match"),
    (lambda r: r + np.where(np.arange(7) == 3, 1e-3, 0), "box differs"),
    (lambda r: r + np.where(np.arange(7) == 2, 1e-3, 0), "no match"),
    (lambda r: np.where(np.arange(7) == 0, 1 - r, r), "no match"),
])
def test_differences_are_reported(change, what):
    d = compare_detections(change(ROWS.copy()), ROWS, tol=1e-4)
    assert not d.ok
    assert what in d.summary()


def test_empty_marker_rows_and_helpers():
    empty = np.array([[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]])
    assert compare_detections(empty[::-1], empty).ok
    assert not compare_detections(empty[:1], empty).ok
    assert count_detections(empty) == 0 and count_detections(ROWS) == 4
    assert sort_rows(ROWS[::-1]).tolist() == sort_rows(ROWS).tolist()
    assert as_rows(np.zeros((1, 1, 0, 7))).shape == (0, 7)
    with pytest.raises(ValueError):
        as_rows(np.zeros(8))
    assert not compare_detections(np.full((1, 7), np.nan), ROWS[:1]).ok


def test_opencv_zero_padding():
    padded = np.vstack([ROWS, np.zeros((3, 7))])
    assert not compare_detections(padded, ROWS).ok
    assert compare_detections(padded, ROWS, zero_padded=True).ok
    empty = np.array([[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]])
    assert compare_detections(np.zeros((200, 7)), empty, zero_padded=True).ok
    assert not compare_detections(np.zeros((2, 7)), ROWS, zero_padded=True).ok


def test_compare_for_verify():
    from protogen.detections import compare_for_verify
    mabs, mrel, ok, note = compare_for_verify(ROWS, ROWS[::-1] + 0, 1e-4)
    assert ok and mabs == 0 and "4 detections match" in note
    bad = ROWS.copy()
    bad[0, 4] += 0.01
    mabs, mrel, ok, note = compare_for_verify(ROWS, bad, 1e-4)
    assert not ok and abs(mabs - 0.01) < 1e-9 and "box differs" in note
    mabs, mrel, ok, note = compare_for_verify(ROWS, ROWS[:2], 1e-4)
    assert not ok and mabs != mabs and "2 vs 4" in note
    empty = np.array([[0, -1, -1, -1, -1, -1, -1]])
    assert "weak" in compare_for_verify(empty, empty, 1e-4)[3]
    assert compare_for_verify(ROWS, np.vstack([ROWS, np.zeros((5, 7))]), 1e-4, zero_padded=True)[2]
