"""Dataset names and the loaders behind them."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from layerlottery.data.cifar import load_cifar10, load_cifar100
from layerlottery.data.dataset import ImageDataset
from layerlottery.data.digits import load_digits_dataset
from layerlottery.data.mnist import load_mnist
from layerlottery.data.splits import check_split
from layerlottery.data.synthetic import load_synthetic
from layerlottery.errors import ConfigError

# A loader takes (split, data_dir, seed, **options) and returns an ImageDataset.
Loader = Callable[..., ImageDataset]

_LOADERS: dict[str, Loader] = {
    "synthetic": load_synthetic,
    "digits": load_digits_dataset,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, sorted."""
    return sorted(_LOADERS)


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Make ``loader(split, data_dir, seed, **options)`` available as ``get_dataset(name, ...)``."""
    key = name.strip().lower()
    if not key:
        raise ConfigError("a dataset name must not be empty")
    if key in _LOADERS and not overwrite:
        raise ConfigError(f"dataset {key!r} is already registered; pass overwrite=True to replace it")
    _LOADERS[key] = loader


def loader_options(name: str) -> set[str]:
    """The options the loader of dataset ``name`` takes by name (e.g. ``{"download", "train_fraction"}``)."""
    key = str(name).strip().lower()
    if key not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    params = inspect.signature(_LOADERS[key]).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def get_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **options: object,
) -> ImageDataset:
    """Load dataset ``name`` ("synthetic", "digits", "mnist", "cifar10", "cifar100", ...).

    ``split`` is "train" or "test". ``data_dir`` is where the files live (ignored by synthetic and
    digits). ``seed`` drives generated data (synthetic) but never moves a train/test split.
    ``options`` go to the loader, e.g. ``num_samples`` for synthetic, ``train_fraction`` for mnist,
    ``download`` for cifar; an option the loader does not take raises ConfigError.
    """
    key = str(name).strip().lower()
    if key not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    check_split(split)
    loader = _LOADERS[key]
    _check_options(key, loader, options)
    return loader(split, data_dir, seed, **options)


def _check_options(name: str, loader: Loader, options: dict[str, object]) -> None:
    """Reject misspelt options with a message naming the valid ones, instead of a TypeError."""
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        accepted = ", ".join(valid) if valid else "none"
        raise ConfigError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}; it accepts: {accepted}")
