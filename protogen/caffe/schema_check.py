"""Every field of a prototxt that the schema does not know, found in one pass, before parsing.

protobuf's text parser stops at the first unknown field. A user converting a net written for
some Caffe fork wants the whole list at once, so :func:`scan_unknown_fields` walks the text
with the schema's descriptors (a small tokenizer: strings, comments, numbers, names,
punctuation) and records each unknown field with its line, column, layer and path.

Fields that only matter for training (weight initialisers, learning-rate multipliers, data
sources, data augmentation, loss settings) are *training-only*: :func:`read_net_text`
ignores them with a note; any other unknown field refuses the net, listing all of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ProtogenError, UnsupportedError

#: names of fields that only concern training wherever they appear
TRAINING_ONLY_NAMES = frozenset({
    "filler", "lr_mult", "decay_mult", "blobs_lr", "weight_decay", "source", "batch_size",
    "backend", "shuffle", "rand_skip", "mean_file", "root_folder", "label_map_file",
    "prefetch", "bn_stats_batch_size", "momentum", "moving_average_fraction",
    "label_divide_factor", "show_data", "use_temporal_jitter", "batch_sampler",
})

#: blocks whose whole content only concerns training (data sources, augmentation, losses)
TRAINING_ONLY_BLOCKS = frozenset({
    "transform_param", "loss_param", "data_param", "image_data_param", "hdf5_data_param",
    "window_data_param", "annotated_data_param", "dense_image_data_param",
    "multibox_loss_param", "detection_evaluate_param", "accuracy_param",
    "seg_accuracy_param", "video_data_param", "distort_param", "expand_param",
    "random_resize_param", "random_aspect_ratio_param", "noise_param", "emit_constraint",
})


def is_training_only(path: tuple[str, ...]) -> bool:
    """Whether the field at ``path`` (block names from the layer down, field last) only
    matters for training."""
    name = path[-1]
    if name in TRAINING_ONLY_NAMES or name.lower().endswith("_filler"):
        return True
    if name.endswith("_loss_param"):
        return True
    return any(p in TRAINING_ONLY_BLOCKS or p.endswith("_loss_param") for p in path[:-1])


@dataclass
class UnknownField:
    line: int
    column: int
    layer: str | None        # the enclosing layer's name (None: net level)
    layer_type: str | None
    path: tuple[str, ...]    # e.g. ("pooling_param", "ceil_mode")

    @property
    def training_only(self) -> bool:
        return is_training_only(self.path)

    def describe(self, file: str | None) -> str:
        where = f"{file}:{self.line}:{self.column}" if file else f"{self.line}:{self.column}"
        return f"{where}: unknown field '{'.'.join(self.path)}'"


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+|\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?|[-+][A-Za-z]+)
  | (?P<punct>[{}\[\]<>:;,])
  | (?P<other>.)
""", re.X)


def _tokens(text: str):
    """(kind, value, line, column) tokens; whitespace and comments dropped."""
    line, start = 1, 0
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            if m.group() == "\n":
                line += 1
                start = m.end()
            continue
        if kind == "comment":
            continue
        out.append((kind, m.group(), line, m.start() - start + 1))
    return out


