"""Run files read back on resume: results and plans are checked against the run's settings, before training."""

from __future__ import annotations

import dataclasses

import pytest
from _runfiles_helpers import fresh_runs, read_json, run_folder, tiny_settings, write_json

import layerlottery as ll
from layerlottery.config import DataSettings, ModelSettings, TrainSettings
from layerlottery.experiments import tickets
from layerlottery.experiments.at_init import ticket_at_init
from layerlottery.experiments.runs import RunDir, RunSpec, TicketSpec, plan_disagreement
from layerlottery.experiments.tickets import plan_runs, run_experiment


def ticket_spec(model: str = "test_resnet", seed: int = 0, **ticket) -> RunSpec:
    return RunSpec(ModelSettings(name=model), DataSettings(), TrainSettings(), seed=seed, ticket=TicketSpec(**ticket))


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("protect,min_per_stage", [("first", 2), ("none", 1), ("layer1.1,layer3.2", 1)])
def test_every_plan_the_code_writes_agrees_with_its_run(criterion, p, protect, min_per_stage):
    """No false refusal: the replayed selection gives back the plan, whatever the input size of the run."""
    from layerlottery.surgery import parse_protect

    found = ticket_at_init(
        "test_resnet", criterion, p=p, protect=parse_protect(protect), min_per_stage=min_per_stage, seed=p,
        model_options={"image_size": 8, "num_classes": 4, "shortcut": "B", "zero_init_residual": False},
    )
    spec = ticket_spec(seed=p, criterion=criterion, p=p, protect=protect, min_per_stage=min_per_stage)
    assert plan_disagreement(found.plan, spec) == ""
    spared = sorted(set(found.plan.scores) - set(found.plan.removed))
    moved = dataclasses.replace(found.plan, removed=(spared[0], *found.plan.removed[1:]))  # same p, other block
    assert "its own scores under the run's selection rules pick" in plan_disagreement(moved, spec)
    other_seed = dataclasses.replace(spec, seed=p + 1)
    assert plan_disagreement(found.plan, other_seed) == f"was found for seed {p}, but the run's seed is {p + 1}"


def test_the_rules_of_the_run_decide_not_the_rules_in_the_plan():
    """A plan chosen with protect=none names a first block; under the run's protect=first that is refused."""
    blocks = ll.find_blocks(ll.create_model("test_resnet", shortcut="B"))
    every = ll.max_removable(blocks, protect=None, min_per_stage=0)  # every removable block, layer1.0 included
    found = ticket_at_init("test_resnet", "magnitude", p=every, protect=None, min_per_stage=0)
    assert "layer1.0" in found.plan.removed
    assert plan_disagreement(found.plan, ticket_spec(criterion="magnitude", p=every, protect="none", min_per_stage=0)) == ""
    refused = plan_disagreement(found.plan, ticket_spec(criterion="magnitude", p=every, protect="first", min_per_stage=0))
    assert "cannot come from the run's selection rules (cannot remove" in refused  # protect=first leaves too few


def test_read_plan_and_read_result_give_back_what_the_run_wrote(tmp_path_factory, tmp_path):
    runs = fresh_runs(tmp_path_factory, tmp_path / "runs")
    dense_spec, ticket = plan_runs(tiny_settings(runs))
    ticket_dir = RunDir(runs, ticket)
    assert ticket_dir.read_plan() == ll.RemovalPlan.load(run_folder(runs, "ticket"))  # a run folder loads too
    assert ticket_dir.read_result() == read_json(ticket_dir.result_file)
    dense_result = RunDir(runs, dense_spec).read_result()
    write_json(ticket_dir.result_file, dense_result)  # another run's result copied into this folder
    with pytest.raises(ll.DataError, match="kind is \"dense\", but the run's settings say \"ticket\""):
        ticket_dir.read_result()


def test_a_broken_plan_stops_the_experiment_before_any_training(tmp_path_factory, tmp_path, monkeypatch):
    """Two unfinished runs: the dense one first; the ticket's plan is broken, so neither trains."""
    runs = fresh_runs(tmp_path_factory, tmp_path / "runs")
    (run_folder(runs, "dense") / "result.json").unlink()
    ticket = run_folder(runs, "ticket")
    (ticket / "result.json").unlink()
    plan = read_json(ticket / "plan.json")
    write_json(ticket / "plan.json", plan | {"removed": ["layer1.1"]})
    trained = []
    monkeypatch.setattr(tickets, "train", lambda *args, **kwargs: trained.append(args))
    with pytest.raises(ll.DataError, match="plan.json removes layer1.1, but its own scores"):
        run_experiment(tiny_settings(runs), progress=False, log=lambda _: None)
    assert trained == [] and not (run_folder(runs, "dense") / "result.json").exists()

    write_json(ticket / "plan.json", plan)  # the plan as written: resumed from it, not rescored
    monkeypatch.undo()
    monkeypatch.setattr(tickets, "ticket_for_spec", lambda *a, **k: pytest.fail("a resumed ticket is not rescored"))
    result = run_experiment(tiny_settings(runs), progress=False, log=lambda _: None)
    assert result.trained == 2 and result.runs[1]["removed"] == plan["removed"]
