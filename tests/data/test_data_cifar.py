"""CIFAR loading against tiny fake archives with the real internal layout; never the network."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from layerlottery.data import cifar, get_dataset
from layerlottery.errors import DataError

PER_BATCH = 3


def batch_dict(first: int, n: int, label_key: bytes, num_classes: int) -> dict:
    # Each image's pixels all equal its global index, so order and label alignment are checkable.
    data = np.repeat(np.arange(first, first + n, dtype=np.uint8)[:, None], 3072, axis=1)
    out = {b"data": data, label_key: [(first + i) % num_classes for i in range(n)], b"batch_label": b"fake"}
    if label_key == b"fine_labels":
        out[b"coarse_labels"] = [0] * n
    return out


def make_archive(root: Path, name: str = "cifar10", extra: tuple[str, bytes] | None = None) -> str:
    """Write a fake archive into root and return its md5."""
    spec = cifar.CIFAR_SPECS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.filename
    with tarfile.open(archive, "w:gz") as tar:
        first = 0
        for fname in (*spec.train_files, *spec.test_files):
            payload = pickle.dumps(batch_dict(first, PER_BATCH, spec.label_key, spec.num_classes), protocol=2)
            info = tarfile.TarInfo(f"{spec.folder}/{fname}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            first += PER_BATCH
        if extra is not None:
            info = tarfile.TarInfo(extra[0])
            info.size = len(extra[1])
            tar.addfile(info, io.BytesIO(extra[1]))
    return hashlib.md5(archive.read_bytes()).hexdigest()


def no_download(*args, **kwargs):
    raise AssertionError("download attempted")


def test_cifar10_from_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", make_archive(tmp_path))
    monkeypatch.setattr(cifar, "download_archive", no_download)
    train = get_dataset("cifar10", "train", data_dir=tmp_path)
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.num_classes == 10 and len(train.mean) == 3
    ids = train.images[:, :, 0, 0]
    assert torch.equal(ids, torch.arange(15).view(15, 1).expand(15, 3).to(torch.uint8))  # batches 1..5 in order
    assert train.labels.tolist() == [i % 10 for i in range(15)]
    test = get_dataset("cifar10", "test", data_dir=tmp_path)
    assert test.images[:, 0, 0, 0].tolist() == [15, 16, 17] and test.labels.tolist() == [5, 6, 7]
    # Extraction left only the final folder, no temporary one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_cifar100_uses_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar100", make_archive(tmp_path, "cifar100"))
    test = get_dataset("cifar100", "test", data_dir=tmp_path, download=False)
    assert test.num_classes == 100 and test.labels.tolist() == [3, 4, 5]
    assert test.images[:, 2, 31, 31].tolist() == [3, 4, 5]


def test_extracted_folder_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", make_archive(tmp_path))
    get_dataset("cifar10", "test", data_dir=tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    monkeypatch.setattr(cifar, "download_archive", no_download)
    assert len(get_dataset("cifar10", "test", data_dir=tmp_path)) == PER_BATCH
    # The extracted folder itself is also accepted as data_dir.
    assert len(get_dataset("cifar10", "test", data_dir=tmp_path / "cifar-10-batches-py")) == PER_BATCH


def test_wrong_checksum(tmp_path: Path) -> None:
    make_archive(tmp_path)  # the real md5 stays in place, so the fake archive does not match it
    with pytest.raises(DataError, match=r"wrong checksum \(expected MD5 c58f3.*\); delete it and download again"):
        get_dataset("cifar10", "train", data_dir=tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_download_when_missing_uses_official_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    md5 = make_archive(source)
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", md5)
    calls = []

    def fake_download(url: str, root: Path, filename: str, expected_md5: str) -> None:
        calls.append((url, Path(root), filename, expected_md5))
        (Path(root) / filename).write_bytes((source / "cifar-10-python.tar.gz").read_bytes())

    monkeypatch.setattr(cifar, "download_archive", fake_download)
    root = tmp_path / "cache"
    ds = get_dataset("cifar10", "test", data_dir=root)
    assert len(ds) == PER_BATCH
    # Fetched under a temporary name, then renamed into place: nothing else is left in the folder.
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", root, ".cifar-10-python.tar.gz.part", md5)]
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_network_failure_says_where_to_put_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(url, root, filename, md5):
        (Path(root) / filename).write_bytes(b"partial")
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(cifar, "download_archive", failing)
    with pytest.raises(DataError, match="no route to host.*place it at .*cifar-100-python.tar.gz by hand") as info:
        get_dataset("cifar100", "train", data_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial file to trip the next run


def test_missing_archive_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "download_archive", no_download)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz not found in .*allow downloading"):
        get_dataset("cifar10", "train", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("member", ["../escaped", "/tmp/absolute-layerlottery-test"])
def test_unsafe_member_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    root = tmp_path / "root"
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", make_archive(root, extra=(member, b"x")))
    with pytest.raises(DataError, match="unsafe member"):
        get_dataset("cifar10", "train", data_dir=root)
    assert not (tmp_path / "escaped").exists() and not Path(member).exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_corrupt_batch_in_extracted_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt.*delete the folder"):
        get_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        get_dataset("cifar10", "train", data_dir=tmp_path)
