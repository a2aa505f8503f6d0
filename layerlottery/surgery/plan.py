"""A removal plan: which blocks go, why, and what it saves, as JSON that replays on a fresh model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

from layerlottery.errors import ConfigError
from layerlottery.atomic import atomic_write_text

PLAN_FORMAT_VERSION = 2
"""2 records ``seed``, and CIFAR ResNets build with shortcut B unless ``model_options`` say otherwise; format 1
plans (shortcut A was then the default) are still read, with their shortcut made explicit."""
# The registered models whose default shortcut changed from A to B with plan format 2.
_SHORTCUT_A_UNTIL_FORMAT_2 = frozenset({*(f"cifar_resnet{depth}" for depth in (20, 32, 44, 56, 110)), "test_resnet"})


class PlanRecord:
    """What every plan dataclass shares: JSON text and atomic files (through its ``to_dict`` and
    ``from_dict``), and the cost reductions of its ``dense_macs``/``pruned_macs``/``dense_params``/
    ``pruned_params`` fields. ``KIND`` names the record in error messages ("removal plan", "filter plan").
    """

    KIND: ClassVar[str] = "plan"
    dense_macs: int | None
    pruned_macs: int | None
    dense_params: int | None
    pruned_params: int | None

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

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, text: str) -> Any:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.KIND} is not valid JSON ({exc})") from None
        return cls.from_dict(data)  # type: ignore[attr-defined]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON, atomically (a temp file renamed into place)."""
        return atomic_write_text(path, self.to_json() + "\n")


@dataclass(frozen=True)
class RemovalPlan(PlanRecord):
    """Everything needed to rebuild a pruned network and to know how it was chosen.

    ``model`` and ``model_options`` name a registered architecture so that
    ``remove_blocks(create_model(plan.model, **plan.model_options), plan)`` rebuilds the pruned network
    (:meth:`build_model` does that, from ``seed`` when the plan records one); both are ``None``/empty for
    a user's own model.
    """

    KIND: ClassVar[str] = "removal plan"

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
    """How blocks were picked: p / fraction / mac_reduction, protected blocks, per-stage minimum, and ``rule``
    (``greedy`` or ``contiguous``, see ``surgery.select``; plans that predate it were greedy)."""
    dense_macs: int | None = None
    pruned_macs: int | None = None
    dense_params: int | None = None
    pruned_params: int | None = None
    seed: int | None = None
    """The seed theta_0 was initialized from (see ``initial_model``), or None if the plan does not know it."""
    format_version: int = PLAN_FORMAT_VERSION

    @property
    def p(self) -> int:
        """Number of removed blocks (the paper's p)."""
        return len(self.removed)

    @property
    def selection_rule(self) -> str:
        """``greedy`` (the p lowest scores) or ``contiguous`` (the lowest run of adjacent blocks); plans written
        before the rule was recorded were greedy. The rule describes how ``removed`` was chosen; ``removed``
        alone says what the network is, so older readers still rebuild a contiguous plan's network."""
        return str(self.selection.get("rule", "greedy"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["removed"] = list(self.removed)
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemovalPlan:
        """The plan that :meth:`to_dict` wrote; :class:`ConfigError` naming the field if one has the wrong type."""
        if not isinstance(data, dict) or "removed" not in data:
            raise ConfigError("not a layerlottery removal plan: a JSON object with a 'removed' list is expected")
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if version not in (1, PLAN_FORMAT_VERSION):
            raise ConfigError(
                f"removal plan format {version} is not supported by this layerlottery (format {PLAN_FORMAT_VERSION}); upgrade layerlottery"
            )
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"removal plan has unknown fields {unknown}; was it written by a newer layerlottery?")
        values = {name: _field_value(name, known[name], value) for name, value in data.items()}
        return cls(**(_from_format_1(values) if version == 1 else values))

    @classmethod
    def load(cls, path: str | os.PathLike) -> RemovalPlan:
        """Read a plan file, or the ``plan.json`` inside a folder (a ticket written by ``prune``, a run)."""
        path = Path(path)
        if path.is_dir():
            if not (path / "plan.json").is_file():
                raise ConfigError(f"{path} is a folder without a plan.json; give a removal plan file or a ticket folder")
            path = path / "plan.json"
        if not path.is_file():
            raise ConfigError(f"removal plan {path} does not exist")
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"removal plan {path} is unreadable ({exc})") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def build_model(self, **override_options: Any):  # -> nn.Module (import kept lazy: plan.py is plain data)
        """Create the registered dense model and remove this plan's blocks from it.

        With a recorded ``seed`` the dense model is theta_0 of that seed, so the result is the ticket's
        initial weights bit for bit (as ``prune`` saved them); without one it is a fresh random draw.
        """
        from layerlottery.experiments.at_init import initial_model
        from layerlottery.models import create_model
        from layerlottery.surgery.apply import remove_blocks

        if self.model is None:
            raise ConfigError("this plan names no registered model; call remove_blocks(your_model, plan) instead")
        options = {**self.model_options, **override_options}
        dense = create_model(self.model, **options) if self.seed is None else initial_model(self.model, options, self.seed)
        return remove_blocks(dense, self)


def _describe(value: Any) -> str:
    """A JSON value as a message shows it: ``null``, ``the string 'x'``, ``a list``, ``3``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_names(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(name, str) and name for name in value)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(size) and size > 0 for size in value)


# What JSON value each field annotation accepts, and how to say so. A field whose annotation is missing
# here fails tests/surgery/test_surgery_plan_files.py, not a user.
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tuple[str, ...]": (_is_names, 'a list of block names, e.g. ["layer1.1"]'),
    "tuple[int, ...] | None": (lambda v: v is None or _is_shape(v), "null or a list of positive sizes, e.g. [3, 32, 32]"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "int | None": (lambda v: v is None or _is_int(v), "a whole number or null"),
    "int": (_is_int, "a whole number"),
    "dict[str, Any]": (lambda v: isinstance(v, dict), "an object"),
    "dict[str, float]": (lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()), "an object of numbers"),
}


def _field_value(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the dataclass field ``name`` holds it (JSON lists become tuples), or a ConfigError naming the field."""
    accepts, expected = _FIELD_TYPES[annotation]
    if not accepts(value):
        raise ConfigError(f"removal plan field {name!r} must be {expected}, not {_describe(value)}")
    if name == "removed" and len(set(value)) != len(value):
        twice = sorted({block for block in value if value.count(block) > 1})
        raise ConfigError(f"removal plan field 'removed' lists {', '.join(twice)} twice")
    return tuple(value) if annotation.startswith("tuple") and value is not None else value


def _from_format_1(values: dict[str, Any]) -> dict[str, Any]:
    """A format 1 plan as format 2 reads it: a CIFAR ResNet without a shortcut option was built with A."""
    options = dict(values.get("model_options") or {})
    if values.get("model") in _SHORTCUT_A_UNTIL_FORMAT_2:
        options.setdefault("shortcut", "A")
    return {**values, "model_options": options, "format_version": PLAN_FORMAT_VERSION}
