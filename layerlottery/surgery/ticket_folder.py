"""A ticket folder: what ``layerlottery prune --out DIR`` writes, and the only kind of folder it may replace.

A ticket folder holds exactly :data:`TICKET_FILES`: ``plan.json`` (the removal plan), ``pruned.pt`` (plan +
weights, :func:`~layerlottery.surgery.load_pruned`), ``pruned.pt2`` (``torch.export``, plain PyTorch) and
``summary.json``. ``--overwrite`` replaces a folder only when everything in it is one of these files and its
``summary.json`` and ``plan.json`` are ones layerlottery wrote: a folder holding anything else (the user's
files, the current folder, the home folder) is refused before any work, so overwriting never deletes what
layerlottery did not write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from layerlottery.atomic import atomic_directory, check_writable_folder, refuse_working_folder
from layerlottery.errors import DataError, LayerLotteryError
from layerlottery.surgery.plan import RemovalPlan

TICKET_FILES = ("plan.json", "pruned.pt", "pruned.pt2", "summary.json")
"""Every file of a ticket folder, and the only names ``--overwrite`` will delete."""

SUMMARY_FORMAT = "layerlottery-ticket"


def check_ticket_destination(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse, before any work, a destination that :func:`save_ticket_folder` could not or must not write.

    A new folder is fine if its nearest existing parent is a writable folder. An existing one needs
    ``overwrite`` and must be a ticket folder (see the module docstring).
    """
    path = Path(out_dir)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise DataError(f"{path} already exists; choose another --out or pass --overwrite")
        _check_replaceable(path)
    check_writable_folder(path.resolve().parent, f"--out {path}:")


def _check_replaceable(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        raise DataError(f"--out {path} is a file, not a ticket folder; choose another --out")
    refuse_working_folder(path)
    foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in TICKET_FILES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"--overwrite only replaces a ticket folder written by layerlottery, and {path} also holds {shown}; "
            "choose another --out"
        )
    if not is_ticket_folder(path):
        raise DataError(
            f"--overwrite only replaces a ticket folder written by layerlottery, and {path} is not one "
            "(no readable summary.json and plan.json of a ticket); choose another --out"
        )


def is_ticket_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that :func:`save_ticket_folder` wrote (and nothing else was added)."""
    path = Path(path)
    if not path.is_dir() or any(entry.name not in TICKET_FILES for entry in path.iterdir()):
        return False
    try:
        summary = json.loads((path / "summary.json").read_text())
        RemovalPlan.load(path / "plan.json")
    except (OSError, ValueError):  # missing or unreadable files; ConfigError is a ValueError too
        return False
    # Folders written before the format marker existed carry the file list instead.
    return isinstance(summary, dict) and (
        summary.get("format") == SUMMARY_FORMAT or isinstance(summary.get("files"), dict)
    )


def save_ticket_folder(
    pruned: nn.Module, plan: RemovalPlan, summary: Mapping[str, Any], out_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write a ticket folder atomically: all of :data:`TICKET_FILES` at ``out_dir``, or nothing.

    ``summary`` is stored as ``summary.json`` with the format marker and the file list added.
    """
    from layerlottery.surgery.export import export_program, save_pruned

    check_ticket_destination(out_dir, overwrite)
    record = {
        "format": SUMMARY_FORMAT,
        **summary,
        "files": {"plan": "plan.json", "layerlottery": "pruned.pt", "pytorch": "pruned.pt2"},
    }
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            plan.save(staging / "plan.json")
            save_pruned(pruned, plan, staging / "pruned.pt")
            export_program(pruned, staging / "pruned.pt2")
            (staging / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    except LayerLotteryError:
        raise
    except (OSError, RuntimeError) as exc:
        # A disk that fills or a folder made read-only meanwhile (torch.save reports it as a RuntimeError
        # "... failed writing file"): the staging folder is gone, so nothing was left behind.
        if isinstance(exc, RuntimeError) and "writ" not in str(exc):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise DataError(f"could not write the ticket to {out_dir} ({reason}); nothing was written there") from None
    return Path(out_dir)