class _Scanner:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.found: list[UnknownField] = []
        self.types: list[tuple[str, str, int, int]] = []   # (layer name, type, line, col)

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None, 0, 0)

    def next(self):
        t = self.peek()
        self.i += 1
        return t

    def skip_value(self) -> None:
        """Skip one field value after its name (and optional ':')."""
        kind, v, *_ = self.peek()
        if v == ":":
            self.next()
            kind, v, *_ = self.peek()
        if v in ("{", "<"):
            self.skip_block()
        elif v == "[":
            depth = 0
            while self.peek()[0] is not None:
                _, v, *_ = self.next()
                if v in ("[", "{", "<"):
                    depth += 1
                elif v in ("]", "}", ">"):
                    depth -= 1
                    if depth == 0:
                        break
        elif kind == "string":
            while self.peek()[0] == "string":       # adjacent strings concatenate
                self.next()
        elif kind is not None:
            self.next()

    def skip_block(self) -> None:
        depth = 0
        while self.peek()[0] is not None:
            _, v, *_ = self.next()
            if v in ("{", "<"):
                depth += 1
            elif v in ("}", ">"):
                depth -= 1
                if depth == 0:
                    return

    def message(self, desc, path: tuple, layer: dict | None, close: str | None) -> None:
        """Fields of one message until ``close`` ('}' / '>', None: end of text)."""
        while True:
            kind, v, line, col = self.peek()
            if kind is None:
                return
            if v == close:
                self.next()
                return
            if v in (";", ","):
                self.next()
                continue
            if kind != "name":
                self.next()          # malformed: the real parser will say so
                continue
            self.next()
            fd = desc.fields_by_name.get(v)
            if fd is None:
                self.found.append(UnknownField(line, col, None, None, path + (v,)))
                if layer is not None:
                    layer.setdefault("unknown", []).append(self.found[-1])
                self.skip_value()
                continue
            if fd.message_type is not None:
                if self.peek()[1] == ":":
                    self.next()
                if self.peek()[1] == "[":
                    self.skip_value()    # a list of messages: rare, left to the real parser
                    continue
                opener = self.peek()[1]
                if opener not in ("{", "<"):
                    continue
                self.next()
                end = "}" if opener == "{" else ">"
                if not path and fd.name in ("layer", "layers"):
                    info: dict = {}
                    self.message(fd.message_type, (), info, end)
                    for u in info.get("unknown", ()):
                        u.layer, u.layer_type = info.get("name"), info.get("type")
                    if "type" in info:
                        self.types.append((info.get("name"), info["type"], *info["type_at"]))
                else:
                    self.message(fd.message_type, path + (fd.name,), layer, end)
                continue
            # a scalar: remember a layer's name and string type
            if layer is not None and not path and fd.name in ("name", "type"):
                if self.peek()[1] == ":":
                    self.next()
                k, val, l2, c2 = self.peek()
                if k == "string":
                    layer[fd.name] = val[1:-1]
                    if fd.name == "type":
                        layer["type_at"] = (l2, c2)
                elif k == "name" and fd.name == "type":
                    layer[fd.name] = val
                    layer["type_at"] = (l2, c2)
                self.skip_value()
                continue
            self.skip_value()


def scan_unknown_fields(text: str) -> list[UnknownField]:
    """Every field of ``text`` (a NetParameter prototxt) that the schema does not know."""
    from . import pb
    sc = _Scanner(text)
    sc.message(pb.NetParameter.DESCRIPTOR, (), None, None)
    return sc.found


def read_net_text(text: str, file: str | None = None) -> tuple[object, list[str]]:
    """Parse prototxt ``text`` into a NetParameter; (message, notes).

    Every unknown field is found first: training-only ones are dropped with a note (one
    note per field name), any other one refuses the net with the full list
    (:class:`UnsupportedError`, one item per field with file:line:col)."""
    from .prototxt import parse_prototxt
    try:                      # the common case: every field known (protobuf's fast parser)
        return parse_prototxt(text, file), []
    except ProtogenError as e:
        first_error = e
    unknown = scan_unknown_fields(text)
    if not unknown:
        raise first_error     # malformed for another reason: protobuf's message says where
    bad = [u for u in unknown if not u.training_only]
    if bad:
        items = [(u.layer or "(net)", u.layer_type or "-", u.describe(file)) for u in bad]
        err = UnsupportedError(items, file=file)
        err.message = (f"{len(bad)} field(s) unknown to every Caffe schema protogen knows "
                       f"(upstream and forks):\n" + "\n".join(
                           f"  layer '{n}' ({t}): {p}" for n, t, p in items))
        err.line, err.column = bad[0].line, bad[0].column
        err.args = (str(err),)
        raise err
    msg = _parse_skipping_unknown(text, file)
    seen: dict[str, list[UnknownField]] = {}
    for u in unknown:
        seen.setdefault(".".join(u.path), []).append(u)
    notes = []
    for path, us in seen.items():
        layers = sorted({u.layer or "(net)" for u in us})
        more = f" and {len(layers) - 3} more" if len(layers) > 3 else ""
        notes.append(f"ignored training-only field '{path}' (not in the schema) in layer(s) "
                     f"{', '.join(repr(n) for n in layers[:3])}{more}")
    return msg, notes


def _parse_skipping_unknown(text: str, file: str | None):
    from google.protobuf import text_format

    from . import pb
    msg = pb.NetParameter()
    try:
        text_format.Parse(text, msg, allow_unknown_field=True)
    except text_format.ParseError as e:
        line, col = getattr(e, "GetLine", lambda: None)(), getattr(e, "GetColumn", lambda: None)()
        detail = str(e)
        if line is not None and " : " in detail:
            detail = detail.split(" : ", 1)[-1]
        raise ProtogenError(f"malformed prototxt: {detail}", file=file, line=line,
                            column=col) from None
    return msg
