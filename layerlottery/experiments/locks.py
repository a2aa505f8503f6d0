"""A run directory is trained by one process at a time: it is claimed with a lock file, ``lock.json``.

The lock names its owner (host, pid, the process's start time, a token, when it was taken) and is created
atomically: a complete temporary file is hard-linked to ``lock.json``, which fails if the name exists, so
two processes can never both create it and nobody ever reads a half-written lock. The owner also holds an
advisory ``flock`` on it for its lifetime.

A lock is *stale* when its owner is gone, and then the next process to claim the run takes it over:

- an owner on **this host** is gone when its pid is not alive (or is alive but started at another time:
  the pid was reused). The takeover happens under ``flock``, which the kernel releases when a process dies,
  so of several processes that find the same stale lock exactly one takes it.
- an owner on **another host** (runs on a shared file system) is never judged from here: its pid means
  nothing on this machine. The lock is honoured; a run whose host died keeps it until the lock file is
  deleted by hand (the message that names the owner says so), or until the scheduler that launched the run
  (which knows its task died) breaks it with the token it gave (:func:`break_lock`).

The owner removes the lock when it is done, finished or failed; a ``kill -9`` leaves it behind, stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerlottery.atomic import _host_id, _pid_alive

try:  # advisory locks: POSIX only; without them the pid check alone decides (no race-free takeover)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "lock.json"

RECORD_SIZE = 1024
"""Bytes of every lock record (JSON padded with spaces: a host name up to a few hundred characters fits)."""

UNREADABLE_GRACE_SECONDS = 10.0
"""A lock whose content cannot be read (a write cut short, a foreign file): held for this long after its last
change, in case someone is writing it, then judged stale."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or held) a run's lock."""

    host: str
    host_id: str
    pid: int
    token: str
    started: float
    """Unix time the lock was taken."""
    process_start: str | None = None
    """The owner process's start time from ``/proc`` (Linux), telling a reused pid from the owner."""

    @classmethod
    def current(cls, token: str | None = None) -> LockOwner:
        """This process, with ``token`` (a fresh one when None)."""
        return cls(
            host=socket.gethostname(), host_id=_host_id(), pid=os.getpid(), token=token or uuid.uuid4().hex,
            started=time.time(), process_start=_process_start(os.getpid()),
        )

    @property
    def on_this_host(self) -> bool:
        return self.host_id == _host_id()

    def is_stale(self) -> bool:
        """Whether the owner is certainly gone: only decidable for an owner on this host."""
        if not self.on_this_host:
            return False
        if not _pid_alive(self.pid):
            return True
        now = _process_start(self.pid)
        return self.process_start is not None and now is not None and now != self.process_start

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} since {when}"

    def to_json(self) -> str:
        """The record, padded with spaces to :data:`RECORD_SIZE`: a takeover overwrites it in one write of
        the same length, so a reader sees the old owner or the new one, never a mix or an empty file."""
        text = json.dumps(dataclasses.asdict(self), indent=2) + "\n"
        return text.ljust(RECORD_SIZE - 1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LockOwner | None:
        try:
            raw: Any = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in raw.items() if key in fields})
        except (ValueError, TypeError, AttributeError):
            return None


class RunLock:
    """A held lock: release it (or use it as a context manager) when the run is done or has failed."""

    def __init__(self, path: Path, fd: int, owner: LockOwner) -> None:
        self.path = path
        self.owner = owner
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove ``lock.json`` if it is still this lock's file, then drop the ``flock``."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    os.unlink(self.path)  # before the flock goes, so no taker sees a lock without an owner
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(run_path: str | os.PathLike[str]) -> Path:
    return Path(run_path) / LOCK_FILE


def acquire(run_path: str | os.PathLike[str], token: str | None = None) -> RunLock | LockOwner:
    """Claim the run at ``run_path`` (created if needed): a :class:`RunLock`, or the live owner who holds it.

    A stale lock (see the module docstring) is taken over. ``token`` identifies this claim to whoever
    launched it (:func:`break_lock`).
    """
    path = lock_path(run_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = LockOwner.current(token)
    for _attempt in range(500):  # each retry: the lock changed hands meanwhile, or a taker is mid-takeover
        if _create(path, me):
            fd = os.open(path, os.O_RDWR)
            _flock(fd)  # cannot block: a taker only takes a lock whose owner is gone, and we are alive
            return RunLock(path, fd, me)
        owner = read_owner(run_path)
        if owner is not None:
            return owner
        taken = _take_over(path, me)
        if isinstance(taken, RunLock):
            return taken
        if taken is _BUSY:  # another process is taking it over right now: its record comes in a moment
            time.sleep(0.01)
    # Still stale by its record yet flock-held: a child the dead owner forked holds the file open. Held,
    # until that child exits too.
    with contextlib.suppress(OSError):
        return read_owner(run_path) or LockOwner.from_json(path.read_text()) or _unknown_owner()
    return _unknown_owner()


def _unknown_owner() -> LockOwner:
    return LockOwner(host="?", host_id="?", pid=0, token="", started=time.time())


def read_owner(run_path: str | os.PathLike[str]) -> LockOwner | None:
    """The live owner of the run's lock, or None when there is no lock or it is stale."""
    path = lock_path(run_path)
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    owner = LockOwner.from_json(text)
    if owner is None:  # mid-takeover (someone is writing it), or its writer died in that moment
        return _unknown_owner() if age < UNREADABLE_GRACE_SECONDS else None
    return None if owner.is_stale() else owner


def break_lock(run_path: str | os.PathLike[str], token: str) -> bool:
    """Delete the run's lock if it still holds ``token``: for a scheduler whose task died (its process
    killed, its node lost), so the run can be claimed again at once. Returns whether it was deleted."""
    path = lock_path(run_path)
    with contextlib.suppress(FileNotFoundError):
        owner = LockOwner.from_json(path.read_text())
        if owner is not None and owner.token == token:
            path.unlink()
            return True
    return False


def _create(path: Path, owner: LockOwner) -> bool:
    """Create ``path`` holding ``owner``, complete, unless it exists: link(2) of a finished temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lock-")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(owner.to_json())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


_BUSY = object()


def _take_over(path: Path, me: LockOwner) -> RunLock | object | None:
    """Rewrite a stale lock in place with ``me`` as owner: the lock, ``_BUSY`` if another process holds its
    ``flock`` (taking it over right now), or None if it changed meanwhile (look again)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if not _flock(fd, wait=False):
            os.close(fd)
            return _BUSY
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not released and replaced meanwhile
                current = LockOwner.from_json(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
                if current is None or current.is_stale():
                    os.pwrite(fd, me.to_json().encode(), 0)  # same length: replaces it whole (see to_json)
                    return RunLock(path, fd, me)
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise


def _flock(fd: int, wait: bool = True) -> bool:
    """Take an exclusive ``flock`` on ``fd``; False if another holds it. A file system without flock
    support counts as success (the pid check still guards the lock)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK / EOPNOTSUPP on some network file systems
        return True
    return True


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None
