"""FolderLoader: batches from a folder of images too large to hold in memory (ImageNet layout).

Layout: ``root/<split>/<class>/<image>`` (e.g. ``root/train/n01440764/x.JPEG``), one subfolder per
class, classes numbered in sorted order (torchvision's ImageFolder). Images are decoded, cropped and
flipped on the CPU by DataLoader workers, the classic ImageNet recipe: RandomResizedCrop + horizontal
flip for training, Resize(size * 256/224) + CenterCrop for evaluation.

Two choices differ from the textbook pipeline, on purpose:

* Workers hand over uint8 crops; conversion to float and normalization happen on the device, as in
  :class:`~layerlottery.data.loader.DeviceLoader`. That moves a quarter of the bytes through worker
  shared memory, pinned memory and the host-to-device copy.
* Every sample's random crop and flip are drawn from torch's CPU generator reseeded from
  ``(seed, epoch, position)`` just for that sample, and the shuffle order from a generator seeded with
  ``(seed, epoch)``. An epoch is then a pure function of ``(seed, epoch)``, whatever the number of
  workers, persistent workers keep no RNG state across epochs, and with ``workers=0`` the caller's
  global RNG is left as it was.
* Under torchrun each rank decodes only its contiguous slice of every global batch
  (:meth:`FolderLoader.epoch_shard`), not a DistributedSampler's subset: the ranks' slices put together
  are the one-process batches, so N ranks train on what one process would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from layerlottery.distributed import shard_rows

from layerlottery.data.loader import (
    Batch,
    batches_per_epoch,
    channel_tensors,
    check_int,
    epoch_seed,
    normalize,
)
from layerlottery.devices import resolve_device
from layerlottery.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderLoader:
    """Iterate over an image folder in normalized float batches on ``device``, like DeviceLoader.

    Args:
        root: folder holding one subfolder per split (``train``, ``val``, ...).
        split: the subfolder of ``root`` to read.
        batch_size: samples per batch, >= 1.
        train: random-resized crops, flips and a shuffled order (else resize + center crop, file order).
        image_size: side of the square crops fed to the network.
        workers: DataLoader worker processes (0 decodes in the calling process).
        seed: with the epoch number, fixes the order and augmentation of every epoch.
        device: where batches are delivered.
        channels_last: return inputs in ``torch.channels_last`` memory format.
        mean: per-channel mean in [0, 1] pixel units (ImageNet's by default).
        std: per-channel std in [0, 1] pixel units (ImageNet's by default).
        drop_last: drop the final incomplete batch of each epoch.

    Iterate with ``for x, y in loader.epoch(e)``: ``x`` float32 (B, 3, image_size, image_size), ``y``
    int64 (B,), both on ``device``. Consume one epoch before starting the next: with workers the
    epochs share one pool of persistent processes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        batch_size: int = 256,
        *,
        train: bool,
        image_size: int = 224,
        workers: int = 4,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        drop_last: bool = False,
    ) -> None:
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.workers = check_int("workers", workers, minimum=0)
        self.seed = check_int("seed", seed)
        self.train = bool(train)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.device = resolve_device(device)
        if len(mean) != 3 or len(std) != 3 or any(not s > 0 for s in std):
            raise ConfigError(f"mean and std need 3 values (RGB) and std must be positive, got {mean} and {std}")
        self.directory = _split_directory(root, split)
        self._folder = _open_folder(self.directory)
        self.classes: list[str] = list(self._folder.classes)
        if self.drop_last and self.batch_size > len(self._folder):
            raise ConfigError(
                f"batch_size {self.batch_size} exceeds the {len(self._folder)} images in {self.directory}, "
                f"so drop_last=True would yield no batch; lower batch_size or set drop_last=False"
            )
        self._mean, self._std = channel_tensors(tuple(mean), tuple(std), self.device)
        self._rank_rows = _RankBatches(
            len(self._folder), self.batch_size, shuffle=self.train, seed=self.seed, drop_last=self.drop_last
        )
        self._loader = DataLoader(
            _SeededImages(self._folder, _transform(self.train, self.image_size), seeded=self.train),
            batch_sampler=self._rank_rows,
            num_workers=self.workers,
            # Pinned host batches let the copy to the GPU run asynchronously (non_blocking below).
            pin_memory=self.device.type == "cuda",
            # Worker start-up (imports, pickling the file list) would otherwise be paid every epoch.
            persistent_workers=self.workers > 0,
            # Each epoch's iterator draws a worker base seed; from torch's global RNG unless given this.
            generator=torch.Generator().manual_seed(epoch_seed(self.seed, 0, "workers")),
        )

    def __repr__(self) -> str:
        return (
            f"FolderLoader(directory={str(self.directory)!r}, n={self.num_samples}, classes={self.num_classes}, "
            f"batch_size={self.batch_size}, train={self.train}, device={str(self.device)!r})"
        )

    def __len__(self) -> int:
        """Batches per epoch."""
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    @property
    def num_samples(self) -> int:
        """Images in the split folder."""
        return len(self._folder)

    @property
    def num_classes(self) -> int:
        """Number of class subfolders."""
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Images in each class subfolder, in class order (from the file list: nothing is decoded)."""
        counts = [0] * self.num_classes
        for label in self._folder.targets:  # type: ignore[attr-defined]
            counts[label] += 1
        return counts

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input, (3, image_size, image_size)."""
        return (3, self.image_size, self.image_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Return the batches of epoch ``epoch`` (>= 0); the same ``(seed, epoch)`` gives the same batches."""
        return self.epoch_shard(epoch, 0, 1)

    def epoch_shard(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        """Rank ``rank``'s rows of every batch of :meth:`epoch` (a distributed run), decoding only those images.

        Rows are cut by :func:`layerlottery.distributed.shard_rows`; a rank gets as many batches as
        :meth:`epoch` yields, some maybe empty, and the ranks' rows put together are :meth:`epoch`'s batches
        bitwise (every image's crop and flip are drawn from its place in the epoch, not from the rank).
        """
        epoch = check_int("epoch", epoch, minimum=0)
        world_size = check_int("world_size", world_size, minimum=1)
        rank = check_int("rank", rank, minimum=0)
        if rank >= world_size:
            raise ConfigError(f"rank must lie in 0..{world_size - 1} for world_size {world_size}, got {rank}")
        return self._batches(epoch, rank, world_size)

    def _batches(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        # Set right before iter(): the DataLoader asks the batch sampler for its batches when an epoch starts.
        self._rank_rows.set_epoch(epoch, rank, world_size)
        slice_sizes = self._rank_rows.slice_sizes()
        decoded = iter(self._loader)
        for size in slice_sizes:
            if size == 0:  # the sampler skips empty slices (collation needs a sample); stand in for them here
                x = torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8, device=self.device)
                y = torch.empty((0,), dtype=torch.int64, device=self.device)
            else:
                x, y = next(decoded)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield normalize(x, self._mean, self._std, self.channels_last), y


class _RankBatches(Sampler[list[tuple[int, int]]]):
    """An epoch's batches of ``(index, sample_seed)`` pairs, each cut to one rank's rows (all rows for rank 0
    of 1; slices left empty are not yielded, since a DataLoader cannot collate them).

    The order and one augmentation seed per position are drawn from ``(seed, epoch)`` alone, so an image's
    crop and flip depend on its place in the epoch, never on the rank or the number of ranks.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool) -> None:
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch(self, epoch: int, rank: int = 0, world_size: int = 1) -> None:
        self.epoch, self.rank, self.world_size = epoch, rank, world_size

    def _slices(self) -> Iterator[range]:
        """This rank's positions in the epoch order, one range per batch."""
        for start in range(0, batches_per_epoch(self.n, self.batch_size, self.drop_last) * self.batch_size, self.batch_size):
            mine = shard_rows(min(self.batch_size, self.n - start), self.rank, self.world_size)
            yield range(start + mine.start, start + mine.stop)

    def slice_sizes(self) -> list[int]:
        """Rows of this rank in every batch of the epoch, in order (0 where the rank has none)."""
        return [len(rows) for rows in self._slices()]

    def __len__(self) -> int:
        return sum(1 for size in self.slice_sizes() if size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "folder"))
        order = (torch.randperm(self.n, generator=generator) if self.shuffle else torch.arange(self.n)).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=generator).tolist()
        for rows in self._slices():
            if rows:
                yield [(order[position], seeds[position]) for position in rows]


