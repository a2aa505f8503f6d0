"""Post-training criteria (hrank, expectabs, kl, pls): analytic oracles on constructed blocks, a hand-made
PLS, no side effects, and streaming that cannot change a score."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _criteria_helpers import assert_same, batch, double_copy, removable_names, snapshot, tiny_model

from layerlottery.criteria import (
    ClassBalanceWarning,
    DegenerateScoresWarning,
    feature_map_ranks,
    get_criterion,
    pls_vip,
    score_blocks,
    vip_scores,
)
from layerlottery.errors import ConfigError, DataError
from layerlottery.models import create_model

POST_TRAINING = ["hrank", "expectabs", "kl", "pls"]
ALL_DATA = {"samples_per_class": None}  # tiny random batches are not class-balanced; use them as given


def _silence_branch(model: torch.nn.Module, block: str, bias: float | torch.Tensor = 0.0) -> None:
    """Make the block's residual branch output exactly ``bias`` per channel: its last BN gets weight 0."""
    bn2 = model.get_submodule(block).bn2
    with torch.no_grad():
        bn2.weight.zero_()
        bn2.bias.copy_(torch.as_tensor(bias, dtype=bn2.bias.dtype).expand_as(bn2.bias))


def test_registered_with_recorded_eval_defaults():
    scores = score_blocks(tiny_model(), "kl", batch(), **ALL_DATA)
    assert scores.options == {"bn_mode": "eval", "samples_per_class": None, "batch_size": 128}
    assert get_criterion("pls").defaults == {
        "components": 2, "fit": "joint", "activation": "output",
        "bn_mode": "eval", "samples_per_class": 10, "batch_size": 128,
    }
    for name in POST_TRAINING:
        spec = get_criterion(name)
        assert spec.needs_data and not spec.gradient_based


# ------------------------------------------------------------------------------------------------ KL


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_kl_of_a_block_whose_branch_outputs_zero_is_exactly_zero_and_lowest(bn_mode):
    model = tiny_model()
    _silence_branch(model, "layer2.1")
    scores = score_blocks(model, "kl", batch(16), bn_mode=bn_mode, **ALL_DATA)
    assert scores["layer2.1"] == 0.0
    assert all(value > 0 for name, value in scores.items() if name != "layer2.1")
    assert scores.ranked()[0] == "layer2.1"


def test_kl_is_the_mean_per_sample_divergence_computed_by_hand():
    model = double_copy(tiny_model()).eval()
    inputs, labels = batch(10, dtype=torch.float64)
    scores = score_blocks(model, "kl", (inputs, labels), **ALL_DATA)
    with torch.no_grad():
        p = torch.softmax(model(inputs), dim=1)
        ablated = copy.deepcopy(model)
        _silence_branch(ablated, "layer3.2")
        q = torch.softmax(ablated(inputs), dim=1)
    expected = float((p * (p.log() - q.log())).sum(dim=1).mean())
    assert scores["layer3.2"] == pytest.approx(expected, rel=1e-9)


def test_kl_of_zero_initialized_residuals_is_all_zero_and_warns():
    model = create_model("test_resnet", image_size=8, zero_init_residual=True)
    with pytest.warns(DegenerateScoresWarning, match="all kl scores are exactly zero"):
        scores = score_blocks(model, "kl", batch(), **ALL_DATA)
    assert set(scores.values()) == {0.0}


# ----------------------------------------------------------------------------------- HRank, expectABS


def test_feature_map_ranks_of_constructed_maps():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 3, 6, 1, generator=generator), torch.randn(2, 3, 1, 6, generator=generator)
    maps = torch.stack([torch.eye(6).expand(2, 6, 6), u[:, 0] @ v[:, 0], torch.zeros(2, 6, 6)], dim=1)
    assert feature_map_ranks(maps).tolist() == [[6, 1, 0], [6, 1, 0]]
    rank_two = (u[:, :2] @ v[:, :2]).sum(dim=1, keepdim=True)  # sum of two rank-1 maps
    assert feature_map_ranks(rank_two).flatten().tolist() == [2, 2]
    # A relative tolerance above the second singular value's share hides it.
    assert feature_map_ranks(torch.diag(torch.tensor([1.0, 1e-3, 0, 0]))[None, None], rtol=1e-2).item() == 1


