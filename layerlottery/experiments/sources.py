"""Where a run's batches come from: a dataset held in memory (on the training device) or an image folder.

Both give the model's input shape and class count, the training and test loaders of a run, and the
class-balanced batch a criterion scores with.
"""

from __future__ import annotations

from typing import Protocol

import torch

from layerlottery.config import DataSettings, TrainSettings
from layerlottery.criteria.common import select_per_class
from layerlottery.data import DeviceLoader, FolderLoader, ImageDataset, get_dataset
from layerlottery.errors import ConfigError, DataError
from layerlottery.training.loop import BatchLoader, eval_batch_size

Batch = tuple[torch.Tensor, torch.Tensor]
FOLDER = "folder"


class DataSource(Protocol):
    input_shape: tuple[int, int, int]
    num_classes: int

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        """The training loader (shuffled, augmented) and the test loader of one run."""

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        """``samples_per_class`` training samples of every class, as one batch."""


def data_source(settings: DataSettings) -> DataSource:
    """The source ``settings`` describe: ``folder`` (ImageNet layout under ``data_dir``) or a named dataset."""
    return FolderSource(settings) if settings.name == FOLDER else MemorySource(settings)


class MemorySource:
    """A registered dataset, loaded once and held as one uint8 tensor per split."""

    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        options = dict(settings.options)
        self.train = get_dataset(settings.name, split="train", data_dir=settings.data_dir, **options)
        self.test = get_dataset(settings.name, split="test", data_dir=settings.data_dir, **options)
        self.input_shape = self.train.input_shape
        self.num_classes = self.train.num_classes

    @property
    def dataset(self) -> ImageDataset:
        return self.train

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        channels_last = train.channels_last and device.type == "cuda"
        data = self.settings
        train_loader = DeviceLoader(
            self.train, train.batch_size, shuffle=True, augment=data.augment, padding=data.padding,
            flip=data.flip, seed=seed, device=device, channels_last=channels_last,
        )
        test_loader = DeviceLoader(self.test, eval_batch_size(device), shuffle=False, device=device, channels_last=channels_last)
        return train_loader, test_loader

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        return self.train.class_balanced(samples_per_class, seed=seed, device=device)


class FolderSource:
    """Images in ``data_dir/train/<class>/`` and ``data_dir/val/<class>/``, decoded by DataLoader workers."""

    def __init__(self, settings: DataSettings) -> None:
        if settings.data_dir is None:
            raise ConfigError("data.name=folder needs data.data_dir, the folder holding train/ and val/")
        self.settings = settings
        probe = self._loader("train", 1, train=False, seed=0, device=torch.device("cpu"), channels_last=False)
        self.num_classes = probe.num_classes
        self.input_shape = probe.input_shape

    def _loader(self, split: str, batch_size: int, **kwargs: object) -> FolderLoader:
        data = self.settings
        return FolderLoader(
            data.data_dir, split, batch_size, image_size=data.image_size, workers=data.workers, **kwargs  # type: ignore[arg-type]
        )

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        channels_last = train.channels_last and device.type == "cuda"
        return (
            self._loader("train", train.batch_size, train=True, seed=seed, device=device, channels_last=channels_last),
            self._loader("val", 256, train=False, seed=seed, device=device, channels_last=channels_last),
        )

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        # Shuffled training images (with training crops): the first samples_per_class of each class.
        loader = self._loader("train", 256, train=True, seed=seed, device=device, channels_last=False)
        batch, short = select_per_class(loader.epoch(0), samples_per_class, self.num_classes)  # type: ignore[arg-type]
        if short:
            raise DataError(f"image folder classes {sorted(short)} have fewer than {samples_per_class} training images")
        return batch
