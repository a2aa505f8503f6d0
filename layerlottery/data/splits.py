"""Fixed, stratified train/test splits for datasets published as one set."""

from __future__ import annotations

import numpy as np

from layerlottery.errors import ConfigError

# The split seed is a constant, never the user's --seed: changing the experiment seed must not move
# samples between train and test, or test accuracy would be measured on training images.
SPLIT_SEED = 20240611


def check_fraction(train_fraction: float) -> float:
    """Return ``train_fraction`` as a float, or raise ConfigError if it is not strictly between 0 and 1."""
    try:
        value = float(train_fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"train_fraction must be a number between 0 and 1, got {train_fraction!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}")
    return value


def stratified_split(
    labels: np.ndarray, train_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into sorted, disjoint (train, test) index arrays covering every sample.

    Each class keeps about ``train_fraction`` of its samples in train, and the train total is exactly
    ``round(train_fraction * N)``: per-class floors are topped up by largest remainder, so 0.8 of
    10,000 gives 8,000 and not 7,996.
    """
    fraction = check_fraction(train_fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    exact = np.array([fraction * len(m) for m in members])
    counts = np.floor(exact).astype(int)
    missing = int(round(fraction * len(labels))) - int(counts.sum())
    # Stable sort so ties between classes are broken the same way on every platform.
    for k in np.argsort(-(exact - counts), kind="stable")[:max(missing, 0)]:
        counts[k] += 1
    train = np.concatenate([m[:n] for m, n in zip(members, counts)]) if members else np.empty(0, int)
    test = np.concatenate([m[n:] for m, n in zip(members, counts)]) if members else np.empty(0, int)
    return np.sort(train), np.sort(test)


SPLITS = ("train", "test")


def check_split(split: str) -> str:
    """Return ``split`` if it is "train" or "test", else raise ConfigError."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    return split
