"""Jinja2 templates from the project's ``templates/`` folder (imported lazily)."""
from __future__ import annotations

from pathlib import Path

from .errors import ProtogenError


def template_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "templates", here.parent / "templates"):
        if cand.is_dir():
            return cand
    raise ProtogenError("protogen's templates/ folder is missing from the installation")


def render(template: str, **ctx) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=template.endswith(".html.j2"))
    return env.get_template(template).render(**ctx)
