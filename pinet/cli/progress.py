"""Progress bars for long runs (scoring, bursts, reports, video frames), drawn on stderr with rich.

A bar is shown only when asked (``--progress``, the default) and both stdout and stderr are
terminals: output piped into a file or another program stays free of control sequences, and so
does a log that captures stderr.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import typer

from pinet.cli.common import stderr

PROGRESS_OPTION = typer.Option(True, "--progress/--no-progress",
                               help="Show progress bars (never when stdout is not a terminal)")


def progress_wanted(requested: bool) -> bool:
    """Bars on: asked for, stdout is a terminal, and stderr (where they are drawn) is one too."""
    return requested and sys.stdout.isatty() and stderr.is_terminal


class Bar:
    """One bar; with no Progress behind it (bars off) every call is a no-op, so callers never test."""

    def __init__(self, progress=None, task=None) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def update(self, completed: float, total: float | None = None) -> None:
        if self._progress is not None:
            if total is not None:
                self._progress.update(self._task, total=total)
            self._progress.update(self._task, completed=completed)

    def close(self) -> None:
        """Remove the bar (a finished video's frame bar) while the others go on."""
        if self._progress is not None:
            self._progress.remove_task(self._task)
            self._progress = None


class Tracker:
    """Bars inside one rich Progress (or none, when bars are off)."""

    def __init__(self, progress=None) -> None:
        self._progress = progress

    def bar(self, label: str, total: float | None) -> Bar:
        if self._progress is None:
            return Bar()
        return Bar(self._progress, self._progress.add_task(label, total=total))


@contextmanager
def tracked(enabled: bool) -> Iterator[Tracker]:
    """A Tracker whose bars draw on stderr while the block runs (and vanish after it)."""
    if not enabled:
        yield Tracker()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=True) as progress:
        yield Tracker(progress)
