"""Corruptions generated on the fly: against the libraries the original code called (scipy, Pillow,
libjpeg, and ``imagecorruptions`` itself where installed), and their properties (identity at severity
0, range/shape/dtype kept, distortion monotone in severity, reproducible, batch = single images)."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import correlate, gaussian_filter

from layerlottery.errors import ConfigError
from layerlottery.robustness._corruption_filters import disk_kernel, pil_resize_matrix
from layerlottery.robustness.corruptions import (
    CIFAR10C_PARAMS,
    CORRUPTION_FAMILIES,
    IMAGENETC_PARAMS,
    corrupt,
    corruption_names,
    family_of,
)

NOISE = CORRUPTION_FAMILIES["noise"]
DETERMINISTIC = tuple(name for name in corruption_names() if name not in NOISE)
LEVEL = 1 / 255  # one 8-bit grey level


def smooth_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Photo-like test images on the 8-bit grid: random structure at several scales, plus fine texture.

    Several scales matter: structure on a single grid (say 7 x 7) would make pixelating to exactly
    that grid look milder than to a finer one, which no real image does.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, height, width)
    for side, weight in ((3, 0.4), (5, 0.3), (9, 0.2), (17, 0.1)):
        coarse = torch.rand(n, channels, side, side, generator=generator)
        x += weight * F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    x = (0.9 * x + 0.1 * torch.rand(n, channels, height, width, generator=generator)).clamp(0, 1)
    return (x * 255).round() / 255


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- names, errors


def test_names_are_the_families_and_cifar10c_file_names() -> None:
    names = corruption_names()
    assert set(names) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur",
        "contrast", "brightness", "jpeg_compression", "pixelate",
    }  # fmt: skip
    assert len(names) == len(set(names))
    assert {family_of(name) for name in names} == set(CORRUPTION_FAMILIES)
    assert all(name in CORRUPTION_FAMILIES[family_of(name)] for name in names)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "fog"}, "unknown corruption 'fog'; choose one of: gaussian_noise"),
        ({"severity": 6}, "severity must be an integer from 0 (clean) to 5, got 6"),
        ({"severity": -1}, "got -1"),
        ({"severity": 2.0}, "got 2.0"),
        ({"severity": True}, "got True"),
        ({"params": "mnist"}, "unknown corruption parameters 'mnist'; choose one of: cifar10, imagenet"),
        ({"images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8)}, "float tensor"),
        ({"images": torch.zeros(1, 8, 8)}, "shape (N, C, H, W)"),
        ({"images": torch.zeros(1, 2, 8, 8)}, "C = 1 or 3"),
    ],
)
def test_bad_arguments_raise_one_line_config_error(kwargs: dict, needle: str) -> None:
    arguments = {"images": torch.zeros(2, 1, 8, 8), "name": "contrast", "severity": 1, "params": "cifar10"} | kwargs
    with pytest.raises(ConfigError) as info:
        corrupt(arguments.pop("images"), arguments.pop("name"), arguments.pop("severity"), **arguments)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_family_of_unknown_name_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown corruption 'snow'"):
        family_of("snow")


# ----------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", corruption_names())
def test_severity_zero_is_an_unchanged_copy(name: str) -> None:
    x = smooth_images(3, 3, 16, 16)
    out = corrupt(x, name, 0, generator=seeded())
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("params", ["cifar10", "imagenet"])
@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 3, 32, 32), (2, 3, 20, 37)])
def test_output_keeps_shape_dtype_device_and_range(shape: tuple[int, int, int, int], params: str) -> None:
    x = smooth_images(*shape)
    x[0, :, :4, :4] = 0.0  # black and white pixels: the edges of every range
    x[-1, :, -4:, -4:] = 1.0
    before = x.clone()
    for name in corruption_names():
        for severity in (1, 5):
            out = corrupt(x, name, severity, generator=seeded(), params=params)
            assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device, name
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, name
            assert not torch.equal(out, x), f"{name} at severity {severity} changed nothing"
    assert torch.equal(x, before), "the input batch was modified"


def test_other_float_dtypes_are_computed_in_float32_and_come_back_in_their_dtype() -> None:
    x = smooth_images(2, 3, 12, 12)
    for dtype in (torch.float64, torch.float16):
        for name in corruption_names():
            out = corrupt(x.to(dtype), name, 3, generator=seeded())
            assert out.dtype == dtype, name
            # Same seed, same float32 values -> the same corruption, whatever the input dtype.
            assert torch.equal(out, corrupt(x.to(dtype).float(), name, 3, generator=seeded()).to(dtype)), name


@pytest.mark.parametrize("params", ["cifar10", "imagenet"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_distortion_grows_with_severity(params: str, channels: int, size: int) -> None:
    x = smooth_images(16, channels, size, size, seed=3)
    for name in corruption_names():
        distortion = [
            float((corrupt(x, name, severity, generator=seeded(1), params=params) - x).abs().mean())
            for severity in range(6)
        ]
        assert distortion[0] == 0.0
        assert all(b >= a for a, b in zip(distortion, distortion[1:])), f"{name}: {distortion}"
        assert distortion[5] > distortion[1], name


@pytest.mark.parametrize("name", NOISE)
def test_noise_is_reproducible_from_the_generator_alone(name: str) -> None:
    x = smooth_images(4, 3, 16, 16)
    first = corrupt(x, name, 3, generator=seeded(7))
    torch.manual_seed(123)  # the global generator must play no part
    assert torch.equal(first, corrupt(x, name, 3, generator=seeded(7)))
    assert not torch.equal(first, corrupt(x, name, 3, generator=seeded(8)))


@pytest.mark.parametrize("params", ["cifar10", "imagenet"])
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_a_batch_equals_its_images_one_by_one(name: str, params: str) -> None:
    x = smooth_images(5, 3, 24, 30)
    batch = corrupt(x, name, 4, params=params)
    single = torch.cat([corrupt(image[None], name, 4, params=params) for image in x])
    assert torch.allclose(batch, single, rtol=0, atol=1e-6)


# ------------------------------------------------------------- analytic values of the CIFAR-10-C ones


def test_noise_statistics_follow_the_cifar10c_constants() -> None:
    grey = torch.full((64, 3, 32, 32), 0.5)  # far from 0 and 1: no clipping at these strengths
    count = grey.numel()
    for severity in range(1, 6):
        gaussian = corrupt(grey, "gaussian_noise", severity, generator=seeded(severity)) - grey
        std = CIFAR10C_PARAMS.gaussian_noise[severity - 1]
        assert abs(float(gaussian.std()) / std - 1) < 0.02  # sampling error of a std: 1/sqrt(2n) = 0.4 %
        assert abs(float(gaussian.mean())) < 4 * std / count**0.5

        shot = corrupt(grey, "shot_noise", severity, generator=seeded(severity)) - grey
        rate = CIFAR10C_PARAMS.shot_noise[severity - 1]
        assert abs(float(shot.var()) / (0.5 / rate) - 1) < 0.03  # Poisson: variance = mean = 0.5 * rate
        assert abs(float(shot.mean())) < 4 * (0.5 / rate / count) ** 0.5

        impulse = corrupt(grey, "impulse_noise", severity, generator=seeded(severity))
        amount = CIFAR10C_PARAMS.impulse_noise[severity - 1]
        bound = 4 * (amount / 2 * count) ** 0.5  # 4 sigma of a binomial count
        for value in (0.0, 1.0):
            assert abs(float((impulse == value).sum()) - amount / 2 * count) < bound
        assert int(((impulse != 0) & (impulse != 1) & (impulse != 0.5)).sum()) == 0


def test_contrast_and_brightness_formulas() -> None:
    x = torch.tensor([[[[0.0, 0.2], [0.6, 1.0]]]])  # one 2 x 2 grey image, mean 0.45
    contrast = corrupt(x, "contrast", 5)  # factor 0.15
    assert torch.allclose(contrast, (x - 0.45) * 0.15 + 0.45)
    brightness = corrupt(x, "brightness", 5)  # + 0.3 to the value, clipped
    assert torch.allclose(brightness, (x + 0.3).clamp(max=1))
    # Colour: HSV V = max channel; hue and saturation kept means every channel scales by V'/V.
    pixels = torch.tensor([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0], [0.9, 0.1, 0.8]])  # (pixel, RGB)
    out = corrupt(pixels.T.reshape(1, 3, 1, 3), "brightness", 2)  # + 0.1
    expected = torch.tensor([[0.6, 0.3, 0.0], [0.1, 0.1, 0.1], [1.0, 1 / 9, 8 / 9]])  # black turns grey
    assert torch.allclose(out.reshape(3, 3).T, expected, atol=1e-6)


def test_gaussian_blur_equals_scipy_gaussian_filter() -> None:
    x = smooth_images(2, 3, 28, 32)
    for severity, sigma in enumerate(CIFAR10C_PARAMS.gaussian_blur + IMAGENETC_PARAMS.gaussian_blur[-1:], 1):
        params = "cifar10" if severity <= 5 else "imagenet"
        ours = corrupt(x, "gaussian_blur", min(severity, 5), params=params)
        # skimage.filters.gaussian's call: scipy, edge pixels repeated, 4 sigma, channels separate.
        reference = gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        assert np.abs(ours.double().numpy() - reference.clip(0, 1)).max() < 1e-5, sigma


def test_defocus_blur_equals_scipy_correlate_with_the_disk() -> None:
    x = smooth_images(2, 3, 28, 30)
    for params in (CIFAR10C_PARAMS, IMAGENETC_PARAMS):
        for severity, (radius, alias_blur) in enumerate(params.defocus_blur, 1):
            ours = corrupt(x, "defocus_blur", severity, params=params)
            kernel = disk_kernel(radius, alias_blur).double().numpy()[None, None]
            # cv2.filter2D's default border BORDER_REFLECT_101 is scipy's "mirror".
            reference = correlate(x.double().numpy(), kernel, mode="mirror")
            assert np.abs(ours.double().numpy() - reference.clip(0, 1)).max() < 1e-5, (params.name, severity)


def test_disk_kernel_is_a_normalised_antialiased_disk() -> None:
    # Radius below 1: the disk is the centre pixel alone, so the kernel is the 3 x 3 Gaussian of the
    # anti-aliasing blur (OpenCV's sampled, normalised Gaussian), zero elsewhere on the 17 x 17 grid.
    kernel = disk_kernel(0.3, 0.4).double()
    g = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * 0.4**2))
    g /= g.sum()
    assert kernel.shape == (17, 17)
    assert torch.allclose(kernel[7:10, 7:10], torch.outer(g, g), atol=1e-7)
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(kernel.abs().sum() - kernel[7:10, 7:10].abs().sum()) == 0.0
    # Radius 1.5: the 3 x 3 block (corners at distance sqrt(2) < 1.5), each 1/9 before smoothing.
    assert int((disk_kernel(1.5, 0.1) > 1e-3).sum()) == 9


@pytest.mark.parametrize("resample", ["box", "nearest"])
def test_resize_matrices_equal_pillow(resample: str) -> None:
    pil_filter = Image.BOX if resample == "box" else Image.NEAREST
    for in_size in (28, 32, 13):
        for out_size in range(1, 2 * in_size + 2):
            # Resizing the width of an identity image gives the matrix's transpose (float mode: no rounding).
            eye = Image.fromarray(np.eye(in_size, dtype=np.float32), mode="F")
            pillow = np.asarray(eye.resize((out_size, in_size), pil_filter)).T
            assert np.abs(pillow - pil_resize_matrix(in_size, out_size, resample).numpy()).max() < 1e-6


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelate_is_make_cifar_c_pil_box_resizes(channels: int) -> None:
    x = smooth_images(3, channels, 32, 28)
    for severity, factor in enumerate(CIFAR10C_PARAMS.pixelate, 1):
        ours = corrupt(x, "pixelate", severity)
        for image, out in zip(x, ours):
            pil = Image.fromarray(to_uint8_hwc(image).squeeze(-1) if channels == 1 else to_uint8_hwc(image))
            small = pil.resize((int(28 * factor), int(32 * factor)), Image.BOX)
            reference = np.asarray(small.resize((28, 32), Image.BOX), dtype=np.float64) / 255
            reference = reference[None] if channels == 1 else reference.transpose(2, 0, 1)
            # Pillow rounds to uint8 after each of its four one-axis passes, ties up; ours does not round.
            assert np.abs(out.double().numpy() - reference).max() <= LEVEL + 1e-6


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_is_bit_identical_to_pillow(channels: int) -> None:
    x = smooth_images(3, channels, 32, 32)
    for severity, quality in enumerate(CIFAR10C_PARAMS.jpeg_compression, 1):
        ours = corrupt(x, "jpeg_compression", severity)
        for image, out in zip(x, ours):
            array = to_uint8_hwc(image)
            buffer = io.BytesIO()
            Image.fromarray(array.squeeze(-1) if channels == 1 else array).save(buffer, "JPEG", quality=quality)
            reference = np.asarray(Image.open(buffer)).reshape(array.shape)
            assert np.array_equal(to_uint8_hwc(out), reference), quality


# ------------------------------------------------------------------------------ against imagecorruptions


@pytest.fixture(scope="module")
def imagecorruptions() -> types.ModuleType:
    """The ``imagecorruptions`` package (ImageNet-C constants), made importable on current libraries.

    Version 1.1.2 imports ``pkg_resources`` (gone from setuptools >= 81; only its frost images use it)
    and calls ``skimage.filters.gaussian(..., multichannel=True)`` (renamed ``channel_axis`` in
    scikit-image 0.19). Both shims change names only, not what is computed.
    """
    stubbed = False
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.SimpleNamespace(resource_filename=lambda *parts: "")
        sys.modules["pkg_resources"] = stub  # type: ignore[assignment]
        stubbed = True
    try:
        library = pytest.importorskip("imagecorruptions")
    finally:
        if stubbed:  # only imagecorruptions' import needed it; leave nothing behind for other tests
            del sys.modules["pkg_resources"]
    import skimage.filters

    def gaussian(image: np.ndarray, sigma: float, multichannel: bool | None = None, **kwargs: object) -> np.ndarray:
        if multichannel is not None:
            kwargs["channel_axis"] = -1 if multichannel else None
        return skimage.filters.gaussian(image, sigma=sigma, **kwargs)

    library.corruptions.gaussian = gaussian
    return library


def library_corrupt(library: types.ModuleType, x: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """imagecorruptions.corrupt on each image (uint8 HWC in and out), back as floats in [0, 1]."""
    outputs = [library.corrupt(to_uint8_hwc(image), severity=severity, corruption_name=name) for image in x]
    return torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2).double() / 255


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match_imagecorruptions(imagecorruptions: types.ModuleType, name: str) -> None:
    x = smooth_images(4, 3, 32, 32, seed=5)
    for severity in range(1, 6):
        ours = corrupt(x, name, severity, params="imagenet").double()
        reference = library_corrupt(imagecorruptions, x, name, severity)
        difference = ours - reference
        if name == "jpeg_compression":  # the same libjpeg, the same settings: the same bytes
            assert torch.equal((ours * 255).round(), reference * 255), severity
        elif name == "pixelate":
            # Pillow rounds each resize pass to uint8 (ties up); ours keeps the exact average.
            assert float(difference.abs().max()) <= LEVEL + 1e-6, severity
        else:
            # The library truncates its float result to uint8 (np.uint8), so ours, unrounded, lies in
            # [reference, reference + 1 level], up to float32-vs-float64 rounding at level boundaries.
            slack = 1e-3 * LEVEL
            assert float(difference.min()) >= -slack and float(difference.max()) <= LEVEL + slack, severity


@pytest.mark.parametrize("name", NOISE)
def test_noise_distributions_match_imagecorruptions(imagecorruptions: types.ModuleType, name: str) -> None:
    x = smooth_images(16, 3, 32, 32, seed=6)
    np.random.seed(0)  # the library draws from numpy's global generator
    for severity in (1, 3, 5):
        ours = corrupt(x, name, severity, generator=seeded(severity), params="imagenet").double()
        ours = torch.floor(ours * 255 + 1e-6) / 255  # quantised as the library stores its output
        reference = library_corrupt(imagecorruptions, x, name, severity)
        ours_change, reference_change = ours - x, reference - x
        # Same distribution of the change: means within 4 standard errors, spreads within 3 % (within 4 sigmas
        # of the spread's own sampling error for impulse noise, where only the few impulse pixels change: the
        # library draws them from fresh entropy, so this must hold for any draw), and for impulse noise the
        # counts of values set to black and to white within 4 binomial sigmas.
        standard_error = ((ours_change.var() + reference_change.var()) / x.numel()) ** 0.5
        assert abs(float(ours_change.mean() - reference_change.mean())) < 4 * float(standard_error), severity
        spread_tolerance = 0.03
        if name == "impulse_noise":
            amount = IMAGENETC_PARAMS.impulse_noise[severity - 1]
            # The std of a sparse change scales with the square root of the impulse count k: relative error
            # 1 / (2 sqrt(k)) per sample, sqrt(2) of that for the ratio of two independent samples.
            spread_tolerance = max(spread_tolerance, 4 * 2**0.5 / (2 * (amount * x.numel()) ** 0.5))
        assert abs(float(ours_change.std() / reference_change.std()) - 1) < spread_tolerance, severity
        if name == "impulse_noise":
            bound = 4 * 2 ** 0.5 * (amount / 2 * x.numel()) ** 0.5
            for value in (0.0, 1.0):
                assert abs(float((ours == value).sum() - (reference == value).sum())) < bound, severity


# ------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_the_device_and_matches_the_cpu() -> None:
    x = smooth_images(4, 3, 32, 32)
    with pytest.raises(ConfigError, match="generator"):
        corrupt(x.cuda(), "gaussian_noise", 1, generator=seeded())
    for name in corruption_names():
        generator = torch.Generator(device="cuda").manual_seed(0)
        out = corrupt(x.cuda(), name, 3, generator=generator)
        assert out.device.type == "cuda" and out.shape == x.shape and out.dtype == x.dtype, name
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0, name
        if name in DETERMINISTIC:
            assert torch.allclose(out.cpu(), corrupt(x, name, 3), atol=1e-5), name
        again = corrupt(x.cuda(), name, 3, generator=torch.Generator(device="cuda").manual_seed(0))
        assert torch.equal(out, again), name