def test_hrank_and_expectabs_of_a_constant_branch_are_one_and_the_constant():
    model = tiny_model()
    constants = torch.tensor([0.5, -2.0, 1.5, 3.0])  # layer1 has 4 channels
    _silence_branch(model, "layer1.1", constants)  # every branch map is constant: rank 1, |value| known
    _silence_branch(model, "layer1.2", 0.0)  # all-zero maps: rank 0
    data = batch(12)
    ranks = score_blocks(model, "hrank", data, activation="branch", **ALL_DATA)
    assert ranks["layer1.1"] == 1.0 and ranks["layer1.2"] == 0.0
    assert ranks["layer1.0"] > 1.0
    means = score_blocks(model, "expectabs", data, activation="branch", **ALL_DATA)
    assert means["layer1.1"] == pytest.approx(float(constants.abs().mean()), rel=1e-6)
    assert means["layer1.2"] == 0.0


def test_hrank_of_a_block_whose_output_is_forced_to_rank_r():
    model = tiny_model()
    generator = torch.Generator().manual_seed(5)

    def rank_two(_module, _args, out):
        n, c, h, w = out.shape
        u = torch.rand(n, c, h, 2, generator=generator)
        v = torch.rand(n, c, 2, w, generator=generator)
        return u @ v  # non-negative, like a ReLU output, and of rank 2

    handle = model.layer2[2].register_forward_hook(rank_two)
    try:
        scores = score_blocks(model, "hrank", batch(9), **ALL_DATA)
    finally:
        handle.remove()
    assert scores["layer2.2"] == 2.0


@pytest.mark.parametrize("activation", ["output", "branch"])
def test_expectabs_equals_a_hand_computed_mean_absolute_activation(activation):
    model = double_copy(tiny_model()).eval()
    inputs, labels = batch(11, dtype=torch.float64)
    captured = {}
    target = model.layer3[1] if activation == "output" else model.layer3[1].bn2
    handle = target.register_forward_hook(lambda _m, _a, out: captured.setdefault("out", out.detach()))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    expected = float(captured["out"].abs().mean(dim=(0, 2, 3)).mean())
    scores = score_blocks(model, "expectabs", (inputs, labels), activation=activation, **ALL_DATA)
    assert scores["layer3.1"] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------------ PLS


def _textbook_pls2_vip(x: np.ndarray, y: np.ndarray, components: int) -> np.ndarray:
    """PLS2 by the textbook (Wold; Abdi 2010): standardize, take the dominant direction of X'Y, deflate."""
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    y = (y - y.mean(0)) / y.std(0, ddof=1)
    weights, scores, loadings = [], [], []
    for _ in range(components):
        w = np.linalg.svd(x.T @ y)[0][:, 0]  # the fixed point NIPALS iterates to
        t = x @ w
        p, q = x.T @ t / (t @ t), y.T @ t / (t @ t)
        x, y = x - np.outer(t, p), y - np.outer(t, q)
        weights.append(w), scores.append(t), loadings.append(q)
    w, t, q = np.array(weights).T, np.array(scores).T, np.array(loadings).T
    ss = (t**2).sum(0) * (q**2).sum(0)
    return np.sqrt(w.shape[0] * ((w / np.linalg.norm(w, axis=0)) ** 2 @ ss) / ss.sum())


@pytest.mark.parametrize("components", [1, 2, 3])
def test_pls_vip_matches_a_hand_computation(components):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    x = rng.normal(size=(12, 5))
    x[:, 1] += 2.0 * labels  # one informative feature
    ours = pls_vip(x, labels, components)
    expected = _textbook_pls2_vip(x, np.eye(3)[labels], components)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    assert (ours**2).sum() == pytest.approx(5)  # the VIP identity: sum of squares = number of features
    assert ours.argmax() == 1


def test_vip_scores_by_the_formula_on_a_tiny_fitted_model():
    # Two features, one component: w = (3, 4)/5 normalized, SS = |t|^2 |q|^2 cancels out.
    w = np.array([[3.0], [4.0]])
    t, q = np.array([[1.0], [2.0]]), np.array([[0.5], [0.5]])
    np.testing.assert_allclose(vip_scores(w, t, q), np.sqrt(2 * np.array([9, 16]) / 25))


