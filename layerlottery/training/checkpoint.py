"""Checkpoints and rewind snapshots on disk: written atomically, read with ``weights_only=True``, checked.

A training checkpoint (``last.pt``) is a dict of tensors and plain data (see :data:`CHECKPOINT_KEYS`),
stamped with :data:`CHECKPOINT_FORMAT` and a fingerprint of the model architecture. A rewind snapshot
(``epoch_{i:03d}.pt``) holds one state dict, stamped with :data:`SNAPSHOT_FORMAT`. Both are only ever
written through :func:`layerlottery.atomic.atomic_write`, so a file at its final path is complete; a file that
still cannot be read (disk trouble, a stray file, another model's checkpoint) raises
:class:`CheckpointError` naming the file. It is never silently ignored, since starting over from scratch
would quietly throw away days of GPU time, or worse, mix two runs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from layerlottery.errors import DataError
from layerlottery.atomic import atomic_write

CHECKPOINT_FORMAT = "layerlottery.train_checkpoint/1"
SNAPSHOT_FORMAT = "layerlottery.snapshot/1"
CHECKPOINT_NAME = "last.pt"

CHECKPOINT_KEYS = (
    "format",
    "fingerprint",
    "settings",
    "seed",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "history",
    "timing",
    "rng",
)
"""What a training checkpoint holds: ``epoch`` counts completed epochs; ``settings`` is the canonical JSON
of the run's result-affecting settings; ``timing`` the accumulated totals; ``rng`` torch's CPU (and CUDA)
generator states as uint8 tensors."""


class CheckpointError(DataError):
    """A checkpoint or snapshot that cannot be used: unreadable, not ours, or of another model or run."""


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the architecture: class name plus every state-dict key with its shape and dtype.

    Device and memory format are left out, so a checkpoint written on a GPU in channels-last layout
    still matches the same model on the CPU.
    """
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"|{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return digest.hexdigest()[:16]


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    """Where the resume checkpoint of a run lives: ``directory/last.pt``."""
    return Path(directory) / CHECKPOINT_NAME


def snapshot_path(directory: str | os.PathLike[str], epoch: int) -> Path:
    """Where the rewind snapshot taken after ``epoch`` epochs lives: ``directory/epoch_{epoch:03d}.pt``."""
    return Path(directory) / f"epoch_{epoch:03d}.pt"


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a training checkpoint atomically (temporary file beside ``path``, then rename).

    ``state`` must hold every key of :data:`CHECKPOINT_KEYS` but ``format``, which is stamped here, and
    only tensors and plain Python data, so that it can be read back with ``weights_only=True``.
    """
    missing = [key for key in CHECKPOINT_KEYS if key != "format" and key not in state]
    if missing:
        raise ValueError(f"a training checkpoint needs the keys {', '.join(missing)}")  # a bug in the caller
    payload = {**state, "format": CHECKPOINT_FORMAT}
    return _write(path, payload, what="checkpoint")


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: torch.device | str | None = None,
    *,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` and check it is one of ours.

    With ``fingerprint`` (see :func:`model_fingerprint`), a checkpoint of another architecture is refused.
    Raises :class:`CheckpointError` (one line naming the file) when the file is missing, corrupt,
    truncated, holds arbitrary pickled objects, or is not a layerlottery training checkpoint.
    """
    path = Path(path)
    data = read_checkpoint_file(path, map_location, what="checkpoint")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a layerlottery training checkpoint (format {data.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}); delete it or use another checkpoint directory"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} is corrupt (no {', '.join(missing)}); delete it to start over")
    if fingerprint is not None and data["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different model architecture (fingerprint {data['fingerprint']}, "
            f"this model {fingerprint}); use another checkpoint directory or delete it to start over"
        )
    return data


def save_snapshot(path: str | os.PathLike[str], model: nn.Module, epoch: int) -> Path:
    """Write the weights of ``model`` after ``epoch`` epochs (0 = initialization) atomically."""
    payload = {
        "format": SNAPSHOT_FORMAT,
        "epoch": int(epoch),
        "fingerprint": model_fingerprint(model),
        "model": model.state_dict(),
    }
    return _write(path, payload, what="snapshot")


def _write(path: str | os.PathLike[str], payload: Mapping[str, Any], what: str) -> Path:
    """torch.save through atomic_write; a failed write (a full disk, above all) is one CheckpointError line.

    torch reports a full disk as a RuntimeError from its zip writer ("file write failed"), Python as an
    OSError (ENOSPC); either way the temporary file is gone and the previous checkpoint is intact.
    """
    try:
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"could not write the {what} {path} ({_first_line(exc)}); free space on that disk (or check it is "
            f"writable) and rerun: training resumes from the last checkpoint written"
        ) from None


def load_snapshot(path: str | os.PathLike[str], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read a rewind snapshot's state dict (on the CPU); with ``model``, check it matches and load it in.

    Raises :class:`CheckpointError` when the file is unreadable, not a snapshot, or of another architecture.
    """
    path = Path(path)
    data = read_checkpoint_file(path, "cpu", what="snapshot")
    if data.get("format") != SNAPSHOT_FORMAT or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path} is not a layerlottery rewind snapshot; delete it or point to another file")
    if model is not None:
        fingerprint = model_fingerprint(model)
        if data.get("fingerprint") != fingerprint:
            raise CheckpointError(
                f"snapshot {path} belongs to a different model architecture (fingerprint "
                f"{data.get('fingerprint')}, this model {fingerprint}); load it into the model it was taken from"
            )
        model.load_state_dict(data["model"])
    return data["model"]


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's CPU generator state and, on CUDA, the device's: uint8 tensors a weights-only file can hold."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: Mapping[str, torch.Tensor], device: torch.device) -> None:
    """Put back the generator states of :func:`capture_rng` (a CUDA state is used only on CUDA)."""
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def read_checkpoint_file(path: Path, map_location: torch.device | str | None, what: str) -> dict[str, Any]:
    """torch.load with weights_only=True; every failure becomes one CheckpointError line."""
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}; check the path")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            # weights_only refuses anything but tensors and plain data: executing a pickled object from a
            # file found on disk is how a checkpoint becomes a security hole.
            raise CheckpointError(
                f"{what} {path} holds pickled Python objects ({found.group(1)}), so layerlottery did not write it "
                f"and will not load it; delete it to start over"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        reason = f"unreadable data: {detail.group(1).strip()}" if detail else _first_line(exc)
        raise CheckpointError(f"{what} {path} is corrupt ({reason}); delete it to start over") from None
    except Exception as exc:  # truncated zip, garbage bytes, I/O errors: all mean the same to the user
        raise CheckpointError(f"{what} {path} is corrupt ({_first_line(exc)}); delete it to start over") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} is not a layerlottery {what} (it holds a {type(data).__name__}); delete it or use another path"
        )
    return data


def _first_line(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
