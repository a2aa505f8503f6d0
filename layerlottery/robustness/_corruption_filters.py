"""The spatial operations of the corruptions (blurs, pixelation) as per-axis matrices, in torch.

Padding, correlation and resizing are all linear along each image axis, so every one of them is an
(H, H) matrix on the columns and a (W, W) matrix on the rows: ``out = rows @ image @ cols.T``, one
batched matrix product for a whole (N, C, H, W) batch on any device. That is exact (float rounding
aside), handles a kernel wider than the image (ImageNet-C's sigma 6 on a 28-pixel digit), and on a
CPU is far faster than a single-channel ``conv2d``. A non-separable kernel (the defocus disk) is
split by SVD into a sum of a few separable parts.

Each operation reproduces the library call of Hendrycks & Dietterich's code (make_cifar_c.py and
the ``imagecorruptions`` package):

* :func:`gaussian_blur_parts` = ``skimage.filters.gaussian`` (scipy ``gaussian_filter``,
  ``mode='nearest'``, ``truncate=4``);
* :func:`defocus_blur_parts` = ``cv2.filter2D(x, -1, disk(radius, alias_blur))`` with OpenCV's
  default border (BORDER_REFLECT_101);
* :func:`pixelate_matrix` = two ``PIL.Image.resize`` calls, down with ``BOX`` and back up with
  ``BOX`` or ``NEAREST`` (:func:`pil_resize_matrix`, checked against Pillow in the tests).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

# (rows, cols) matrices whose products rows @ image @ cols.T sum to the filtered image.
SeparableParts = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def apply_parts(images: torch.Tensor, parts: SeparableParts) -> torch.Tensor:
    """Sum of ``rows @ images @ cols.T`` over ``parts``, on the images' device and dtype."""
    out = None
    for rows, cols in parts:
        term = rows.to(images) @ images @ cols.to(images).T
        out = term if out is None else out.add_(term)
    assert out is not None, "a filter has at least one part"
    return out


def border_indices(size: int, pad: int, mode: str) -> torch.Tensor:
    """Source index of every position of a ``size``-long axis padded by ``pad`` on both sides.

    ``"nearest"`` repeats the edge pixel (scipy ``mode='nearest'``); ``"reflect101"`` mirrors about
    the edge pixel without repeating it (OpenCV BORDER_REFLECT_101, numpy ``'reflect'``), folding
    again as often as needed when ``pad`` exceeds the image.
    """
    positions = torch.arange(-pad, size + pad)
    if mode == "nearest":
        return positions.clamp(0, size - 1)
    if mode == "reflect101":
        if size == 1:
            return torch.zeros_like(positions)
        period = 2 * (size - 1)
        folded = positions.remainder(period)
        return torch.where(folded > size - 1, period - folded, folded)
    raise ValueError(f"unknown border mode {mode!r}")


def axis_filter_matrix(size: int, kernel1d: torch.Tensor, mode: str) -> torch.Tensor:
    """(size, size) matrix ``A``: ``A @ line`` pads ``line`` by ``mode``, then correlates it with ``kernel1d`` (odd)."""
    radius = len(kernel1d) // 2
    source = border_indices(size, radius, mode)  # padded position -> pixel
    taps = torch.arange(size).view(-1, 1) + torch.arange(2 * radius + 1).view(1, -1)  # (size, K) padded positions
    matrix = torch.zeros(size, size, dtype=kernel1d.dtype)
    matrix.scatter_add_(1, source[taps], kernel1d.expand(size, -1).contiguous())
    return matrix


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's Gaussian (float64): radius ``int(truncate * sigma + 0.5)``, weights summing to one."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


