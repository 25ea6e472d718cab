"""Issue 13: `protogen convert X --verify` and `protogen verify X` give the same verdict on every
net of the shared corpus that both run (the same seeded weights, BatchNorm calibration
included, the same checks). The table of converting files and their options is
tests/converter/test_corpus.py's; nets above its numeric bound are left to shapes there."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from protogen.caffe.loader import load_model  # noqa: E402
from protogen.cli import main  # noqa: E402
from tests.converter.test_corpus import (EXPECTED, NUMERIC_MAX_WEIGHTS, SLOW_NUMERIC,  # noqa: E402
                                         _n_weights, _options, _refused)
from tests.helpers import CORPUS, needs_corpus  # noqa: E402

pytestmark = [needs_corpus, pytest.mark.slow]

ROWS = sorted(r for r, w in EXPECTED.items() if not _refused(w) and r not in SLOW_NUMERIC)


def _cli_options(opts: dict) -> list[str] | None:
    """The CLI spelling of a row's load options (None: the CLI has no such option)."""
    out = []
    for k, v in opts.items():
        if k == "input_shape":
            out += ["--input-shape", str(v)]
        elif k == "phase":
            out += ["--phase", str(v)]
        else:
            return None
    return out


@pytest.mark.parametrize("rel", ROWS)
def test_convert_verify_and_verify_agree(rel, tmp_path, capsys):
    path = CORPUS / rel
    if not path.exists():
        pytest.skip("file missing from this corpus copy")
    opts = _options(EXPECTED[rel])
    cli = _cli_options(opts)
    if cli is None:
        pytest.skip(f"loads with {sorted(opts)}, which the CLI does not take")
    n = _n_weights(load_model(path, **opts))
    if n > NUMERIC_MAX_WEIGHTS:
        pytest.skip(f"{n} weights: above the numeric bound of tests/converter/test_corpus.py")
    rc_convert = main(["convert", str(path), "-o", str(tmp_path / "x.onnx"), "--verify", *cli])
    out_convert = capsys.readouterr().out
    rc_verify = main(["verify", str(path), *cli])
    out_verify = capsys.readouterr().out
    assert rc_convert in (0, 1) and rc_verify in (0, 1), (out_convert, out_verify)
    assert rc_convert == rc_verify, f"convert --verify:\n{out_convert}\nverify:\n{out_verify}"
