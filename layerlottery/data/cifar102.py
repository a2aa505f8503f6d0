"""CIFAR-10.2 (Lu et al. 2020, "Harder or Different? A Closer Look at Distribution Shift in Dataset Reproduction").

A reproduction of CIFAR-10 from the same Tiny Images source: 10,000 train and 2,000 test images, published as
``cifar102_train.npz`` / ``cifar102_test.npz`` in github.com/modestyachts/cifar-10.2, each with the keys
``images`` (n, 32, 32, 3) uint8, ``labels`` (n,) int64 in 0..9, ``label_names``, ``ti_indices`` and ``keywords``.

Integrity. The authors publish no checksum. The test file's SHA-256 and size below are those pinned in public code
that froze it for an experiment (see ``CIFAR102_FILES``); no checksum of the train file could be found, so the train
file is checked by structure only (keys, dtypes, shapes, 10,000 images, labels 0..9). Both checks run on a
download before it is renamed into place, and on every load (the files are small: 6 and 32 MB).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerlottery.data.cifar import CIFAR_SPECS
from layerlottery.data.dataset import ImageDataset
from layerlottery.data.download import DOWNLOAD_ERRORS, download_file, one_line
from layerlottery.data.paths import resolve_root
from layerlottery.data.splits import check_split
from layerlottery.errors import DataError

FOLDER = "cifar-10.2"
# The repository's raw-file address, then the host it redirects to (tried if following the redirect fails).
BASE_URLS = (
    "https://github.com/modestyachts/cifar-10.2/raw/master/",
    "https://raw.githubusercontent.com/modestyachts/cifar-10.2/master/",
)


@dataclass(frozen=True)
class Cifar102File:
    """One published CIFAR-10.2 file and what a genuine copy must satisfy."""

    filename: str
    count: int  # images in the file, per the authors' README
    sha256: str | None = None  # None: no published or publicly pinned checksum
    size: int | None = None  # bytes


# A plain dict so tests can describe a small file instead.
CIFAR102_FILES = {
    # SHA-256, size and git blob 7a3829681be56af70ea80ec99cf3822e2f5edff3 of cifar102_test.npz at
    # modestyachts/cifar-10.2 commit 521467a52ad494b78ff9c70051099c0d9ba74d40, as pinned (EXPECTED_CIFAR102_*) by a
    # public research repository's experiments/iclr2027_global_band_cifar102_confirmation.py; not published by the
    # authors and not re-checked from here (no network).
    "test": Cifar102File(
        "cifar102_test.npz", 2000, "e4fd6462bd5141ed293acd52ea570952f65d1bfd4ec9b068f87742f75a7a632e", 6_393_664
    ),
    "train": Cifar102File("cifar102_train.npz", 10_000),
}
NUM_CLASSES = 10

# The fetch function, a module global so that tests can replace it with a local copy.
download_npz = download_file


def load_cifar102(
    split: str = "test", *, root: str | os.PathLike[str] | None = None, download: bool = True
) -> ImageDataset:
    """CIFAR-10.2's ``split`` ("test": 2,000 images, "train": 10,000) as uint8 (N, 3, 32, 32).

    ``root`` (default ``$LAYERLOTTERY_DATA`` or ``~/.cache/layerlottery``, as for CIFAR-10) holds a ``cifar-10.2/``
    folder with the published ``.npz`` files, or is that folder itself. A missing file is downloaded into it when
    ``download`` is true. Images are normalized with CIFAR-10's training statistics, since CIFAR-10.2 is a test of
    CIFAR-10 models.
    """
    spec = CIFAR102_FILES[check_split(split)]
    base = resolve_root(root)
    folder = base if base.name == FOLDER and base.is_dir() else base / FOLDER
    path = folder / spec.filename
    if not path.is_file():
        if not download:
            raise DataError(
                f"{spec.filename} not found in {folder}; place it there from {BASE_URLS[0]}{spec.filename} "
                "or allow downloading"
            )
        _download(path, spec)
    images, labels = read_npz(path, spec)
    cifar10 = CIFAR_SPECS["cifar10"]
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        torch.from_numpy(labels),
        NUM_CLASSES,
        cifar10.mean,
        cifar10.std,
        name="cifar102",
    )


def read_npz(path: Path, spec: Cifar102File) -> tuple[np.ndarray, np.ndarray]:
    """Check ``path`` against ``spec`` (size, SHA-256 when pinned, structure); return NHWC images, int64 labels."""
    try:
        return _verified_arrays(path, spec)
    except _NotPublished as err:
        raise DataError(f"{path} {err}; delete it and download again") from None


class _NotPublished(Exception):
    """A file that is not the published one; the message says why, without naming the file."""


def _verified_arrays(path: Path, spec: Cifar102File) -> tuple[np.ndarray, np.ndarray]:
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise _NotPublished(f"is {size} bytes, expected {spec.size} (truncated or altered)")
    if spec.sha256 is not None and _sha256(path) != spec.sha256:
        raise _NotPublished(f"has the wrong checksum (expected SHA-256 {spec.sha256})")
    try:
        # allow_pickle=False: only the two plain arrays are read; nothing in the file can run code.
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except KeyError as err:
        raise _NotPublished(f"lacks the array {one_line(err)}, so it is not a CIFAR-10.2 file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise _NotPublished(f"is not a readable .npz file ({one_line(err)})") from None
    n = spec.count
    if images.dtype != np.uint8 or images.shape != (n, 32, 32, 3):
        raise _NotPublished(f"holds {images.dtype} images of shape {images.shape}, expected uint8 ({n}, 32, 32, 3)")
    in_range = n == 0 or 0 <= labels.min() <= labels.max() < NUM_CLASSES
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or not in_range:
        raise _NotPublished(f"holds {labels.dtype} labels of shape {labels.shape}, expected {n} labels in 0..9")
    return images, labels.astype(np.int64)


def _download(path: Path, spec: Cifar102File) -> None:
    """Fetch ``spec`` to a temporary name beside ``path``, verify it, and only then rename it into place."""
    partial = path.with_name(f".{path.name}.part")
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    failures = []
    for base in BASE_URLS:
        url = base + spec.filename
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # md5=None: no MD5 is published; _verified_arrays checks SHA-256 / size / structure instead.
            download_npz(url, path.parent, partial.name, None)
            if not partial.is_file():
                raise RuntimeError("the download produced no file")
            _verified_arrays(partial, spec)
            os.replace(partial, path)  # same folder, so atomic: the file appears verified or not at all
            return
        except _NotPublished as err:
            failures.append(f"{url}: got a file that {err}")
        except DOWNLOAD_ERRORS as err:
            failures.append(f"{url}: {one_line(err)}")
        finally:
            partial.unlink(missing_ok=True)
    for folder in created:  # deepest first; leave nothing behind
        try:
            folder.rmdir()
        except OSError:
            break
    raise DataError(f"could not download {spec.filename} ({'; '.join(failures)}); place it at {path} by hand")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
