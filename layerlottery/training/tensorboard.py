"""Per-epoch metrics streamed to TensorBoard while a run trains (``train.tensorboard=true``).

An optional extra: ``pip install 'layerlottery[tensorboard]'``, then ``tensorboard --logdir runs``. The
scalars are those of each epoch's history row (the same numbers metrics.csv keeps), at step = the epoch:

    train/loss, train/accuracy, test/loss, test/accuracy (epochs evaluated), lr, images_per_second

Accuracies are fractions, as in the results. A resumed run appends from the epoch it resumed at and drops
events a killed run had logged past it, so the curves never double back.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from layerlottery.errors import ConfigError
from layerlottery.training.callbacks import Callback, TrainState

SCALARS = {
    "train_loss": "train/loss",
    "train_acc": "train/accuracy",
    "test_loss": "test/loss",
    "test_acc": "test/accuracy",
    "lr": "lr",
    "images_per_second": "images_per_second",
}
"""History-row field -> TensorBoard tag."""


def require_tensorboard() -> None:
    """ConfigError (one line, with the install command) unless TensorBoard can be imported."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard needs TensorBoard, which is not installed: pip install 'layerlottery[tensorboard]'")


class TensorBoardLogger(Callback):
    """Writes each epoch's scalars with ``torch.utils.tensorboard.SummaryWriter`` to ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_train_start(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a run killed after logging epoch e but before its checkpoint resumes at an earlier
        # epoch; TensorBoard then hides the stale events from that step on.
        self._writer = SummaryWriter(str(self.log_dir), purge_step=state.epoch + 1 if state.epoch else None)

    def on_epoch_end(self, state: TrainState) -> None:
        if self._writer is None:
            return
        row = state.history[-1]
        for field, tag in SCALARS.items():
            value = row.get(field)
            if value is not None:
                self._writer.add_scalar(tag, float(value), global_step=int(row["epoch"]))
        self._writer.flush()  # on disk each epoch: a run that raises never reaches on_train_end

    def on_train_end(self, state: TrainState) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
