"""random_crop_flip: exact crops of the zero-padded image, exact flips, per-image randomness, no global RNG."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data import random_crop_flip
from layerlottery.data.augment import crop_flip_params
from layerlottery.errors import ConfigError


def reference(images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor):
    """The slow, obviously correct version: one image at a time, padding built by hand (not F.pad)."""
    n, c, h, w = images.shape
    out = []
    for i in range(n):
        padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=images.dtype)
        padded[:, padding : padding + h, padding : padding + w] = images[i]
        crop = padded[:, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w]
        out.append(torch.flip(crop, dims=[-1]) if flipped[i] else crop)
    return torch.stack(out)


def random_images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    # Values 1..255 so a padded zero can never be confused with a real pixel.
    return torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, padding", [((40, 3, 5, 7), 2), ((40, 2, 9, 4), 3), ((30, 1, 6, 6), 1)])
def test_matches_per_image_reference_on_non_square_images(shape: tuple[int, ...], padding: int) -> None:
    images = random_images(*shape)
    out = random_crop_flip(images, padding, True, torch.Generator().manual_seed(7))
    # The same seed replays the same draws, so the reference sees the offsets and flips actually used.
    dy, dx, flipped = crop_flip_params(len(images), padding, True, torch.Generator().manual_seed(7))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, reference(images, padding, dy, dx, flipped))
    # The check above is only meaningful if the draws exercised shifts, non-shifts and both flip states.
    assert 0 < int(flipped.sum()) < len(images)
    assert len(set(dy.tolist())) > 1 and len(set(dx.tolist())) > 1


def test_padding_zero_without_flip_is_identity() -> None:
    images = random_images(8, 3, 5, 7)
    assert torch.equal(random_crop_flip(images, 0, False, torch.Generator().manual_seed(0)), images)


def test_flip_only_mirrors_exactly_the_drawn_images() -> None:
    images = random_images(64, 3, 4, 6)
    out = random_crop_flip(images, 0, True, torch.Generator().manual_seed(3))
    _, _, flipped = crop_flip_params(64, 0, True, torch.Generator().manual_seed(3))
    assert torch.equal(out[flipped], torch.flip(images[flipped], dims=[-1]))
    assert torch.equal(out[~flipped], images[~flipped])
    assert 0.3 < flipped.float().mean() < 0.7


def test_offsets_cover_every_shift_and_are_drawn_per_image() -> None:
    padding = 3
    dy, dx, flipped = crop_flip_params(2000, padding, True, torch.Generator().manual_seed(1))
    assert set(dy.tolist()) == set(range(2 * padding + 1)) == set(dx.tolist())
    assert abs(flipped.float().mean().item() - 0.5) < 0.05
    # Identical input images must come out different: each image gets its own offset.
    same = random_images(1, 1, 6, 6).expand(32, 1, 6, 6).contiguous()
    out = random_crop_flip(same, padding, True, torch.Generator().manual_seed(2))
    assert len({tuple(img.flatten().tolist()) for img in out}) > 8


def test_zeros_appear_only_in_the_padded_border() -> None:
    images = random_images(50, 2, 6, 9)
    padding = 2
    out = random_crop_flip(images, padding, True, torch.Generator().manual_seed(5))
    dy, dx, flipped = crop_flip_params(50, padding, True, torch.Generator().manual_seed(5))
    for i in range(50):
        zero = out[i, 0] == 0
        rows_out = zero.all(dim=1)
        cols_out = zero.all(dim=0)
        # Every zero lies in a fully zero row or column, and there are exactly |shift| of each.
        assert torch.equal(zero, rows_out[:, None] | cols_out[None, :])
        assert int(rows_out.sum()) == abs(int(dy[i]) - padding)
        assert int(cols_out.sum()) == abs(int(dx[i]) - padding)


def test_uses_only_the_given_generator() -> None:
    images = random_images(16, 3, 8, 8)
    state = torch.get_rng_state()
    a = random_crop_flip(images, 2, True, torch.Generator().manual_seed(11))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)  # a different global state must not change the result
    assert torch.equal(random_crop_flip(images, 2, True, torch.Generator().manual_seed(11)), a)
    assert not torch.equal(random_crop_flip(images, 2, True, torch.Generator().manual_seed(12)), a)


def test_empty_batch() -> None:
    images = torch.zeros(0, 3, 4, 4, dtype=torch.uint8)
    assert random_crop_flip(images, 2, True, torch.Generator()).shape == (0, 3, 4, 4)


@pytest.mark.parametrize(
    "images, padding",
    [
        (torch.zeros(2, 1, 4, 4), 1),  # float images
        (torch.zeros(1, 4, 4, dtype=torch.uint8), 1),  # 3-d
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), -1),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1.5),
    ],
)
def test_bad_arguments_raise_config_error(images: torch.Tensor, padding: object) -> None:
    with pytest.raises(ConfigError) as info:
        random_crop_flip(images, padding, True, torch.Generator())  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_on_another_device_is_refused_and_cuda_matches_reference() -> None:
    images = random_images(20, 3, 5, 7)
    with pytest.raises(ConfigError, match="generator"):
        random_crop_flip(images, 2, True, torch.Generator(device="cuda"))
    cuda_images = images.cuda()
    out = random_crop_flip(cuda_images, 2, True, torch.Generator(device="cuda").manual_seed(4))
    dy, dx, flipped = crop_flip_params(20, 2, True, torch.Generator(device="cuda").manual_seed(4))
    assert torch.equal(out.cpu(), reference(images, 2, dy.cpu(), dx.cpu(), flipped.cpu()))
