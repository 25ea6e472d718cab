"""outputs/ holds the generated prototxt of every zoo net; it must match what the code emits."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from protogen import zoo

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = REPO / "outputs"


def _gen():
    spec = importlib.util.spec_from_file_location("_gen_outputs", REPO / "scripts" / "gen_outputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen()


@pytest.mark.parametrize("model", sorted(zoo.models()))
def test_outputs_up_to_date(model):
    problems = []
    for fname, text in GEN.generate_model(model).items():
        path = OUTPUTS / model / fname
        if not path.exists():
            problems.append(f"outputs/{model}/{fname} is missing")
        elif path.read_text() != text:
            problems.append(f"outputs/{model}/{fname} is stale")
    assert not problems, "; ".join(problems) + " -- run `make outputs` (scripts/gen_outputs.py)"


def test_solver_points_at_train_val():
    text = GEN.generate_model("shufflenet_v1")["solver.prototxt"]
    assert 'net: "train_val.prototxt"' in text
    # ShuffleNet v1 family hint: poly policy, base_lr 0.5
    assert 'lr_policy: "poly"' in text and "base_lr: 0.5" in text
