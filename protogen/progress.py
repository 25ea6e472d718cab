"""Progress on a terminal: one status line on stderr, rewritten in place; nothing at all when
stderr is not a terminal (logs and pipes stay clean).

    bar = Progress(total=len(names), title="verify --zoo")
    for i, name in enumerate(names):
        bar.update(i, name)            # [######......] 3/19   12s verify --zoo: resnet50
    bar.close()

    with Progress(title="verify resnet50") as p:   # stages without a count
        p.stage("ort-cpu")                         # verify resnet50: ort-cpu    4s
"""
from __future__ import annotations

import sys
import time


def stderr_is_terminal(stream=None) -> bool:
    s = stream if stream is not None else sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A status line on ``stream`` (stderr) when it is a terminal, else silent."""

    def __init__(self, total: int | None = None, title: str = "", stream=None, width: int = 24,
                 enabled: bool | None = None):
        self.total, self.title, self.width = total, title, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = stderr_is_terminal(self.stream) if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.done, self.label = 0, ""
        self._shown = False
        self._last_key, self._last_draw = None, 0.0

    def _write(self, msg: str) -> None:
        if not self.enabled:
            return
        self.stream.write("\r\033[K" + msg)
        self.stream.flush()
        self._shown = True

    def update(self, done: int, label: str = "") -> None:
        """``done`` of ``total`` steps, now at ``label``."""
        self.done, self.label = done, label
        self._render("")

    def stage(self, sub: str) -> None:
        """A named part of the current step (a runtime, a parse), shown after its label.
        Repeats of the same part (``torch layer 7/900``) redraw at most every 50 ms."""
        if not self.enabled:
            return
        head, _, last = sub.rpartition(" ")
        now, key = time.perf_counter(), head if "/" in last else sub
        if key == self._last_key and now - self._last_draw < 0.05:
            return
        self._last_key, self._last_draw = key, now
        self._render(sub)

    def _render(self, sub: str) -> None:
        if not self.enabled:
            return
        secs = time.perf_counter() - self.t0
        label = " / ".join(x for x in (self.label, sub) if x)
        head = f"{self.title}: {label}" if self.title and label else (self.title or label)
        if self.total:
            filled = int(self.width * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self._write(f"[{bar}] {self.done}/{self.total} {secs:5.0f}s {head}")
        else:
            self._write(f"{head} {secs:5.0f}s")

    def close(self) -> None:
        """Clear the status line (a finished run leaves only its results)."""
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
        self._shown = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoProgress(Progress):
    """The silent default of library calls."""

    def __init__(self):
        super().__init__(enabled=False)
