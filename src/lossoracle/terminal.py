"""The terminal: colour and a progress bar where a person is watching, plain text everywhere else.

Colour only when the stream is a TTY and ``NO_COLOR`` is unset (https://no-color.org); the
progress bar (rich, on stderr) only when stderr is a TTY, and only once the run has lasted
:data:`DELAY` seconds, so short runs, tests, CI logs and pipes see exactly the plain report.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import IO, Any

__all__ = ["wants_colour", "emit", "Progress", "DELAY"]

DELAY = 3.0
STYLES = {"conforms": "green", "tail": "yellow", "deviates": "bold red", "error": "bold magenta",
          "timeout": "magenta", "crashed": "bold magenta", "unsupported": "dim", "not_installed": "dim",
          "xfail": "cyan", "WORSE": "bold red", "stale xfail": "yellow"}


def wants_colour(stream: IO[str]) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def emit(text: str, stream: IO[str] | None = None) -> None:
    """Print ``text`` to ``stream`` (stdout), its verdict words coloured where :func:`wants_colour`."""
    stream = stream or sys.stdout
    if not wants_colour(stream):
        print(text, file=stream)
        return
    from rich.console import Console
    from rich.text import Text

    rich_text = Text(text)
    for word, style in STYLES.items():
        rich_text.highlight_regex(rf"(?<![\w.]){re.escape(word)}(?!\w|\.\w)", style)
    Console(file=stream, highlight=False, soft_wrap=True, force_terminal=True).print(rich_text)


class Progress:
    """``progress(text)`` as each cell starts; a bar with the current cell on a TTY's stderr once
    the run has lasted ``delay`` seconds, nothing otherwise. ``advance_to(n)`` after an
    implementation (cells that never started: a library not installed)."""

    def __init__(self, total: int, stream: IO[str] | None = None, delay: float = DELAY):
        self.total, self.stream, self.delay = total, stream or sys.stderr, delay
        self.start, self.done, self.bar, self.task = time.monotonic(), 0, None, None
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.current = ""

    def __call__(self, text: str) -> None:
        if self.current:
            self.done += 1
        self.current = text
        self._show()

    def advance_to(self, n: int) -> None:
        self.done, self.current = max(self.done, n), ""
        self._show()

    def _show(self) -> None:
        if not self.enabled or time.monotonic() - self.start < self.delay:
            return
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            console = Console(file=self.stream, no_color=bool(os.environ.get("NO_COLOR")))
            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        self.bar.update(self.task, completed=min(self.done, self.total), description=self.current[:70])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
