"""Small seeded data and models for the training tests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

import layerlottery as ll
from layerlottery.config import TrainSettings


class TensorLoader:
    """The loader interface of ``layerlottery.data.DeviceLoader`` over in-memory tensors.

    ``epoch(e)`` is a pure function of (seed, e): its own generator, so a resumed run sees the same batches.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.num_samples = len(labels)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(self.num_samples)
        for start in range(0, self.num_samples, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.inputs[idx], self.labels[idx]


@lru_cache(maxsize=None)
def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = ll.get_dataset("digits", split)
    return data.normalized(), data.labels


def digits_loaders(batch_size: int = 64, train_samples: int | None = None) -> tuple[TensorLoader, TensorLoader]:
    """Train (shuffled, optionally the first ``train_samples``) and test loaders over scikit-learn's digits."""
    x, y = _digits("train")
    if train_samples is not None:
        x, y = x[:train_samples], y[:train_samples]
    tx, ty = _digits("test")
    return TensorLoader(x, y, batch_size, shuffle=True), TensorLoader(tx, ty, 256, shuffle=False)


def tiny_resnet(seed: int = 0) -> torch.nn.Module:
    """test_resnet for 1 x 8 x 8 inputs, initialized from ``seed``."""
    torch.manual_seed(seed)
    return ll.create_model("test_resnet", in_channels=1, num_classes=10, image_size=8)


def settings(**changes: object) -> TrainSettings:
    """Fast CPU settings; ``changes`` override them."""
    base = dict(epochs=3, batch_size=64, lr=0.1, schedule="cosine", device="cpu", amp=False, channels_last=False)
    base.update(changes)
    return TrainSettings(**base)  # type: ignore[arg-type]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"tensors differ: {different}"


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("epoch_train_seconds", "images_per_second")} for row in history]


def write_image_folder(root: Path, *, train: int, val: int, size: int = 12) -> None:
    """``train`` and ``val`` random PNGs of 3 classes in ImageNet's layout (``root/<split>/<class>/``)."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            folder = root / split / f"class{index % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=rng)
            pixels[..., 0] = 60 * (index % 3)  # the red channel says the class
            Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
