"""The generated dataset."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data import get_dataset
from layerlottery.errors import ConfigError


def test_shapes_dtypes_and_balance() -> None:
    ds = get_dataset("synthetic", num_samples=100, num_classes=5, image_size=16, channels=3)
    assert ds.images.shape == (100, 3, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels, minlength=5).tolist() == [20] * 5
    assert ds.num_classes == 5 and len(ds.mean) == 3 and len(ds.std) == 3


def test_deterministic_and_seed_dependent() -> None:
    a = get_dataset("synthetic", seed=1, num_samples=64)
    b = get_dataset("synthetic", seed=1, num_samples=64)
    c = get_dataset("synthetic", seed=2, num_samples=64)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_train_and_test_differ_but_share_stats() -> None:
    train = get_dataset("synthetic", "train", num_samples=64)
    test = get_dataset("synthetic", "test", num_samples=64)
    assert not torch.equal(train.images, test.images)
    assert train.mean == test.mean and train.std == test.std


def test_learnable_nearest_class_mean_generalizes() -> None:
    train = get_dataset("synthetic", "train", num_samples=200, image_size=16)
    test = get_dataset("synthetic", "test", num_samples=200, image_size=16)
    x, y = train.normalized().flatten(1), train.labels
    centroids = torch.stack([x[y == c].mean(0) for c in range(train.num_classes)])
    predicted = torch.cdist(test.normalized().flatten(1), centroids).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


@pytest.mark.parametrize("option", [{"num_samples": 0}, {"num_classes": -1}, {"image_size": 2.5}, {"noise": -1.0}])
def test_bad_options(option: dict) -> None:
    with pytest.raises(ConfigError):
        get_dataset("synthetic", **option)