class _SeededImages(Dataset):
    """An ImageFolder read as ``dataset[(index, seed)]``, its random transform drawn from ``seed``."""

    def __init__(self, folder: Dataset, transform: object, *, seeded: bool) -> None:
        self.folder, self.transform, self.seeded = folder, transform, seeded

    def __len__(self) -> int:
        return len(self.folder)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        image, label = self.folder[index]
        if not self.seeded:
            return self.transform(image), label  # type: ignore[operator]
        # torchvision's random transforms draw from torch's default CPU generator; reseed only that one
        # (torch.manual_seed would reseed CUDA too) and restore it, so the caller's stream is untouched.
        cpu_rng = torch.default_generator
        state = cpu_rng.get_state()
        try:
            cpu_rng.manual_seed(seed)
            return self.transform(image), label  # type: ignore[operator]
        finally:
            cpu_rng.set_state(state)


def _transform(train: bool, image_size: int) -> object:
    """The per-image pipeline, ending in a uint8 (3, image_size, image_size) tensor."""
    from torchvision.transforms import v2  # deferred: torchvision is only needed for folder data

    if train:
        geometry = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(int(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    # ToImage first so the crops run on a uint8 tensor; ToPureTensor so collation sees plain tensors.
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])


def _split_directory(root: str | os.PathLike[str], split: str) -> Path:
    if not isinstance(split, str) or not split.strip() or Path(split).name != split:
        raise ConfigError(f"split must be the name of a subfolder such as 'train' or 'val', got {split!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"image folder {str(base)!r} does not exist; point root at a folder holding {split}/<class>/")
    directory = base / split
    if not directory.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise DataError(
            f"no {split!r} folder in {str(base)!r} (found: {', '.join(found) or 'none'}); "
            f"expected the layout {split}/<class>/<image>"
        )
    return directory


def _open_folder(directory: Path) -> Dataset:
    from torchvision.datasets import ImageFolder  # deferred: torchvision is only needed for folder data

    if not any(p.is_dir() for p in directory.iterdir()):
        raise DataError(f"{str(directory)!r} has no class subfolders; put each class's images in <class>/ inside it")
    try:
        return ImageFolder(str(directory))
    except FileNotFoundError as err:  # a class folder without a single image file
        message = str(err).splitlines()[0] if str(err) else "no image files found"
        raise DataError(f"{str(directory)!r}: {message}; every class folder needs at least one image") from None
