"""Shared test constants and helpers (one definition each)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the real third-party Caffe files; CI lays ../shared beside the checkout
CORPUS = REPO.parent / "shared" / "corpus"
#: the one skip reason for tests that read the corpus
CORPUS_SKIP_REASON = "needs ../shared/corpus (real third-party Caffe files) beside the checkout"
needs_corpus = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason=CORPUS_SKIP_REASON)


def rel_err(a, b) -> float:
    """Max abs difference of ``a`` and ``b`` relative to ``b``'s scale (max |b|, at least 1e-12)."""
    import numpy as np
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12)) if b.size else 0.0
