"""Pictures for the verify HTML report: the net drawing and the per-blob error through depth.

:func:`verify_pictures` returns strings ready to embed in HTML: the drawing as inline SVG
(pure Python, always available; the layer where a failing runtime first leaves the reference
is filled red) and, with ``--blobs all``, the relative error of every compared blob in net
order, one line per runtime, as a PNG data URI (needs matplotlib; without it the report says
so and shows the rest).
"""
from __future__ import annotations

import base64

from .errors import ProtogenError

DIVERGENCE_FILL = "#f4a6a6"


def drawing_svg(graph, divergence: dict | None = None) -> str:
    from .draw import build, layout, to_svg
    pic = build(graph)
    for runtime, d in (divergence or {}).items():
        layer = d.get("layer") if isinstance(d, dict) else None
        for n in pic.nodes.values():
            if layer in n.layers:
                n.fill = DIVERGENCE_FILL
                n.label.append(f"{runtime} diverges here")
    return to_svg(layout(pic))


def error_plot_uri(report) -> str | None:
    """PNG data URI of the per-blob relative error (None with fewer than two blobs)."""
    from .plots import blob_error_plot
    rows = [{"blob": c.blob, "runtime": c.runtime, "max_rel": c.max_rel}
            for c in report.comparisons if c.max_rel == c.max_rel]          # drop NaN
    if len({r["blob"] for r in rows}) < 2:
        return None
    png = blob_error_plot(rows, None, "png", title=f"{report.model}: error of every blob against "
                          "the float64 reference", tolerance=report.tolerance)
    return "data:image/png;base64," + base64.b64encode(png).decode()


def verify_pictures(report, graph=None) -> dict:
    """{'drawing': SVG text or None, 'errors': data URI or None, 'notes': [...]}"""
    out = {"drawing": None, "errors": None, "notes": []}
    if graph is not None:
        try:
            out["drawing"] = drawing_svg(graph, getattr(report, "divergence", None))
        except ProtogenError as e:
            out["notes"].append(f"no drawing: {e}")
    if getattr(report, "blobs_mode", "") == "all":
        try:
            out["errors"] = error_plot_uri(report)
        except ProtogenError as e:              # matplotlib missing
            out["notes"].append(f"no per-blob error plot: {e}")
    return out