@lru_cache(maxsize=64)
def gaussian_blur_parts(sigma: float, height: int, width: int) -> SeparableParts:
    """``skimage.filters.gaussian(image, sigma)`` of an (height, width) image: one separable part."""
    kernel = gaussian_kernel1d(sigma)
    return ((axis_filter_matrix(height, kernel, "nearest"), axis_filter_matrix(width, kernel, "nearest")),)


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The anti-aliased disk of make_cifar_c.py's ``disk()``: a float32 (K, K) kernel.

    A binary disk ``x^2 + y^2 <= radius^2`` on a grid of at least 17 x 17 pixels, normalised to sum
    one, then smoothed by ``cv2.GaussianBlur`` with a 3 x 3 (radius <= 8) or 5 x 5 kernel of sigma
    ``alias_blur`` and OpenCV's reflect-101 border, all in float32 as the original.
    """
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float32)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    aliased = (x**2 + y**2 <= radius**2).to(torch.float32)
    aliased /= aliased.sum()
    # cv2.getGaussianKernel with sigma > 0: exp(-(i - (ksize-1)/2)^2 / (2 sigma^2)), normalised.
    offsets = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * alias_blur**2))
    weights = (weights / weights.sum()).to(torch.float32)
    smooth = axis_filter_matrix(2 * half + 1, weights, "reflect101")
    return smooth @ aliased @ smooth.T


@lru_cache(maxsize=64)
def defocus_blur_parts(radius: float, alias_blur: float, height: int, width: int) -> SeparableParts:
    """``cv2.filter2D(image, -1, disk(radius, alias_blur))`` of an (height, width) image, as separable parts.

    The disk is split by SVD into rank-one parts ``u v^T`` (one or two for CIFAR-10-C's disks, at
    most a dozen for ImageNet-C's); parts below 1e-12 of the largest are dropped as numerically zero.
    """
    u, singular, vh = torch.linalg.svd(disk_kernel(radius, alias_blur).to(torch.float64))
    parts = []
    for rank in range(len(singular)):
        if singular[rank] <= singular[0] * 1e-12:
            break
        rows = axis_filter_matrix(height, u[:, rank] * singular[rank], "reflect101")
        cols = axis_filter_matrix(width, vh[rank], "reflect101")
        parts.append((rows, cols))
    return tuple(parts)


def _box_filter(x: float) -> float:
    # Pillow's box_filter: 1 on (-0.5, 0.5].
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def pil_resize_matrix(in_size: int, out_size: int, resample: str) -> torch.Tensor:
    """(out_size, in_size) float64 matrix ``R`` with ``resized = R @ line`` for one axis of ``Image.resize``.

    ``"box"`` follows Pillow's ``precompute_coeffs`` (support 0.5 scaled by the downscale factor,
    window rounded to whole pixels, weights normalised); ``"nearest"`` samples the source pixel under
    each output pixel's centre, ``floor((i + 0.5) * in / out)``, accumulated in double precision
    step by step as Pillow's ``ImagingScaleAffine`` does (a product would round differently at exact
    boundaries, e.g. 2.5 * 28 / 5). Pillow rounds to uint8 after each pass; this matrix does not,
    so its results differ from Pillow's by at most half a level per pass.
    """
    scale = in_size / out_size
    rows = [[0.0] * in_size for _ in range(out_size)]  # built in Python: a few hundred scalar writes
    if resample == "nearest":
        source = 0.5 * scale
        for row in rows:
            row[min(math.floor(source), in_size - 1)] = 1.0
            source += scale
        return torch.tensor(rows, dtype=torch.float64)
    if resample != "box":
        raise ValueError(f"unknown resampling filter {resample!r}")
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    for i, row in enumerate(rows):
        center = (i + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        for j in range(first, stop):
            row[j] = _box_filter((j - center + 0.5) / filterscale)
        total = sum(row)
        if total > 0:
            rows[i] = [weight / total for weight in row]
    return torch.tensor(rows, dtype=torch.float64)


@lru_cache(maxsize=64)
def pixelate_matrix(size: int, factor: float, upsample: str) -> torch.Tensor:
    """(size, size) matrix of one axis of PIL's resize to ``int(size * factor)`` with BOX and back with ``upsample``."""
    small = max(int(size * factor), 1)
    return pil_resize_matrix(small, size, upsample) @ pil_resize_matrix(size, small, "box")
