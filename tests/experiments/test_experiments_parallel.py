"""Runs trained at once in worker processes (and Ray tasks): the same bits as one after the other, tickets
after their dense run, a killed worker costing its run only, and two invocations never training a run twice.

Every test pins LAYERLOTTERY_THREADS=1: a run's last bits depend on its thread count, so equality with
the sequential run holds at equal thread counts (see layerlottery.experiments.parallel).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from layerlottery.config import load_settings
from layerlottery.experiments import locks
from layerlottery.experiments import parallel
from layerlottery.experiments.parallel import Parallelism, RunsFailedError, dependencies, schedule
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.tickets import plan_runs, run_experiment
from layerlottery.training.checkpoint import checkpoint_path

from _experiment_helpers import tiny_overrides

# Three runs: the dense network and two tickets at initialization.
EXPERIMENT = tiny_overrides(4, "seeds=[0]", "pruning.p=[1]", "pruning.criteria=[snip,grasp]")
TIMING = {"train_seconds", "epoch_train_seconds", "typical_epoch_seconds", "slowest_epoch_ratio", "images_per_second", "peak_memory_bytes"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch) -> None:
    monkeypatch.setenv("LAYERLOTTERY_THREADS", "1")  # spawned workers copy the environment


def settings_in(runs_dir: Path, overrides: list[str] = EXPERIMENT):
    return load_settings("defaults", [*overrides, f"runs_dir={runs_dir}"])


# Three runs that depend on each other: the dense network, then two tickets after training rewound from it.
LOTTERY = tiny_overrides(
    2, "seeds=[0]", "lottery.criteria=[magnitude]", "lottery.p=[1]", "lottery.rewind_fractions=[0,0.5]",
)


def _sequential(runs_dir: Path, overrides: list[str]) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERLOTTERY_THREADS", "1")
        run_experiment(settings_in(runs_dir, overrides), progress=False, log=lambda line: None)
    return runs_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The experiment trained one run after the other, in this process."""
    return _sequential(tmp_path_factory.mktemp("sequential"), EXPERIMENT)


def without_timing(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in TIMING}


def assert_same_runs(runs_dir: Path, reference: Path, overrides: list[str] = EXPERIMENT) -> None:
    """Every run's final weights bitwise, and its result apart from wall-clock measurements."""
    for spec in plan_runs(settings_in(reference, overrides)):
        ours, theirs = RunDir(runs_dir, spec), RunDir(reference, spec)
        mine = torch.load(checkpoint_path(ours.checkpoints), weights_only=False)["model"]
        expected = torch.load(checkpoint_path(theirs.checkpoints), weights_only=False)["model"]
        assert mine.keys() == expected.keys() and all(torch.equal(mine[k], expected[k]) for k in mine), spec.label
        assert without_timing(ours.read_result()) == without_timing(theirs.read_result())


def test_two_jobs_give_the_sequential_bits_and_tickets_wait_for_their_dense_run(tmp_path) -> None:
    reference = _sequential(tmp_path / "sequential", LOTTERY)
    settings = settings_in(tmp_path / "parallel", LOTTERY)
    specs = plan_runs(settings)
    dense = specs[0]
    tickets = [spec for spec in specs if spec.kind == "lottery"]
    assert dense.kind == "dense" and len(tickets) == 2 and all(dependencies(spec) == (dense.name,) for spec in tickets)

    lines: list[str] = []
    result = run_experiment(settings, progress=True, log=lines.append, parallel=Parallelism(jobs=2))
    assert result.trained == 3
    assert_same_runs(tmp_path / "parallel", reference, LOTTERY)
    sequential = run_experiment(settings_in(reference, LOTTERY), progress=False, log=lambda line: None)
    assert [without_timing(r) for r in result.runs] == [without_timing(r) for r in sequential.runs]  # the same table

    finished = next(i for i, line in enumerate(lines) if "finished" in line and dense.name in line)
    for ticket in tickets:  # a ticket rewinds from the dense run's snapshots: it starts only after that run ended
        assert next(i for i, line in enumerate(lines) if "started" in line and ticket.name in line) > finished
    assert any("epoch 2/2" in line and dense.name in line and "ETA" in line for line in lines)
    for spec in specs:  # each worker's output went to its run's log; no lock is left
        run_dir = RunDir(settings.runs_dir, spec)
        assert "epoch 2/2" in (run_dir.path / "log.txt").read_text()
        assert not locks.lock_path(run_dir.path).exists()


def _kill_mid_run(run_dir: RunDir, done: threading.Event) -> None:
    """Once the worker training ``run_dir`` has finished an epoch, kill it with SIGKILL."""
    while not done.is_set():
        owner = locks.read_owner(run_dir.path)
        if owner is not None and owner.pid != os.getpid() and checkpoint_path(run_dir.checkpoints).exists():
            os.kill(owner.pid, signal.SIGKILL)
            return
        time.sleep(0.01)


