"""Docs name files that exist (tests were moved into tests/<module>/, the CLI into
protogen/cli/): every repository path a checked doc mentions is there."""
from __future__ import annotations

import re

import pytest

from tests.helpers import REPO

DOCS = ["docs/foundation.md", "docs/opencv4-tests.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_paths_in_docs_exist(doc):
    text = (REPO / doc).read_text()
    paths = set(re.findall(r"\b(?:tests|protogen)/[\w/]+\.py\b", text))
    assert paths, doc
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"{doc} names files that do not exist: {missing}"
