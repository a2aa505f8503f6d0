"""CIFAR-10.2 against small .npz files the tests build in the published layout; never the network."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from layerlottery.data import cifar102
from layerlottery.data.cifar import CIFAR_SPECS
from layerlottery.data.cifar102 import Cifar102File
from layerlottery.errors import ConfigError, DataError

N = 4
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_npz(path: Path, n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write an .npz with the published keys; return its images (NHWC) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:  # a file object, so numpy does not append its own suffix
        np.savez(
            f, images=images, labels=labels, label_names=np.array(LABEL_NAMES),
            ti_indices=np.arange(n, dtype=np.int64), keywords=np.array(["kw"] * n),
        )  # fmt: skip
    return images, labels


def pin(monkeypatch: pytest.MonkeyPatch, split: str, path: Path | None, n: int = N) -> None:
    """Describe the small file as the published one (its SHA-256 and size, or structure only when path is None)."""
    filename = cifar102.CIFAR102_FILES[split].filename
    if path is None:
        spec = Cifar102File(filename, n)
    else:
        spec = Cifar102File(filename, n, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
    monkeypatch.setitem(cifar102.CIFAR102_FILES, split, spec)


def no_download(*args, **kwargs):
    raise AssertionError("download attempted")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar102, "download_npz", no_download)


def test_test_split_from_the_published_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cifar-10.2" / "cifar102_test.npz"
    images, labels = make_npz(path)
    pin(monkeypatch, "test", path)
    ds = cifar102.load_cifar102(root=tmp_path)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (N, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    cifar10 = CIFAR_SPECS["cifar10"]
    assert ds.mean == cifar10.mean and ds.std == cifar10.std and ds.num_classes == 10 and ds.name == "cifar102"
    # The cifar-10.2 folder itself is also accepted as root.
    assert torch.equal(cifar102.load_cifar102("test", root=tmp_path / "cifar-10.2", download=False).images, ds.images)


def test_train_split_is_checked_by_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cifar-10.2" / "cifar102_train.npz"
    _, labels = make_npz(path, n=6)
    pin(monkeypatch, "train", None, n=6)
    assert cifar102.load_cifar102("train", root=tmp_path).labels.tolist() == labels.tolist()
    pin(monkeypatch, "train", None, n=7)  # a file with another number of images than published
    expected = r"holds uint8 images of shape \(6, 32, 32, 3\), expected uint8 \(7, 32, 32, 3\)"
    with pytest.raises(DataError, match=expected):
        cifar102.load_cifar102("train", root=tmp_path)


def test_wrong_checksum_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cifar-10.2" / "cifar102_test.npz"
    make_npz(path)
    pin(monkeypatch, "test", path)
    make_npz(path, seed=1)  # same size, other bytes
    expected = r"wrong checksum \(expected SHA-256 [0-9a-f]{64}\); delete it and download again"
    with pytest.raises(DataError, match=expected):
        cifar102.load_cifar102(root=tmp_path)


def test_truncated_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cifar-10.2" / "cifar102_test.npz"
    make_npz(path)
    pin(monkeypatch, "test", path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(DataError, match=rf"is {size // 2} bytes, expected {size} \(truncated or altered\)"):
        cifar102.load_cifar102(root=tmp_path)
    pin(monkeypatch, "test", None)  # structure only (as for train): a cut zip is still refused
    with pytest.raises(DataError, match="is not a readable .npz file"):
        cifar102.load_cifar102(root=tmp_path)


def test_download_is_verified_before_it_is_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source.npz"
    images, _ = make_npz(source)
    pin(monkeypatch, "test", source)
    calls = []

    def fake_download(url: str, folder: Path, filename: str, md5: str | None) -> None:
        calls.append((url, Path(folder), filename, md5))
        (Path(folder) / filename).write_bytes(source.read_bytes())

    monkeypatch.setattr(cifar102, "download_npz", fake_download)
    root = tmp_path / "cache"
    ds = cifar102.load_cifar102(root=root)
    assert torch.equal(ds.images, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    url = "https://github.com/modestyachts/cifar-10.2/raw/master/cifar102_test.npz"
    assert calls == [(url, root / "cifar-10.2", ".cifar102_test.npz.part", None)]
    assert [p.name for p in (root / "cifar-10.2").iterdir()] == ["cifar102_test.npz"]


def test_bad_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source.npz"
    make_npz(source)
    pin(monkeypatch, "test", source)
    outcomes = iter([b"<html>rate limited</html>", urllib.error.URLError("no route to host")])

    def flaky(url: str, folder: Path, filename: str, md5: str | None) -> None:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            (Path(folder) / filename).write_bytes(b"partial")
            raise outcome
        (Path(folder) / filename).write_bytes(outcome)

    monkeypatch.setattr(cifar102, "download_npz", flaky)
    root = tmp_path / "cache"
    expected = (
        r"could not download cifar102_test.npz \(.*raw/master[^:]*: got a file that is 25 bytes, expected .*"
        r"no route to host>\); place it at"
    )
    with pytest.raises(DataError, match=expected) as info:
        cifar102.load_cifar102(root=root)
    assert "\n" not in str(info.value)
    assert not root.exists()  # neither the partial file nor the folders the download made


def test_missing_file_without_download_says_where_to_get_it(tmp_path: Path) -> None:
    expected = r"cifar102_test.npz not found in .*cifar-10.2; place it there from https://github.com/modestyachts"
    with pytest.raises(DataError, match=expected):
        cifar102.load_cifar102(root=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        cifar102.load_cifar102("val", root=tmp_path)