def test_failed_runs_do_not_stop_the_others_and_a_rerun_finishes_only_them(tmp_path, reference) -> None:
    settings = settings_in(tmp_path)
    dense, broken, other = (RunDir(tmp_path, spec) for spec in plan_runs(settings))
    broken.prepare()
    checkpoint_path(broken.checkpoints).write_bytes(b"not a checkpoint")  # found only when the run trains
    done = threading.Event()
    killer = threading.Thread(target=_kill_mid_run, args=(dense, done))
    killer.start()
    try:
        with pytest.raises(RunsFailedError) as failure:
            run_experiment(settings, progress=False, log=lambda line: None, parallel=Parallelism(jobs=2))
    finally:
        done.set()
        killer.join()
    message = str(failure.value)
    assert message.startswith(
        f"2 of 3 run(s) failed: {dense.spec.label} ({dense.path}: worker killed by signal 9; log {dense.path / 'log.txt'}); "
        f"{broken.spec.label} ({broken.path}: CheckpointError"
    ), message
    assert "Traceback" in (broken.path / "log.txt").read_text()
    assert [d.is_finished() for d in (dense, broken, other)] == [False, False, True]  # the third went on

    checkpoint_path(broken.checkpoints).unlink()  # the cause fixed; the killed run resumes from its checkpoint
    rerun = run_experiment(settings, progress=False, log=lambda line: None, parallel=Parallelism(jobs=2))
    assert rerun.trained == 2
    assert_same_runs(tmp_path, reference)


def _cli(runs_dir: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "layerlottery.cli", "run", "defaults", *EXPERIMENT, "--runs-dir", str(runs_dir), "-q", *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_invocations_train_each_run_once(tmp_path) -> None:
    first, second = _cli(tmp_path), _cli(tmp_path)
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    labels = [spec.label for spec in plan_runs(settings_in(tmp_path))]
    # Each invocation prints "[i/n] LABEL: DIR" for every run it trains.
    trained = [[label for label in labels if f"] {label}: " in err] for _out, err in outputs]
    assert sorted(trained[0] + trained[1]) == sorted(labels)
    assert "Table saved" in outputs[0][0] and "Table saved" in outputs[1][0]


def test_ray_tasks_give_the_sequential_bits(tmp_path, reference) -> None:
    pytest.importorskip("ray", reason="the ray extra: pip install 'layerlottery[ray]' (CI installs it)")
    result = run_experiment(settings_in(tmp_path), progress=False, log=lambda line: None, parallel=Parallelism(jobs=2, executor="ray"))
    assert result.trained == 3
    assert_same_runs(tmp_path, reference)


class ScriptedExecutor:
    """Trains nothing: each submitted run ends at the next look, finished (a result file) or failed as told."""

    slots = 2

    def __init__(self, runs_dir: Path, failing: set[str]) -> None:
        self.runs_dir, self.failing = runs_dir, failing
        self.submitted: list[str] = []
        self.pending: list[str] = []

    def running(self) -> int:
        return len(self.pending)

    def submit(self, job) -> None:
        self.submitted.append(job.spec.name)
        self.pending.append(job.spec.name)

    def events(self, timeout: float) -> list:
        events = []
        for name in self.pending:
            if name in self.failing:
                events.append((name, "outcome", "failed", "RuntimeError: boom"))
            else:
                (self.runs_dir / name).mkdir(parents=True, exist_ok=True)
                (self.runs_dir / name / "result.json").write_text("{}")
                events.append((name, "outcome", "finished", ""))
        self.pending = []
        return events

    def close(self) -> None:
        pass


def test_a_failed_dense_run_fails_its_tickets_without_starting_them(tmp_path) -> None:
    settings = settings_in(tmp_path, LOTTERY)
    dense, *tickets = plan_runs(settings)
    executor = ScriptedExecutor(tmp_path, failing={dense.name})
    lines: list[str] = []
    scheduled = schedule(settings, plan_runs(settings), executor, lines.append)
    assert executor.submitted == [dense.name]
    assert [(f.spec.name, f.message) for f in scheduled.failures] == [
        (dense.name, "RuntimeError: boom"),
        *((ticket.name, f"not started: it needs {dense.label}, which failed") for ticket in tickets),
    ]
    assert scheduled.trained == 0 and sum("FAILED" in line for line in lines) == 3


def test_a_run_held_by_another_process_is_waited_for_not_trained(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(parallel, "POLL_SECONDS", 0.01)
    settings = settings_in(tmp_path)
    held, *others = plan_runs(settings)
    claim = locks.acquire(RunDir(tmp_path, held).path)  # another invocation (here: this process) trains it
    executor = ScriptedExecutor(tmp_path, failing=set())
    lines: list[str] = []
    waiting = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        if "waiting" in line:
            waiting.set()

    def finish_elsewhere() -> None:
        # Only once the scheduler has said it waits: a fixed delay loses the race on a loaded machine.
        waiting.wait(timeout=60)
        RunDir(tmp_path, held).result_file.write_text("{}")
        claim.release()

    finisher = threading.Thread(target=finish_elsewhere)
    finisher.start()
    scheduled = schedule(settings, plan_runs(settings), executor, log)
    finisher.join()
    assert sorted(executor.submitted) == sorted(spec.name for spec in others) and scheduled.trained == 2
    assert any("waiting" in line and held.name in line for line in lines)
    assert any("finished" in line and "by another process" in line and held.name in line for line in lines)
