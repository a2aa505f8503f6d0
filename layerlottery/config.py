"""Typed settings: the single source of truth for every setting of an experiment.

Settings are frozen dataclasses. YAML presets and command-line overrides (``train.epochs=30``) are
checked against them, and every value is validated before any work starts (one clear line on error).
A run is named by :func:`settings_hash`, a hash of its settings *with defaults left out*, so adding a
new setting whose default keeps the old behaviour keeps every existing run's name.

Fields whose metadata says ``hash=False`` (where files live, which device, how often to print) do not
change a run's result and are left out of the hash too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from layerlottery.errors import ConfigError

T = TypeVar("T")


def _not_hashed(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A setting that does not change results (paths, device, logging): kept out of the run hash."""
    return field(default=default, metadata={"hash": False}, **kwargs)


@dataclass(frozen=True)
class ModelSettings:
    """Which network: a registered model name and its options."""

    name: str = "cifar_resnet32"
    shortcut: str = "B"
    """A (zero-padded identity) or B (1x1 projection, the paper's framework)."""
    zero_init_residual: bool = False

    def validate(self) -> None:
        from layerlottery.models import list_models

        if self.name not in list_models():
            raise ConfigError(f"model.name: unknown model {self.name!r}; choose one of: {', '.join(list_models())}")
        if self.shortcut not in ("A", "B"):
            raise ConfigError(f"model.shortcut must be 'A' or 'B', not {self.shortcut!r}")


@dataclass(frozen=True)
class DataSettings:
    """Which data, and how training batches are augmented."""

    name: str = "cifar10"
    options: Mapping[str, Any] = field(default_factory=dict)
    """Options of the dataset loader, e.g. ``{"train_fraction": 0.8}`` for the MNIST test set."""
    augment: bool = True
    """Pad + random crop + horizontal flip on training batches (the paper's augmentation)."""
    padding: int = 4
    flip: bool = True
    data_dir: str | None = _not_hashed(None)
    workers: int = _not_hashed(4)
    """DataLoader workers, for image folders only (in-memory datasets need none)."""

    def validate(self) -> None:
        from layerlottery.data import list_datasets

        if self.name not in list_datasets():
            raise ConfigError(f"data.name: unknown dataset {self.name!r}; choose one of: {', '.join(list_datasets())}")
        if self.padding < 0:
            raise ConfigError(f"data.padding must be >= 0, not {self.padding}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, not {self.workers}")


SCHEDULES = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class TrainSettings:
    """How a network is trained. Defaults: the authors' scripts (PAPER.md), 200 epochs of SGD + Nesterov."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "multistep"
    """multistep (lr x gamma at each milestone), cosine (to 0 at the last epoch) or constant."""
    milestones: tuple[float, ...] = (0.5, 0.75)
    """Fractions of the epochs at which multistep multiplies the lr by gamma (100 and 150 of 200)."""
    gamma: float = 0.1
    snapshot_epochs: tuple[int, ...] = ()
    """Epochs after which the weights are kept for rewinding (0 = the initialization)."""
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on CUDA; ignored on the CPU."""
    channels_last: bool = True
    """Channels-last memory format on CUDA; ignored on the CPU."""
    compile: bool = False
    """torch.compile the model (time spent compiling is not counted as training time)."""
    eval_every: int = _not_hashed(1)
    device: str = _not_hashed("auto")
    """cpu, cuda, cuda:N or auto."""

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"train.epochs must be >= 1, not {self.epochs}"),
            (self.batch_size >= 1, f"train.batch_size must be >= 1, not {self.batch_size}"),
            (self.lr > 0, f"train.lr must be > 0, not {self.lr}"),
            (0 <= self.momentum < 1, f"train.momentum must be in [0, 1), not {self.momentum}"),
            (not self.nesterov or self.momentum > 0, "train.nesterov needs train.momentum > 0"),
            (self.weight_decay >= 0, f"train.weight_decay must be >= 0, not {self.weight_decay}"),
            (self.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}"),
            (all(0 < m < 1 for m in self.milestones), f"train.milestones are fractions of the epochs in (0, 1), not {list(self.milestones)}"),
            (list(self.milestones) == sorted(self.milestones), f"train.milestones must increase, not {list(self.milestones)}"),
            (0 < self.gamma <= 1, f"train.gamma must be in (0, 1], not {self.gamma}"),
            (all(0 <= e <= self.epochs for e in self.snapshot_epochs), f"train.snapshot_epochs must lie in 0..{self.epochs}, not {list(self.snapshot_epochs)}"),
            (self.eval_every >= 1, f"train.eval_every must be >= 1, not {self.eval_every}"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), f"train.device must be auto, cpu, cuda or cuda:N, not {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def milestone_epochs(self) -> list[int]:
        """The milestones as epoch numbers, e.g. [100, 150] for 200 epochs."""
        return [round(m * self.epochs) for m in self.milestones]
