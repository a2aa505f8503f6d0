"""A generated dataset for tests and quick runs: no files, no downloads, learnable by a tiny net."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from layerlottery.data.dataset import ImageDataset, channel_stats
from layerlottery.data.splits import check_split
from layerlottery.errors import ConfigError

# Noise level relative to the [0, 1] pixel range: high enough that one pixel does not give the class
# away, low enough that a small conv net reaches high accuracy in a few epochs.
NOISE = 0.15
# Side of the random grid each class pattern is upsampled from; coarse grids give smooth patterns
# that survive the network's pooling.
PATTERN_GRID = 4
_STREAM = {"patterns": 0, "train": 1, "test": 2}


def load_synthetic(
    split: str = "train",
    data_dir: object = None,
    seed: int = 0,
    *,
    num_samples: int = 256,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    noise: float = NOISE,
) -> ImageDataset:
    """Generate a class-conditional image dataset, identical for identical arguments.

    Each class owns a smooth random pattern (per channel); a sample is its class pattern plus
    Gaussian pixel noise, so a small network learns it in a few epochs. Train and test share the
    patterns (drawn from ``seed``) but use independent noise and labels. Labels are balanced: each
    class gets ``num_samples // num_classes`` or one more. ``noise`` is the noise std in [0, 1] pixel
    units; raise it for a harder task. ``data_dir`` is ignored. Mean and std are those of the train
    split, so both splits are normalized alike.
    """
    check_split(split)
    for option, value in (
        ("num_samples", num_samples),
        ("num_classes", num_classes),
        ("image_size", image_size),
        ("channels", channels),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"synthetic option {option} must be a positive integer, got {value!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise:
        raise ConfigError(f"synthetic option noise must be a non-negative number, got {noise!r}")
    patterns = _patterns(seed, num_classes, channels, image_size)
    images, labels = _samples(patterns, seed, split, num_samples, noise)
    train_images = images if split == "train" else _samples(patterns, seed, "train", num_samples, noise)[0]
    mean, std = channel_stats(train_images)
    return ImageDataset(images, labels, num_classes, mean, std, name="synthetic")


def _patterns(seed: int, num_classes: int, channels: int, image_size: int) -> torch.Tensor:
    """One smooth pattern per class, float (K, C, S, S) in [0.25, 0.75]."""
    rng = np.random.default_rng([seed, _STREAM["patterns"]])
    coarse = torch.from_numpy(rng.random((num_classes, channels, PATTERN_GRID, PATTERN_GRID))).float()
    smooth = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=True)
    return 0.25 + 0.5 * smooth


def _samples(
    patterns: torch.Tensor, seed: int, split: str, n: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # Separate seed streams per split: train and test never share a noise draw.
    rng = np.random.default_rng([seed, _STREAM[split]])
    k = patterns.shape[0]
    labels = torch.from_numpy(rng.permutation(np.arange(n) % k)).long()
    gaussian = torch.from_numpy(rng.standard_normal((n, *patterns.shape[1:]))).float()
    pixels = (patterns[labels] + noise * gaussian).clamp_(0.0, 1.0)
    return pixels.mul_(255.0).round_().to(torch.uint8), labels
