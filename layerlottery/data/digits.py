"""scikit-learn's bundled 8x8 handwritten digits: real images that need no download."""

from __future__ import annotations

import numpy as np
import torch

from layerlottery.data.dataset import ImageDataset, channel_stats
from layerlottery.data.splits import SPLIT_SEED, check_split, stratified_split

DIGITS_TRAIN_FRACTION = 0.8


def load_digits_dataset(split: str = "train", data_dir: object = None, seed: int = 0) -> ImageDataset:
    """Load the 1,797 scikit-learn digits as uint8 images of shape (N, 1, 8, 8).

    Pixels 0..16 are scaled to 0..255 (``round(x * 255 / 16)``). The 80/20 train/test split is
    stratified by class and made with a fixed seed: ``seed`` is accepted for a uniform loader
    signature but does not move the split, so test images are never trained on. Mean and std come
    from the train split. ``data_dir`` is ignored (the data ships with scikit-learn).
    """
    check_split(split)
    from sklearn.datasets import load_digits  # deferred: importing sklearn costs about a second

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TRAIN_FRACTION, SPLIT_SEED)
    mean, std = channel_stats(torch.from_numpy(pixels[train_idx]))
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(
        torch.from_numpy(pixels[idx].copy()), torch.from_numpy(labels[idx].copy()), 10, mean, std, name="digits"
    )
