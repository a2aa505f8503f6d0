"""Contiguous selection: the run of p adjacent candidates of one stage with the lowest summed score.

Oracles: hand-made scores where the contiguous choice differs from the greedy one, and a brute force over
every set of p candidates that checks adjacency by position (not by the code's runs).
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

import layerlottery as ll
from layerlottery.config import DataSettings, ModelSettings, TrainSettings, hashed_dict, load_settings
from layerlottery.errors import ConfigError, PruningError
from layerlottery.experiments import tickets
from layerlottery.experiments.at_init import ticket_at_init
from layerlottery.experiments.runs import RunSpec, TicketSpec, plan_disagreement
from layerlottery.surgery import RemovalPlan
from layerlottery.surgery.select import candidate_blocks, max_removable, select_blocks


@pytest.fixture(scope="module")
def resnet32_blocks():
    return ll.find_blocks(ll.create_model("cifar_resnet32", shortcut="B"))


def scores_of(blocks, by_name: dict[str, float], default: float = 9.0) -> dict[str, float]:
    return {b.name: by_name.get(b.name, default) for b in blocks}


def test_hand_made_scores_contiguous_takes_the_lowest_run_where_greedy_scatters(resnet32_blocks):
    scores = scores_of(resnet32_blocks, {"layer1.1": 0.0, "layer3.1": 0.5, "layer2.2": 1.0, "layer2.3": 1.0})
    greedy = select_blocks(resnet32_blocks, scores, p=2)
    contiguous = select_blocks(resnet32_blocks, scores, p=2, selection="contiguous")
    assert greedy.removed == ("layer1.1", "layer3.1")  # the two lowest, in different stages
    assert contiguous.removed == ("layer2.2", "layer2.3")  # sum 2.0 beats layer1.1 + layer1.2 = 9.0
    assert (greedy.selection_rule, contiguous.selection_rule) == ("greedy", "contiguous")
    assert contiguous.pruned_macs == resnet32_blocks.total_macs - 2 * resnet32_blocks["layer2.2"].macs


def test_equal_sums_go_to_the_run_that_comes_first(resnet32_blocks):
    scores = scores_of(resnet32_blocks, {"layer3.2": 0.5, "layer3.3": 0.5, "layer2.3": 0.25, "layer2.4": 0.75})
    assert select_blocks(resnet32_blocks, scores, p=2, selection="contiguous").removed == ("layer2.3", "layer2.4")


def test_a_protected_block_splits_runs_and_the_stage_keeps_its_minimum(resnet32_blocks):
    low = {f"layer1.{i}": 0.0 for i in range(1, 5)}
    scores = scores_of(resnet32_blocks, low)
    # layer1 has 5 blocks, keeps 2: a run of 3 of its 4 candidates, the first such run.
    assert select_blocks(resnet32_blocks, scores, p=3, selection="contiguous").removed == ("layer1.1", "layer1.2", "layer1.3")
    # Protecting layer1.3 leaves runs layer1.1-2 and layer1.4: p=3 must come from another stage.
    plan = select_blocks(resnet32_blocks, scores, p=3, selection="contiguous", protect=["layer1.0", "layer1.3", "layer2.0", "layer3.0"])
    assert plan.removed == ("layer2.1", "layer2.2", "layer2.3")


def test_infeasible_p_is_one_line_with_the_contiguous_limit(resnet32_blocks):
    assert max_removable(resnet32_blocks) == 9
    assert max_removable(resnet32_blocks, selection="contiguous") == 3  # 5 blocks a stage, 2 kept
    assert max_removable(resnet32_blocks, protect=None, min_per_stage=0, selection="contiguous") == 5
    scores = scores_of(resnet32_blocks, {})
    with pytest.raises(PruningError) as caught:
        select_blocks(resnet32_blocks, scores, p=4, selection="contiguous")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot remove 4 blocks: at most 3 adjacent blocks of one stage")
    with pytest.raises(ConfigError, match="give p or fraction, not mac_reduction"):
        select_blocks(resnet32_blocks, scores, mac_reduction=0.1, selection="contiguous")
    with pytest.raises(ConfigError, match="selection must be greedy or contiguous, not 'best'"):
        select_blocks(resnet32_blocks, scores, p=1, selection="best")


def brute_force(blocks, scores, p, protect, min_per_stage):
    """Every p-subset of candidates; keep those inside one stage, at consecutive positions, leaving the minimum."""
    candidates = candidate_blocks(blocks, protect)
    stages = blocks.stages()
    best = None
    for combo in itertools.combinations(candidates, p):  # in network order, so the first minimum is the earliest
        indices = [b.index for b in combo]
        if len({b.stage for b in combo}) != 1 or indices != list(range(indices[0], indices[0] + p)):
            continue
        if len(stages[combo[0].stage]) - p < min_per_stage:
            continue
        total = sum(scores[b.name] for b in combo)
        if best is None or total < best[0]:
            best = (total, tuple(b.name for b in combo))
    return best[1] if best else None


@pytest.mark.parametrize("trial", range(6))
def test_random_scores_agree_with_a_brute_force(resnet32_blocks, trial):
    rng = random.Random(trial)
    # Quarter steps make equal sums common, so the network-order rule is exercised too.
    scores = {b.name: rng.randint(0, 8) / 4 for b in resnet32_blocks}
    protect = rng.choice(["first", None, ["layer1.2", "layer2.0", "layer3.3"]])
    min_per_stage = rng.choice([0, 1, 2])
    for p in range(1, max_removable(resnet32_blocks, protect, min_per_stage, "contiguous") + 1):
        plan = select_blocks(resnet32_blocks, scores, p=p, protect=protect, min_per_stage=min_per_stage, selection="contiguous")
        assert plan.removed == brute_force(resnet32_blocks, scores, p, protect, min_per_stage)


def test_the_rule_survives_a_round_trip_and_older_plans_read_as_greedy(tmp_path, resnet32_blocks):
    plan = select_blocks(resnet32_blocks, scores_of(resnet32_blocks, {}), p=2, selection="contiguous")
    again = RemovalPlan.load(plan.save(tmp_path / "plan.json"))
    assert again == plan and again.selection_rule == "contiguous"
    older = plan.to_dict()
    del older["selection"]["rule"]
    assert RemovalPlan.from_dict(older).selection_rule == "greedy"


def ticket_spec(selection: str, p: int = 1) -> RunSpec:
    ticket = TicketSpec(criterion="magnitude", p=p, selection=selection)
    return RunSpec(ModelSettings(name="test_resnet"), DataSettings(), TrainSettings(), seed=0, ticket=ticket)


def test_a_run_replays_its_plan_with_its_own_rule():
    options = {"image_size": 8, "num_classes": 4, "shortcut": "B", "zero_init_residual": False}
    contiguous = ticket_at_init("test_resnet", "magnitude", p=1, seed=0, model_options=options, selection="contiguous")
    assert plan_disagreement(contiguous.plan, ticket_spec("contiguous")) == ""
    assert plan_disagreement(contiguous.plan, ticket_spec("greedy")) == (
        "was chosen by contiguous selection, but the run's selection is greedy"
    )
    greedy = dataclasses.replace(contiguous.plan, selection={**contiguous.plan.selection, "rule": "greedy"})
    assert "but the run's selection is contiguous" in plan_disagreement(greedy, ticket_spec("contiguous"))


def test_the_setting_keeps_default_run_names_and_reaches_every_ticket(tmp_path):
    base = ["model.name=test_resnet", "pruning.criteria=[magnitude]", "pruning.p=[1]", f"runs_dir={tmp_path}"]
    greedy = tickets.plan_runs(load_settings("defaults", base))
    contiguous = tickets.plan_runs(load_settings("defaults", [*base, "pruning.selection=contiguous"]))
    assert "selection" not in hashed_dict(greedy[1])["ticket"]  # the default is left out: names unchanged
    assert greedy[0].name == contiguous[0].name  # the dense run is shared
    assert contiguous[1].ticket.selection == "contiguous" and contiguous[1].name != greedy[1].name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pruning.selection=best"], "pruning.selection must be greedy or contiguous, not 'best'"),
        (["lottery.criteria=[magnitude]", "lottery.rewind_epochs=[0]", "lottery.selection=all"], "lottery.selection must be greedy or contiguous"),
    ],
)
def test_a_bad_setting_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings("defaults", ["model.name=test_resnet", *overrides])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pruning.p=[2]"], "pruning.p asks for 2 blocks but test_resnet allows at most 1 (protect=first, min_per_stage=2, selection=contiguous)"),
        (["lottery.criteria=[magnitude]", "lottery.rewind_epochs=[0]", "lottery.p=[2]"], "lottery.p asks for 2 blocks but test_resnet allows at most 1"),
    ],
)
def test_check_feasible_uses_the_contiguous_limit(tmp_path, overrides, message):
    selection = "lottery.selection=contiguous" if overrides[0].startswith("lottery") else "pruning.selection=contiguous"
    settings = load_settings("defaults", ["model.name=test_resnet", f"runs_dir={tmp_path}", selection, *overrides])
    with pytest.raises(PruningError) as caught:
        tickets.check_feasible(settings)
    assert str(caught.value).startswith(message)
