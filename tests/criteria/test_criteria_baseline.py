"""random and magnitude against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from _criteria_helpers import removable_names, tiny_model

from layerlottery.criteria import score_blocks
from layerlottery.models import create_model


def test_random_draws_from_a_private_generator_seeded_with_seed():
    model = tiny_model()
    scores = score_blocks(model, "random", seed=7)
    expected = torch.rand(7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert list(scores.values()) == expected.tolist()
    assert all(0.0 <= value < 1.0 for value in scores.values())
    assert score_blocks(model, "random", seed=8) != scores
    torch.manual_seed(123)  # the global RNG has no say
    assert score_blocks(model, "random", seed=7) == scores


def _block_weights(model, name):
    block = dict(model.named_modules())[name]
    return [block.conv1.weight.detach().double(), block.conv2.weight.detach().double()]


@pytest.mark.parametrize(
    "norm, aggregation, expected",
    [
        ("l1", "sum", lambda ws: sum(w.abs().sum() for w in ws)),
        ("l1", "mean", lambda ws: sum(w.abs().sum() for w in ws) / sum(w.numel() for w in ws)),
        ("l1", "abs_sum", lambda ws: sum(w.abs().sum() for w in ws)),
        ("l2", "sum", lambda ws: math.sqrt(sum((w**2).sum() for w in ws))),
        ("l2", "mean", lambda ws: math.sqrt(sum((w**2).sum() for w in ws) / sum(w.numel() for w in ws))),
    ],
)
def test_magnitude_matches_a_hand_computation(norm, aggregation, expected):
    model = tiny_model()
    scores = score_blocks(model, "magnitude", norm=norm, aggregation=aggregation)
    for name in removable_names(model):
        assert scores[name] == pytest.approx(float(expected(_block_weights(model, name))), rel=1e-12)


def test_magnitude_ignores_batchnorm_parameters():
    model = tiny_model()
    before = score_blocks(model, "magnitude")
    with torch.no_grad():
        model.layer1[1].bn2.weight.mul_(100.0)
    assert score_blocks(model, "magnitude") == before


def test_raw_l1_grows_with_stage_width_and_mean_divides_by_the_parameter_count():
    # The paper's reason to normalize: raw block sums grow with the stage's width.
    model = create_model("cifar_resnet20")
    raw = score_blocks(model, "magnitude", aggregation="sum")
    mean = score_blocks(model, "magnitude")
    assert min(raw["layer3.1"], raw["layer3.2"]) > 2 * max(raw["layer1.0"], raw["layer1.1"], raw["layer1.2"])
    blocks = dict(model.named_modules())
    for name in raw:
        count = sum(p.numel() for p in blocks[name].parameters() if p.dim() >= 2)
        assert mean[name] == pytest.approx(raw[name] / count, rel=1e-12)
