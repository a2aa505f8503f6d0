"""Runs as Ray tasks: on a local Ray instance, or on a cluster whose nodes share the runs folder.

Each run is one task asking for ``LAYERLOTTERY_THREADS`` CPUs (default: this machine's cores // jobs, at
least 1) and, on CUDA, ``1 / runs_per_gpu`` of a GPU (Ray sets the task's ``CUDA_VISIBLE_DEVICES``). The
scheduler (:func:`layerlottery.experiments.parallel.schedule`) keeps at most ``jobs`` tasks in flight and
submits a ticket only once its dense run is finished; Ray places the tasks. A task claims its run with
the same lock as a local worker, writes its output to the run's ``log.txt`` and sends its epochs back
through a Ray queue. Tasks are not retried by Ray: a failed run is reported, and rerunning the command
finishes it (resuming from its last checkpoint).

Ray is optional: ``pip install 'layerlottery[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

from layerlottery.config import ExperimentSettings
from layerlottery.errors import ConfigError
from layerlottery.experiments.parallel import Event, Log, Parallelism, on_visible_gpu, worker_threads
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.worker import FAILED, LOG_FILE, Job, output_to, train_job


def _ray_task(job: Job, queue: Any) -> tuple[str, str]:
    """The body of a run's Ray task (module level, so Ray pickles it by reference)."""

    def report(event: tuple[Any, ...]) -> None:
        with contextlib.suppress(Exception):  # the driver went away: keep training regardless
            queue.put_nowait((job.spec.name, *event))

    if job.threads is not None:  # Ray sets OMP_NUM_THREADS from num_cpus; torch follows this
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
    with output_to(RunDir(job.settings.runs_dir, job.spec).path / LOG_FILE):
        return train_job(job, report)


class RayExecutor:
    """At most ``slots`` Ray tasks in flight, each asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs."""

    def __init__(self, ray: Any, slots: int, num_cpus: float, num_gpus: float) -> None:
        from ray.util.queue import Queue

        self.ray = ray
        self.slots = slots
        self._task = ray.remote(_ray_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
        self._queue = Queue(actor_options={"num_cpus": 0})
        self._refs: dict[Any, str] = {}
        self._on_gpu = num_gpus > 0

    def running(self) -> int:
        return len(self._refs)

    def submit(self, job: Job) -> None:
        job = on_visible_gpu(job) if self._on_gpu else job  # Ray sets the task's CUDA_VISIBLE_DEVICES
        self._refs[self._task.remote(job, self._queue)] = job.spec.name

    def events(self, timeout: float) -> list[Event]:
        if not self._refs:
            time.sleep(timeout)
            return []
        self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        events: list[Event] = list(self._queue.get_nowait_batch(self._queue.qsize()))  # epochs before outcomes
        for ref in ready:
            name = self._refs.pop(ref)
            try:
                status, message = self.ray.get(ref)
            except Exception as exc:  # the task's worker died, its node was lost, or it was cancelled
                status, message = FAILED, f"Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            events.append((name, "outcome", status, message))
        return events

    def close(self) -> None:
        for ref in self._refs:  # only after an error in the scheduler: stop what it submitted
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self._refs.clear()
        with contextlib.suppress(Exception):
            self._queue.shutdown()


@contextlib.contextmanager
def ray_executor(settings: ExperimentSettings, parallel: Parallelism, log: Log) -> Iterator[tuple[RayExecutor, int]]:
    """Connect to Ray (``parallel.address``, else ``RAY_ADDRESS``, else a new local instance) and yield an
    executor with the threads each run gets; a Ray instance started here is shut down afterwards."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray 2.x; install it with: pip install 'layerlottery[ray]'") from None
    started = time.monotonic()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=parallel.address, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        on_gpu = settings.train.device.startswith("cuda") or (settings.train.device == "auto" and gpus > 0)
        if on_gpu and not gpus:
            raise ConfigError(f"train.device is {settings.train.device} but the Ray cluster has no GPU; use train.device=cpu")
        threads = worker_threads(parallel.jobs)
        log(
            f"Ray ready in {time.monotonic() - started:.1f} s ({resources.get('CPU', 0):g} CPUs, {gpus:g} GPUs); "
            f"up to {parallel.jobs} runs at once, {threads} CPU(s) each" + (f", 1/{parallel.runs_per_gpu} GPU each" if on_gpu else "")
        )
        executor = RayExecutor(ray, parallel.jobs, threads, 1 / parallel.runs_per_gpu if on_gpu else 0)
        yield executor, threads
    finally:
        if owned:
            ray.shutdown()
