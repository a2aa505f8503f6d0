"""DeviceLoader: the whole dataset on the training device, batched, augmented and normalized there.

CIFAR-10 as uint8 is 150 MB, so it fits on any GPU. Holding it there as one tensor turns "load a
batch" into an index gather plus a few vectorized ops (see :mod:`layerlottery.data.augment`): no
worker processes, no host-to-device copy per step, and no per-image Python work.

Reproducibility: an epoch's order and augmentation are a pure function of ``(seed, epoch)``, drawn
from private generators, so training resumed at epoch k sees exactly the batches an uninterrupted run
sees at epoch k, and torch's global RNG (which model code may rely on) is never consumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from layerlottery.data.augment import random_crop_flip
from layerlottery.data.dataset import ImageDataset
from layerlottery.devices import resolve_device
from layerlottery.errors import ConfigError, DataError

Batch = tuple[torch.Tensor, torch.Tensor]


class DeviceLoader:
    """Iterate over an :class:`ImageDataset` in normalized float batches, held and built on ``device``.

    Args:
        dataset: the images (uint8) and labels; copied once to ``device``.
        batch_size: samples per batch, >= 1.
        shuffle: draw a fresh random order every epoch (else dataset order).
        augment: apply pad + random crop (+ flip) to every batch, on the uint8 pixels.
        padding: zero padding per side for the random crop (only with ``augment``).
        flip: mirror half of the images at random (only with ``augment``).
        seed: with the epoch number, fixes the order and augmentation of every epoch.
        device: where the data lives and batches are produced.
        drop_last: drop the final incomplete batch of each epoch.
        channels_last: return inputs in ``torch.channels_last`` memory format.

    Iterate with ``for x, y in loader.epoch(e)``: ``x`` is float32 ``(x / 255 - mean) / std`` of shape
    (B, C, H, W), ``y`` int64 of shape (B,), both on ``device``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool = False,
        padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(dataset, ImageDataset):
            raise ConfigError(f"DeviceLoader needs an ImageDataset, got {type(dataset).__name__}")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.padding = check_int("padding", padding, minimum=0)
        self.seed = check_int("seed", seed)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.flip = bool(flip)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.device = resolve_device(device)
        if len(dataset) == 0:
            raise DataError(f"dataset {dataset.name!r} is empty; there is nothing to load")
        if self.drop_last and self.batch_size > len(dataset):
            raise ConfigError(
                f"batch_size {self.batch_size} exceeds the {len(dataset)} samples of dataset {dataset.name!r}, "
                f"so drop_last=True would yield no batch; lower batch_size or set drop_last=False"
            )
        self.dataset = dataset
        # One copy on the device for the whole run; contiguous so the per-batch gather reads dense rows.
        self._images = dataset.images.to(self.device).contiguous()
        self._labels = dataset.labels.to(self.device)
        self._mean, self._std = channel_tensors(dataset.mean, dataset.std, self.device)

    def __repr__(self) -> str:
        return (
            f"DeviceLoader(dataset={self.dataset.name!r}, n={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, augment={self.augment}, device={str(self.device)!r})"
        )

    def __len__(self) -> int:
        """Batches per epoch."""
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    @property
    def num_samples(self) -> int:
        """Samples in the dataset (with ``drop_last`` an epoch sees ``len(self) * batch_size`` of them)."""
        return len(self.dataset)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input, (C, H, W)."""
        return self.dataset.input_shape

    @property
    def num_classes(self) -> int:
        """Number of classes of the labels."""
        return self.dataset.num_classes

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Return the batches of epoch ``epoch`` (>= 0); the same ``(seed, epoch)`` gives the same batches.

        Each call starts an independent pass, so epochs can be replayed in any order. Reproducibility is
        bitwise for a given device type; CPU and CUDA draw different augmentations (the order is the same).
        """
        epoch = check_int("epoch", epoch, minimum=0)
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        n = self.num_samples
        # The order is drawn on the CPU so it is the same on every device; it is one small copy per epoch.
        if self.shuffle:
            order_rng = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, "order"))
            order = torch.randperm(n, generator=order_rng).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        # Augmentation draws come from a separate generator on the data's device, so they never leave it.
        generator = None
        if self.augment and (self.padding > 0 or self.flip):
            generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, "augment"))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self._images[idx]
            if generator is not None:
                x = random_crop_flip(x, self.padding, self.flip, generator)
            yield normalize(x, self._mean, self._std, self.channels_last), self._labels[idx]


def epoch_seed(seed: int, epoch: int, stream: str = "") -> int:
    """A 63-bit seed that depends on ``(seed, epoch, stream)`` only, stable across processes and versions.

    A hash rather than ``seed + epoch``: neighbouring runs (seed 0 epoch 1 and seed 1 epoch 0) must not
    share their shuffles, and ``stream`` keeps the order and augmentation draws independent.
    """
    digest = hashlib.blake2b(f"{seed}:{epoch}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std``, the same arithmetic as ImageDataset.normalized."""
    if channels_last:
        # Change the layout while the pixels are still 1 byte wide; float() and the in-place ops keep it.
        images = images.contiguous(memory_format=torch.channels_last)
    return images.float().div_(255.0).sub_(mean).div_(std)


def channel_tensors(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as float32 (1, C, 1, 1) tensors on ``device``, ready to broadcast."""
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
    return as_tensor(mean), as_tensor(std)


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches one pass over ``num_samples`` yields."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value
