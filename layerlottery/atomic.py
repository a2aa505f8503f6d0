"""Atomic writes: a file or folder is either complete at its final path or absent, never half-written.

Work in progress is staged beside its destination (same file system, so the final rename is atomic) under a
hidden name that says who is writing it: ``.<name>.llstage-<host>-<pid>-<random>``. A process killed with
``kill -9`` cannot clean up after itself, so every later write to the same place removes the staged leftovers
of writers that are no longer alive on this host (a live writer's, or another host's on a shared file system,
are left alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from layerlottery.errors import ConfigError, DataError

_TAG = "llstage"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _staging_prefix(path: Path) -> str:
    """The hidden prefix of this process's staged copies of ``path``."""
    return f".{path.name}.{_TAG}-{_host_id()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_staging(path: str | os.PathLike) -> list[Path]:
    """Delete staged copies of ``path`` left by writers that died on this host; return what was removed."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{_TAG}-([0-9a-f]{{8}})-(\d+)-")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:  # the parent does not exist (yet) or cannot be listed: nothing to clean
        return removed
    host = _host_id()
    for entry in siblings:
        match = pattern.match(entry.name)
        if not match or match.group(1) != host or _pid_alive(int(match.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` and move the file to ``path`` only once ``write`` has returned.

    The temporary file sits beside ``path`` and keeps the suffix, since some writers
    (``torch.export.save``) look at it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_staging_prefix(path), suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def refuse_working_folder(path: str | os.PathLike, what: str = "--out") -> None:
    """Raise :class:`DataError` if ``path`` is the current folder or one of its parents.

    Replacing such a folder would delete the folder the user is working in (``--out .``, ``--out ..``).
    """
    target = Path(path).resolve()
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise DataError(f"{what} {path} is the current folder or one of its parents; name a new folder inside it instead")


def check_writable_folder(path: str | os.PathLike[str], setting: str) -> Path:
    """Refuse ``path`` as a folder to write into, naming ``setting`` (e.g. ``--runs-dir``), unless it can be.

    ``path`` need not exist yet: then its nearest existing parent must be a folder that takes new files,
    since the folder will be made there. Permissions alone do not answer it (root ignores them, a read-only
    mount or a full quota does not show in the mode bits), so a probe file is created and removed, the way
    the real writes will. Nothing is left behind.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{setting} {path} is a file, not a folder; choose a folder")
    existing = path
    while not existing.exists():  # the nearest part of the path that exists
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{setting} {path}: {existing} is a file, so no folder can be made inside it; choose another")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".layerlottery-probe-")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{setting} {path}: cannot write in {existing} ({reason}); choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; when the block ends without error it becomes ``path`` (else it is deleted).

    With ``overwrite``, an existing ``path`` is replaced: the caller must first check that it may be (it is
    never the current folder or one of its parents: :func:`refuse_working_folder` is enforced here). The old
    folder is renamed aside before the new one takes its place and deleted only then, so a crash at any
    moment loses no finished folder without leaving its successor complete, and leaves only staged names
    that the next write here removes.
    """
    path = Path(path).resolve()
    if path.exists():
        if not overwrite:
            raise DataError(f"{path} already exists; choose another name or replace it (--overwrite; overwrite=True in Python)")
        if not path.is_dir() or path.is_symlink():
            raise DataError(f"{path} is not a folder; choose another name")
        refuse_working_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=_staging_prefix(path)))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        if path.exists():
            retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=_staging_prefix(path)))
            os.replace(path, retired)  # an empty folder is replaced atomically by a rename onto it
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
