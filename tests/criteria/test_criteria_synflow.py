"""SynFlow: conservation, float64 on deep nets, an independent implementation, and the iterative order."""

from __future__ import annotations

import copy

import pytest
import torch
from _criteria_helpers import removable_names, tiny_model

from layerlottery.criteria import score_blocks, synflow_weight_scores
from layerlottery.criteria.synflow import linearize
from layerlottery.errors import PruningError
from layerlottery.models import create_model
from layerlottery.models.blocks import zero_branches


def test_every_layer_of_a_linear_chain_carries_the_whole_flow():
    # Tanaka et al.'s conservation theorem: R is homogeneous of degree 1 in each layer's weights, so
    # sum over a layer of w * dR/dw = R, the same for every layer.
    torch.manual_seed(0)
    chain = torch.nn.Sequential(
        torch.nn.Linear(5, 7, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(7, 6, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 3, bias=False),
    )
    flow, scores = synflow_weight_scores(chain, (5,))
    assert list(scores) == ["0.weight", "2.weight", "4.weight"]
    assert flow > 0
    for name, score in scores.items():
        assert score.dtype == torch.float64
        assert float(score.sum()) == pytest.approx(flow, rel=1e-12), name
    # ... and R is the all-ones input through the |.| network.
    weights = [layer.weight.detach().double().abs() for layer in chain if isinstance(layer, torch.nn.Linear)]
    expected = torch.ones(1, 5, dtype=torch.float64)
    for w in weights:
        expected = expected @ w.T
    assert flow == pytest.approx(float(expected.sum()), rel=1e-12)
    assert chain[0].weight.dtype == torch.float32  # the helper worked on a copy


def test_synflow_matches_an_independent_implementation():
    model = tiny_model()  # randomized BN running statistics: the |.| of buffers matters
    with torch.no_grad():
        model.layer1[0].bn1.running_mean.fill_(-0.5)
    scores = score_blocks(model, "synflow")

    reference = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    reference(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    modules = dict(reference.named_modules())
    for block in removable_names(model):
        convs = [modules[block].conv1.weight, modules[block].conv2.weight]
        expected = sum(float((w.detach() * w.grad).abs().sum()) for w in convs)
        assert scores[block] == pytest.approx(expected, rel=1e-12)


def test_synflow_is_finite_in_float64_on_resnet110_where_float32_overflows():
    model = create_model("cifar_resnet110")
    scores = score_blocks(model, "synflow")
    assert len(scores) == 52  # 54 blocks minus the stride-2 openers of stages 2 and 3
    assert all(0 < value < float("inf") for value in scores.values())
    # The reason synflow offers no float32: the same linearized network overflows it.
    linear32 = linearize(copy.deepcopy(model)).float().eval()
    with torch.no_grad():
        flow32 = linear32(torch.ones(1, 3, 32, 32)).sum()
    assert not torch.isfinite(flow32)


def test_synflow_overflowing_float64_is_a_clear_error():
    model = create_model("cifar_resnet20", image_size=8)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(1e30)
    with pytest.raises(PruningError, match="not finite"):
        score_blocks(model, "synflow")


def test_iterative_synflow_eliminates_the_weakest_block_round_by_round():
    model = tiny_model()
    scores = score_blocks(model, "synflow", iterative=True)
    k = len(scores)
    assert sorted(scores.values()) == [float(-i) for i in range(k, 0, -1)]
    order = scores.ranked()

    # Oracle: single-shot synflow on the network with the already eliminated branches zeroed.
    for round_, eliminated in enumerate(order):
        with zero_branches(model, order[:round_]):
            single = score_blocks(model, "synflow")
        remaining = {name: single[name] for name in order[round_:]}
        assert eliminated == min(remaining, key=remaining.__getitem__)


def test_iterative_synflow_with_rounds_keeps_the_survivors_last_scores():
    model = tiny_model()
    scores = score_blocks(model, "synflow", iterative=True, rounds=2)
    first, second = scores.ranked()[:2]
    assert (scores[first], scores[second]) == (-2.0, -1.0)
    assert first == score_blocks(model, "synflow").ranked()[0]
    with zero_branches(model, [first, second]):
        thinned = score_blocks(model, "synflow")
    for name in scores:
        if name not in (first, second):
            assert scores[name] == pytest.approx(thinned[name], rel=1e-12)
            assert scores[name] > 0
    # More rounds than blocks eliminates them all.
    assert score_blocks(model, "synflow", iterative=True, rounds=99).ranked() == score_blocks(
        model, "synflow", iterative=True
    ).ranked()
