"""Batched, on-device data augmentation of uint8 image batches: the paper's pad + random crop + flip.

Why on the device, in batches: for the small CIFAR networks layer pruning produces, a GPU finishes a
training step faster than a CPU worker pool can decode, crop and flip the next batch image by image in
Python or PIL, so the data loader rather than the network bounds the step time (cf. Keller Jordan's
airbench). Keeping the whole uint8 dataset on the device and augmenting a batch with a handful of
vectorized tensor ops removes that bottleneck, needs no worker processes, and, because every random
number comes from one explicit generator, makes the augmentation exactly reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerlottery.errors import ConfigError


def crop_flip_params(
    n: int, padding: int, flip: bool, generator: torch.Generator, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the random choices of :func:`random_crop_flip` for ``n`` images.

    Returns ``(dy, dx, flipped)``: int64 crop offsets in ``0..2*padding`` into the zero-padded image
    (``padding`` means an unshifted crop) and a bool mask of the images to mirror. Offsets are drawn
    (dy first, then dx) only when ``padding > 0`` and flips only when ``flip``, so the generator
    advances only as far as the options need.
    """
    device = generator.device if device is None else torch.device(device)
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    else:
        dy = torch.zeros(n, dtype=torch.int64, device=device)
        dx = torch.zeros(n, dtype=torch.int64, device=device)
    if flip:
        flipped = torch.rand(n, generator=generator, device=device) < 0.5
    else:
        flipped = torch.zeros(n, dtype=torch.bool, device=device)
    return dy, dx, flipped


def crop_flip(
    images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor
) -> torch.Tensor:
    """Zero-pad ``images`` (N, C, H, W) by ``padding``, crop H x W at ``(dy, dx)``, mirror where ``flipped``.

    Deterministic given its arguments; see :func:`crop_flip_params` for their meaning. Image ``i`` of
    the result is ``padded[i, :, dy[i]:dy[i]+H, dx[i]:dx[i]+W]``, flipped along W when ``flipped[i]``.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding > 0 else images
    hp, wp = h + 2 * padding, w + 2 * padding
    rows = dy.view(n, 1) + torch.arange(h, device=images.device)  # (N, H) rows of the padded image
    cols = dx.view(n, 1) + torch.arange(w, device=images.device)  # (N, W) columns of the padded image
    # A flip of the crop reads the same window's columns right to left: folding it into the gather
    # index costs nothing extra, where a separate torch.flip would copy the batch a second time.
    cols = torch.where(flipped.view(n, 1), cols.flip(1), cols)
    # One gather over flat pixel offsets picks every image's window at once; the index is broadcast
    # over channels (expand, no copy), so there is no Python loop over images.
    flat = (rows.view(n, h, 1) * wp + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, flat).view(n, c, h, w)


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop and mirror a batch of uint8 images on their own device.

    Each image is zero-padded by ``padding`` pixels on every side and cropped back to its H x W at an
    independent uniform offset; with ``flip`` it is also mirrored horizontally with probability 0.5.
    Works for non-square images. All randomness comes from ``generator``, which must live on the
    images' device; torch's global RNG is never touched. With ``padding=0`` and ``flip=False`` the
    input itself is returned.

    Args:
        images: uint8 tensor of shape (N, C, H, W).
        padding: pixels of zero padding per side, >= 0 (the paper uses 4 for 32 x 32 CIFAR).
        flip: whether to mirror half of the images at random.
        generator: source of the random offsets and flips, on ``images.device``.

    Returns:
        A new uint8 tensor of shape (N, C, H, W) (contiguous).
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        if isinstance(images, torch.Tensor):
            got = f"{images.dtype} tensor of shape {tuple(images.shape)}"
        else:
            got = type(images).__name__
        raise ConfigError(f"random_crop_flip needs a uint8 tensor of shape (N, C, H, W), got {got}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(f"padding must be a non-negative integer, got {padding!r}")
    if not _same_device(generator.device, images.device):
        raise ConfigError(
            f"the generator is on {generator.device} but the images are on {images.device}; "
            f"create it with torch.Generator(device=images.device)"
        )
    if padding == 0 and not flip:
        return images
    dy, dx, flipped = crop_flip_params(len(images), padding, flip, generator, images.device)
    return crop_flip(images, padding, dy, dx, flipped)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Compare devices treating a missing index (``cuda``) as the current device (``cuda:0``)."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index
