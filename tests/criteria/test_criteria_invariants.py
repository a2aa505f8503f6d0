"""Properties every criterion must have: no side effects, one score per removable block, determinism,
batching that does not change the result, and the zero-initialized-residual warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from _criteria_helpers import (
     # noqa: F401
    ALL_CRITERIA,
    DATA_CRITERIA,
    QUIET,
    assert_same,
    batch,
    double_copy,
    removable_names,
    snapshot,
    tiny_model,
)

from layerlottery.criteria import DegenerateScoresWarning, score_blocks
from layerlottery.criteria.common import mean_loss_gradient
from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks

GRADIENT_CRITERIA = ["snip", "grasp", "synflow", "gradnorm"]


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
@pytest.mark.parametrize("training", [True, False])
def test_scoring_leaves_the_model_bitwise_unchanged(criterion, training):
    model = tiny_model()
    model.train(training)
    model.layer2[1].bn1.eval()  # mixed flags must come back mixed
    model.layer1[0].conv1.weight.requires_grad_(False)  # a frozen weight stays frozen
    # One iterative synflow round exercises zero_branches' hooks on the copy.
    options = {"synflow": {"iterative": True, "rounds": 2}}.get(criterion, QUIET.get(criterion, {}))
    before = snapshot(model)
    rng = torch.get_rng_state()
    score_blocks(model, criterion, [batch(8, seed=1), batch(6, seed=2)], **options)
    assert_same(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is not consumed either


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_existing_gradients_survive_scoring(criterion):
    model = tiny_model()
    inputs, labels = batch()
    torch.nn.functional.cross_entropy(model(inputs), labels).backward()
    before = snapshot(model)
    assert before["grads"]["fc.weight"] is not None
    score_blocks(model, criterion, (inputs, labels), **QUIET.get(criterion, {}))
    assert_same(before, snapshot(model))


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_one_score_per_removable_block_in_network_order(criterion):
    model = tiny_model()
    scores = score_blocks(model, criterion, batch(), **QUIET.get(criterion, {}))
    assert list(scores) == removable_names(model)
    assert len(scores) == 7  # layer1.0-2, layer2.1-2, layer3.1-2 of test_resnet
    assert all(isinstance(value, float) for value in scores.values())


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_scores_are_deterministic_and_not_constant(criterion):
    model, data = tiny_model(), batch()
    first = score_blocks(model, criterion, data, **QUIET.get(criterion, {}))
    second = score_blocks(model, criterion, data, **QUIET.get(criterion, {}))
    assert first == second
    assert len(set(first.values())) > 1


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_given_blocks_and_input_shape_give_the_same_scores(criterion):
    model, data = tiny_model(), batch()
    options = QUIET.get(criterion, {})
    plain = score_blocks(model, criterion, data, **options)
    assert score_blocks(model, criterion, data, blocks=find_blocks(model), **options) == plain
    assert score_blocks(model, criterion, data, input_shape=(3, 8, 8), **options) == plain


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_a_callers_no_grad_does_not_change_the_scores(criterion):
    model, data = tiny_model(), batch()
    options = QUIET.get(criterion, {})
    with torch.no_grad():
        inside = score_blocks(model, criterion, data, **options)
    assert inside == score_blocks(model, criterion, data, **options)


@pytest.mark.parametrize("criterion", DATA_CRITERIA)
def test_a_list_of_batches_equals_their_concatenation(criterion):
    # Eval BN: every sample is processed independently, so batching must not matter at all.
    model = double_copy(tiny_model())
    (x1, y1), (x2, y2) = batch(5, seed=3, dtype=torch.float64), batch(9, seed=4, dtype=torch.float64)
    options = {"bn_mode": "eval", **QUIET.get(criterion, {})}
    split = score_blocks(model, criterion, [(x1, y1), (x2, y2)], **options)
    whole = score_blocks(model, criterion, (torch.cat([x1, x2]), torch.cat([y1, y2])), **options)
    assert list(split) == list(whole)
    for name in whole:
        assert split[name] == pytest.approx(whole[name], rel=1e-10, abs=1e-300)
    # A generator of batches (a DataLoader) is read the same way as a list.
    assert score_blocks(model, criterion, iter([(x1, y1), (x2, y2)]), **options) == split


def test_gradient_over_batches_is_the_size_weighted_mean_in_train_mode():
    # Train BN normalizes per batch, so batch results differ, but the combination rule must hold.
    model = double_copy(tiny_model())
    params = [p for p in model.parameters() if p.dim() >= 2]
    b1, b2 = batch(5, seed=3, dtype=torch.float64), batch(9, seed=4, dtype=torch.float64)
    combined = mean_loss_gradient(model, [b1, b2], params)
    g1, g2 = mean_loss_gradient(model, [b1], params), mean_loss_gradient(model, [b2], params)
    for total, a, b in zip(combined, g1, g2):
        torch.testing.assert_close(total, (5 * a + 9 * b) / 14, rtol=1e-12, atol=1e-14)
    # ... and a single batch is the plain mean cross-entropy.
    reference = torch.autograd.grad(torch.nn.functional.cross_entropy(model(b1[0]), b1[1]), params)
    for ours, theirs in zip(g1, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("criterion", ["random", "magnitude", "synflow"])
def test_data_free_criteria_ignore_data(criterion):
    model = tiny_model()
    assert score_blocks(model, criterion) == score_blocks(model, criterion, batch())


@pytest.mark.parametrize("criterion", GRADIENT_CRITERIA)
def test_zero_initialized_residuals_warn(criterion):
    model = create_model("test_resnet", image_size=8, zero_init_residual=True)
    with pytest.warns(DegenerateScoresWarning, match="zero_init_residual") as record:
        scores = score_blocks(model, criterion, batch(), **QUIET.get(criterion, {}))
    assert f"all {criterion} scores are zero" in str(record[0].message)
    assert set(scores.values()) == {0.0}
    assert record[0].filename == __file__  # the warning points at the caller


def test_iterative_synflow_also_warns_on_zero_initialized_residuals():
    model = create_model("test_resnet", image_size=8, zero_init_residual=True)
    with pytest.warns(DegenerateScoresWarning, match="zero_init_residual"):
        scores = score_blocks(model, "synflow", iterative=True)
    # With nothing to tell the blocks apart, elimination follows network order.
    assert list(scores.values()) == [-7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0]


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_weight_based_criteria_do_not_warn_on_zero_init(criterion):
    model = create_model("test_resnet", image_size=8, zero_init_residual=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoresWarning)
        scores = score_blocks(model, criterion)
    assert all(value > 0 for value in scores.values())


def test_all_zero_scores_warn_even_without_zero_init():
    model = tiny_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("layer") and p.dim() >= 2:
                p.zero_()
    with pytest.warns(DegenerateScoresWarning, match="all magnitude scores are exactly zero"):
        score_blocks(model, "magnitude")


def test_a_model_without_removable_blocks_is_refused():
    from layerlottery.errors import PruningError

    model = create_model("test_resnet", image_size=8, blocks_per_stage=1, widths=(4, 8, 16))
    model.layer1[0].shortcut = torch.nn.Sequential()  # not an identity: no block is removable
    with pytest.raises(PruningError, match="no removable blocks"):
        score_blocks(model, "random")
