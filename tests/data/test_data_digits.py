"""scikit-learn digits: fixed stratified split, scaling, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from layerlottery.data import get_dataset, stratified_split


@pytest.fixture(scope="module")
def splits():
    return get_dataset("digits", "train"), get_dataset("digits", "test")


def test_shapes_and_scaling(splits) -> None:
    train, test = splits
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert set(torch.unique(train.images).tolist()) <= {round(v * 255 / 16) for v in range(17)}


def test_split_is_80_20_disjoint_and_complete(splits) -> None:
    train, test = splits
    full = load_digits()
    assert len(train) + len(test) == len(full.target) == 1797
    assert len(train) == round(0.8 * 1797)
    rows = lambda ds: {tuple(r) + (int(l),) for r, l in zip(ds.images.flatten(1).tolist(), ds.labels)}  # noqa: E731
    train_rows, test_rows = rows(train), rows(test)
    assert not train_rows & test_rows
    expected = {
        tuple(np.rint(img.flatten() * 255 / 16).astype(int).tolist()) + (int(t),)
        for img, t in zip(full.images, full.target)
    }
    assert train_rows | test_rows == expected  # label alignment survives the split


def test_split_is_stratified_and_ignores_seed(splits) -> None:
    train, test = splits
    fractions = torch.bincount(train.labels) / (torch.bincount(train.labels) + torch.bincount(test.labels))
    assert torch.all((fractions - 0.8).abs() < 0.01)
    other = get_dataset("digits", "test", seed=123)
    assert torch.equal(other.images, test.images) and torch.equal(other.labels, test.labels)


def test_normalization_uses_train_stats(splits) -> None:
    train, test = splits
    x = train.normalized()
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert test.mean == train.mean and test.std == train.std


def test_stratified_split_exact_total() -> None:
    labels = np.repeat(np.arange(3), [7, 5, 9])
    train, test = stratified_split(labels, 0.5, seed=0)
    assert len(train) == round(0.5 * 21) and len(train) + len(test) == 21
    assert not set(train) & set(test)
