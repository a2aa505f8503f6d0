"""Progress of a robustness evaluation on stderr: a live bar on a terminal, one line per finished part elsewhere.

The same split as :mod:`layerlottery.training.progress`: a log file or a pipe gets plain lines (run, part,
accuracy, elapsed time) that read well with ``tail -f``, never rich's redraws.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from layerlottery.training.progress import _clock, _is_terminal


class EvaluationProgress:
    """Progress over ``total`` units of work (images, weighted by attack steps), or nothing when disabled."""

    def __init__(self, enabled: bool, total: float, stream: TextIO | None = None) -> None:
        self.enabled = enabled and total > 0
        self._stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()
        self._progress: Progress | None = None
        self._lines = self.enabled and not _is_terminal(self._stream)
        if self.enabled and not self._lines:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
            )
            self._task = self._progress.add_task("robustness", total=total)

    def __enter__(self) -> EvaluationProgress:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_part(self, description: str) -> None:
        """Show which part (run and corruption, attack ...) is being computed."""
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, units: float) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, units)

    def finish_part(self, description: str, accuracy: float) -> None:
        """In line mode, one line for the part just stored."""
        if self._lines:
            elapsed = _clock(time.monotonic() - self._started)
            self._stream.write(f"{description}  accuracy {100 * accuracy:.2f}%  elapsed {elapsed}\n")
            self._stream.flush()
