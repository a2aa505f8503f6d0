"""Training an experiment's runs at the same time: a scheduler over a dependency graph, and its executors.

Every run is a hash-named, resumable, idempotent directory, so running them in parallel is scheduling:

- **Dependencies.** A ticket after training (Algorithm 1) rewinds from its dense run's snapshots and scores
  its final weights, so it starts once that run is finished (an iterative round also waits for the round
  it scores). Everything else (dense runs, tickets at initialization, filter baselines) needs nothing and
  starts at once. Readiness is read from disk, so a dependency finished by another process counts.
- **Claims.** A run is trained only by the process that holds its lock (:mod:`.locks`). A run claimed by
  another invocation is left to it and waited for; if that invocation fails, the run is trained here.
- **Executors.** ``inline`` trains in this process, one run after the other (``--jobs 1``: the sequential
  path, same output as ever). ``local`` keeps ``jobs`` worker processes (:func:`worker_context`), each training one
  run at a time with its share of the CPU cores as torch threads, or its GPU (``CUDA_VISIBLE_DEVICES``), K
  runs per GPU; a worker killed with ``kill -9`` costs its run only (its death is seen on its process
  sentinel), and a new worker takes its place. ``ray`` submits the same work as Ray tasks (:mod:`.ray_executor`).
- **Failures** are reported when they happen, with the run's directory and log; the others go on, and at
  the end :class:`RunsFailedError` names every failed run. Running the same command again trains only what
  is missing.

Bitwise reproducibility: a run's result is a function of its settings *and* of its CPU thread count (torch
splits reductions by thread). With the same ``LAYERLOTTERY_THREADS`` a run trained by a worker is bitwise
the run trained sequentially; by default a worker gets ``cores // jobs`` threads, the sequential path all
cores, so their last bits may differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from layerlottery.config import ExperimentSettings
from layerlottery.distributed import launched_world_size
from layerlottery.errors import ConfigError, LayerLotteryError
from layerlottery.experiments import locks
from layerlottery.experiments.runs import RunDir, RunSpec, run_progress
from layerlottery.experiments.worker import FAILED, FINISHED, LOCKED, LOG_FILE, Job, process_main
from layerlottery.threads import THREADS_ENV, threads_setting

Log = Callable[[str], None]
Event = tuple[Any, ...]
"""``(run name, "epoch", k, n, seconds)`` or ``(run name, "outcome", status, message)``."""

EXECUTORS = ("local", "ray")
NOT_STARTED = "not started"
POLL_SECONDS = 1.0
"""How often the scheduler looks again at runs held by another process."""


class RunsFailedError(LayerLotteryError):
    """Some runs of an experiment failed; the others finished. The message names each failed run."""


@dataclass(frozen=True)
class Parallelism:
    """How many runs train at once, and where."""

    jobs: int = 1
    """Runs at once; 1 trains them one after the other in this process."""
    executor: str = "local"
    """``local`` (worker processes on this machine) or ``ray`` (Ray tasks, local or on a cluster)."""
    runs_per_gpu: int = 1
    """Runs sharing one GPU (CUDA only)."""
    address: str | None = None
    """Ray cluster address (``auto``: the cluster this machine belongs to); None: ``RAY_ADDRESS`` or a
    local Ray instance."""

    def validate(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be 1 or more, not {self.jobs}")
        if self.runs_per_gpu < 1:
            raise ConfigError(f"--runs-per-gpu must be 1 or more, not {self.runs_per_gpu}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.address is not None and self.executor != "ray":
            raise ConfigError("--address is for --executor ray; add --executor ray or drop --address")
        world = launched_world_size()
        if world > 1 and not self.sequential:  # torchrun: every process trains the same run together
            chosen = "--executor ray" if self.executor == "ray" else f"--jobs {self.jobs}"
            raise ConfigError(
                f"{chosen} cannot be combined with torchrun (WORLD_SIZE={world}), which trains one run at a time on "
                f"all its processes; drop {chosen}, or run without torchrun to train several runs at once"
            )

    @property
    def sequential(self) -> bool:
        return self.executor == "local" and self.jobs == 1


@dataclass(frozen=True)
class Scheduled:
    """What :func:`schedule` did: the runs that failed (plan order) and how many runs it trained."""

    failures: list[Failure]
    trained: int


@dataclass(frozen=True)
class Failure:
    spec: RunSpec
    message: str
    path: Path

    def describe(self) -> str:
        log = "" if self.message.startswith(NOT_STARTED) else f"; log {self.path / LOG_FILE}"
        return f"{self.spec.label} ({self.path}: {self.message}{log})"


def dependencies(spec: RunSpec) -> tuple[str, ...]:
    """Names of the runs ``spec`` needs finished before it starts."""
    if spec.lottery is None:
        return ()
    return tuple(name for name in (spec.lottery.dense, spec.lottery.source) if name)


class Executor(Protocol):
    """Trains jobs somewhere and reports their events."""

    slots: int
    """Runs it trains at once."""

    def submit(self, job: Job) -> None: ...

    def events(self, timeout: float) -> list[Event]:
        """Events since the last call, waiting up to ``timeout`` seconds for the first."""
        ...

    def running(self) -> int: ...

    def close(self) -> None:
        """Stop whatever still runs (after an error in the scheduler), release resources."""
        ...


def worker_threads(slots: int) -> int:
    """CPU threads per worker: LAYERLOTTERY_THREADS when set, else this machine's cores shared out."""
    chosen = threads_setting()
    if chosen is not None:
        return chosen
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // slots)


