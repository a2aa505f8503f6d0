"""Atomic writes and ticket folders: nothing the user owns is ever deleted, nothing half-written survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layerlottery.atomic import atomic_directory, atomic_write_text, remove_stale_staging
from layerlottery.errors import DataError
from layerlottery.surgery.ticket_folder import TICKET_FILES, check_ticket_destination, is_ticket_folder


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so it is certainly not alive."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _fake_ticket(folder: Path) -> None:
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps({"removed": ["layer1.1"]}))
    (folder / "summary.json").write_text(json.dumps({"format": "layerlottery-ticket", "files": {}}))
    (folder / "pruned.pt").write_bytes(b"weights")
    (folder / "pruned.pt2").write_bytes(b"program")


def test_overwrite_replaces_a_ticket_folder(tmp_path: Path) -> None:
    target = tmp_path / "ticket"
    _fake_ticket(target)
    assert is_ticket_folder(target)
    check_ticket_destination(target, overwrite=True)
    with atomic_directory(target, overwrite=True) as staging:
        (staging / "plan.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["plan.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ticket"]  # nothing staged or retired is left


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: (d.mkdir(), (d / "thesis.tex").write_text("years of work")), "also holds thesis.tex"),
        (lambda d: (d.mkdir(), (d / "summary.json").write_text("{}")), "is not one"),
        (lambda d: (_fake_ticket(d), (d / "notes.txt").write_text("mine")), "also holds notes.txt"),
        (lambda d: d.write_text("a file"), "is a file"),
    ],
    ids=["user-folder", "not-a-ticket-summary", "ticket-plus-user-file", "a-file"],
)
def test_overwrite_refuses_what_layerlottery_did_not_write(tmp_path: Path, make, fragment: str) -> None:
    target = tmp_path / "out"
    make(target)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match=fragment):
        check_ticket_destination(target, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("relative", [".", ".."])
def test_the_working_folder_and_its_parents_are_never_replaced(tmp_path: Path, monkeypatch, relative: str) -> None:
    work = tmp_path / "work"
    _fake_ticket(work)  # even a folder that looks like a ticket
    monkeypatch.chdir(work)
    with pytest.raises(DataError, match="current folder"):
        check_ticket_destination(Path(relative), overwrite=True)
    with pytest.raises(DataError, match="current folder"):
        with atomic_directory(Path(relative), overwrite=True):
            pass
    assert sorted(p.name for p in work.iterdir()) == sorted(TICKET_FILES)


def test_a_failed_write_leaves_the_old_folder_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "ticket"
    _fake_ticket(target)
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True) as staging:
            (staging / "plan.json").write_text("{}")
            raise RuntimeError("crash while writing")
    assert sorted(p.name for p in target.iterdir()) == sorted(TICKET_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ticket"]


def test_staging_left_by_a_dead_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "ticket"
    from layerlottery.atomic import _host_id

    dead = tmp_path / f".ticket.llstage-{_host_id()}-{_dead_pid()}-abc123"
    dead.mkdir()
    (dead / "pruned.pt").write_bytes(b"x" * 1000)
    alive = tmp_path / f".ticket.llstage-{_host_id()}-{os.getpid()}-def456"  # a live writer: left alone
    alive.mkdir()
    other_host = tmp_path / f".ticket.llstage-00000000-{_dead_pid()}-ghi789"  # another machine's: left alone
    other_host.mkdir()
    unrelated = tmp_path / ".ticketing.llstage-whatever"
    unrelated.mkdir()
    with atomic_directory(target) as staging:
        (staging / "plan.json").write_text("{}")
    assert not dead.exists()
    assert alive.exists() and other_host.exists() and unrelated.exists()


def test_a_file_written_atomically_cleans_its_own_stale_temporaries(tmp_path: Path) -> None:
    from layerlottery.atomic import _host_id

    stale = tmp_path / f".result.json.llstage-{_host_id()}-{_dead_pid()}-xyz.json"
    stale.write_text("half")
    atomic_write_text(tmp_path / "result.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    assert remove_stale_staging(tmp_path / "result.json") == []


def test_kill_9_during_a_directory_write_leaves_only_what_the_next_write_removes(tmp_path: Path) -> None:
    """A writer killed in the middle leaves its staging folder; the next write to that place deletes it."""
    target = tmp_path / "ticket"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from layerlottery.atomic import atomic_directory
        with atomic_directory(Path({str(target)!r})) as staging:
            (staging / "pruned.pt").write_bytes(b"x" * 100000)
            print("staged", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "staged"
    child.send_signal(signal.SIGKILL)
    child.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".ticket.")]
    assert len(leftovers) == 1 and not target.exists()
    with atomic_directory(target) as staging:
        (staging / "plan.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ticket"]
