"""FolderLoader on a tiny ImageNet-layout folder of PNGs: shapes, labels, determinism, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from layerlottery.data import FolderLoader
from layerlottery.data.folder import IMAGENET_MEAN, IMAGENET_STD
from layerlottery.errors import ConfigError, DataError

CLASSES = ("cat", "dog", "eel")
RED = (20, 100, 180)  # the red channel of every image of class c is constant RED[c]


def write_split(root: Path, split: str, per_class: int = 4, size: tuple[int, int] = (40, 40)) -> None:
    rng = np.random.default_rng(len(split))
    for c, name in enumerate(CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            # Red encodes the class (a constant survives any crop and resize); green and blue are noise,
            # so different crops give different pixels.
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., 0] = RED[c]
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("imagenet")
    write_split(base, "train")
    write_split(base, "val", per_class=2, size=(48, 36))
    return base


def red_pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255)


def collect(loader: FolderLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader.epoch(epoch))
    return torch.cat(xs), torch.cat(ys)


def test_train_batches_have_the_right_shapes_and_labels(root: Path) -> None:
    loader = FolderLoader(root, "train", 5, train=True, image_size=16, workers=0, seed=1)
    assert (len(loader), loader.num_samples, loader.batch_size) == (3, 12, 5)
    assert loader.classes == list(CLASSES) and loader.num_classes == 3 and loader.input_shape == (3, 16, 16)
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    x, y = collect(loader, 0)
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.tensor([4, 4, 4]))  # every image once
    assert not torch.equal(y, y.sort().values)  # shuffled
    # Each image's red channel still says which class folder it came from.
    expected = torch.tensor(RED, dtype=torch.float32)[y].view(12, 1, 1)
    assert (red_pixels(x) - expected).abs().max() <= 1


def test_eval_batches_are_file_order_center_crops(root: Path) -> None:
    loader = FolderLoader(root, "val", 4, train=False, image_size=24, workers=0)
    x, y = collect(loader, 0)
    assert x.shape == (6, 3, 24, 24)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(collect(loader, 7)[0], x)  # no randomness in evaluation
    expected = torch.tensor(RED, dtype=torch.float32)[y].view(6, 1, 1)
    assert (red_pixels(x) - expected).abs().max() <= 1
    # The normalization is ImageNet's: undoing it lands every pixel in 0..255.
    raw = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6


def test_epochs_are_a_pure_function_of_seed_and_epoch(root: Path) -> None:
    make = lambda seed=0: FolderLoader(root, "train", 4, train=True, image_size=16, workers=0, seed=seed)  # noqa: E731
    first = make()
    state = torch.get_rng_state()
    x0, y0 = collect(first, 0)
    x1, y1 = collect(first, 1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    torch.manual_seed(99)
    resumed = make()
    x1b, y1b = collect(resumed, 1)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    assert not torch.equal(x0, x1)
    assert not torch.equal(collect(make(seed=5), 1)[0], x1)


def test_worker_processes_give_the_same_batches(root: Path) -> None:
    kwargs = dict(train=True, image_size=16, seed=2)
    inline = collect(FolderLoader(root, "train", 6, workers=0, **kwargs), 3)
    pooled = FolderLoader(root, "train", 6, workers=1, **kwargs)
    for epoch in (3, 3):  # twice: persistent workers carry no RNG state from one epoch to the next
        x, y = collect(pooled, epoch)
        assert torch.equal(x, inline[0]) and torch.equal(y, inline[1])


@pytest.mark.parametrize("world", [2, 3])  # with 3 ranks the last batch of 2 leaves rank 2 an empty slice
def test_ranks_decode_only_their_rows_and_together_give_the_whole_batches(root: Path, world: int) -> None:
    kwargs = dict(train=True, image_size=16, workers=0, seed=4)
    whole = list(FolderLoader(root, "train", 5, **kwargs).epoch(2))
    per_rank, decoded = [], []
    for rank in range(world):
        loader = FolderLoader(root, "train", 5, **kwargs)
        folder = loader._loader.dataset.folder
        opened = []
        folder.loader = lambda path, open_image=folder.loader: opened.append(path) or open_image(path)
        per_rank.append(list(loader.epoch_shard(2, rank, world)))
        decoded.append(len(opened))
    assert all(len(batches) == len(whole) == 3 for batches in per_rank)  # every rank steps alike
    for index, (x, y) in enumerate(whole):
        pieces = [batches[index] for batches in per_rank]
        assert [len(py) for _, py in pieces] == [len(part) for part in torch.arange(len(y)).tensor_split(world)]
        assert torch.equal(torch.cat([px for px, _ in pieces]), x) and torch.equal(torch.cat([py for _, py in pieces]), y)
        assert all(px.shape[1:] == x.shape[1:] and px.dtype == x.dtype for px, _ in pieces)
    # Each image is opened by one rank only: the ranks split the decoding instead of repeating it.
    assert sum(decoded) == 12 and decoded == [sum(len(batches[i][1]) for i in range(3)) for batches in per_rank]


def test_a_rank_outside_the_world_is_refused(root: Path) -> None:
    loader = FolderLoader(root, "train", 5, train=True, image_size=16, workers=0)
    with pytest.raises(ConfigError, match="rank must lie in 0..1"):
        loader.epoch_shard(0, 2, 2)


def test_channels_last(root: Path) -> None:
    loader = FolderLoader(root, "val", 3, train=False, image_size=8, workers=0, channels_last=True)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in loader.epoch(0))


def test_missing_folders_raise_data_error(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        FolderLoader(tmp_path / "nowhere", train=True, workers=0)
    with pytest.raises(DataError, match="no 'test' folder") as info:
        FolderLoader(root, "test", train=False, workers=0)
    assert "train" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "train" / "loose.png")
    with pytest.raises(DataError, match="no class subfolders"):
        FolderLoader(tmp_path / "flat", train=True, workers=0)
    (tmp_path / "holey" / "train" / "a").mkdir(parents=True)
    (tmp_path / "holey" / "train" / "b").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "holey" / "train" / "a" / "x.png")
    with pytest.raises(DataError, match="needs at least one image") as info:
        FolderLoader(tmp_path / "holey", train=True, workers=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(image_size=0),
        dict(workers=-1),
        dict(split="../train"),
        dict(device="bogus"),
        dict(std=(0.2, 0.0, 0.2)),
        dict(batch_size=100, drop_last=True),
    ],
)
def test_bad_arguments_raise_config_error(root: Path, kwargs: dict) -> None:
    args = dict(train=True, workers=0) | kwargs
    with pytest.raises(ConfigError):
        FolderLoader(root, **args)
    loader = FolderLoader(root, train=True, workers=0)
    with pytest.raises(ConfigError):
        loader.epoch(-1)
