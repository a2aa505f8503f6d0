"""MNIST from the published idx files: downloaded once from torchvision's mirrors (MD5-checked), parsed with numpy."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from layerlottery.data.dataset import ImageDataset
from layerlottery.data.download import download_file, ensure_file
from layerlottery.data.paths import resolve_root
from layerlottery.data.splits import SPLIT_SEED, check_fraction, check_split, stratified_split
from layerlottery.errors import DataError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx magic numbers: 0x0803 = unsigned bytes in 3 dimensions, 0x0801 = unsigned bytes in 1.
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
_GZIP_SIGNATURE = b"\x1f\x8b"
# The mirrors torchvision's MNIST class uses, in its order (LeCun's original site is often unreachable).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# MD5 of the published gzipped files, as listed by torchvision. A plain dict so tests can trust fake files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The fetch function, a module global so that tests can replace it with a local copy.
download_mnist_file = download_file


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    train_fraction: float | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load MNIST as uint8 images of shape (N, 1, 28, 28) from idx files, gzipped or not.

    ``data_dir`` is a folder holding the four published files (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
    optionally ending in ``.gz``), or a folder with such a ``mnist/`` subfolder. By default
    ``$LAYERLOTTERY_DATA/mnist`` or ``~/.cache/layerlottery/mnist``.

    A file present uncompressed is used as is (its idx header is checked). Otherwise the ``.gz`` file
    is MD5-checked against the published checksum, and downloaded first if missing and ``download`` is
    true: into the folder that already holds idx files, else into ``data_dir/mnist`` (about 11 MB for
    all four files, 1.6 MB for the two t10k files). A ``data_dir`` that does not exist is an error.

    ``train_fraction`` is for users who only have the 10,000-image t10k set: when given, only the
    t10k files are read and split (stratified, with a fixed seed independent of ``seed``) into a
    train part holding that fraction and a disjoint test part, e.g. 0.8 gives 8,000 / 2,000.
    """
    check_split(split)
    if train_fraction is not None:
        train_fraction = check_fraction(train_fraction)  # fail before reading 8 MB of files
    root = resolve_root(data_dir)
    if data_dir is not None and not root.is_dir():
        # A user's folder that is not there is a typo far more often than a wish to download into it.
        raise DataError(
            f"MNIST folder {root} not found; point --data-dir (in `layerlottery run`: data.data_dir=DIR) at a "
            "folder holding the published idx files, create that folder to download them into it, or leave "
            "it unset to download into the cache"
        )
    directory = _find_directory(root, data_dir is None)
    source = "test" if train_fraction is not None else split
    image_name, label_name = MNIST_FILES[source]
    images = read_idx(_find_file(directory, image_name, split, train_fraction, download), IMAGES_MAGIC)
    labels = read_idx(_find_file(directory, label_name, split, train_fraction, download), LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"MNIST files {image_name} ({len(images)} images) and {label_name} ({len(labels)} labels) in "
            f"{directory} do not match; replace them with the published files"
        )
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"MNIST file {label_name} in {directory} holds label {int(labels.max())} > 9; replace it")
    if train_fraction is not None:
        train_idx, test_idx = stratified_split(labels, train_fraction, SPLIT_SEED)
        idx = train_idx if split == "train" else test_idx
        images, labels = images[idx], labels[idx]
    return ImageDataset(
        # copy: arrays from np.frombuffer are read-only, and torch tensors should own writable memory
        torch.from_numpy(images[:, None].copy()),
        torch.from_numpy(labels.astype(np.int64)),
        10,
        MNIST_MEAN,
        MNIST_STD,
        name="mnist",
    )


def read_idx(path: str | os.PathLike[str], expected_magic: int) -> np.ndarray:
    """Read an unsigned-byte idx file (gzipped or raw) into a uint8 array of its declared shape.

    Raises DataError if the magic number is not ``expected_magic`` or the payload length does not
    match the header, which catches truncated downloads and swapped image/label files.
    """
    path = Path(path)
    raw = _read_bytes(path)
    kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an idx file; replace it with the published MNIST file")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path} has idx magic number {magic}, expected {expected_magic} for MNIST {kind}; "
            "replace it with the published file"
        )
    ndim = raw[3]  # the low byte of the magic number is the number of dimensions
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} ends inside its idx header; replace it with the published MNIST file")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} declares shape {dims} ({expected} bytes) but holds {len(raw) - header} bytes; "
            "it is truncated or corrupt, replace it with the published file"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read()
        # Sniff the content rather than trust the suffix: some mirrors serve gzip under the bare name.
        return gzip.decompress(raw) if raw[:2] == _GZIP_SIGNATURE else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); replace it with the published MNIST file") from None


def _find_directory(root: Path, is_default: bool) -> Path:
    """The default root is a cache of several datasets, so MNIST sits in its ``mnist/`` subfolder;
    a user's data_dir may be either the idx folder itself or such a root (downloads then go to ``mnist/``)."""
    if is_default or not any(root.glob("*-idx?-ubyte*")):
        return root / "mnist"
    return root


def _find_file(directory: Path, name: str, split: str, train_fraction: float | None, download: bool) -> Path:
    raw = directory / name
    if raw.is_file():  # the user's uncompressed copy: read_idx checks its header and length
        return raw
    # Named for both front ends: score/prune take --data-dir, run takes the setting data.data_dir.
    hint = "or point --data-dir (in `layerlottery run`: data.data_dir=DIR) at a folder holding the published idx files"
    if split == "train" and train_fraction is None and any(directory.glob("t10k-*-ubyte*")):
        hint += (
            ", or split the 10,000-image test set with --data-option train_fraction=0.8 "
            "(in `layerlottery run`: 'data.options={train_fraction: 0.8}')"
        )
    urls = [mirror + f"{name}.gz" for mirror in MNIST_MIRRORS]
    return ensure_file(
        directory / f"{name}.gz", urls, MNIST_MD5[name], download=download, fetch=download_mnist_file, hint=hint
    )
