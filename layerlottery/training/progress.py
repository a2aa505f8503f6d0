"""Training progress on stderr: a live bar on a terminal, one plain line per epoch in a log file or pipe.

A redirected stderr has no width, so rich would draw its bar cut at 80 columns and every refresh would
pile up in the file; there a line per epoch (epoch, loss, accuracy, images/s, test accuracy, ETA) says
the same and reads well with ``tail -f``.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn

_Display = TypeVar("_Display", bound="BarOrLines")


class BarOrLines:
    """The frame every progress display of the project shares: a live rich bar when ``stream`` (default stderr)
    is a terminal, plain lines (``self.lines``) when it is a file or a pipe, nothing when not ``enabled``.

    A subclass draws its bar with :meth:`_start_bar` and writes its own lines; entering starts the bar and the
    clock, leaving stops the bar.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._lines = enabled and not _is_terminal(self._stream)
        self._progress: Progress | None = None
        self._started = time.monotonic()

    def _start_bar(self, columns: tuple[ProgressColumn, ...], description: str, **task: Any) -> None:
        """Build the live bar (terminal mode only) with one task."""
        if self.enabled and not self._lines:
            self._progress = Progress(*columns, console=Console(file=self._stream))
            self._task = self._progress.add_task(description, **task)

    def __enter__(self: _Display) -> _Display:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class TrainProgress(BarOrLines):
    """Progress over every step of the run, or nothing at all when ``enabled`` is False.

    Reading the running loss means synchronizing with the device, so the loop asks :meth:`due` first
    and refreshes the numbers at most every ``refresh_seconds``, not every step. ``stream`` (default
    stderr) decides the form: a terminal gets the live bar, anything else one line per epoch.
    """

    def __init__(
        self,
        enabled: bool,
        epochs: int,
        steps_per_epoch: int,
        start_epoch: int = 0,
        refresh_seconds: float = 1.0,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(enabled, stream)
        self.epochs = epochs
        self.refresh_seconds = refresh_seconds
        self._last_refresh = 0.0
        self._epoch = start_epoch + 1
        self._first_epoch = start_epoch + 1
        self._start_bar(
            (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeRemainingColumn()),
            f"epoch {start_epoch + 1}/{epochs}",
            total=epochs * steps_per_epoch,
            completed=start_epoch * steps_per_epoch,
            stats="",
        )

    def start_epoch(self, epoch: int) -> None:
        """Show that epoch ``epoch`` (1-based) is running."""
        self._epoch = epoch
        if self._progress is not None:
            self._progress.update(self._task, description=f"epoch {epoch}/{self.epochs}")

    def advance(self) -> None:
        """One step done."""
        if self._progress is not None:
            self._progress.advance(self._task)

    def due(self) -> bool:
        """Whether it is time to refresh the numbers mid-epoch (never when disabled or writing lines)."""
        return self._progress is not None and time.monotonic() - self._last_refresh >= self.refresh_seconds

    def show(self, loss: float, accuracy: float, images_per_second: float | None, test_acc: float | None = None) -> None:
        """Display the running loss and accuracy of the epoch (and the last test accuracy, if any).

        In line mode this is called once, at the end of the epoch, and writes that epoch's line.
        """
        if not self.enabled:
            return
        self._last_refresh = time.monotonic()
        stats = f"loss {loss:.4f}  acc {100 * accuracy:.2f}%"
        if images_per_second is not None:
            stats += f"  {images_per_second:,.0f} img/s"
        if test_acc is not None:
            stats += f"  test {100 * test_acc:.2f}%"
        if self._progress is not None:
            self._progress.update(self._task, stats=stats)
        else:
            self._stream.write(f"epoch {self._epoch}/{self.epochs}  {stats}  {self._timing()}\n")
            self._stream.flush()

    def _timing(self) -> str:
        """Time so far in this process and the estimated time left, from the epochs it has trained."""
        elapsed = time.monotonic() - self._started
        done = self._epoch - self._first_epoch + 1
        left = elapsed / done * (self.epochs - self._epoch) if done > 0 else 0.0
        return f"elapsed {_clock(elapsed)}  ETA {_clock(left)}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: write lines
        return False


def _clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03`` (minutes:seconds)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
