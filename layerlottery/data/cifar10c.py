"""CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019): the CIFAR-10 test set under 19 corruptions at 5 severities.

The published archive ``CIFAR-10-C.tar`` (Zenodo record 2535967, 2.9 GB) holds a folder ``CIFAR-10-C/`` with one
``<corruption>.npy`` per corruption, each of shape (50000, 32, 32, 3) uint8: severity 1's 10,000 test images in
order, then severity 2's, ... up to 5; and ``labels.npy``, the 50,000 matching labels (the same 10,000 five times).

The archive is downloaded once (MD5-checked, :mod:`layerlottery.data.download`) and extracted through
:func:`layerlottery.data.cifar.extract_archive` (unsafe members refused; the folder is renamed into place only once
complete). A corruption file is then memory-mapped and only its severity's rows are used, so one evaluation pages in
30 MB of one file rather than reading 150 MB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from layerlottery.data.cifar import CIFAR_SPECS, extract_archive
from layerlottery.data.dataset import ImageDataset
from layerlottery.data.download import download_file, ensure_file, one_line
from layerlottery.data.paths import resolve_root
from layerlottery.errors import ConfigError, DataError

# The 15 corruptions of the benchmark (mean corruption error is over these) and the 4 held-out extras, in the
# paper's order; the names are the archive's file names.
CIFAR10C_STANDARD = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
CIFAR10C_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CIFAR10C_CORRUPTIONS = CIFAR10C_STANDARD + CIFAR10C_EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

FOLDER = "CIFAR-10-C"
ARCHIVE = "CIFAR-10-C.tar"
# Zenodo's current address first, then the older /record/ form that most published code uses.
ARCHIVE_URLS = (
    "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
    "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
)
# MD5 of CIFAR-10-C.tar (2,918,471,680 bytes, Zenodo record 2535967 v1). Not checked against Zenodo from here (no
# network); taken from public code that pins it identically: torch-uncertainty
# (ENSTA-U2IS-AI/torch-uncertainty, torch_uncertainty/datasets/classification/cifar/cifar_c.py, CIFAR10C.tgz_md5)
# and several other loaders, one of which records it as the MD5 that Zenodo lists for the file. A module global,
# so tests can swap in the checksum of a small archive.
ARCHIVE_MD5 = "56bf5dcef84df0e2308c6dcbcbbd8499"

# The fetch function, a module global so that tests can replace it with a local copy.
download_archive = download_file


def load_cifar10c(
    corruption: str, severity: int, *, root: str | os.PathLike[str] | None = None, download: bool = True
) -> ImageDataset:
    """The CIFAR-10 test images under ``corruption`` at ``severity`` (1..5), as uint8 (N, 3, 32, 32).

    ``root`` (default ``$LAYERLOTTERY_DATA`` or ``~/.cache/layerlottery``, as for CIFAR-10) is the folder that holds
    ``CIFAR-10-C.tar`` and its extracted ``CIFAR-10-C/`` folder; it may also be that folder itself. An extracted
    folder is used as is; otherwise the archive is MD5-checked (downloaded first if missing and ``download``) and
    extracted. The images are a view of the memory-mapped file, normalized with CIFAR-10's training statistics.
    """
    name = check_corruption(corruption)
    level = check_severity(severity)
    folder = _extracted_folder(resolve_root(root), download)
    images, labels = read_severity(folder, name, level)
    cifar10 = CIFAR_SPECS["cifar10"]
    return ImageDataset(
        torch.from_numpy(images.transpose(0, 3, 1, 2)),  # HWC file -> CHW view; still backed by the mapping
        torch.from_numpy(labels),
        cifar10.num_classes,
        cifar10.mean,
        cifar10.std,
        name=f"cifar10c-{name}-{level}",
    )


def check_corruption(corruption: str) -> str:
    """Return ``corruption`` if it is a CIFAR-10-C file name, else raise ConfigError listing the valid ones."""
    if corruption not in CIFAR10C_CORRUPTIONS:
        valid = ", ".join(CIFAR10C_CORRUPTIONS)
        raise ConfigError(f"unknown CIFAR-10-C corruption {corruption!r}; choose one of: {valid}")
    return corruption


def check_severity(severity: int) -> int:
    """Return ``severity`` if it is an integer 1..5, else raise ConfigError."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise ConfigError(f"CIFAR-10-C severity must be an integer from 1 to 5, got {severity!r}")
    return int(severity)


def read_severity(folder: Path, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(severity-1)*n .. severity*n-1`` of ``folder/<corruption>.npy`` (n = rows / 5) and their labels.

    The images are a slice of a copy-on-write memory map (``np.memmap``): nothing is read until used, and a write
    by a caller changes private pages, never the file (a read-only map would crash such a writer instead).
    The labels are a small int64 copy.
    """
    images = _map(folder / f"{corruption}.npy", folder)
    labels = _map(folder / "labels.npy", folder)
    redo = f"delete the folder {folder} so it is extracted again"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(images) % len(SEVERITIES):
        raise DataError(
            f"CIFAR-10-C file {folder / (corruption + '.npy')} holds {images.dtype} data of shape {images.shape}, "
            f"expected uint8 (5 x n, 32, 32, 3); {redo}"
        )
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"CIFAR-10-C file {folder / 'labels.npy'} holds {labels.dtype} data of shape {labels.shape}, "
            f"expected {len(images)} integer labels to match {corruption}.npy; {redo}"
        )
    per_severity = len(images) // len(SEVERITIES)
    rows = slice((severity - 1) * per_severity, severity * per_severity)
    return images[rows], labels[rows].astype(np.int64)


def _map(path: Path, folder: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(
            f"CIFAR-10-C file {path.name} is missing from {folder}; delete the folder so the archive is "
            "extracted again, or place the published file there"
        ) from None
    except (OSError, ValueError, EOFError) as err:  # truncated, not an .npy, or an object array
        raise DataError(
            f"CIFAR-10-C file {path} is corrupt ({one_line(err)}); delete the folder {folder} so it is extracted again"
        ) from None


def _extracted_folder(root: Path, download: bool) -> Path:
    """The extracted ``CIFAR-10-C`` folder under ``root`` (or ``root`` itself), extracting the archive if needed."""
    if root.name == FOLDER and root.is_dir():
        return root
    folder = root / FOLDER
    if folder.is_dir():  # only ever renamed into place complete, so its presence means extraction finished
        return folder
    archive = ensure_file(
        root / ARCHIVE,
        ARCHIVE_URLS,
        ARCHIVE_MD5,
        download=download,
        fetch=download_archive,
        hint=f"or extract it so that {folder}/<corruption>.npy exists",
    )
    return extract_archive(archive, root, FOLDER)
