"""score_blocks refuses inputs with the wrong channel count before any forward pass, with one clear line."""

from __future__ import annotations

import pytest
import torch

import layerlottery as ll


def batch(channels: int, size: int = 8, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, channels, size, size, generator=generator), torch.arange(n) % 2


@pytest.mark.parametrize("criterion", ["snip", "grasp"])
def test_data_with_other_channels_is_a_data_error(criterion):
    model = ll.create_model("test_resnet", image_size=8)
    with pytest.raises(ll.DataError, match="^inputs have 1 channels but the model expects 3 "):
        ll.score_blocks(model, criterion, batch(1))
    with pytest.raises(ll.DataError, match="inputs have 3 channels but the model expects 1 "):
        ll.score_blocks(ll.create_model("test_resnet", in_channels=1, image_size=8), criterion, [batch(1), batch(3)])


def test_an_input_shape_with_other_channels_is_a_data_error():
    model = ll.create_model("test_resnet", image_size=8)
    with pytest.raises(ll.DataError, match=r"^input_shape \(1, 8, 8\) has 1 channels but the model expects 3 "):
        ll.score_blocks(model, "synflow", input_shape=(1, 8, 8))


def test_matching_channels_score_as_before():
    """The check refuses nothing that used to work: grey images on a 1-channel model, any image size."""
    model = ll.create_model("test_resnet", in_channels=1, image_size=8)
    scores = ll.score_blocks(model, "snip", batch(1, size=12))
    assert set(scores) == {block.name for block in ll.find_blocks(model) if block.removable}


def test_a_model_without_convolutions_is_not_checked():
    """No stem convolution, no channel count to compare with: scoring goes on to the criterion as before."""
    from layerlottery.criteria.scoring import _check_channels

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    _check_channels(mlp, (3, 2, 2), [batch(5, size=2)], explicit=True)  # returns without raising