def test_pls_scores_a_block_with_a_dead_branch_lowest_and_per_block_vip_is_at_most_one():
    model = tiny_model()
    _silence_branch(model, "layer2.2")
    data = batch(30, seed=3)
    joint = score_blocks(model, "pls", data, activation="branch", **ALL_DATA)
    assert joint["layer2.2"] == 0.0 and min(joint.values()) == 0.0
    per_block = score_blocks(model, "pls", data, fit="per_block", **ALL_DATA)
    assert all(0.0 < value <= 1.0 + 1e-12 for value in per_block.values())  # mean VIP <= sqrt(mean VIP^2) = 1


def test_pls_with_too_few_samples_names_the_option():
    inputs, labels = batch(3)
    with pytest.raises(DataError, match=r"components=3 needs more samples than components, but 3 samples") as info:
        score_blocks(tiny_model(), "pls", (inputs, labels), components=3, **ALL_DATA)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"components=5 exceeds the 4 pooled features"):
        score_blocks(tiny_model(), "pls", batch(12), components=5, fit="per_block", **ALL_DATA)
    with pytest.raises(DataError, match="at least two classes"):
        score_blocks(tiny_model(), "pls", (inputs, torch.zeros(3, dtype=torch.long)), components=1, **ALL_DATA)
    with pytest.raises(ConfigError, match="invalid option activation='relu'"):
        score_blocks(tiny_model(), "pls", batch(), activation="relu")


# ------------------------------------------------------------------------------------- every criterion


@pytest.mark.parametrize("criterion", POST_TRAINING)
@pytest.mark.parametrize("training", [True, False])
def test_scoring_leaves_the_model_bitwise_unchanged(criterion, training):
    model = tiny_model()
    model.train(training)
    model.layer2[1].bn1.eval()
    model.layer1[0].conv1.weight.requires_grad_(False)
    before, rng = snapshot(model), torch.get_rng_state()
    scores = score_blocks(model, criterion, [batch(8, seed=1), batch(6, seed=2)], **ALL_DATA)
    assert_same(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())
    assert list(scores) == removable_names(model) and len(set(scores.values())) > 1


@pytest.mark.parametrize("criterion", POST_TRAINING)
def test_split_batches_and_small_forward_passes_give_the_scores_of_one_batch(criterion):
    model = double_copy(tiny_model())
    (x1, y1), (x2, y2) = batch(5, seed=3, dtype=torch.float64), batch(9, seed=4, dtype=torch.float64)
    whole = score_blocks(model, criterion, (torch.cat([x1, x2]), torch.cat([y1, y2])), **ALL_DATA)
    for split in (
        score_blocks(model, criterion, [(x1, y1), (x2, y2)], **ALL_DATA),
        score_blocks(model, criterion, (torch.cat([x1, x2]), torch.cat([y1, y2])), batch_size=4, **ALL_DATA),
    ):
        assert list(split) == list(whole)
        for name in whole:
            assert split[name] == pytest.approx(whole[name], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("criterion", POST_TRAINING)
def test_class_balanced_samples_are_the_first_of_each_class(criterion):
    model = double_copy(tiny_model(num_classes=4))
    inputs, labels = batch(40, seed=6, dtype=torch.float64)
    labels = torch.arange(40) % 4  # 10 of each of 4 classes
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:3] for c in range(4)]).sort().values
    balanced = score_blocks(model, criterion, (inputs, labels), samples_per_class=3)
    chosen = score_blocks(model, criterion, (inputs[keep], labels[keep]), **ALL_DATA)
    for name in chosen:
        assert balanced[name] == pytest.approx(chosen[name], rel=1e-9, abs=1e-12)
    with pytest.warns(ClassBalanceWarning, match=f"{criterion}: samples_per_class=11") as record:
        score_blocks(model, criterion, (inputs, labels), samples_per_class=11)
    assert record[0].filename == __file__


def test_existing_criteria_score_the_weights_the_model_has():
    # Trained or not: scoring reads the model's current weights, never an initialization of its own.
    model = tiny_model()
    data = batch()
    before = {name: score_blocks(model, name, data, **({"samples_per_class": None} if name == "grasp" else {}))
              for name in ("magnitude", "snip", "grasp")}
    with torch.no_grad():
        model.layer1[1].conv1.weight.mul_(10.0)
    for name, old in before.items():
        new = score_blocks(model, name, data, **({"samples_per_class": None} if name == "grasp" else {}))
        assert new["layer1.1"] != old["layer1.1"]
