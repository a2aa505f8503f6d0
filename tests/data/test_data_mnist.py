"""MNIST idx parsing and download: real shared t10k files when present, small hand-written files always.

The network is never used: a fake fetch copies local files where a download would put them.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from layerlottery.config import load_settings
from layerlottery.data import get_dataset, mnist, read_idx
from layerlottery.data.mnist import IMAGES_MAGIC, LABELS_MAGIC
from layerlottery.experiments.sources import data_source
from layerlottery.errors import ConfigError, DataError

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
# Published class counts of the 10,000-image t10k set.
T10K_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own checksum table (write_mnist trusts its fake files) and no network."""
    monkeypatch.setattr(mnist, "MNIST_MD5", dict(mnist.MNIST_MD5))

    def no_network(url, root, filename, md5):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(mnist, "download_mnist_file", no_network)


def write_mnist(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write fake idx files; gzipped ones get their MD5 entered in the (per-test) published table."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, magic, array in (
        (f"{prefix}-images-idx3-ubyte", IMAGES_MAGIC, images),
        (f"{prefix}-labels-idx1-ubyte", LABELS_MAGIC, labels),
    ):
        data = idx_bytes(magic, array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            mnist.MNIST_MD5[name] = hashlib.md5((folder / f"{name}.gz").read_bytes()).hexdigest()
        else:
            (folder / name).write_bytes(data)


def fake_mirror(source: Path, calls: list, failing: tuple[str, ...] = ()):
    """A fetch that serves the files of ``source`` (except from the ``failing`` mirrors) and logs each call."""

    def fetch(url: str, root: Path, filename: str, md5: str) -> None:
        calls.append((url, filename))
        if url.startswith(failing):
            (Path(root) / filename).write_bytes(b"half a file")  # what a dropped connection leaves
            raise urllib.error.URLError("connection reset")
        shutil.copyfile(source / url.rsplit("/", 1)[1], Path(root) / filename)

    return fetch


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
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found.*train_fraction"):
        get_dataset("mnist", "train", data_dir=tmp_path, download=False)
    # Offline, the failed download says the same, on one line, and leaves nothing behind.
    with pytest.raises(DataError, match="could not download train-images.*offline.*train_fraction") as info:
        get_dataset("mnist", "train", data_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_into_the_cache_from_the_first_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    images, labels = fake(5)
    write_mnist(source, "t10k", images, labels, gz=True)
    calls: list = []
    monkeypatch.setattr(mnist, "download_mnist_file", fake_mirror(source, calls))
    monkeypatch.setenv("LAYERLOTTERY_DATA", str(tmp_path / "cache"))
    ds = get_dataset("mnist", "test")
    assert np.array_equal(ds.images[:, 0].numpy(), images) and ds.labels.tolist() == labels.tolist()
    mirror = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert calls == [
        (mirror + "t10k-images-idx3-ubyte.gz", ".t10k-images-idx3-ubyte.gz.part"),
        (mirror + "t10k-labels-idx1-ubyte.gz", ".t10k-labels-idx1-ubyte.gz.part"),
    ]
    folder = tmp_path / "cache" / "mnist"  # renamed into place: no partial file left
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert len(get_dataset("mnist", "test")) == 5 and len(calls) == 2  # the second load downloads nothing


def test_a_failing_mirror_falls_back_to_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    write_mnist(source, "train", *fake(4), gz=True)
    calls: list = []
    monkeypatch.setattr(mnist, "download_mnist_file", fake_mirror(source, calls, failing=("https://ossci",)))
    (tmp_path / "data").mkdir()  # an empty folder of the user's: MNIST goes into its mnist/ subfolder
    assert len(get_dataset("mnist", "train", data_dir=tmp_path / "data")) == 4
    assert [url.split("/")[2] for url, _ in calls] == ["ossci-datasets.s3.amazonaws.com", "yann.lecun.com"] * 2
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
    ]


def test_published_checksums_refuse_a_corrupt_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", *fake(), gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(IMAGES_MAGIC, fake(7)[0])))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz has the wrong checksum .*delete it and download again") as info:
        get_dataset("mnist", "test", data_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_torchvision_checksums() -> None:
    # The published MD5s as torchvision's MNIST lists them; ours must agree, file by file.
    from torchvision.datasets import MNIST

    listed = {name.removesuffix(".gz"): md5 for name, md5 in MNIST.resources}
    assert mnist.MNIST_MD5 == listed
    assert list(mnist.MNIST_MIRRORS) == MNIST.mirrors


def test_mnist_cpu_preset_without_data_dir_downloads_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    images = np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    write_mnist(source, "t10k", images, np.arange(50, dtype=np.uint8) % 10, gz=True)
    calls: list = []
    monkeypatch.setattr(mnist, "download_mnist_file", fake_mirror(source, calls))
    monkeypatch.setenv("LAYERLOTTERY_DATA", str(tmp_path / "cache"))
    settings = load_settings("mnist_cpu")
    assert settings.data.data_dir is None
    data = data_source(settings.data)
    assert (len(data.train), len(data.test)) == (40, 10) and data.input_shape == (1, 28, 28)
    assert len(calls) == 2 and (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_mnist_cpu_preset_with_the_shared_folder(shared_t10k) -> None:
    settings = load_settings("mnist_cpu", [f"data.data_dir={SHARED_MNIST}"])
    data = data_source(settings.data)  # the autouse fixture is offline: nothing may be downloaded
    assert (len(data.train), len(data.test)) == (8000, 2000)


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


def test_a_data_dir_that_does_not_exist_is_refused_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MNIST folder .*typo not found; point --data-dir .*create that folder"):
        get_dataset("mnist", "test", data_dir=tmp_path / "typo")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_leaves_no_folder_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERLOTTERY_DATA", str(tmp_path / "cache" / "deep"))
    with pytest.raises(DataError, match=r"could not download t10k-images.*ossci.*offline.*yann\.lecun\.com.*offline"):
        get_dataset("mnist", "test")
    assert list(tmp_path.iterdir()) == []
