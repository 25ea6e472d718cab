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


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run a module's tests with one torch intra-op thread (import this fixture into the module
    to apply it): detection references loop over boxes with many small tensor ops, and on a
    loaded machine torch's intra-op threads cost ~25x per op."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
