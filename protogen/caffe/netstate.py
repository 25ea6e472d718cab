"""Caffe's layer selection by NetState (``Net::FilterNet`` / ``StateMeetsRule`` in
BVLC/caffe src/caffe/net.cpp), applied to the NetParameter BEFORE the graph is built, so that
layers of another phase, stage or level are never validated (a TEST-only Accuracy reading a
``label`` that only TRAIN provides does not stop ``--phase train``).

Rules, as Caffe applies them to each layer:

* a layer with no ``include`` rule starts included, one with ``include`` rules starts excluded;
* each ``exclude`` rule the state meets excludes it; each ``include`` rule it meets includes it;
* a rule is met when its phase (if set) equals the state's, the state's level lies within
  ``min_level``/``max_level`` (if set), every ``stage`` is among the state's stages and no
  ``not_stage`` is.

The state is ``phase`` (default TEST, Caffe's NetState default), ``level`` and ``stages``
(defaults: the net's own ``state`` field, else 0 and none).
"""
from __future__ import annotations

from ..errors import ProtogenError


def _meets(rule, phase: int, level: int, stages: set) -> bool:
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def included(lp, phase: int, level: int, stages: set) -> bool:
    """Whether Caffe instantiates layer ``lp`` in the given state."""
    keep = len(lp.include) == 0
    for r in lp.exclude:
        if _meets(r, phase, level, stages):
            keep = False
    for r in lp.include:
        if _meets(r, phase, level, stages):
            keep = True
    return keep


def has_rules(net) -> bool:
    return any(len(lp.include) or len(lp.exclude) for lp in net.layer)


def filter_net(net, phase: str | None = None, level: int | None = None, stages=None,
               file: str | None = None) -> str | None:
    """Keep only the layers Caffe instantiates in the state (phase, level, stages) and clear
    their rules; in place. ``phase`` None: TEST when the net has any rule (nothing is done
    otherwise). Returns the phase used ("TRAIN"/"TEST") or None."""
    from . import pb
    if phase is not None:
        phase = phase.upper()
        if phase not in ("TRAIN", "TEST"):
            raise ProtogenError(f"unknown phase '{phase}' (choose train or test)")
    if not has_rules(net) and phase is None and level is None and not stages:
        return None
    phase = phase or "TEST"
    lvl = level if level is not None else (net.state.level if net.HasField("state") else 0)
    st = set(stages) if stages else (set(net.state.stage) if net.HasField("state") else set())
    ph = pb.Phase.Value(phase)
    keep = [lp for lp in net.layer if included(lp, ph, lvl, st)]
    for lp in keep:
        lp.ClearField("include")
        lp.ClearField("exclude")
    del net.layer[:]
    net.layer.extend(keep)
    return phase
