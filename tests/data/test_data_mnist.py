"""MNIST idx parsing: real shared t10k files when present, small hand-written files always."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from layerlottery.data import get_dataset, read_idx
from layerlottery.data.mnist import IMAGES_MAGIC, LABELS_MAGIC
from layerlottery.errors import ConfigError, DataError

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
# Published class counts of the 10,000-image t10k set.
T10K_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, magic, array in (
        (f"{prefix}-images-idx3-ubyte", IMAGES_MAGIC, images),
        (f"{prefix}-labels-idx1-ubyte", LABELS_MAGIC, labels),
    ):
        data = idx_bytes(magic, array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def fake(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


@pytest.fixture(scope="module")
def shared_t10k():
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST t10k files not found in {SHARED_MNIST}")
    return get_dataset("mnist", "test", data_dir=SHARED_MNIST)


def test_shared_t10k_parses(shared_t10k) -> None:
    ds = shared_t10k
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
    assert int(ds.labels[0]) == 7
    assert torch.bincount(ds.labels).tolist() == T10K_HISTOGRAM
    # The published normalization constants fit the data: normalized pixels are roughly standard.
    x = ds.normalized(slice(0, 2000))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_shared_train_fraction_split(shared_t10k) -> None:
    train = get_dataset("mnist", "train", data_dir=SHARED_MNIST, train_fraction=0.8)
    test = get_dataset("mnist", "test", data_dir=SHARED_MNIST, train_fraction=0.8, seed=99)
    assert (len(train), len(test)) == (8000, 2000)
    # Together the two parts are exactly the t10k set: compare per-class counts and pixel sums.
    both = torch.bincount(torch.cat([train.labels, test.labels]))
    assert both.tolist() == T10K_HISTOGRAM
    total = train.images.sum(dtype=torch.int64) + test.images.sum(dtype=torch.int64)
    assert int(total) == int(shared_t10k.images.sum(dtype=torch.int64))


def test_missing_train_files_suggest_train_fraction(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", *fake(), gz=True)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not found.*train_fraction"):
        get_dataset("mnist", "train", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_gz_and_raw_files(tmp_path: Path, gz: bool) -> None:
    images, labels = fake()
    write_mnist(tmp_path, "train", images, labels, gz=gz)
    ds = get_dataset("mnist", "train", data_dir=tmp_path)
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == labels.tolist()


def test_data_dir_may_hold_a_mnist_subfolder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", "t10k", *fake(), gz=False)
    assert len(get_dataset("mnist", "test", data_dir=tmp_path)) == 6


def test_default_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "mnist", "t10k", *fake(4), gz=True)
    monkeypatch.setenv("LAYERLOTTERY_DATA", str(tmp_path))
    assert len(get_dataset("mnist", "test")) == 4


def test_wrong_magic_number(tmp_path: Path) -> None:
    images, labels = fake()
    write_mnist(tmp_path, "t10k", images, labels, gz=False)
    # A label file where the image file should be: the classic swapped-files mistake.
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(LABELS_MAGIC, labels))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        get_dataset("mnist", "test", data_dir=tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES_MAGIC, fake()[0])[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path, IMAGES_MAGIC)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, fake()[1]))[:-6])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path, LABELS_MAGIC)


def test_count_mismatch(tmp_path: Path) -> None:
    images, labels = fake(6)
    write_mnist(tmp_path, "t10k", images, labels[:5], gz=True)
    with pytest.raises(DataError, match="6 images.*5 labels"):
        get_dataset("mnist", "test", data_dir=tmp_path)


def test_bad_train_fraction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_fraction"):
        get_dataset("mnist", "train", data_dir=tmp_path, train_fraction=1.5)
