"""CIFAR-10 and CIFAR-100 from the official python-version archives.

The archive is downloaded once (md5-checked, see :mod:`layerlottery.data.download`), extracted into a
temporary folder and renamed into place, so an interrupted run never leaves a half-extracted folder that
later runs would trust.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from layerlottery.data.dataset import ImageDataset
from layerlottery.data.download import download_file, ensure_file, one_line
from layerlottery.data.paths import resolve_root
from layerlottery.data.splits import check_split
from layerlottery.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant comes from and how its extracted folder is laid out."""

    name: str
    title: str
    url: str
    filename: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Per-channel pixel statistics of the train sets (population std, not the often-copied 0.2023 values).
CIFAR_SPECS = {
    "cifar10": CifarSpec(
        name="cifar10",
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}
# Kept apart from the specs, as a plain dict, so tests can monkeypatch it for a small fake archive.
ARCHIVE_MD5 = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}


def load_cifar10(
    split: str = "train", data_dir: str | os.PathLike[str] | None = None, seed: int = 0, *, download: bool = True
) -> ImageDataset:
    """Load CIFAR-10 as uint8 images (N, 3, 32, 32); see :func:`load_cifar` for ``data_dir``/``download``."""
    return load_cifar("cifar10", split, data_dir, download=download)


def load_cifar100(
    split: str = "train", data_dir: str | os.PathLike[str] | None = None, seed: int = 0, *, download: bool = True
) -> ImageDataset:
    """Load CIFAR-100 (fine labels) as uint8 images (N, 3, 32, 32); see :func:`load_cifar`."""
    return load_cifar("cifar100", split, data_dir, download=download)


def load_cifar(
    name: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> ImageDataset:
    """Load ``cifar10`` or ``cifar100``.

    ``data_dir`` (default ``$LAYERLOTTERY_DATA`` or ``~/.cache/layerlottery``) is the folder that
    holds the archive and its extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``, the
    same layout torchvision uses); it may also be the extracted folder itself. An extracted folder is
    used as is; otherwise the archive is md5-checked, downloaded first if missing and ``download``
    is true, and extracted.
    """
    check_split(split)
    spec = CIFAR_SPECS[name]
    root = resolve_root(data_dir)
    folder = root if root.name == spec.folder and root.is_dir() else root / spec.folder
    if not folder.is_dir():
        extract_archive(ensure_archive(spec, root, download), root, spec.folder)
    parts = [read_batch(folder / f, spec.label_key) for f in (spec.train_files if split == "train" else spec.test_files)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), spec.num_classes, spec.mean, spec.std, name=spec.name
    )


# The fetch function, a module global so that tests can replace it with a local copy.
download_archive = download_file


def ensure_archive(spec: CifarSpec, root: Path, download: bool) -> Path:
    """Return the path of a present, md5-verified archive, downloading it first if allowed."""
    return ensure_file(root / spec.filename, [spec.url], ARCHIVE_MD5[spec.name], download=download, fetch=download_archive)


def extract_archive(archive: Path, root: Path, folder: str) -> Path:
    """Extract ``folder`` from ``archive`` into ``root`` via a temporary folder, refusing unsafe members."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-extracting-", dir=root))
    except OSError as err:
        raise DataError(f"cannot extract into {root} ({one_line(err)}); pass a writable --data-dir") from None
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - Python builds without PEP 706; _check_member already vetted names
                tar.extractall(tmp, members=members)
        extracted = tmp / folder
        if not extracted.is_dir():
            raise DataError(f"archive {archive} does not contain the folder {folder}; delete it and download again")
        target = root / folder
        try:
            # rename within one filesystem is atomic: the folder appears complete or not at all
            os.replace(extracted, target)
        except OSError:
            if not target.is_dir():  # another process may have finished first, which is fine
                raise
        return target
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"cannot extract {archive} ({one_line(err)}); delete it and download again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR batch into uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    redo = f"delete the folder {path.parent} so it is extracted again"
    try:
        with path.open("rb") as f:
            # pickle runs code from the file; these files come from an md5-verified archive
            # (or a folder the user put in place), the same trust torchvision extends to them.
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"CIFAR batch file {path.name} is missing from {path.parent}; {redo}") from None
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"CIFAR batch file {path} is corrupt ({one_line(err)}); {redo}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(
            f"CIFAR batch file {path} holds data of shape {data.shape} and {labels.size} labels, "
            f"expected (n, 3072) and n; {redo}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    unsafe = (
        name.startswith(("/", "\\"))
        or os.path.isabs(name)
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
        or not (member.isfile() or member.isdir())  # links and devices have no place in a CIFAR archive
    )
    if unsafe:
        raise DataError(f"archive {archive} holds an unsafe member {name!r}; delete it and download a fresh copy")
