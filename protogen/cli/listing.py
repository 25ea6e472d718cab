"""``protogen list``: the zoo models and their options."""
from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("list", help="zoo models and their options")
    p.add_argument("--json", action="store_true",
                   help="machine-readable: name, aliases, summary and options (type, default, "
                        "choices, range, help) of every model")
    return p


def option_dict(o) -> dict:
    return {"name": o.name, "type": o.type.__name__, "default": o.default,
            "choices": list(o.choices), "range": list(o.range) if o.range else None,
            "help": o.help}


def run(args) -> int:
    from .. import zoo
    ms = zoo.models()
    if args.json:
        out = [{"name": m.name, "aliases": list(m.aliases), "summary": m.summary,
                "options": [option_dict(o) for o in m.options]} for m in ms.values()]
        print(json.dumps(out, indent=2))
        return 0
    for m in ms.values():
        alias = f" (alias: {', '.join(m.aliases)})" if m.aliases else ""
        print(f"{m.name}{alias}: {m.summary}")
        for o in m.options:
            allowed = (" {" + ",".join(str(c) for c in o.choices) + "}") if o.choices else \
                      (f" [{o.range[0]}..{o.range[1]}]" if o.range else "")
            print(f"    --{o.name.replace('_', '-'):<14} {o.type.__name__:<5} default {o.default}{allowed}  {o.help}")
    return 0
