"""Test-suite configuration: markers and the shared corpus note."""
from __future__ import annotations

from tests.helpers import CORPUS, CORPUS_SKIP_REASON


def pytest_report_header(config):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return [f"corpus: absent ({CORPUS}); tests that read it are skipped: {CORPUS_SKIP_REASON}"]
    return [f"corpus: {CORPUS}"]
