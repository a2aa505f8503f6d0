"""Run directory locks: one owner at a time, stale owners on this host taken over, other hosts honoured."""

from __future__ import annotations

import dataclasses
import subprocess
import threading

from layerlottery.experiments import locks


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _write_owner(run, **changes) -> locks.LockOwner:
    owner = dataclasses.replace(locks.LockOwner.current("theirs"), **changes)
    run.mkdir(parents=True, exist_ok=True)
    locks.lock_path(run).write_text(owner.to_json())
    return owner


def test_one_owner_until_released(tmp_path) -> None:
    run = tmp_path / "dense-abc"
    held = locks.acquire(run, "mine")
    assert isinstance(held, locks.RunLock) and held.owner.token == "mine"
    second = locks.acquire(run, "other")  # this process is alive, so its lock is live, even to itself
    assert isinstance(second, locks.LockOwner) and second.token == "mine"
    assert locks.read_owner(run) == held.owner
    held.release()
    assert not locks.lock_path(run).exists() and locks.read_owner(run) is None
    again = locks.acquire(run, "other")
    assert isinstance(again, locks.RunLock)
    again.release()


def test_dead_owner_on_this_host_is_taken_over(tmp_path) -> None:
    run = tmp_path / "ticket-abc"
    _write_owner(run, pid=_dead_pid())
    assert locks.read_owner(run) is None  # stale
    taken = locks.acquire(run, "mine")
    assert isinstance(taken, locks.RunLock)
    assert locks.LockOwner.from_json(locks.lock_path(run).read_text()).token == "mine"
    taken.release()


def test_reused_pid_is_stale(tmp_path) -> None:
    run = tmp_path / "ticket-abc"
    _write_owner(run, process_start="1")  # our pid, but a process that started at another time
    assert locks.read_owner(run) is None


def test_another_hosts_lock_is_honoured_and_broken_only_with_its_token(tmp_path) -> None:
    run = tmp_path / "ticket-abc"
    _write_owner(run, host="elsewhere", host_id="0" * 8, pid=_dead_pid())
    held = locks.acquire(run, "mine")
    assert isinstance(held, locks.LockOwner) and held.host == "elsewhere"
    assert not locks.break_lock(run, "mine")
    assert locks.break_lock(run, "theirs")
    assert isinstance(locks.acquire(run, "mine"), locks.RunLock)


def test_of_many_takers_of_a_stale_lock_exactly_one_wins(tmp_path) -> None:
    run = tmp_path / "dense-abc"
    _write_owner(run, pid=_dead_pid())
    results: list[object] = []
    start = threading.Barrier(8)

    def take(token: str) -> None:
        start.wait()
        results.append(locks.acquire(run, token))

    threads = [threading.Thread(target=take, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8  # nobody gave up
    winners = [r for r in results if isinstance(r, locks.RunLock)]
    assert len(winners) == 1
    assert all(isinstance(r, locks.LockOwner) and r.token == winners[0].owner.token for r in results if r is not winners[0])