def job_settings(settings: ExperimentSettings) -> ExperimentSettings:
    """The settings a worker gets: paths absolute (a Ray worker does not start in this folder)."""
    data = settings.data
    if data.data_dir:
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).expanduser().resolve()))
    return dataclasses.replace(settings, runs_dir=str(Path(settings.runs_dir).expanduser().resolve()), data=data)


def schedule(
    settings: ExperimentSettings,
    specs: Sequence[RunSpec],
    executor: Executor,
    log: Log,
    *,
    epoch_lines: bool = True,
    run_lines: bool = True,
    threads: int | None = None,
) -> Scheduled:
    """Train every unfinished run of ``specs`` on ``executor``, dependencies first; say what happened."""
    runs_dir = settings.runs_dir
    worker_settings = job_settings(settings)
    by_name = {spec.name: spec for spec in specs}
    needed = {name for spec in specs for name in dependencies(spec)}
    order = {spec.name: index for index, spec in enumerate(specs)}
    # Runs others wait for first (a dense run before tickets at initialization), then in plan order.
    waiting = sorted(
        (spec for spec in specs if not RunDir(runs_dir, spec).is_finished()),
        key=lambda spec: (spec.name not in needed, order[spec.name]),
    )
    board = Board(runs_dir, specs, executor.slots, log, epoch_lines=epoch_lines, run_lines=run_lines)
    elsewhere: dict[str, RunSpec] = {}
    tokens: dict[str, str] = {}
    failures: dict[str, Failure] = {}
    try:
        while waiting or elsewhere or executor.running():
            _look_elsewhere(runs_dir, elsewhere, waiting, board, order, needed)
            for spec in list(waiting):
                if executor.running() >= executor.slots:
                    break
                failed_need = next((name for name in dependencies(spec) if name in failures), None)
                if failed_need is not None:
                    waiting.remove(spec)
                    message = f"{NOT_STARTED}: it needs {by_name[failed_need].label}, which failed"
                    failures[spec.name] = Failure(spec, message, RunDir(runs_dir, spec).path)
                    board.failed(spec, message)
                    continue
                if not all(RunDir(runs_dir, by_name[name]).is_finished() for name in dependencies(spec) if name in by_name):
                    continue
                waiting.remove(spec)
                owner = locks.read_owner(RunDir(runs_dir, spec).path)
                if owner is not None:
                    elsewhere[spec.name] = spec
                    board.elsewhere(spec, owner.describe())
                    continue
                tokens[spec.name] = uuid.uuid4().hex
                executor.submit(Job(worker_settings, spec, tokens[spec.name], threads))
                board.started(spec)
            if waiting and not elsewhere and not executor.running():
                raise RuntimeError(f"no run can start: {[spec.label for spec in waiting]} need runs outside the plan")
            for event in executor.events(POLL_SECONDS):
                spec = by_name[event[0]]
                if event[1] == "epoch":
                    board.epoch(spec, *event[2:])
                    continue
                status, message = event[2], event[3]
                if status == FINISHED:
                    board.finished(spec)
                elif status == LOCKED:  # claimed by another process between our look and the worker's claim
                    elsewhere[spec.name] = spec
                    board.elsewhere(spec, message.removeprefix("being trained by "))
                else:
                    locks.break_lock(RunDir(runs_dir, spec).path, tokens[spec.name])  # a killed worker's
                    failures[spec.name] = Failure(spec, message, RunDir(runs_dir, spec).path)
                    board.failed(spec, message)
    finally:
        executor.close()
    return Scheduled([failures[spec.name] for spec in specs if spec.name in failures], board.trained)


