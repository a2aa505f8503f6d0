"""get_dataset / list_datasets / register_dataset."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data import ImageDataset, get_dataset, list_datasets, register_dataset
from layerlottery.data import registry
from layerlottery.errors import ConfigError


def test_known_names() -> None:
    assert set(list_datasets()) >= {"synthetic", "digits", "mnist", "cifar10", "cifar100"}


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*cifar10.*digits.*mnist"):
        get_dataset("imagenet")


def test_bad_split() -> None:
    with pytest.raises(ConfigError, match="split 'val'"):
        get_dataset("synthetic", split="val")


def test_unknown_option_names_valid_ones() -> None:
    with pytest.raises(ConfigError, match="num_sample.*num_samples"):
        get_dataset("synthetic", num_sample=10)


def test_name_is_case_insensitive_and_options_reach_loader() -> None:
    ds = get_dataset("Synthetic", "test", num_samples=20, num_classes=4, image_size=8, channels=1)
    assert len(ds) == 20 and ds.input_shape == (1, 8, 8) and ds.num_classes == 4


def test_register_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_LOADERS", dict(registry._LOADERS))
    calls = []

    def loader(split, data_dir, seed, *, size: int = 2) -> ImageDataset:
        calls.append((split, data_dir, seed, size))
        return ImageDataset(
            torch.zeros(size, 1, 2, 2, dtype=torch.uint8), torch.zeros(size, dtype=torch.int64), 1, (0.0,), (1.0,)
        )

    register_dataset("mine", loader)
    assert "mine" in list_datasets()
    assert len(get_dataset("mine", "test", "/d", 7, size=3)) == 3
    assert calls == [("test", "/d", 7, 3)]
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("mine", loader)
    register_dataset("mine", loader, overwrite=True)
