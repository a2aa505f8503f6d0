"""Runs: one training job each (a dense network, or one ticket), in a directory named by its settings' hash.

A run directory holds::

    settings.json      the run's resolved settings (and the hash that names the directory)
    environment.json   versions, device, machine
    plan.json          the removal plan (tickets only), written before training
    checkpoints/       last.pt (resume point) and rewind snapshots
    metrics.csv        rows (run, epoch, metric, value)
    result.json        the summary, written last: its presence means the run is finished

Every step looks for its output first, so rerunning a finished run does nothing and an interrupted one
resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from layerlottery.config import DataSettings, ModelSettings, TrainSettings, hashed_dict, settings_hash, to_dict
from layerlottery.errors import DataError
from layerlottery.atomic import atomic_write_text


@dataclass(frozen=True)
class TicketSpec:
    """How a ticket at initialization is found: criterion, p and the selection rules."""

    criterion: str
    p: int
    criterion_options: Mapping[str, Any] = field(default_factory=dict)
    samples_per_class: int = 10
    protect: str = "first"
    min_per_stage: int = 2


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result. Its hash (defaults left out) names the directory."""

    model: ModelSettings
    data: DataSettings
    train: TrainSettings
    seed: int = 0
    ticket: TicketSpec | None = None

    @property
    def kind(self) -> str:
        return "dense" if self.ticket is None else "ticket"

    @property
    def name(self) -> str:
        """Directory name: kind plus the settings hash, e.g. ``ticket-3fa2c1d09b7e``."""
        return f"{self.kind}-{settings_hash(self)}"

    @property
    def label(self) -> str:
        """A human-readable description, e.g. ``grasp p=3 seed 1``."""
        if self.ticket is None:
            return f"dense seed {self.seed}"
        return f"{self.ticket.criterion} p={self.ticket.p} seed {self.seed}"


def environment() -> dict[str, Any]:
    """Versions and hardware of this process, recorded beside every run."""
    import layerlottery

    info: dict[str, Any] = {
        "layerlottery": layerlottery.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency, but keep the record best-effort
        info["torchvision"] = None
    return info


class RunDir:
    """The files of one run. Creating it never overwrites another run's settings."""

    def __init__(self, root: str | os.PathLike, spec: RunSpec) -> None:
        self.spec = spec
        self.path = Path(root) / spec.name
        self.checkpoints = self.path / "checkpoints"

    @property
    def settings_file(self) -> Path:
        return self.path / "settings.json"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    def is_finished(self) -> bool:
        return self.result_file.is_file()

    def prepare(self) -> None:
        """Create the directory with settings and environment, or check that an existing one is this run's."""
        record = {"name": self.spec.name, "label": self.spec.label, "hashed": hashed_dict(self.spec), "settings": to_dict(self.spec)}
        if self.settings_file.is_file():
            try:
                existing = json.loads(self.settings_file.read_text())
            except json.JSONDecodeError:
                existing = None
            if not isinstance(existing, dict) or existing.get("hashed") != record["hashed"]:
                raise DataError(
                    f"{self.path} holds another run's settings (or a corrupt settings.json); move it away to rerun"
                )
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "environment.json", json.dumps(environment(), indent=2) + "\n")
        atomic_write_text(self.settings_file, json.dumps(record, indent=2) + "\n")

    def write_result(self, result: Mapping[str, Any], history: Iterable[Mapping[str, Any]]) -> None:
        """Write metrics rows, then the summary (last, atomically: it marks the run finished)."""
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["run", "epoch", "metric", "value"])
        for entry in history:
            for metric, value in entry.items():
                if metric != "epoch" and value is not None:
                    writer.writerow([self.spec.name, entry["epoch"], metric, value])
        for metric, value in result.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.writerow([self.spec.name, "final", metric, value])
        atomic_write_text(self.metrics_file, rows.getvalue())
        atomic_write_text(self.result_file, json.dumps(dict(result), indent=2) + "\n")

    def read_result(self) -> dict[str, Any]:
        try:
            return json.loads(self.result_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.result_file} is unreadable ({exc}); delete it to rerun the run") from None
