"""CIFAR-10-C against small archives the tests build in the published layout; never the network."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from layerlottery.data import cifar10c
from layerlottery.data.cifar import CIFAR_SPECS
from layerlottery.errors import ConfigError, DataError

N = 3  # images per severity in the fake archive (the published one has 10,000)
NAMES = ("gaussian_noise", "fog", "saturate")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_archive(root: Path, extra: tuple[str, bytes] | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """Write root/CIFAR-10-C.tar (NAMES + labels.npy, 5 x N rows each); return its MD5 and the arrays."""
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, size=(5 * N, 32, 32, 3), dtype=np.uint8) for name in NAMES}
    arrays["labels"] = rng.integers(0, 10, size=5 * N).astype(np.uint8)  # the published labels are uint8
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "CIFAR-10-C.tar"
    with tarfile.open(archive, "w") as tar:  # the published archive is an uncompressed tar
        folder = tarfile.TarInfo("CIFAR-10-C")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, array in arrays.items():
            add_member(tar, f"CIFAR-10-C/{name}.npy", npy_bytes(array))
        if extra is not None:
            add_member(tar, *extra)
    return hashlib.md5(archive.read_bytes()).hexdigest(), arrays


def no_download(*args, **kwargs):
    raise AssertionError("download attempted")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    md5, arrays = make_archive(tmp_path)
    monkeypatch.setattr(cifar10c, "ARCHIVE_MD5", md5)
    monkeypatch.setattr(cifar10c, "download_archive", no_download)
    return arrays


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_severity_selects_its_rows(tmp_path: Path, fake: dict[str, np.ndarray], severity: int) -> None:
    ds = cifar10c.load_cifar10c("fog", severity, root=tmp_path)
    rows = slice((severity - 1) * N, severity * N)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (N, 3, 32, 32)
    # Rows (s-1)*N .. s*N-1 of the file, HWC turned into the CHW layout ImageDataset stores.
    assert torch.equal(ds.images, torch.from_numpy(fake["fog"][rows].transpose(0, 3, 1, 2).copy()))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == fake["labels"][rows].tolist()
    cifar10 = CIFAR_SPECS["cifar10"]
    assert ds.mean == cifar10.mean and ds.std == cifar10.std and ds.num_classes == 10
    assert ds.name == f"cifar10c-fog-{severity}"


def test_images_are_a_view_of_the_memory_mapped_file(
    tmp_path: Path, fake: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: dict[str, np.ndarray] = {}
    real_load = np.load

    def recording_load(path, *args, **kwargs):
        array = real_load(path, *args, **kwargs)
        loaded[Path(path).stem] = array
        return array

    monkeypatch.setattr(np, "load", recording_load)
    ds = cifar10c.load_cifar10c("saturate", 4, root=tmp_path)
    mapped = loaded["saturate"]
    assert isinstance(mapped, np.memmap) and mapped.shape == (5 * N, 32, 32, 3)
    # The tensor shares the mapping's memory: nothing was copied, so only the touched pages are ever read.
    assert np.shares_memory(ds.images.numpy(), mapped)
    # Copy-on-write: a caller writing into the images changes its private pages, never the published file.
    path = tmp_path / "CIFAR-10-C" / "saturate.npy"
    before = path.read_bytes()
    ds.images.zero_()
    assert int(ds.images.sum()) == 0 and path.read_bytes() == before


def test_extraction_happens_once(tmp_path: Path, fake: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    first = cifar10c.load_cifar10c("gaussian_noise", 1, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CIFAR-10-C", "CIFAR-10-C.tar"]  # no temporary folder left
    assert sorted(p.name for p in (tmp_path / "CIFAR-10-C").iterdir()) == sorted(f"{n}.npy" for n in (*NAMES, "labels"))

    def no_extract(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(cifar10c, "extract_archive", no_extract)
    (tmp_path / "CIFAR-10-C.tar").unlink()  # the extracted folder alone suffices, with no checksum pass either
    again = cifar10c.load_cifar10c("gaussian_noise", 1, root=tmp_path, download=False)
    assert torch.equal(first.images, again.images)
    # The extracted folder itself is also accepted as root.
    assert len(cifar10c.load_cifar10c("fog", 5, root=tmp_path / "CIFAR-10-C", download=False)) == N


def test_download_goes_to_zenodo_and_is_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    md5, arrays = make_archive(source)
    monkeypatch.setattr(cifar10c, "ARCHIVE_MD5", md5)
    calls = []

    def fake_download(url: str, folder: Path, filename: str, expected_md5: str) -> None:
        calls.append((url, Path(folder), filename, expected_md5))
        (Path(folder) / filename).write_bytes((source / "CIFAR-10-C.tar").read_bytes())

    monkeypatch.setattr(cifar10c, "download_archive", fake_download)
    root = tmp_path / "cache"
    ds = cifar10c.load_cifar10c("fog", 2, root=root)
    assert ds.labels.tolist() == arrays["labels"][N : 2 * N].tolist()
    zenodo = "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1"
    assert calls == [(zenodo, root, ".CIFAR-10-C.tar.part", md5)]
    assert sorted(p.name for p in root.iterdir()) == ["CIFAR-10-C", "CIFAR-10-C.tar"]


def test_download_with_wrong_checksum_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    make_archive(source)  # the published MD5 stays in force, so these bytes do not match it
    tried = []

    def wrong_bytes(url: str, folder: Path, filename: str, expected_md5: str) -> None:
        tried.append(url)
        (Path(folder) / filename).write_bytes((source / "CIFAR-10-C.tar").read_bytes())

    monkeypatch.setattr(cifar10c, "download_archive", wrong_bytes)
    root = tmp_path / "cache" / "data"
    expected = r"could not download CIFAR-10-C.tar \(.*wrong checksum, expected MD5 56bf5dc"
    with pytest.raises(DataError, match=expected) as info:
        cifar10c.load_cifar10c("fog", 1, root=root)
    assert "\n" not in str(info.value) and "by hand" in str(info.value)
    assert tried == list(cifar10c.ARCHIVE_URLS)  # every mirror tried
    assert not (tmp_path / "cache").exists()  # no partial file, no folder the download created


def test_truncated_archive_is_refused_by_checksum(tmp_path: Path, fake: dict[str, np.ndarray]) -> None:
    archive = tmp_path / "CIFAR-10-C.tar"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    expected = r"CIFAR-10-C.tar has the wrong checksum \(expected MD5 .*\); delete it and download"
    with pytest.raises(DataError, match=expected):
        cifar10c.load_cifar10c("fog", 1, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CIFAR-10-C.tar"]  # nothing extracted


def test_truncated_archive_fails_extraction_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even an archive whose checksum matched (here: the checksum of the cut copy) leaves no half-extracted folder.
    make_archive(tmp_path)
    archive = tmp_path / "CIFAR-10-C.tar"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    monkeypatch.setattr(cifar10c, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"cannot extract .*CIFAR-10-C.tar .*delete it and download again"):
        cifar10c.load_cifar10c("fog", 1, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CIFAR-10-C.tar"]


@pytest.mark.parametrize("member", ["CIFAR-10-C/../../escaped.npy", "../escaped.npy"])
def test_path_traversal_member_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    root = tmp_path / "root"
    md5, _ = make_archive(root, extra=(member, b"x"))
    monkeypatch.setattr(cifar10c, "ARCHIVE_MD5", md5)
    with pytest.raises(DataError, match="unsafe member"):
        cifar10c.load_cifar10c("fog", 1, root=root)
    assert not (tmp_path / "escaped.npy").exists() and not (root.parent.parent / "escaped.npy").exists()
    assert sorted(p.name for p in root.iterdir()) == ["CIFAR-10-C.tar"]


def test_unknown_corruption_lists_the_valid_names(tmp_path: Path) -> None:
    expected = "unknown CIFAR-10-C corruption 'fogg'; choose one of: gaussian_noise, "
    with pytest.raises(ConfigError, match=expected) as info:
        cifar10c.load_cifar10c("fogg", 1, root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in cifar10c.CIFAR10C_CORRUPTIONS)
    assert len(cifar10c.CIFAR10C_CORRUPTIONS) == 19 == len(set(cifar10c.CIFAR10C_CORRUPTIONS))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3"])
def test_severity_outside_1_to_5_refused(tmp_path: Path, severity: object) -> None:
    with pytest.raises(ConfigError, match="severity must be an integer from 1 to 5"):
        cifar10c.load_cifar10c("fog", severity, root=tmp_path)  # type: ignore[arg-type]


def test_missing_archive_without_download_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar10c, "download_archive", no_download)
    expected = r"CIFAR-10-C.tar not found in .*zenodo.org/records/2535967.*allow downloading; or extract"
    with pytest.raises(DataError, match=expected):
        cifar10c.load_cifar10c("fog", 1, root=tmp_path, download=False)


def test_damaged_extracted_folder(tmp_path: Path, fake: dict[str, np.ndarray]) -> None:
    cifar10c.load_cifar10c("fog", 1, root=tmp_path)
    folder = tmp_path / "CIFAR-10-C"
    (folder / "fog.npy").write_bytes((folder / "fog.npy").read_bytes()[:1000])  # cut inside the data
    with pytest.raises(DataError, match=r"fog.npy is corrupt .*delete the folder"):
        cifar10c.load_cifar10c("fog", 1, root=tmp_path)
    with pytest.raises(DataError, match="contrast.npy is missing from .*CIFAR-10-C"):
        cifar10c.load_cifar10c("contrast", 1, root=tmp_path)
    np.save(folder / "labels.npy", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="labels.npy holds uint8 data of shape \\(4,\\), expected 15"):
        cifar10c.load_cifar10c("saturate", 1, root=tmp_path)
