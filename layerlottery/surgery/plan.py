"""A removal plan: which blocks go, why, and what it saves, as JSON that replays on a fresh model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from layerlottery.errors import ConfigError
from layerlottery.atomic import atomic_write_text

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RemovalPlan:
    """Everything needed to rebuild a pruned network and to know how it was chosen.

    ``model`` and ``model_options`` name a registered architecture so that
    ``remove_blocks(create_model(plan.model, **plan.model_options), plan)`` rebuilds the pruned network
    (:meth:`build_model` does exactly that); both are ``None``/empty for a user's own model.
    """

    removed: tuple[str, ...]
    """Qualified names of the removed blocks, in network order."""
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    criterion: str | None = None
    criterion_options: dict[str, Any] = field(default_factory=dict)
    """Every setting of the criterion, defaults included (aggregation, BN mode, ...)."""
    scores: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    """How blocks were picked: p / fraction / mac_reduction, protected blocks, per-stage minimum."""
    dense_macs: int | None = None
    pruned_macs: int | None = None
    dense_params: int | None = None
    pruned_params: int | None = None
    format_version: int = PLAN_FORMAT_VERSION

    @property
    def p(self) -> int:
        """Number of removed blocks (the paper's p)."""
        return len(self.removed)

    @property
    def mac_reduction(self) -> float | None:
        """Fraction of the dense MACs removed, e.g. 0.0683 for one block of ResNet-32."""
        if not self.dense_macs or self.pruned_macs is None:
            return None
        return 1.0 - self.pruned_macs / self.dense_macs

    @property
    def param_reduction(self) -> float | None:
        """Fraction of the dense parameters removed."""
        if not self.dense_params or self.pruned_params is None:
            return None
        return 1.0 - self.pruned_params / self.dense_params

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["removed"] = list(self.removed)
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemovalPlan:
        if not isinstance(data, dict) or "removed" not in data:
            raise ConfigError("not a layerlottery removal plan: a JSON object with a 'removed' list is expected")
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise ConfigError(
                f"removal plan format {version} is not supported by this layerlottery (format {PLAN_FORMAT_VERSION}); upgrade layerlottery"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"removal plan has unknown fields {unknown}; was it written by a newer layerlottery?")
        values = dict(data)
        values["removed"] = tuple(values["removed"])
        if values.get("input_shape") is not None:
            values["input_shape"] = tuple(values["input_shape"])
        return cls(**values)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> RemovalPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"removal plan is not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON, atomically (a temp file renamed into place)."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> RemovalPlan:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"removal plan {path} does not exist")
        return cls.from_json(path.read_text())

    def build_model(self, **override_options: Any):  # -> nn.Module (import kept lazy: plan.py is plain data)
        """Create the registered dense model and remove this plan's blocks from it."""
        from layerlottery.models import create_model
        from layerlottery.surgery.apply import remove_blocks

        if self.model is None:
            raise ConfigError("this plan names no registered model; call remove_blocks(your_model, plan) instead")
        return remove_blocks(create_model(self.model, **{**self.model_options, **override_options}), self)