def _look_elsewhere(
    runs_dir: str, elsewhere: dict[str, RunSpec], waiting: list[RunSpec], board: Board, order: dict[str, int], needed: set[str]
) -> None:
    """Runs held by another process: finished there, or back to this process's queue once it let go."""
    for name, spec in list(elsewhere.items()):
        run_dir = RunDir(runs_dir, spec)
        if run_dir.is_finished():
            del elsewhere[name]
            board.finished(spec, elsewhere=True)
        elif locks.read_owner(run_dir.path) is None:  # it failed or was stopped there: train it here
            del elsewhere[name]
            waiting.append(spec)
            waiting.sort(key=lambda s: (s.name not in needed, order[s.name]))


class Board:
    """One line per run event (started, epoch k/n, finished, failed), each with the total ETA.

    The ETA is the epochs still to train times the mean wall time of an epoch seen so far, divided by the
    runs that train at once: rough while runs of different sizes mix, honest about load.
    """

    def __init__(
        self, runs_dir: str, specs: Sequence[RunSpec], slots: int, log: Log, *, epoch_lines: bool = True, run_lines: bool = True
    ) -> None:
        self.runs_dir, self.log, self.slots = Path(runs_dir), log, slots
        self.epoch_lines, self.run_lines = epoch_lines, run_lines
        self.trained = 0
        self.total = len(specs)
        self.done = 0
        self.left: dict[str, int] = {}  # epochs still to train, per unfinished run
        for spec in specs:
            state = run_progress(RunDir(runs_dir, spec))
            if state.state == "finished":
                self.done += 1
            else:
                self.left[spec.name] = spec.train.epochs - (state.epochs_done or spec.start_epoch)
        self.epoch_seconds: list[float] = []
        self.active: set[str] = set()  # started by this process, not yet ended

    def started(self, spec: RunSpec) -> None:
        self.active.add(spec.name)
        if self.run_lines:
            self._line("started", spec, "")

    def epoch(self, spec: RunSpec, k: int, n: int, seconds: float) -> None:
        self.epoch_seconds.append(seconds)
        self.left[spec.name] = n - k
        if self.epoch_lines:
            self._line(f"epoch {k}/{n}", spec, f"{seconds:.1f} s")

    def finished(self, spec: RunSpec, elsewhere: bool = False) -> None:
        self.done += 1
        self.left.pop(spec.name, None)
        self.trained += spec.name in self.active
        self.active.discard(spec.name)
        if self.run_lines or elsewhere:
            self._line("finished", spec, "by another process" if elsewhere else "")

    def failed(self, spec: RunSpec, message: str) -> None:
        started = spec.name in self.active
        self.active.discard(spec.name)
        self.left.pop(spec.name, None)
        log = self.runs_dir / spec.name / LOG_FILE
        self._line("FAILED", spec, f"{message}; log {log}" if started else message)

    def elsewhere(self, spec: RunSpec, owner: str) -> None:
        self.active.discard(spec.name)
        self._line("waiting", spec, f"being trained by {owner}; waiting for it")

    def eta(self) -> str:
        if not self.left:
            return "0:00"
        if not self.epoch_seconds:
            return "?"
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        at_once = max(1, min(self.slots, len(self.left)))
        return _clock(sum(self.left.values()) * mean / at_once)

    def _line(self, event: str, spec: RunSpec, detail: str) -> None:
        detail = f"  {detail}" if detail else ""
        self.log(f"[{self.done}/{self.total}] {event:<11} {spec.label} ({spec.name}){detail}  | {len(self.active)} running, ETA {self.eta()}")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ------------------------------------------------------------------------------------- local processes


@dataclass
class _Worker:
    """A worker process bound to one slot (its threads, its GPU), training one job at a time."""

    process: Any
    connection: Any
    job: Job | None = None


