"""Registry, options and the BlockScores record."""

from __future__ import annotations

import json

import pytest
import torch
from _criteria_helpers import ALL_CRITERIA, DATA_CRITERIA, QUIET, batch, tiny_model

from layerlottery.criteria import (
    BlockScores,
    get_criterion,
    list_criteria,
    register_criterion,
    score_blocks,
)
from layerlottery.criteria import base
from layerlottery.errors import ConfigError, DataError

DEFAULTS = {
    "random": {"seed": 0},
    "magnitude": {"norm": "l1", "aggregation": "mean"},
    "snip": {"aggregation": "sum", "bn_mode": "train"},
    "gradnorm": {"aggregation": "sum", "bn_mode": "train"},
    "grasp": {
        "aggregation": "sum",
        "bn_mode": "train",
        "temperature": 200.0,
        "samples_per_class": 10,
        "variant": "reference",
        "halves": False,
        "reinit_head": False,
        "seed": 0,
    },
    "synflow": {"aggregation": "sum", "bn_mode": "eval", "iterative": False, "rounds": None},
}


def test_all_criteria_are_registered():
    assert set(ALL_CRITERIA) <= set(list_criteria())
    assert list_criteria() == sorted(list_criteria())
    assert {name for name in ALL_CRITERIA if get_criterion(name).needs_data} == set(DATA_CRITERIA)


def test_unknown_criterion_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown criterion 'snipp'") as info:
        score_blocks(tiny_model(), "snipp", batch())
    for name in ALL_CRITERIA:
        assert name in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        get_criterion("nope")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="no option 'temprature'; valid options: aggregation, bn_mode") as info:
        score_blocks(tiny_model(), "snip", batch(), temprature=2.0)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="valid options: seed"):
        score_blocks(tiny_model(), "random", aggregation="sum")


@pytest.mark.parametrize(
    "criterion, options",
    [
        ("snip", {"aggregation": "max"}),
        ("gradnorm", {"bn_mode": "test"}),
        ("random", {"seed": -1}),
        ("random", {"seed": 1.5}),
        ("random", {"seed": True}),
        ("magnitude", {"norm": "l3"}),
        ("grasp", {"temperature": 0}),
        ("grasp", {"temperature": float("inf")}),
        ("grasp", {"samples_per_class": 0}),
        ("grasp", {"variant": "absolute"}),
        ("synflow", {"iterative": "yes"}),
        ("synflow", {"rounds": 0, "iterative": True}),
        ("synflow", {"rounds": 3}),  # rounds without iterative
    ],
)
def test_invalid_option_values_are_config_errors(criterion, options):
    with pytest.raises(ConfigError, match=criterion) as info:
        score_blocks(tiny_model(), criterion, batch(), **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("criterion", DATA_CRITERIA)
def test_data_criteria_refuse_to_run_without_data(criterion):
    with pytest.raises(ConfigError, match="needs data"):
        score_blocks(tiny_model(), criterion)


@pytest.mark.parametrize(
    "data, message",
    [
        (torch.zeros(4, 3, 8, 8), "batch"),
        ([], "no batches"),
        ((torch.zeros(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)), "batch dimension"),
        ((torch.zeros(4, 3, 8, 8), torch.zeros(4)), "integer class indices"),
        ((torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)), "floats"),
        ((torch.zeros(4, 3, 8, 8), torch.full((4,), 10)), "10 classes"),
        ([(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)), "oops"], "batch 1"),
    ],
)
def test_malformed_data_is_a_data_error(data, message):
    with pytest.raises(DataError, match=message):
        score_blocks(tiny_model(), "snip", data)


@pytest.mark.filterwarnings("ignore::layerlottery.criteria.base.ClassBalanceWarning")
@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_all_options_are_recorded_with_defaults(criterion):
    scores = score_blocks(tiny_model(), criterion, batch())
    assert scores.criterion == criterion
    assert scores.options == DEFAULTS[criterion]
    json.dumps(scores.to_dict())  # a plan must be able to hold it


@pytest.mark.parametrize("aggregation", ["sum", "mean", "abs_sum"])
def test_aggregation_is_recorded(aggregation):
    scores = score_blocks(tiny_model(), "snip", batch(), aggregation=aggregation)
    assert scores.options["aggregation"] == aggregation


@pytest.mark.parametrize("criterion", ALL_CRITERIA)
def test_recorded_options_reproduce_the_scores(criterion):
    model, data = tiny_model(), batch()
    first = score_blocks(model, criterion, data, **QUIET.get(criterion, {}))
    again = score_blocks(model, first.criterion, data, **first.options)
    assert again == first


def test_block_scores_is_immutable_and_round_trips_through_json():
    scores = score_blocks(tiny_model(), "grasp", batch(), samples_per_class=None, variant="abs")
    with pytest.raises(TypeError):
        scores["layer1.0"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        scores.criterion = "snip"  # type: ignore[misc]
    scores.options["variant"] = "reference"
    assert scores.options["variant"] == "abs"

    record = json.loads(json.dumps(scores.to_dict()))
    assert set(record) == {"criterion", "options", "scores"}
    restored = BlockScores.from_dict(record)
    assert restored == scores
    assert list(restored) == list(scores)
    assert restored.ranked() == sorted(scores, key=scores.__getitem__)
    assert dict(restored) == dict(scores)


@pytest.mark.parametrize(
    "record",
    [
        {"criterion": "snip", "options": {}},
        {"criterion": 3, "options": {}, "scores": {}},
        {"criterion": "snip", "options": {"x": [1]}, "scores": {}},
        {"criterion": "snip", "options": {}, "scores": {"layer1.0": "high"}},
        [],
    ],
)
def test_malformed_score_records_are_data_errors(record):
    with pytest.raises(DataError):
        BlockScores.from_dict(record)


def test_ranked_keeps_network_order_for_ties():
    scores = BlockScores("x", {}, {"b": 1.0, "a": 0.0, "c": 0.0})
    assert scores.ranked() == ["a", "c", "b"]


def test_a_registered_criterion_is_scored_like_the_built_in_ones(monkeypatch):
    monkeypatch.setattr(base, "_CRITERIA", dict(base._CRITERIA))

    @register_criterion("block_index", options={"offset": base.Option(0, base.integer())})
    def block_index(context):
        """Position in the network plus an offset."""
        return {block.name: i + context.options["offset"] for i, block in enumerate(context.blocks)}

    scores = score_blocks(tiny_model(), "block_index", offset=5)
    assert list(scores.values()) == [5.0 + i for i in range(len(scores))]
    assert scores.options == {"offset": 5}
    assert get_criterion("block_index").description == "Position in the network plus an offset."
    with pytest.raises(ValueError, match="twice"):
        register_criterion("block_index")(block_index)
