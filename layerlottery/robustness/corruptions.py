"""Common corruptions (noise, blur, digital) generated on the fly, batched on the images' device.

The corruptions and their constants are those of Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019): CIFAR-10-C's for 32 x 32 images
(``ImageNet-C/create_c/make_cifar_c.py`` in github.com/hendrycks/robustness, the default here, also
used for 28 x 28 MNIST) and ImageNet-C's (as packaged by ``imagecorruptions`` 1.1.2,
github.com/bethgelab/imagecorruptions, ``params="imagenet"``). The names are CIFAR-10-C's file names,
so corruptions generated here and the published arrays share keys.

Each corruption reproduces the original's image operations in torch (see :mod:`._corruption_filters`)
on a whole batch at once; the original works one PIL image at a time and stores uint8 (truncating);
these return float32 in [0, 1] without that final rounding. JPEG is the one exception to batching on
the device: it is encoded and decoded by libjpeg on the CPU (torchvision.io), image by image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from layerlottery.errors import ConfigError
from layerlottery.robustness._corruption_filters import (
    apply_parts,
    defocus_blur_parts,
    gaussian_blur_parts,
    pixelate_matrix,
)

CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "gaussian_blur"),
    "digital": ("contrast", "brightness", "jpeg_compression", "pixelate"),
}
"""Corruption family -> corruption names (CIFAR-10-C file names; ``brightness`` is a "weather"
corruption in the paper, grouped with the photometric digital ones here as the contract asks)."""

MAX_SEVERITY = 5


@dataclass(frozen=True)
class CorruptionParams:
    """The constants of one benchmark: per corruption, one setting per severity 1..5 (index 0 = severity 1)."""

    name: str
    gaussian_noise: tuple[float, ...]  # standard deviation of the added noise
    shot_noise: tuple[float, ...]  # photons per unit intensity (Poisson rate scale): fewer = noisier
    impulse_noise: tuple[float, ...]  # fraction of values set to 0 or 1 (half each)
    defocus_blur: tuple[tuple[float, float], ...]  # (disk radius, anti-alias Gaussian sigma), pixels
    gaussian_blur: tuple[float, ...]  # Gaussian sigma, pixels
    contrast: tuple[float, ...]  # factor applied to the deviation from each channel's mean
    brightness: tuple[float, ...]  # added to the HSV value channel
    jpeg_compression: tuple[int, ...]  # JPEG quality
    pixelate: tuple[float, ...]  # side of the downscaled image as a fraction of the original
    pixelate_upsample: str  # filter scaling the pixelated image back: "box" or "nearest"

    def setting(self, name: str, severity: int) -> object:
        """The constant of corruption ``name`` at ``severity`` (1..5)."""
        return getattr(self, name)[severity - 1]


# make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), the constants that made
# the published CIFAR-10-C arrays.
CIFAR10C_PARAMS = CorruptionParams(
    name="cifar10",
    gaussian_noise=(0.04, 0.06, 0.08, 0.09, 0.10),
    shot_noise=(500, 250, 100, 75, 50),
    impulse_noise=(0.01, 0.02, 0.03, 0.05, 0.07),
    defocus_blur=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    gaussian_blur=(0.4, 0.6, 0.7, 0.8, 1),
    contrast=(0.75, 0.5, 0.4, 0.3, 0.15),
    brightness=(0.05, 0.1, 0.15, 0.2, 0.3),
    jpeg_compression=(80, 65, 58, 50, 40),
    pixelate=(0.95, 0.9, 0.85, 0.75, 0.65),
    pixelate_upsample="box",
)

# imagecorruptions 1.1.2 (corruptions.py), the ImageNet-C constants for images of any size.
IMAGENETC_PARAMS = CorruptionParams(
    name="imagenet",
    gaussian_noise=(0.08, 0.12, 0.18, 0.26, 0.38),
    shot_noise=(60, 25, 12, 5, 3),
    impulse_noise=(0.03, 0.06, 0.09, 0.17, 0.27),
    defocus_blur=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    gaussian_blur=(1, 2, 3, 4, 6),
    contrast=(0.4, 0.3, 0.2, 0.1, 0.05),
    brightness=(0.1, 0.2, 0.3, 0.4, 0.5),
    jpeg_compression=(25, 18, 15, 10, 7),
    pixelate=(0.6, 0.5, 0.4, 0.3, 0.25),
    pixelate_upsample="nearest",
)

PARAM_TABLES: dict[str, CorruptionParams] = {"cifar10": CIFAR10C_PARAMS, "imagenet": IMAGENETC_PARAMS}


def corruption_names() -> tuple[str, ...]:
    """Every corruption name, family by family."""
    return tuple(name for names in CORRUPTION_FAMILIES.values() for name in names)


def family_of(name: str) -> str:
    """The family (``noise``, ``blur``, ``digital``) of corruption ``name``; ConfigError if unknown."""
    for family, names in CORRUPTION_FAMILIES.items():
        if name in names:
            return family
    raise ConfigError(_unknown_name(name))


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    generator: torch.Generator | None = None,
    params: str | CorruptionParams = "cifar10",
) -> torch.Tensor:
    """Corrupt a batch of images with corruption ``name`` at ``severity`` (0 = unchanged copy, 1..5).

    Args:
        images: float tensor (N, C, H, W) with C = 1 or 3 and values in [0, 1], on any device.
        name: a corruption name, see :func:`corruption_names`.
        severity: 0 (identity) to 5 (strongest).
        generator: the only source of randomness of the noise corruptions, on ``images.device``; the
            same seed gives the same images. None uses torch's global generator.
        params: ``"cifar10"`` (CIFAR-10-C's constants, for 32 x 32 and similar small images),
            ``"imagenet"`` (ImageNet-C's) or a :class:`CorruptionParams` table.

    Returns:
        A new tensor of the same shape, dtype and device, values in [0, 1].
    """
    table = _check_arguments(images, name, severity, generator, params)
    if severity == 0:
        return images.clone()
    # Always float32 inside: enough for 8-bit images, and the noise drawn from a seed is then the same
    # whatever the input dtype (float16 widened, float64 narrowed, the result cast back).
    out = _CORRUPTIONS[name](images.float(), table.setting(name, severity), table, generator)
    return out.clamp_(0.0, 1.0).to(images.dtype)


# ------------------------------------------------------------------------------------------- noise


def _gaussian_noise(x: torch.Tensor, std: object, _: CorruptionParams, gen: torch.Generator | None) -> torch.Tensor:
    return x + float(std) * torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)


def _shot_noise(x: torch.Tensor, rate: object, _: CorruptionParams, gen: torch.Generator | None) -> torch.Tensor:
    # Photon counts: Poisson with mean intensity * rate, read back in intensity units.
    return torch.poisson(x * float(rate), generator=gen) / float(rate)


def _impulse_noise(x: torch.Tensor, amount: object, _: CorruptionParams, gen: torch.Generator | None) -> torch.Tensor:
    # skimage.util.random_noise(mode="s&p", salt_vs_pepper=0.5): each value independently (channels
    # too) is replaced with probability ``amount``, by 0 or 1 with equal odds. One uniform draw per
    # value decides both: below amount/2 pepper, between amount/2 and amount salt.
    u = torch.rand(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    a = float(amount)
    return torch.where(u < a / 2, torch.zeros_like(x), torch.where(u < a, torch.ones_like(x), x))


# -------------------------------------------------------------------------------------------- blur


def _gaussian_blur(x: torch.Tensor, sigma: object, _: CorruptionParams, __: torch.Generator | None) -> torch.Tensor:
    # skimage.filters.gaussian(sigma, channel_axis=-1): scipy's kernel, edge pixels repeated.
    return apply_parts(x, gaussian_blur_parts(float(sigma), *x.shape[-2:]))


def _defocus_blur(x: torch.Tensor, setting: object, _: CorruptionParams, __: torch.Generator | None) -> torch.Tensor:
    radius, alias_blur = setting  # type: ignore[misc]
    # cv2.filter2D(channel, -1, disk(radius, alias_blur)) with OpenCV's default reflect-101 border.
    return apply_parts(x, defocus_blur_parts(float(radius), float(alias_blur), *x.shape[-2:]))


# ----------------------------------------------------------------------------------------- digital


def _contrast(x: torch.Tensor, factor: object, _: CorruptionParams, __: torch.Generator | None) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as np.mean(axis=(0, 1))
    return (x - means) * float(factor) + means


def _brightness(x: torch.Tensor, shift: object, _: CorruptionParams, __: torch.Generator | None) -> torch.Tensor:
    # The original converts RGB to HSV, adds ``shift`` to V = max(R, G, B) (clipped to 1) and converts
    # back. Hue and saturation unchanged, every channel of an HSV colour is V times a function of
    # (H, S), so the round trip is exactly a per-pixel scaling by V'/V; a black pixel (V = 0, S = 0)
    # becomes grey V'. For one channel V is the value itself, so this is clip(x + shift) as the
    # original does for greyscale. No hue arithmetic, so no division by a zero chroma either.
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + float(shift)).clamp(max=1.0)
    scale = new_value / value.clamp(min=torch.finfo(x.dtype).tiny)
    return torch.where(value > 0, x * scale, new_value.expand_as(x))


def _jpeg_compression(
    x: torch.Tensor, quality: object, _: CorruptionParams, __: torch.Generator | None
) -> torch.Tensor:
    # Pillow's save(format="JPEG", quality=q) and torchvision's encode_jpeg both call libjpeg's
    # jpeg_set_quality with its default 4:2:0 chroma subsampling for colour; greyscale is encoded
    # as one channel, which is what Pillow produces for an RGB copy of a grey image (Cb = Cr = 128).
    pixels = (x * 255).round_().clamp_(0, 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they remain the fastest
        # batched libjpeg binding here (Pillow, the original's, is bit-identical but 4x slower).
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(pixels), quality=int(quality))  # type: ignore[arg-type]
        decoded = torch.stack(decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED))  # type: ignore[arg-type]
    return decoded.to(device=x.device, dtype=torch.float32) / 255


def _pixelate(x: torch.Tensor, factor: object, table: CorruptionParams, __: torch.Generator | None) -> torch.Tensor:
    # PIL: resize to int(side * factor) with BOX, then back with BOX (CIFAR-10-C) or NEAREST
    # (ImageNet-C). Both resizes are linear per axis, so one (H, H) and one (W, W) matrix do it all.
    h, w = x.shape[-2:]
    rows = pixelate_matrix(h, float(factor), table.pixelate_upsample)
    cols = pixelate_matrix(w, float(factor), table.pixelate_upsample)
    return apply_parts(x, ((rows, cols),))


_Corruption = Callable[[torch.Tensor, object, CorruptionParams, "torch.Generator | None"], torch.Tensor]
_CORRUPTIONS: dict[str, _Corruption] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg_compression": _jpeg_compression,
    "pixelate": _pixelate,
}


# ---------------------------------------------------------------------------------------- checking


def _unknown_name(name: object) -> str:
    return f"unknown corruption {name!r}; choose one of: {', '.join(corruption_names())}"


def _check_arguments(
    images: object, name: object, severity: object, generator: torch.Generator | None, params: object
) -> CorruptionParams:
    if not isinstance(name, str) or name not in _CORRUPTIONS:
        raise ConfigError(_unknown_name(name))
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= MAX_SEVERITY:
        raise ConfigError(f"corruption severity must be an integer from 0 (clean) to {MAX_SEVERITY}, got {severity!r}")
    if isinstance(params, CorruptionParams):
        table = params
    elif isinstance(params, str) and params in PARAM_TABLES:
        table = PARAM_TABLES[params]
    else:
        raise ConfigError(f"unknown corruption parameters {params!r}; choose one of: {', '.join(PARAM_TABLES)}")
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or images.shape[1] not in (1, 3)
        or not images.dtype.is_floating_point
    ):
        if isinstance(images, torch.Tensor):
            got = f"{images.dtype} tensor of shape {tuple(images.shape)}"
        else:
            got = type(images).__name__
        raise ConfigError(f"corrupt needs a float tensor of shape (N, C, H, W) with C = 1 or 3 in [0, 1], got {got}")
    if generator is not None and not _same_device(generator.device, images.device):
        raise ConfigError(
            f"the generator is on {generator.device} but the images are on {images.device}; "
            f"create it with torch.Generator(device=images.device)"
        )
    return table


def _same_device(a: torch.device, b: torch.device) -> bool:
    # torch.Generator("cuda") reports cuda:0 while a tensor may say cuda (or the reverse).
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
