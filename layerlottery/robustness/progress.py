"""Progress of a robustness evaluation on stderr: a live bar on a terminal, one line per finished part elsewhere.

The same split as :mod:`layerlottery.training.progress`: a log file or a pipe gets plain lines (run, part,
accuracy, elapsed time) that read well with ``tail -f``, never rich's redraws.
"""

from __future__ import annotations

import time
from typing import TextIO

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from layerlottery.training.progress import BarOrLines, _clock


class EvaluationProgress(BarOrLines):
    """Progress over ``total`` units of work (images, weighted by attack steps), or nothing when disabled."""

    def __init__(self, enabled: bool, total: float, stream: TextIO | None = None) -> None:
        super().__init__(enabled and total > 0, stream)
        self._start_bar(
            (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn()),
            "robustness",
            total=total,
        )

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
