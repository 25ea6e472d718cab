"""Solver prototxt rendered from ``templates/solver.prototxt.j2`` and checked by the schema."""
from __future__ import annotations

from .errors import ProtogenError
from .templating import render

#: ImageNet defaults; a model may override any of them through SOLVER_HINTS
DEFAULTS = dict(test_iter=1000, test_interval=4000, base_lr=0.1, lr_policy="step", gamma=0.1,
                stepsize=100000, power=1.0, display=40, max_iter=450000, momentum=0.9,
                weight_decay=1e-4, snapshot=10000, solver_mode="GPU")

#: per-family settings from the papers / reference Caffe releases
SOLVER_HINTS = {
    "googlenet": dict(base_lr=0.01, lr_policy="poly", power=0.5, max_iter=2400000, weight_decay=2e-4),
    "mobilenet_v1": dict(base_lr=0.1, weight_decay=4e-5),
    "mobilenet_v2": dict(base_lr=0.045, lr_policy="step", gamma=0.98, stepsize=5000, weight_decay=4e-5),
    "shufflenet_v1": dict(base_lr=0.5, lr_policy="poly", power=1.0, max_iter=300000, weight_decay=4e-5),
    "shufflenet_v2": dict(base_lr=0.5, lr_policy="poly", power=1.0, max_iter=300000, weight_decay=4e-5),
}


def solver_prototxt(model: str, net_path: str, family: str | None = None, **overrides) -> str:
    ctx = dict(DEFAULTS)
    ctx.update(SOLVER_HINTS.get(family or model, {}))
    ctx.update({k: v for k, v in overrides.items() if v is not None})
    ctx.setdefault("snapshot_prefix", f"snapshots/{model}")
    text = render("solver.prototxt.j2", model=model, net=net_path, **ctx)
    # the schema is the judge: a template typo must not produce an unreadable solver
    from google.protobuf import text_format
    from .caffe import pb
    try:
        text_format.Parse(text, pb.SolverParameter())
    except text_format.ParseError as e:
        raise ProtogenError(f"internal error: rendered solver does not parse: {e}") from None
    return text
