import pytest

import layerlottery as ll
from layerlottery.surgery import protected_names


@pytest.fixture(scope="module")
def resnet32_blocks():
    return ll.find_blocks(ll.create_model("cifar_resnet32", shortcut="B"))


def _scores(blocks, values):
    return {b.name: float(v) for b, v in zip(blocks, values)}


def test_paper_candidates_and_limits(resnet32_blocks):
    assert len(ll.candidate_blocks(resnet32_blocks)) == 12
    assert ll.max_removable(resnet32_blocks) == 9
    assert ll.max_removable(ll.find_blocks(ll.create_model("cifar_resnet56"))) == 21
    assert protected_names(resnet32_blocks) == {"layer1.0", "layer2.0", "layer3.0"}


@pytest.mark.parametrize("p", [0, 1, 4, 9])
def test_exactly_p_lowest_scores_removed(resnet32_blocks, p):
    scores = _scores(resnet32_blocks, [(7 * i) % 15 for i in range(15)])
    plan = ll.select_blocks(resnet32_blocks, scores, p=p)
    assert plan.p == p
    if p:
        kept_scores = [scores[b.name] for b in ll.candidate_blocks(resnet32_blocks) if b.name not in plan.removed]
        # Greedy: nothing kept scores lower than something removed, unless its stage was full.
        assert max(scores[n] for n in plan.removed) <= min(kept_scores) or p == 9


def test_protected_blocks_and_stage_minimum_are_respected(resnet32_blocks):
    # Make the protected block and all of stage 1 the lowest scores.
    values = {b.name: (0.0 if b.stage == "layer1" else 1.0 + i) for i, b in enumerate(resnet32_blocks)}
    plan = ll.select_blocks(resnet32_blocks, values, p=5)
    in_stage1 = [n for n in plan.removed if n.startswith("layer1.")]
    assert "layer1.0" not in plan.removed
    assert len(in_stage1) == 3  # 5 blocks, at least 2 kept
    assert plan.removed[3:] == ("layer2.1", "layer2.2")  # then the lowest of the rest
    plan = ll.select_blocks(resnet32_blocks, values, p=4, protect=None, min_per_stage=1)
    assert plan.removed == ("layer1.0", "layer1.1", "layer1.2", "layer1.3")  # ties broken by network order
    plan = ll.select_blocks(resnet32_blocks, values, p=2, protect=["layer1.1", "layer1.2"])
    assert plan.removed == ("layer1.0", "layer1.3")


def test_same_seed_same_plan_and_recorded_criterion(resnet32_blocks):
    model = ll.create_model("cifar_resnet32", shortcut="B")
    plans = [
        ll.select_blocks(resnet32_blocks, ll.score_blocks(model, "random", seed=seed), p=4)
        for seed in (3, 3, 4)
    ]
    assert plans[0] == plans[1] and plans[0].removed != plans[2].removed
    assert plans[0].criterion == "random" and plans[0].criterion_options["seed"] == 3


def test_fraction_and_mac_reduction_targets(resnet32_blocks):
    scores = _scores(resnet32_blocks, range(15))
    assert ll.select_blocks(resnet32_blocks, scores, fraction=0.2).p == 3  # 20% of 15 blocks
    plan = ll.select_blocks(resnet32_blocks, scores, mac_reduction=0.20)
    assert plan.p == 3 and plan.mac_reduction >= 0.20  # 2 blocks remove 13.65%, 3 remove 20.48%
    assert ll.select_blocks(resnet32_blocks, scores, mac_reduction=0.0).p == 0


def test_impossible_requests_name_the_limit(resnet32_blocks):
    scores = _scores(resnet32_blocks, range(15))
    with pytest.raises(ll.PruningError, match="cannot remove 10 blocks: at most 9 of 15 .*12 candidates"):
        ll.select_blocks(resnet32_blocks, scores, p=10)
    with pytest.raises(ll.PruningError, match="cannot remove 70.00% of the MACs: at most 61.44%"):
        ll.select_blocks(resnet32_blocks, scores, mac_reduction=0.7)
    with pytest.raises(ll.ConfigError, match="exactly one of p, fraction or mac_reduction"):
        ll.select_blocks(resnet32_blocks, scores, p=1, fraction=0.1)
    with pytest.raises(ll.ConfigError, match="p must be a whole number"):
        ll.select_blocks(resnet32_blocks, scores, p=-1)
    with pytest.raises(ll.PruningError, match="no score for blocks"):
        ll.select_blocks(resnet32_blocks, {"layer1.1": 0.0}, p=1)
    with pytest.raises(ll.PruningError, match="NaN"):
        ll.select_blocks(resnet32_blocks, {**scores, "layer2.2": float("nan")}, p=1)
    with pytest.raises(ll.PruningError, match="no residual block named 'layer7.1'"):
        ll.select_blocks(resnet32_blocks, scores, p=1, protect=["layer7.1"])