class ProcessExecutor:
    """``slots`` worker processes (``spawn``), each training one run at a time, started on first use.

    ``devices`` lists, per slot, the ``CUDA_VISIBLE_DEVICES`` value of its worker (None: the CPU). A worker sets
    its thread count and GPU in its environment first thing (see :func:`worker_context`). Workers
    live across runs (torch is imported and the data loaded once per worker, not per run); a worker that
    dies (``kill -9``, out of memory) fails its run only, and the next run in its slot gets a new worker.
    """

    def __init__(self, slots: int, threads: int, devices: Sequence[str | None] | None = None) -> None:
        self.slots = slots
        self.threads = threads
        self.devices = list(devices) if devices is not None else [None] * slots
        self._context = worker_context()
        self._workers: dict[int, _Worker] = {}

    def running(self) -> int:
        return sum(worker.job is not None for worker in self._workers.values())

    def submit(self, job: Job) -> None:
        slot = next(i for i in range(self.slots) if i not in self._workers or self._workers[i].job is None)
        if self.devices[slot] is not None:
            job = on_visible_gpu(job)
        worker = self._workers.get(slot) or self._start(slot)
        worker.job = job
        try:
            worker.connection.send(job)
        except OSError:  # it died since its last run: noticed (and its job failed) in events()
            pass

    def _start(self, slot: int) -> _Worker:
        ours, theirs = self._context.Pipe()
        env = {THREADS_ENV: str(self.threads), "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.devices[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.devices[slot])
        process = self._context.Process(target=process_main, args=(theirs, env), name=f"layerlottery worker {slot}")
        process.start()
        theirs.close()  # the worker holds its end: EOF here once it exits
        self._workers[slot] = _Worker(process, ours)
        return self._workers[slot]

    def events(self, timeout: float) -> list[Event]:
        busy = {slot: w for slot, w in self._workers.items() if w.job is not None}
        if not busy:
            time.sleep(timeout)
            return []
        wait_for([w.connection for w in busy.values()] + [w.process.sentinel for w in busy.values()], timeout)
        events: list[Event] = []
        for slot, worker in busy.items():
            events += self._receive(worker)
            if worker.job is not None and not worker.process.is_alive():
                events += self._receive(worker)  # whatever it sent before it died
            if worker.job is not None and not worker.process.is_alive():
                code = worker.process.exitcode
                reason = f"worker killed by signal {-code}" if code is not None and code < 0 else f"worker exited with status {code}"
                events.append((worker.job.spec.name, "outcome", FAILED, reason))
                worker.connection.close()
                del self._workers[slot]
        return events

    def _receive(self, worker: _Worker) -> list[Event]:
        events: list[Event] = []
        while worker.job is not None:
            try:
                if not worker.connection.poll():
                    break
                event = worker.connection.recv()
            except (EOFError, OSError):  # the worker died, perhaps mid-message
                break
            events.append((worker.job.spec.name, *event))
            if event[0] == "outcome":
                worker.job = None
        return events

    def close(self) -> None:
        for worker in self._workers.values():
            if worker.job is not None:  # only after an error here: stop the runs this process started
                worker.process.terminate()
            else:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
        for worker in self._workers.values():
            worker.process.join()
            worker.connection.close()
        self._workers.clear()


def on_visible_gpu(job: Job) -> Job:
    """The job for a worker that sees only its own GPU, as ``cuda:0`` (``cuda:N`` would not exist there).
    The device is not part of a run's hash, so the run keeps its name."""
    train = dataclasses.replace(job.spec.train, device="cuda")
    return dataclasses.replace(job, spec=dataclasses.replace(job.spec, train=train))


WORKER_PRELOAD = ["layerlottery.experiments.worker", "layerlottery.experiments.tickets", "torchvision"]
"""Imported once by the fork server (torchvision: a run directory records its version; it imports in seconds)."""


def worker_context() -> Any:
    """How worker processes start: ``forkserver`` where the platform has it, else ``spawn``.

    Both give a worker a fresh process that shares no threads, locks or CUDA state with this one (plain
    ``fork`` of a process running torch does not). The fork server is started once, imports torch and
    layerlottery once (several seconds), and forks every worker from that state: a worker starts in
    milliseconds. It initializes no CUDA and runs no OpenMP region, so each worker still sets its own
    threads and ``CUDA_VISIBLE_DEVICES`` before its first use (:func:`~.worker.process_main`).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


def gpu_slots(device: str, jobs: int, runs_per_gpu: int) -> list[str | None]:
    """The device of each worker slot: CUDA_VISIBLE_DEVICES values (GPU i % G, K per GPU) or None (CPU)."""
    from layerlottery.training import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return [None] * jobs
    import torch

    gpus = [resolved.index] if device.startswith("cuda:") else list(range(torch.cuda.device_count()))
    slots = min(jobs, len(gpus) * runs_per_gpu)
    return [str(gpus[i % len(gpus)]) for i in range(slots)]


def local_executor(settings: ExperimentSettings, parallel: Parallelism, log: Log) -> ProcessExecutor:
    """Worker processes on this machine for ``parallel.jobs`` runs at once."""
    devices = gpu_slots(settings.train.device, parallel.jobs, parallel.runs_per_gpu)
    if len(devices) < parallel.jobs:
        log(f"note: {len(devices)} runs at once, not {parallel.jobs}: {parallel.runs_per_gpu} per GPU (--runs-per-gpu)")
    threads = worker_threads(len(devices))
    where = f"GPUs {', '.join(sorted(set(d for d in devices if d)))}" if devices[0] is not None else "CPU"
    log(f"training up to {len(devices)} runs at once in worker processes ({where}, {threads} CPU thread(s) each)")
    return ProcessExecutor(len(devices), threads, devices)


# ------------------------------------------------------------------------------------------ in process


class InlineExecutor:
    """The sequential path: each run trained here, in order, with the live progress bar of a terminal.

    Runs are claimed like any worker's, so two invocations never train one run; an exception stops the
    experiment at once, as it always has (the lock is released on the way out).
    """

    slots = 1

    def __init__(self, settings: ExperimentSettings, specs: Sequence[RunSpec], source: Any, progress: bool, log: Log) -> None:
        self.settings, self.source, self.progress, self.log = settings, source, progress, log
        self.index = {spec.name: number for number, spec in enumerate(specs, start=1)}
        self.total = len(specs)
        self._job: Job | None = None

    def running(self) -> int:
        return int(self._job is not None)

    def submit(self, job: Job) -> None:
        self._job = job

    def events(self, timeout: float) -> list[Event]:
        from layerlottery.experiments.tickets import execute_run

        if self._job is None:  # only runs held elsewhere are left: look again in a while
            time.sleep(timeout)
            return []
        spec, token = self._job.spec, self._job.token
        self._job = None
        run_dir = RunDir(self.settings.runs_dir, spec)
        claim = locks.acquire(run_dir.path, token)
        if not isinstance(claim, locks.RunLock):
            return [(spec.name, "outcome", LOCKED, f"being trained by {claim.describe()}")]
        with claim:
            if not run_dir.is_finished():
                self.log(f"[{self.index[spec.name]}/{self.total}] {spec.label}: {run_dir.path}")
                execute_run(spec, run_dir, self.source, self.settings, progress=self.progress)
        return [(spec.name, "outcome", FINISHED, "")]

    def close(self) -> None:
        self._job = None


def train_runs(
    settings: ExperimentSettings,
    specs: Sequence[RunSpec],
    parallel: Parallelism,
    *,
    source: Any = None,
    progress: bool = True,
    log: Log = print,
) -> int:
    """Train the unfinished runs of ``specs`` as ``parallel`` says; returns how many this call trained.

    Raises :class:`RunsFailedError` naming every run that failed (after the others finished).
    ``source`` is the experiment's data, loaded once, for the sequential path (workers load their own).
    """
    parallel.validate()
    if parallel.sequential:
        executor: Executor = InlineExecutor(settings, specs, source, progress, log)
        scheduled = schedule(settings, specs, executor, log, run_lines=False)
    elif parallel.executor == "local":
        scheduled = schedule(settings, specs, local_executor(settings, parallel, log), log, epoch_lines=progress)
    else:
        from layerlottery.experiments.ray_executor import ray_executor

        with ray_executor(settings, parallel, log) as (executor, threads):
            scheduled = schedule(settings, specs, executor, log, epoch_lines=progress, threads=threads)
    if scheduled.failures:
        count = len(scheduled.failures)
        raise RunsFailedError(
            f"{count} of {len(specs)} run(s) failed: " + "; ".join(f.describe() for f in scheduled.failures)
            + ". The others are finished; run the same command again to train only what is missing"
        )
    return scheduled.trained
