"""DeviceLoader: labels stay with their images, epochs are pure functions of (seed, epoch), stats stay sane."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data import DeviceLoader, ImageDataset, channel_stats, get_dataset
from layerlottery.errors import ConfigError, DataError


def indexed(n: int = 103, shape: tuple[int, int, int] = (2, 4, 6)) -> ImageDataset:
    """Image i is constant with value i + 1 (so a padded zero is never a sample), label i % 5."""
    assert n < 255
    images = (torch.arange(1, n + 1, dtype=torch.uint8).view(n, 1, 1, 1)).expand(n, *shape).contiguous()
    labels = torch.arange(n, dtype=torch.int64) % 5
    return ImageDataset(images, labels, 5, (0.3,) * shape[0], (0.2,) * shape[0], name="indexed")


def raw_pixels(x: torch.Tensor, ds: ImageDataset) -> torch.Tensor:
    """Undo the normalization: back to uint8 pixel values."""
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return torch.round((x * std + mean) * 255).to(torch.int64)


def sample_ids(x: torch.Tensor, ds: ImageDataset) -> torch.Tensor:
    """Which sample of ``indexed`` each (un-augmented) input is."""
    return raw_pixels(x, ds)[:, 0, 0, 0] - 1


def collect(loader: DeviceLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader.epoch(epoch))
    return torch.cat(xs), torch.cat(ys)


def test_unaugmented_batches_equal_dataset_normalized_in_dataset_order() -> None:
    ds = indexed()
    loader = DeviceLoader(ds, 10, shuffle=False)
    x, y = collect(loader, 0)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, ds.normalized())  # bitwise: the same arithmetic as ImageDataset
    assert torch.equal(y, ds.labels)
    assert torch.equal(collect(loader, 5)[0], x)  # no shuffle, no augmentation: every epoch alike


@pytest.mark.parametrize("drop_last, batches, seen", [(False, 11, 103), (True, 10, 100)])
def test_every_sample_once_per_epoch_and_len(drop_last: bool, batches: int, seen: int) -> None:
    ds = indexed(103)
    loader = DeviceLoader(ds, 10, shuffle=True, seed=3, drop_last=drop_last)
    assert len(loader) == batches
    sizes = [len(y) for _, y in loader.epoch(0)]
    assert len(sizes) == batches and sum(sizes) == seen
    assert all(s == 10 for s in sizes[: 103 // 10])
    x, y = collect(loader, 0)
    ids = sample_ids(x, ds)
    assert len(set(ids.tolist())) == seen and 0 <= int(ids.min()) and int(ids.max()) < 103
    assert torch.equal(y, ds.labels[ids])  # labels travel with their images through the shuffle
    assert not torch.equal(ids, torch.arange(seen))  # actually shuffled


def test_augmentation_keeps_labels_with_their_images() -> None:
    # Non-square 6 x 9 images, each constant at 20 * label + 10 in every channel.
    n, labels = 120, torch.arange(120) % 12
    images = (labels.to(torch.uint8) * 20 + 10).view(n, 1, 1, 1).expand(n, 3, 6, 9).contiguous()
    ds = ImageDataset(images, labels, 12, (0.4,) * 3, (0.25,) * 3, name="label-pixels")
    loader = DeviceLoader(ds, 16, shuffle=True, augment=True, padding=3, seed=1)
    x, y = collect(loader, 2)
    assert len(y) == n and torch.equal(torch.bincount(y), torch.bincount(labels))
    raw = raw_pixels(x, ds)
    value = (y * 20 + 10).view(n, 1, 1, 1)
    kept = raw != 0
    # Every non-zero pixel carries its own label's value; zeros fill whole border rows/columns only.
    assert torch.equal(raw[kept], value.expand_as(raw)[kept])
    assert kept.flatten(1).any(1).all()  # a crop always overlaps its image (padding < size)
    mask = kept[:, 0]
    rows, cols = mask.any(2), mask.any(1)
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])
    for runs in (rows, cols):
        # The black band sits on one side only: along each axis kept/black switches at most once.
        assert int((runs[:, 1:] != runs[:, :-1]).sum(1).max()) <= 1
    assert (~kept).any()  # the augmentation did shift some images


def test_same_seed_and_epoch_give_identical_batches_and_resume_equals_uninterrupted() -> None:
    ds = indexed()
    make = lambda seed=0: DeviceLoader(ds, 16, shuffle=True, augment=True, padding=2, seed=seed)  # noqa: E731
    uninterrupted = make()
    for e in range(3):
        list(uninterrupted.epoch(e))
    resumed = make()  # a fresh process resuming at epoch 3
    a = list(uninterrupted.epoch(3))
    b = list(resumed.epoch(3))
    assert len(a) == len(b) == len(uninterrupted)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(collect(resumed, 4)[1], collect(resumed, 3)[1])  # another epoch, another order
    assert not torch.equal(collect(make(seed=1), 3)[1], collect(resumed, 3)[1])  # another seed, too


def test_augmentation_differs_between_epochs_even_without_shuffle() -> None:
    ds = indexed()
    loader = DeviceLoader(ds, 32, shuffle=False, augment=True, padding=2)
    x0, y0 = collect(loader, 0)
    x1, y1 = collect(loader, 1)
    assert torch.equal(y0, y1) and torch.equal(y0, ds.labels)
    assert not torch.equal(x0, x1)


def test_global_rng_is_neither_used_nor_consulted() -> None:
    ds = indexed()
    loader = DeviceLoader(ds, 16, shuffle=True, augment=True, padding=2, seed=9)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    x1, y1 = collect(loader, 0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    x2, y2 = collect(loader, 0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_flip_only_preserves_pixel_statistics_of_real_data() -> None:
    ds = get_dataset("digits")
    plain = collect(DeviceLoader(ds, 256, shuffle=True), 0)[0]
    # On its own statistics, normalized data has mean 0 and std 1 per channel.
    assert abs(plain.mean().item()) < 1e-4 and abs(plain.std(unbiased=False).item() - 1) < 1e-4
    flipped = collect(DeviceLoader(ds, 256, shuffle=True, augment=True, padding=0, flip=True), 0)[0]
    assert not torch.equal(flipped.sort(0).values, plain.sort(0).values)  # some images really flipped
    # A mirror permutes pixels within each image, so the epoch's moments do not move.
    assert abs(flipped.mean().item()) < 1e-4 and abs(flipped.std(unbiased=False).item() - 1) < 1e-4
    cropped = collect(DeviceLoader(ds, 256, shuffle=True, augment=True, padding=2), 0)[0]
    # Padding only adds black pixels, so the mean can only fall, and at most to black's normalized value.
    black = -ds.mean[0] / ds.std[0]
    assert black < cropped.mean().item() < -0.01


def test_padding_shifts_the_mean_by_the_expected_zero_fraction() -> None:
    # i.i.d. uniform pixels: the expected augmented mean is the visible fraction times the true mean.
    images = torch.randint(0, 256, (1500, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(images)
    ds = ImageDataset(images, torch.zeros(1500, dtype=torch.int64), 1, mean, std, name="uniform")
    plain = collect(DeviceLoader(ds, 500, shuffle=False), 0)[0]
    assert abs(plain.mean().item()) < 1e-3 and abs(plain.std(unbiased=False).item() - 1) < 1e-3
    x = collect(DeviceLoader(ds, 500, shuffle=False, augment=True, padding=4), 0)[0]
    # Shift s uniform on -4..4 leaves (32 - |s|) / 32 of each axis visible; E|s| = 20 / 9.
    visible = ((32 - 20 / 9) / 32) ** 2
    for c in range(3):
        expected = -(1 - visible) * mean[c] / std[c]
        assert abs(x[:, c].mean().item() - expected) < 0.01
    assert 1.0 < x.std().item() < 1.3  # black pixels widen the spread, but only a little


def test_channels_last_layout_same_values() -> None:
    ds = indexed(40, shape=(3, 5, 7))
    kwargs = dict(shuffle=True, augment=True, padding=1, seed=4)
    a = collect(DeviceLoader(ds, 8, **kwargs), 0)[0]
    batches = list(DeviceLoader(ds, 8, channels_last=True, **kwargs).epoch(0))
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)
    assert torch.equal(torch.cat([x for x, _ in batches]), a)


def test_attributes() -> None:
    ds = indexed(50, shape=(2, 4, 6))
    loader = DeviceLoader(ds, 7, shuffle=False)
    assert (len(loader), loader.num_samples, loader.batch_size) == (8, 50, 7)
    assert loader.dataset is ds and loader.input_shape == (2, 4, 6) and loader.num_classes == 5
    assert loader.device == torch.device("cpu")
    assert len(DeviceLoader(ds, 7, shuffle=False, drop_last=True)) == 7
    assert len(DeviceLoader(ds, 50, shuffle=False, drop_last=True)) == 1
    assert "indexed" in repr(loader)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(batch_size=-3),
        dict(batch_size=2.5),
        dict(batch_size=True),
        dict(padding=-1),
        dict(seed="x"),
        dict(device="not-a-device"),
        dict(batch_size=60, drop_last=True),  # would yield no batch at all
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    args = dict(batch_size=8, shuffle=True) | kwargs
    with pytest.raises(ConfigError) as info:
        DeviceLoader(indexed(50), **args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("epoch", [-1, 1.0, "2"])
def test_bad_epoch_raises_config_error_at_call(epoch: object) -> None:
    loader = DeviceLoader(indexed(10), 4, shuffle=True)
    with pytest.raises(ConfigError):
        loader.epoch(epoch)  # type: ignore[arg-type]


def test_not_a_dataset_and_empty_dataset() -> None:
    with pytest.raises(ConfigError, match="ImageDataset"):
        DeviceLoader(torch.zeros(4, 1, 2, 2), 2, shuffle=False)  # type: ignore[arg-type]
    no_images = torch.zeros(0, 1, 2, 2, dtype=torch.uint8)
    empty = ImageDataset(no_images, torch.zeros(0, dtype=torch.int64), 2, (0.5,), (0.5,))
    with pytest.raises(DataError, match="empty"):
        DeviceLoader(empty, 2, shuffle=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        DeviceLoader(indexed(10), 4, shuffle=True, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_live_on_device_and_are_reproducible() -> None:
    ds = indexed()
    loader = DeviceLoader(ds, 16, shuffle=True, augment=True, padding=2, device="cuda", channels_last=True)
    x, y = collect(loader, 1)
    assert x.is_cuda and y.is_cuda
    cpu_order = collect(DeviceLoader(ds, 16, shuffle=True, augment=True, padding=2), 1)[1]
    assert torch.equal(y.cpu(), cpu_order)  # the order is drawn on the CPU, the same on every device
    x2, _ = collect(DeviceLoader(ds, 16, shuffle=True, augment=True, padding=2, device="cuda"), 1)
    assert torch.equal(x, x2)
