"""The one error type that protogen raises for anything a user did or supplied.

Every message names what is wrong and, where known, the file and the layer, so the CLI
can print it on one line and exit non-zero without a traceback.
"""
from __future__ import annotations


class ProtogenError(Exception):
    """A user-facing error: bad input, bad option, a DSL misuse, an unsupported model."""

    def __init__(self, message: str, *, file: str | None = None, layer: str | None = None,
                 line: int | None = None, column: int | None = None):
        self.message = message
        self.file = file
        self.layer = layer
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def where(self) -> str:
        parts = []
        if self.file:
            loc = str(self.file)
            if self.line is not None:
                loc += f":{self.line}"
                if self.column is not None:
                    loc += f":{self.column}"
            parts.append(loc)
        if self.layer:
            parts.append(f"layer '{self.layer}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        w = self.where()
        return f"{w}: {self.message}" if w else self.message

    def with_context(self, *, file: str | None = None, layer: str | None = None) -> "ProtogenError":
        """Fill in missing location details (outer code knows the file, inner the layer)."""
        if file and not self.file:
            self.file = file
        if layer and not self.layer:
            self.layer = layer
        self.args = (self.__str__(),)
        return self


class ShapeError(ProtogenError):
    """A layer cannot accept the shapes it is given."""


class UnsupportedError(ProtogenError):
    """A model uses layer types or parameters that protogen cannot express.

    ``items`` lists every (layer name, layer type, problem) found, not just the first.
    """

    def __init__(self, items: list[tuple[str, str, str]], *, file: str | None = None):
        self.items = list(items)
        lines = [f"  layer '{n}' ({t}): {p}" for n, t, p in self.items]
        msg = f"{len(self.items)} unsupported item(s):\n" + "\n".join(lines)
        super().__init__(msg, file=file)
