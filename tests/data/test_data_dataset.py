"""ImageDataset: validation, normalization and seeded sampling."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data import ImageDataset
from layerlottery.errors import ConfigError, DataError


def make(n_per_class: tuple[int, ...] = (5, 3, 4), channels: int = 2) -> ImageDataset:
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(n_per_class)])
    n = len(labels)
    # Encode the sample index in the pixels so label alignment can be checked after sampling.
    images = (torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1) * 10).expand(n, channels, 4, 5).contiguous()
    return ImageDataset(images, labels, len(n_per_class), (0.2,) * channels, (0.5,) * channels, name="toy")


def sample_index(x: torch.Tensor, ds: ImageDataset) -> torch.Tensor:
    """Recover each sample's index from its normalized pixels (see make)."""
    raw = x[:, 0, 0, 0] * ds.std[0] + ds.mean[0]
    return torch.round(raw * 255 / 10).long()


def test_properties_and_repr() -> None:
    ds = make()
    assert len(ds) == 12
    assert ds.input_shape == (2, 4, 5)
    assert ds.in_channels == 2
    assert "n=12" in repr(ds) and "toy" in repr(ds)


@pytest.mark.parametrize(
    "images, labels, num_classes, mean, std",
    [
        (torch.zeros(2, 1, 3, 3), torch.zeros(2, dtype=torch.int64), 2, (0.0,), (1.0,)),  # float images
        (torch.zeros(2, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 2, (0.0,), (1.0,)),  # 3-d
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), 2, (0.0,), (1.0,)),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), 2, (0.0,), (1.0,)),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 2]), 2, (0.0,), (1.0,)),  # label too big
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 2, (0.0, 0.0), (1.0,)),
        (torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 2, (0.0,), (0.0,)),
    ],
)
def test_invalid_construction_raises_data_error(images, labels, num_classes, mean, std) -> None:
    with pytest.raises(DataError) as info:
        ImageDataset(images, labels, num_classes, mean, std, name="bad")
    assert "\n" not in str(info.value)


def test_normalized_formula_and_indices() -> None:
    ds = make()
    x = ds.normalized()
    assert x.dtype == torch.float32 and x.shape == (12, 2, 4, 5)
    expected = (ds.images.float() / 255 - 0.2) / 0.5
    assert torch.allclose(x, expected)
    assert torch.allclose(ds.normalized([3, 1]), expected[[3, 1]])
    assert ds.images.dtype == torch.uint8  # normalizing must not modify the stored images


def test_batch_is_seeded_aligned_and_capped() -> None:
    ds = make()
    x1, y1 = ds.batch(6, seed=3)
    x2, y2 = ds.batch(6, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = ds.batch(6, seed=4)
    assert not torch.equal(x1, x3)
    idx = sample_index(x1, ds)
    assert len(set(idx.tolist())) == 6  # drawn without replacement
    assert torch.equal(ds.labels[idx], y1)
    x_all, y_all = ds.batch(1000)
    assert len(x_all) == len(ds) and sorted(sample_index(x_all, ds).tolist()) == list(range(12))


def test_batch_does_not_touch_global_rng() -> None:
    ds = make()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ds.batch(4, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_batch_rejects_nonpositive_size() -> None:
    with pytest.raises(ConfigError):
        make().batch(0)


def test_class_balanced_returns_per_class_in_class_order() -> None:
    ds = make()
    x, y = ds.class_balanced(3, seed=1)
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(ds.labels[sample_index(x, ds)], y)
    x2, _ = ds.class_balanced(3, seed=1)
    assert torch.equal(x, x2)
    # class 0 has 5 samples, so different seeds pick different subsets of it
    picks = {tuple(sample_index(ds.class_balanced(2, seed=s)[0], ds)[:2].tolist()) for s in range(6)}
    assert len(picks) > 1


def test_class_balanced_names_the_short_class() -> None:
    with pytest.raises(DataError, match="class 1 .* only 3 samples"):
        make().class_balanced(4)
    with pytest.raises(ConfigError):
        make().class_balanced(0)


def test_batches_cover_everything_once() -> None:
    ds = make()
    plain = list(ds.batches(5))
    assert [len(y) for _, y in plain] == [5, 5, 2]
    assert torch.equal(torch.cat([y for _, y in plain]), ds.labels)
    shuffled = list(ds.batches(5, shuffle=True, seed=2))
    order = torch.cat([sample_index(x, ds) for x, _ in shuffled])
    assert sorted(order.tolist()) == list(range(12)) and order.tolist() != list(range(12))
    assert torch.equal(torch.cat([y for _, y in shuffled]), ds.labels[order])
    again = torch.cat([sample_index(x, ds) for x, _ in ds.batches(5, shuffle=True, seed=2)])
    assert torch.equal(order, again)
    with pytest.raises(ConfigError):
        next(ds.batches(0))


def test_subset_keeps_stats_and_alignment() -> None:
    ds = make()
    sub = ds.subset([0, 6, 11])
    assert len(sub) == 3 and sub.labels.tolist() == [0, 1, 2]
    assert torch.equal(sub.images, ds.images[[0, 6, 11]])
    assert sub.mean == ds.mean and sub.std == ds.std and sub.num_classes == 3
    mask = ds.labels == 2
    assert len(ds.subset(mask)) == 4
    with pytest.raises(ConfigError):
        ds.subset([12])
