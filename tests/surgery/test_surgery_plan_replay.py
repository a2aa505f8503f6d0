"""A plan replays its ticket: build_model() gives theta_0 of the recorded seed, and old plans keep their shortcut."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import layerlottery as ll
from layerlottery.cli import app
from layerlottery.experiments import ticket_at_init


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict()


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_saved_ticket_replays_bitwise(tmp_path) -> None:
    # What `prune` writes: the plan and the pruned weights, each read back from disk.
    ticket = ticket_at_init("test_resnet", "magnitude", p=2, seed=3, model_options={"num_classes": 7})
    ticket.plan.save(tmp_path / "plan.json")
    ll.save_pruned(ticket.pruned, ticket.plan, tmp_path / "pruned.pt")
    plan = ll.RemovalPlan.load(tmp_path / "plan.json")
    assert plan.seed == 3 and plan.format_version == 2
    saved = torch.load(tmp_path / "pruned.pt", weights_only=True)["state_dict"]
    assert_bitwise_equal(state(plan.build_model()), saved)
    # The seed is what makes it so: another seed's theta_0 differs.
    other = json.loads((tmp_path / "plan.json").read_text()) | {"seed": 4}
    assert not torch.equal(state(ll.RemovalPlan.from_dict(other).build_model())["conv1.weight"], saved["conv1.weight"])


def test_prune_command_records_the_seed(tmp_path) -> None:
    out = tmp_path / "ticket"
    args = ["prune", "test_resnet", "-c", "random", "-p", "1", "--seed", "5", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ll.RemovalPlan.load(out / "plan.json").seed == 5


def format_1_plan(**model_options: object) -> dict:
    return {"removed": ["layer1.1"], "model": "test_resnet", "model_options": model_options, "format_version": 1}


def test_format_1_plans_keep_the_shortcut_they_were_built_with() -> None:
    # Until format 2 a CIFAR ResNet without a shortcut option had shortcut A; it must still load as A.
    old = ll.RemovalPlan.from_dict(format_1_plan(num_classes=7))
    assert old.model_options == {"num_classes": 7, "shortcut": "A"} and old.format_version == 2 and old.seed is None
    assert ll.RemovalPlan.from_dict(format_1_plan(shortcut="B")).model_options == {"shortcut": "B"}
    assert old.build_model().shortcut_style == "A"
    # Format 2 without the option means today's default, B.
    assert ll.RemovalPlan.from_dict({**format_1_plan(), "format_version": 2}).build_model().shortcut_style == "B"
