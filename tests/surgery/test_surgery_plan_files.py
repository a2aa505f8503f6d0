"""Plans and pruned-model files of the wrong shape: a LayerLotteryError naming the field or file, never raw."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import layerlottery as ll
from layerlottery.surgery.plan import _FIELD_TYPES

OPTIONS = {"shortcut": "B", "num_classes": 5, "image_size": 8}


@pytest.fixture(scope="module")
def plan() -> ll.RemovalPlan:
    torch.manual_seed(0)
    dense = ll.create_model("test_resnet", **OPTIONS)
    blocks = ll.find_blocks(dense)
    return ll.select_blocks(blocks, ll.score_blocks(dense, "magnitude"), p=2, model="test_resnet", model_options=OPTIONS)


def test_every_field_type_of_the_plan_is_checked():
    """A field added to RemovalPlan with a type the reader does not know fails here, not in a user's hands."""
    assert {f.type for f in dataclasses.fields(ll.RemovalPlan)} <= set(_FIELD_TYPES)


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("removed", None, "field 'removed' must be a list of block names, e.g. [\"layer1.1\"], not null"),
        ("removed", "layer1.1", "field 'removed' must be a list of block names, e.g. [\"layer1.1\"], not the string 'layer1.1'"),
        ("removed", ["layer1.1", 2], "field 'removed' must be a list of block names"),
        ("removed", ["layer1.1", ""], "field 'removed' must be a list of block names"),
        ("removed", ["layer1.1", "layer1.1"], "field 'removed' lists layer1.1 twice"),
        ("model", 3, "field 'model' must be a string or null, not 3"),
        ("model_options", None, "field 'model_options' must be an object, not null"),
        ("model_options", [], "field 'model_options' must be an object, not a list"),
        ("input_shape", [3, 0, 8], "field 'input_shape' must be null or a list of positive sizes"),
        ("input_shape", "3x8x8", "field 'input_shape' must be null or a list of positive sizes, e.g. [3, 32, 32], not the string '3x8x8'"),
        ("criterion", ["snip"], "field 'criterion' must be a string or null, not a list"),
        ("criterion_options", "sum", "field 'criterion_options' must be an object"),
        ("scores", {"layer1.1": "low"}, "field 'scores' must be an object of numbers"),
        ("selection", 2, "field 'selection' must be an object, not 2"),
        ("dense_macs", 1.5, "field 'dense_macs' must be a whole number or null, not 1.5"),
        ("pruned_params", True, "field 'pruned_params' must be a whole number or null, not true"),
    ],
)
def test_from_dict_names_the_field_of_the_wrong_type(plan, field, value, fragment):
    data = {**plan.to_dict(), field: value}
    with pytest.raises(ll.ConfigError) as caught:
        ll.RemovalPlan.from_dict(data)
    assert fragment in str(caught.value)


def test_from_dict_accepts_what_to_dict_and_python_callers_give(plan):
    assert ll.RemovalPlan.from_dict(plan.to_dict()) == plan
    as_tuples = {**plan.to_dict(), "removed": tuple(plan.removed), "input_shape": (3, 8, 8)}
    assert ll.RemovalPlan.from_dict(as_tuples) == dataclasses.replace(plan, input_shape=(3, 8, 8))
    assert ll.RemovalPlan.from_dict({"removed": []}).p == 0


def test_load_takes_a_plan_file_or_a_folder_holding_one(plan, tmp_path):
    plan.save(tmp_path / "ticket" / "plan.json")
    assert ll.RemovalPlan.load(tmp_path / "ticket") == plan == ll.RemovalPlan.load(tmp_path / "ticket" / "plan.json")
    with pytest.raises(ll.ConfigError, match=r"is a folder without a plan.json; give a removal plan file or a ticket folder"):
        ll.RemovalPlan.load(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"removed": "layer1.1"}')
    with pytest.raises(ll.ConfigError, match=rf"^{broken}: removal plan field 'removed' must be a list"):
        ll.RemovalPlan.load(broken)
    broken.write_bytes(b'{"removed": ["\xff"]}')
    with pytest.raises(ll.ConfigError, match="is unreadable"):
        ll.RemovalPlan.load(broken)


@pytest.fixture
def saved(plan, tmp_path):
    torch.manual_seed(1)
    pruned = plan.build_model()
    return ll.save_pruned(pruned, plan, tmp_path / "pruned.pt"), pruned


def edit_payload(path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_load_pruned_refuses_weights_that_do_not_fit_the_plan(saved, plan):
    path, pruned = saved
    other = [name for name in plan.scores if name not in plan.removed][0]
    edit_payload(path, lambda payload: payload["plan"].update(removed=[plan.removed[0], other]))
    with pytest.raises(ll.DataError) as caught:
        ll.load_pruned(path)
    message = str(caught.value)
    assert message.startswith(f"the weights in {path} do not fit the network its plan builds:")
    assert f"the model needs are missing ({plan.removed[1]}." in message and f"have no place in it ({other}." in message
    assert "\n" not in message and message.count(", ...") == 2  # a few names, not the whole state dict


def test_load_pruned_refuses_a_dense_model_of_another_shape(saved):
    path, _ = saved
    wrong = ll.create_model("test_resnet", shortcut="B", num_classes=7, image_size=8)
    with pytest.raises(ll.DataError, match=r"fc.weight is \(5, 8\) in the file but \(7, 8\) in the model \(2 tensor\(s\) differ\)"):
        ll.load_pruned(path, model=wrong)


@pytest.mark.parametrize(
    "change,error,fragment",
    [
        (lambda p: p["plan"].update(removed="layer1.1"), ll.ConfigError, ": removal plan field 'removed' must be a list"),
        (lambda p: p["plan"].update(removed=["layer9.9"]), ll.PruningError, ": no residual block named 'layer9.9'"),
        (lambda p: p.pop("plan"), ll.ConfigError, ": not a layerlottery removal plan"),
        (lambda p: p.update(state_dict=None), ll.DataError, "holds no weights"),
    ],
)
def test_load_pruned_names_the_file_for_a_broken_plan(saved, change, error, fragment):
    path, _ = saved
    edit_payload(path, change)
    with pytest.raises(error) as caught:
        ll.load_pruned(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)
