"""A one-line progress display for training: epoch, loss, accuracy, images/s and ETA, on stderr."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """A rich progress bar over every step of the run, or nothing at all when ``enabled`` is False.

    Reading the running loss means synchronizing with the device, so the loop asks :meth:`due` first
    and refreshes the numbers at most every ``refresh_seconds``, not every step.
    """

    def __init__(
        self, enabled: bool, epochs: int, steps_per_epoch: int, start_epoch: int = 0, refresh_seconds: float = 1.0
    ) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.refresh_seconds = refresh_seconds
        self._last_refresh = 0.0
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(
                f"epoch {start_epoch + 1}/{epochs}",
                total=epochs * steps_per_epoch,
                completed=start_epoch * steps_per_epoch,
                stats="",
            )

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_epoch(self, epoch: int) -> None:
        """Show that epoch ``epoch`` (1-based) is running."""
        if self._progress is not None:
            self._progress.update(self._task, description=f"epoch {epoch}/{self.epochs}")

    def advance(self) -> None:
        """One step done."""
        if self._progress is not None:
            self._progress.advance(self._task)

    def due(self) -> bool:
        """Whether it is time to refresh the numbers (always False when disabled)."""
        return self._progress is not None and time.monotonic() - self._last_refresh >= self.refresh_seconds

    def show(self, loss: float, accuracy: float, images_per_second: float | None, test_acc: float | None = None) -> None:
        """Display the running loss and accuracy of the epoch (and the last test accuracy, if any)."""
        if self._progress is None:
            return
        self._last_refresh = time.monotonic()
        stats = f"loss {loss:.4f}  acc {100 * accuracy:.2f}%"
        if images_per_second is not None:
            stats += f"  {images_per_second:,.0f} img/s"
        if test_acc is not None:
            stats += f"  test {100 * test_acc:.2f}%"
        self._progress.update(self._task, stats=stats)
