"""The criterion registry: what a criterion is, which options it takes, and how options are checked.

A criterion is a function of a :class:`ScoringContext` (a private copy of the model, its removable blocks,
the data batches and the resolved options) that returns one float per removable block, lower meaning less
important. It is registered with :func:`register_criterion`, which also declares its options (each with a
default and a checker), whether it needs data, and whether its scores flow through gradients (which
zero-initialized residual branches silence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import torch
from torch import nn

from layerlottery.errors import ConfigError
from layerlottery.models.blocks import BlockInfo

OptionValue = Union[str, int, float, bool, None]
"""Option values are JSON scalars, so every resolved option set can go into a removal plan."""

Batch = tuple[torch.Tensor, torch.Tensor]


class DegenerateScoresWarning(UserWarning):
    """Scores that cannot rank the blocks (all zero, e.g. because residual branches are zero-initialized)."""


class ClassBalanceWarning(UserWarning):
    """Fewer samples of some class than a class-balanced criterion asked for."""


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One option of a criterion: its default and a checker that returns the normalized value.

    ``check`` raises ``ValueError`` with a short phrase saying what is allowed (e.g. "choose one of ...").
    """

    default: OptionValue
    check: Callable[[Any], OptionValue]
    help: str = ""


def one_of(*choices: str) -> Callable[[Any], OptionValue]:
    """Checker accepting exactly one of ``choices``."""

    def check(value: Any) -> OptionValue:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("choose one of " + ", ".join(repr(c) for c in choices))
        return value

    return check


def integer(minimum: int | None = None, allow_none: bool = False) -> Callable[[Any], OptionValue]:
    """Checker accepting an int (not a bool) of at least ``minimum``, or ``None`` if allowed."""

    def check(value: Any) -> OptionValue:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer" + (" or None" if allow_none else ""))
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return int(value)

    return check


def positive_float(value: Any) -> OptionValue:
    """Checker accepting a finite number > 0, returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a positive number")
    value = float(value)
    if not (0.0 < value < float("inf")):
        raise ValueError("must be a finite number > 0")
    return value


def boolean(value: Any) -> OptionValue:
    """Checker accepting ``True`` or ``False`` only (no truthy strings: a typo must not flip a setting)."""
    if not isinstance(value, bool):
        raise ValueError("expected True or False")
    return value


AGGREGATIONS = ("sum", "mean", "abs_sum")
BN_MODES = ("train", "eval")


def aggregation_option(default: str) -> Option:
    """How per-weight scores become one block score: sum, mean (per parameter) or sum of |.|."""
    return Option(default, one_of(*AGGREGATIONS), "per-weight scores -> block score: sum, mean per parameter, sum of |.|")


def bn_mode_option(default: str) -> Option:
    """Whether BatchNorm uses batch statistics ("train") or its running statistics ("eval") while scoring."""
    return Option(default, one_of(*BN_MODES), "BatchNorm statistics while scoring: batch ('train') or running ('eval')")


# ------------------------------------------------------------------------------------------ criteria


@dataclass(frozen=True)
class ScoringContext:
    """Everything a criterion may use. ``model`` is a private deep copy: a criterion may change it freely."""

    model: nn.Module
    blocks: tuple[BlockInfo, ...]
    """The removable blocks, in network order; the criterion returns one score for each."""
    groups: Mapping[str, tuple[str, ...]]
    """Block name -> qualified names of its conv/linear weights (``dim >= 2``), which scores aggregate over."""
    batches: list[Batch] | None
    """Data on the model's device and dtype (``None`` for data-free criteria)."""
    input_shape: tuple[int, ...]
    options: Mapping[str, OptionValue]

    def weights(self) -> dict[str, nn.Parameter]:
        """All conv/linear weights of the (copied) model, by qualified name, in module order."""
        return {name: p for name, p in self.model.named_parameters() if p.dim() >= 2}


CriterionFn = Callable[[ScoringContext], Mapping[str, float]]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its function, options and requirements."""

    name: str
    fn: CriterionFn
    options: Mapping[str, Option]
    needs_data: bool
    gradient_based: bool
    """Scores flow through the residual branches' outputs, so zero-initialized branches make them all zero."""
    validate: Callable[[dict[str, OptionValue]], None] | None = None
    """Cross-option checks; raises ``ValueError`` with a one-line reason."""
    images_only: str = ""
    """Why the criterion cannot score a model that reads token ids (a language model); empty if it can."""

    def check_model(self, model: nn.Module) -> None:
        """Raise a one-line :class:`ConfigError` if this criterion cannot score ``model`` (see ``images_only``)."""
        if self.images_only and getattr(model, "main_input_name", None) == "input_ids":
            raise ConfigError(
                f"{self.name} {self.images_only}, so it does not apply to a language model; use one of "
                f"{', '.join(name for name in list_criteria() if not _CRITERIA[name].images_only)}"
            )

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""

    @property
    def defaults(self) -> dict[str, OptionValue]:
        return {key: option.default for key, option in self.options.items()}

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, OptionValue]:
        """Defaults overridden by ``given``, each value checked; raises :class:`ConfigError` on any mistake."""
        unknown = [key for key in given if key not in self.options]
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ConfigError(
                f"criterion {self.name!r} has no option {', '.join(map(repr, unknown))}; valid options: {valid}"
            )
        resolved: dict[str, OptionValue] = {}
        for key, option in self.options.items():
            value = given.get(key, option.default)
            try:
                resolved[key] = option.check(value)
            except ValueError as exc:
                raise ConfigError(f"invalid option {key}={value!r} for criterion {self.name!r}: {exc}") from None
        if self.validate is not None:
            try:
                self.validate(resolved)
            except ValueError as exc:
                raise ConfigError(f"invalid options for criterion {self.name!r}: {exc}") from None
        return resolved

    def __call__(self, context: ScoringContext) -> Mapping[str, float]:
        return self.fn(context)


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(
    name: str,
    *,
    options: Mapping[str, Option] | None = None,
    needs_data: bool = False,
    gradient_based: bool = False,
    validate: Callable[[dict[str, OptionValue]], None] | None = None,
    images_only: str = "",
) -> Callable[[CriterionFn], CriterionFn]:
    """Decorator registering ``fn(context) -> {block name: score}`` as criterion ``name``.

    ``options`` maps each option name to an :class:`Option` (default + checker); ``needs_data`` makes
    :func:`~layerlottery.criteria.score_blocks` refuse to run without a batch; ``gradient_based`` turns on
    the zero-initialized-residual check; ``images_only`` says why it cannot score a language model (token ids).
    """

    def decorator(fn: CriterionFn) -> CriterionFn:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is registered twice")
        _CRITERIA[name] = Criterion(name, fn, dict(options or {}), needs_data, gradient_based, validate, images_only)
        return fn

    return decorator


def list_criteria() -> list[str]:
    """Names accepted by :func:`get_criterion` and ``score_blocks``, sorted."""
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    """The registered :class:`Criterion` called ``name``; :class:`ConfigError` listing the names if unknown."""
    try:
        return _CRITERIA[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown criterion {name!r}; choose one of: {', '.join(list_criteria())}") from None
