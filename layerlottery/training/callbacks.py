"""What a training run knows (:class:`TrainState`) and the hooks that act on it (:class:`Callback`).

The loop calls, in order: ``on_train_start``; per epoch ``on_epoch_start``, the training steps,
``on_epoch_trained`` (the steps are done and timed; evaluation has not started), the evaluation (when
due), the scheduler step, then ``on_epoch_end``; finally ``on_train_end``. Callbacks see
the same :class:`TrainState` object throughout. A run that is already complete calls no hook at all, and
a run that raises (divergence, interruption) skips ``on_train_end``.

Anything beside the core update (checkpoints, rewind snapshots, energy tracking) is a callback. An energy
meter that should see the training steps only runs from ``on_epoch_start`` to ``on_epoch_trained`` and
writes its reading into that epoch's row, which the resume checkpoint keeps; one that measures the whole
call starts in ``on_train_start`` and stops in ``on_train_end``, where ``state.train_seconds`` (time spent
in training steps only) and ``state.history`` are complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from layerlottery.config import TrainSettings, hashed_dict
from layerlottery.training.checkpoint import (
    CheckpointError,
    capture_rng,
    checkpoint_path,
    model_fingerprint,
    restore_rng,
    save_checkpoint,
    save_snapshot,
    snapshot_path,
)


@dataclass(eq=False)
class TrainState:
    """The mutable state of one training run.

    ``epoch`` counts *completed* epochs: in ``on_epoch_start`` the epoch about to run is ``epoch + 1``,
    in ``on_epoch_end`` the one just finished is ``epoch`` and ``history[-1]`` is its row.

    Timing: ``train_seconds`` is the wall-clock of training steps only (CUDA synchronized before each
    clock read; evaluation, checkpoints and compile warm-up steps excluded) summed over all epochs, also
    across resumptions; ``timed_samples`` the images those steps processed; ``compile_seconds`` the time
    of ``torch.compile`` warm-up steps; ``samples_seen`` every training image processed.
    """

    model: nn.Module
    """The model being trained (never the ``torch.compile`` wrapper, so state dicts keep their keys)."""
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    settings: TrainSettings
    device: torch.device
    seed: int = 0
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    timed_samples: int = 0
    samples_seen: int = 0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = "unavailable"
    resumed_from: int | None = None
    """The completed epoch this call resumed from, or None for a fresh start."""
    start_epoch: int = 0
    """The epoch the run began after (a rewound ticket trains epochs ``start_epoch + 1 ..``); ``history``
    holds the rows of the epochs this run trained, ``epoch - start_epoch`` of them."""

    @property
    def finished(self) -> bool:
        """Whether every epoch of ``settings.epochs`` has been trained."""
        return self.epoch >= self.settings.epochs

    def run_key(self) -> str:
        """Canonical JSON of what makes two runs the same: result-affecting settings and the seed."""
        key: dict[str, Any] = {"train": hashed_dict(self.settings), "seed": self.seed}
        if self.start_epoch:  # only when set, so the checkpoints of runs from epoch 0 keep their key
            key["start_epoch"] = self.start_epoch
        return json.dumps(key, sort_keys=True)

    def to_checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume bitwise-identically, as tensors and plain data."""
        return {
            "fingerprint": model_fingerprint(self.model),
            "settings": self.run_key(),
            "seed": self.seed,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": [dict(row) for row in self.history],
            "timing": {
                "train_seconds": self.train_seconds,
                "compile_seconds": self.compile_seconds,
                "timed_samples": self.timed_samples,
                "samples_seen": self.samples_seen,
                "peak_memory_bytes": self.peak_memory_bytes,
                "peak_memory_kind": self.peak_memory_kind,
            },
            "rng": capture_rng(self.device),
            "torch_version": str(torch.__version__),  # TorchVersion itself is not plain data
        }

    def restore(self, checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
        """Load a checkpoint read by :func:`~layerlottery.training.load_checkpoint` into this state.

        Refuses (:class:`CheckpointError`) a checkpoint written with other settings or another seed:
        resuming it would silently mix two runs.
        """
        if checkpoint["settings"] != self.run_key():
            changed = _difference(checkpoint["settings"], self.run_key())
            raise CheckpointError(
                f"checkpoint {path} was written by a run with other settings ({changed}); "
                f"use another checkpoint directory or delete it to start over"
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            timing = checkpoint["timing"]
            self.epoch = int(checkpoint["epoch"])
            self.history = [dict(row) for row in checkpoint["history"]]
            self.train_seconds = float(timing["train_seconds"])
            self.compile_seconds = float(timing["compile_seconds"])
            self.timed_samples = int(timing["timed_samples"])
            self.samples_seen = int(timing["samples_seen"])
            self.peak_memory_bytes = timing["peak_memory_bytes"]
            self.peak_memory_kind = str(timing["peak_memory_kind"])
            restore_rng(checkpoint["rng"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint {path} is corrupt ({reason}); delete it to start over") from None
        if not self.start_epoch <= self.epoch <= self.settings.epochs or len(self.history) != self.epoch - self.start_epoch:
            raise CheckpointError(
                f"checkpoint {path} is corrupt (epoch {self.epoch} with {len(self.history)} history rows); "
                f"delete it to start over"
            )


def _difference(stored: str, current: str) -> str:
    """Name the settings that differ, e.g. ``train.lr 0.1 -> 0.01``."""
    old, new = _flatten(json.loads(stored)), _flatten(json.loads(current))
    changed = [
        f"{key} {old.get(key, 'default')} -> {new.get(key, 'default')}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]
    return ", ".join(changed) or "unknown difference"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Callback:
    """Base class of training hooks; every hook is a no-op, override the ones you need."""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step of this call (after a resume has restored ``state``)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the first step of epoch ``state.epoch + 1``."""

    def on_epoch_trained(self, state: TrainState, row: dict[str, Any]) -> None:
        """Right after the training steps of epoch ``row["epoch"]``, before evaluation and checkpointing.

        ``row`` is the epoch's history row (test values still None); a callback may add plain-data fields
        to it, which end up in ``state.history`` and in the checkpoint. ``state.epoch`` still counts the
        epochs completed before this one.
        """

    def on_epoch_end(self, state: TrainState) -> None:
        """After epoch ``state.epoch`` is trained, evaluated and its row appended to ``state.history``."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch (not called when training raised)."""


class Checkpointer(Callback):
    """Writes the resume checkpoint ``directory/last.pt`` after every epoch, atomically.

    The loop runs it after every other callback, so that everything an epoch produced (snapshots,
    measurements) is on disk before the checkpoint says the epoch is done.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = checkpoint_path(directory)

    def on_epoch_end(self, state: TrainState) -> None:
        save_checkpoint(self.path, state.to_checkpoint())


class SnapshotSaver(Callback):
    """Keeps the weights after the given epochs as ``directory/epoch_{i:03d}.pt`` (0 = initialization).

    The epoch-0 snapshot is written in ``on_train_start`` of a fresh run, before any step.
    """

    def __init__(self, directory: str | os.PathLike[str], epochs: Iterable[int]) -> None:
        self.directory = Path(directory)
        self.epochs = frozenset(int(e) for e in epochs)

    def on_train_start(self, state: TrainState) -> None:
        if state.epoch == 0 and 0 in self.epochs:
            save_snapshot(snapshot_path(self.directory, 0), state.model, 0)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch in self.epochs:
            save_snapshot(snapshot_path(self.directory, state.epoch), state.model, state.epoch)
