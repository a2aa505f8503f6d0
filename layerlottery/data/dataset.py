"""The in-memory image dataset every loader returns.

Images stay uint8 until a batch is asked for: a uint8 copy of CIFAR-10 is 150 MB, a float32 copy
600 MB, and pruning experiments draw many small batches rather than sweeping the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from layerlottery.errors import ConfigError, DataError

Indices = torch.Tensor | Sequence[int] | slice


@dataclass(eq=False)
class ImageDataset:
    """Images with integer labels and the per-channel statistics used to normalize them.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W), pixel values 0..255.
        labels: int64 tensor of shape (N,), values in ``0..num_classes-1``.
        num_classes: number of classes the labels are drawn from (may exceed the classes present).
        mean: per-channel mean in [0, 1] pixel units.
        std: per-channel standard deviation in [0, 1] pixel units.
        name: short name of the dataset, used in messages.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "dataset"

    def __post_init__(self) -> None:
        what = f"dataset {self.name!r}"
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"{what}: images must be a uint8 tensor of shape (N, C, H, W), got {_describe(self.images)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise DataError(f"{what}: labels must be an int64 tensor of shape (N,), got {_describe(self.labels)}")
        if len(self.labels) != len(self.images):
            raise DataError(f"{what}: {len(self.images)} images but {len(self.labels)} labels; they must match one to one")
        if int(self.num_classes) < 1:
            raise DataError(f"{what}: num_classes must be at least 1, got {self.num_classes}")
        self.num_classes = int(self.num_classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise DataError(
                f"{what}: labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but must lie in 0..{self.num_classes - 1}"
            )
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{what}: mean and std need one value per channel ({channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(not s > 0 for s in self.std):
            raise DataError(f"{what}: every std must be positive, got {self.std}")

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return int(self.images.shape[1])

    def normalized(self, indices: Indices | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Return float32 images ``(x / 255 - mean) / std``, optionally only those at ``indices``."""
        x = self.images if indices is None else self.images[self._index(indices)]
        # Move the uint8 tensor before converting: a quarter of the bytes cross to the device.
        x = x.to(device).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def batch(
        self, size: int, seed: int = 0, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``size`` distinct samples at random (seeded), capped at the dataset's length."""
        if size < 1:
            raise ConfigError(f"batch size must be at least 1, got {size}")
        self._require_samples()
        # A private generator keeps draws reproducible without touching torch's global RNG.
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=generator)[: min(size, len(self))]
        return self.normalized(idx, device), self.labels[idx].to(device)

    def class_balanced(
        self, per_class: int, seed: int = 0, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw exactly ``per_class`` samples of every class (seeded), ordered class 0 first."""
        if per_class < 1:
            raise ConfigError(f"per_class must be at least 1, got {per_class}")
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for c in range(self.num_classes):
            members = torch.nonzero(self.labels == c).flatten()
            if len(members) < per_class:
                raise DataError(
                    f"class {c} of dataset {self.name!r} has only {len(members)} samples but {per_class} "
                    f"per class were asked for; ask for at most {len(members)} per class"
                )
            chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
        idx = torch.cat(chosen)
        return self.normalized(idx, device), self.labels[idx].to(device)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over the whole dataset in normalized ``(x, y)`` batches; the last may be smaller."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if shuffle:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            yield self.normalized(idx, device), self.labels[idx].to(device)

    def subset(self, indices: Indices) -> ImageDataset:
        """Return a new dataset holding only the samples at ``indices`` (same statistics and name)."""
        idx = self._index(indices)
        return ImageDataset(
            images=self.images[idx].clone(),
            labels=self.labels[idx].clone(),
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            name=self.name,
        )

    def _index(self, indices: Indices) -> torch.Tensor | slice:
        """Turn user indices into something tensor indexing accepts, rejecting out-of-range ones."""
        if isinstance(indices, slice):
            return indices
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ConfigError(f"a boolean mask must have length {len(self)}, got shape {tuple(idx.shape)}")
            return torch.nonzero(idx).flatten()
        idx = idx.long().flatten()
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise ConfigError(f"indices must lie in 0..{len(self) - 1} for dataset {self.name!r}")
        return idx

    def _require_samples(self) -> None:
        if len(self) == 0:
            raise DataError(f"dataset {self.name!r} is empty; nothing to draw a batch from")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] pixel units."""
    x = images.double().div(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1, unbiased=False).clamp_min(1e-6).tolist())
