"""One registry and one factory for models: ``create_model(name, **options)`` and ``list_models()``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from layerlottery.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}
_HIDDEN: set[str] = set()
"""Models that work like any other but are not offered to users (tiny fixtures for the tests)."""


def register_model(name: str, *, hidden: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory under ``name``; ``hidden`` keeps it out of listings."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        if hidden:
            _HIDDEN.add(name)
        return factory

    return decorator


def list_models(*, include_hidden: bool = False) -> list[str]:
    """Names accepted by :func:`create_model`, sorted; the hidden test fixtures only with ``include_hidden``."""
    return sorted(name for name in _MODELS if include_hidden or name not in _HIDDEN)


def create_model(name: str, **options: object) -> nn.Module:
    """Build a registered model, e.g. ``create_model("cifar_resnet32", shortcut="B")``."""
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None
    try:
        return factory(**options)
    except TypeError as exc:  # an option the factory does not take
        raise ConfigError(f"model {name!r} does not accept these options ({exc})") from None


def describe_model(name: str) -> str:
    """First line of the model factory's docstring."""
    doc = (_MODELS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
