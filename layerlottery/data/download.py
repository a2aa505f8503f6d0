"""Published dataset files: fetched once from a list of mirrors, MD5-checked, and placed atomically.

A file is downloaded under a temporary name beside its final path and renamed into place only once its
checksum is right, so an interrupted or corrupt download never sits where a later run would trust it.
The temporary name is fixed (``.NAME.part``), so a crash leaves at most one stale partial file, which the
next download overwrites.
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Callable, Sequence

from layerlottery.errors import DataError

# fetch(url, folder, filename, md5) writes folder/filename or raises; torchvision's download_url does.
Fetch = Callable[[str, Path, str, str], None]
DOWNLOAD_ERRORS = (OSError, RuntimeError, http.client.HTTPException)


def download_file(url: str, root: Path, filename: str, md5: str) -> None:
    """Fetch ``url`` to ``root/filename``; torchvision's helper follows redirects and checks the MD5."""
    from torchvision.datasets.utils import download_url  # deferred: torchvision is slow to import

    download_url(url, str(root), filename=filename, md5=md5)


def has_md5(path: Path, md5: str) -> bool:
    """Whether ``path`` is a file whose MD5 is ``md5``."""
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def ensure_file(
    path: Path,
    urls: Sequence[str],
    md5: str,
    *,
    download: bool,
    fetch: Fetch = download_file,
    hint: str = "",
) -> Path:
    """Return ``path`` once it holds the published file (MD5 ``md5``), downloading it first if missing.

    ``urls`` are mirrors of the same file, tried in order. Every failure is one DataError line saying
    what to do; ``hint`` (e.g. another way to get the data) is appended to the messages about a missing file.
    """
    extra = f"; {hint}" if hint else ""
    if not path.is_file():
        if not download:
            raise DataError(f"{path.name} not found in {path.parent}; place it there from {urls[0]} or allow downloading{extra}")
        _download(path, urls, md5, fetch, extra)
    if not has_md5(path, md5):
        raise DataError(f"{path} has the wrong checksum (expected MD5 {md5}); delete it and download again")
    return path


def _download(path: Path, urls: Sequence[str], md5: str, fetch: Fetch, extra: str) -> None:
    partial = path.with_name(f".{path.name}.part")
    # Folders this download creates, deepest first: removed again if it fails, so nothing is left behind.
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    failures = []
    for url in urls:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fetch(url, path.parent, partial.name, md5)
            if not partial.is_file():
                raise RuntimeError("the download produced no file")
            if not has_md5(partial, md5):  # a fetch that ignores md5, or a mirror serving other bytes
                raise RuntimeError(f"wrong checksum, expected MD5 {md5}")
            os.replace(partial, path)  # same folder, so atomic: the file appears complete or not at all
            return
        except DOWNLOAD_ERRORS as err:
            failures.append(f"{url}: {one_line(err)}")
        finally:
            _remove(partial)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (another process put something there) or already gone
            break
    raise DataError(f"could not download {path.name} ({'; '.join(failures)}); place it at {path} by hand{extra}")


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only folder: nothing was written there either
        pass


def one_line(err: BaseException) -> str:
    """An exception's message on one line (or its type's name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__
