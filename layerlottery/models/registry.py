"""One registry and one factory for models: ``create_model(name, **options)`` and ``list_models()``.

Two kinds of names:

* a registered name (``cifar_resnet32``): a factory decorated with :func:`register_model`;
* a *source* name ``PREFIX:IDENTIFIER`` (``torchvision:resnet50``, ``timm:vit_tiny_patch16_224``,
  ``hf:gpt2``): a network another library builds, through a factory registered for the prefix with
  :func:`register_model_source`. The factory gets the identifier and the same options as any model
  (``num_classes``, ``in_channels``, ``image_size`` fitted to the data, ``shortcut``, ``zero_init_residual``
  and ``model.options``) and refuses, in one line, an option that has no meaning for its networks.

This is how settings, presets and the CLI reach the networks people use, and a plan records the name, so
``RemovalPlan.build_model()`` rebuilds a pruned torchvision or Hugging Face network the same way.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from layerlottery.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}
_HIDDEN: set[str] = set()
"""Models that work like any other but are not offered to users (tiny fixtures for the tests)."""
SourceFactory = Callable[..., nn.Module]
_SOURCES: dict[str, tuple[SourceFactory, str]] = {}
"""Prefix -> (factory(identifier, **options), one line saying what the identifier names)."""


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


def register_model_source(prefix: str, description: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator that makes ``PREFIX:IDENTIFIER`` names build through ``factory(identifier, **options)``.

    ``description`` says what the identifier is (shown by ``layerlottery models`` and in errors), e.g.
    ``"a torchvision classification model, e.g. torchvision:resnet50"``.
    """

    def decorator(factory: SourceFactory) -> SourceFactory:
        if prefix in _SOURCES:
            raise ValueError(f"model source {prefix!r} is registered twice")
        _SOURCES[prefix] = (factory, description)
        return factory

    return decorator


def list_model_sources() -> dict[str, str]:
    """``{prefix: description}`` of the ``PREFIX:IDENTIFIER`` sources, sorted by prefix."""
    return {prefix: _SOURCES[prefix][1] for prefix in sorted(_SOURCES)}


def split_source(name: str) -> tuple[str, str] | None:
    """``("hf", "gpt2")`` for ``"hf:gpt2"``; None for a registered name (no colon)."""
    if ":" not in name:
        return None
    prefix, identifier = name.split(":", 1)
    return prefix, identifier


def check_model_name(name: str, setting: str = "model.name") -> None:
    """Raise a one-line ConfigError unless ``name`` is a registered model or ``PREFIX:IDENTIFIER`` of a known source."""
    source = split_source(name)
    if source is None:
        if name not in _MODELS:
            sources = ", ".join(f"{prefix}:NAME" for prefix in list_model_sources())
            raise ConfigError(f"{setting}: unknown model {name!r}; choose one of: {', '.join(list_models())} (or {sources})")
        return
    prefix, identifier = source
    if prefix not in _SOURCES:
        known = ", ".join(f"{p}:" for p in list_model_sources())
        raise ConfigError(f"{setting}: unknown model source {prefix!r} in {name!r}; the sources are {known}")
    if not identifier.strip():
        raise ConfigError(f"{setting}: {name!r} names no model after {prefix!r}; {_SOURCES[prefix][1]}")


def list_models(*, include_hidden: bool = False) -> list[str]:
    """Names accepted by :func:`create_model`, sorted; the hidden test fixtures only with ``include_hidden``."""
    return sorted(name for name in _MODELS if include_hidden or name not in _HIDDEN)


def create_model(name: str, **options: object) -> nn.Module:
    """Build a registered model, e.g. ``create_model("cifar_resnet32", shortcut="B")``, or a source's network,
    e.g. ``create_model("torchvision:resnet18", num_classes=10)``."""
    source = split_source(name)
    if source is not None:
        check_model_name(name, "model")
        factory, _ = _SOURCES[source[0]]
        return factory(source[1], **options)
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None
    try:
        return factory(**options)
    except TypeError as exc:  # an option the factory does not take
        raise ConfigError(f"model {name!r} does not accept these options ({exc})") from None


def describe_model(name: str) -> str:
    """First line of the model factory's docstring (a source's description for ``PREFIX:IDENTIFIER``)."""
    source = split_source(name)
    if source is not None:
        return _SOURCES[source[0]][1] if source[0] in _SOURCES else ""
    doc = (_MODELS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
