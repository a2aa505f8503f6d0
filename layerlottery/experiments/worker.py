"""One run trained by a worker (a process of its own, or a Ray task): claim, train, report, release.

A worker process sets its thread count and GPU in its environment before it trains anything (see
:func:`layerlottery.experiments.parallel.worker_context`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from layerlottery.training.callbacks import Callback, TrainState

if TYPE_CHECKING:
    from layerlottery.config import ExperimentSettings
    from layerlottery.experiments.runs import RunSpec

LOG_FILE = "log.txt"
"""A worker's own output (warnings, per-epoch lines, a traceback) goes to this file in its run directory."""

FINISHED, FAILED, LOCKED = "finished", "failed", "locked"
"""How a worker's run ended: trained to the end, raised, or claimed by another process (not touched)."""

Report = Callable[[tuple[Any, ...]], None]
"""Where a worker sends its events: ``("epoch", k, n, seconds)``, ``("outcome", status, message)``."""


@dataclass(frozen=True)
class Job:
    """What a worker needs to train one run; picklable, so it travels to a process or a Ray node."""

    settings: ExperimentSettings
    spec: RunSpec
    token: str
    """Names this attempt in the run's lock, so the scheduler can break the lock if the worker dies."""
    threads: int | None = None
    """CPU threads for torch (LAYERLOTTERY_THREADS); None: leave the environment's choice."""


def train_job(job: Job, report: Report) -> tuple[str, str]:
    """Claim the run, train it (or resume it) to the end, release it: ``(status, message)``.

    The data are loaded in the worker (once per worker process, see _data). Every exception is caught, printed with its
    traceback (to the run's log when the caller redirected output there) and returned as ``FAILED``.
    """
    from layerlottery.experiments import locks
    from layerlottery.experiments.runs import RunDir

    run_dir = RunDir(job.settings.runs_dir, job.spec)
    claim = locks.acquire(run_dir.path, job.token)
    if not isinstance(claim, locks.RunLock):
        return LOCKED, f"being trained by {claim.describe()}"
    with claim:
        if run_dir.is_finished():  # finished by another process between the scheduler's look and the claim
            return FINISHED, ""
        try:
            _train(job, run_dir, report)
        except BaseException as exc:  # noqa: BLE001 - a worker reports every failure, KeyboardInterrupt too
            traceback.print_exc()
            sys.stderr.flush()
            return FAILED, _one_line(exc)
    return FINISHED, ""


_loaded: dict[str, Any] = {}
"""The data of the last job in this worker process, by its settings: the next run of the experiment reuses them."""


def _data(settings: ExperimentSettings) -> Any:
    from layerlottery.config import to_dict
    from layerlottery.experiments.sources import data_source

    key = repr(to_dict(settings.data))
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = data_source(settings.data)
    return _loaded[key]


def _train(job: Job, run_dir: Any, report: Report) -> None:
    from layerlottery.experiments.tickets import execute_run
    from layerlottery.threads import THREADS_ENV

    if job.threads is not None:
        os.environ[THREADS_ENV] = str(job.threads)  # read by training_threads() when training starts
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {job.spec.label}: pid {os.getpid()}", flush=True)
    execute_run(job.spec, run_dir, _data(job.settings), job.settings, progress=True, callbacks=[EpochReporter(report)])


class EpochReporter(Callback):
    """A training callback sending ``("epoch", k, n, seconds)`` after each epoch."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.began = time.monotonic()

    def on_epoch_start(self, state: TrainState) -> None:
        self.began = time.monotonic()

    def on_epoch_end(self, state: TrainState) -> None:
        self.report(("epoch", state.epoch, state.settings.epochs, time.monotonic() - self.began))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so native libraries' output too)
    to ``path``, appended, and restore them afterwards (a Ray worker process trains many runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


def process_main(connection: Any, environment: dict[str, str]) -> None:
    """Entry point of a worker process: train the jobs the scheduler sends until it sends None.

    ``environment`` (thread count, ``CUDA_VISIBLE_DEVICES``) is set first, before any CUDA call reads it;
    torch's thread count follows ``LAYERLOTTERY_THREADS`` when each run trains.

    Each run's output goes to its own log; events and each run's ``("outcome", status, message)`` go back
    through ``connection``. The data are loaded once and reused while the jobs' data settings stay the same.
    """
    os.environ.update(environment)
    from layerlottery.experiments.runs import RunDir

    def report(event: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the scheduler went away: finish the run regardless
            connection.send(event)

    while True:
        try:
            job = connection.recv()
        except EOFError:  # the scheduler is gone
            break
        if job is None:
            break
        with output_to(RunDir(job.settings.runs_dir, job.spec).path / LOG_FILE):
            status, message = train_job(job, report)
        report(("outcome", status, message))
    connection.close()
