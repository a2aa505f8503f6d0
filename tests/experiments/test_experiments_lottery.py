"""Algorithm 1 end to end on tiny synthetic data: rewound weights, scores of the trained network, the replayed
schedule, the control, iterative rounds, idempotent reruns, resume after a kill, and the shared dense run."""

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

import layerlottery as ll
from layerlottery.cli import app
from layerlottery.config import TrainSettings, hashed_dict, load_settings
from layerlottery.criteria import score_blocks
from layerlottery.experiments import lottery, tickets
from layerlottery.experiments.at_init import initial_model
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.sources import data_source
from layerlottery.experiments.tickets import plan_runs, run_experiment
from layerlottery.reports import summarize, to_markdown
from layerlottery.training import Callback, load_snapshot, snapshot_path

from _experiment_helpers import tiny_overrides

BASE = tiny_overrides(
    4,
    "train.schedule=multistep",  # the lr changes at epochs 2 and 3: a replay from the wrong epoch shows
    "seeds=[0]",
)
LOTTERY = [
    "lottery.criteria=[magnitude]",
    "lottery.p=[1]",
    "lottery.rewind_epochs=[0, 2]",
    "lottery.control=true",
    "lottery.rounds=2",
    "lottery.k=1",
    "lottery.samples_per_class=4",
]
OPTIONS = {"image_size": 8, "num_classes": 4, "in_channels": 3, "shortcut": "B"}
QUIET = dict(progress=False, log=lambda _: None)


def settings_in(runs_dir, *extra):
    return load_settings("defaults", [*BASE, *LOTTERY, f"runs_dir={runs_dir}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished experiment: dense, rewind 0 and 2 (p = 1 and 2 rounds of k = 1), and the control."""
    runs = tmp_path_factory.mktemp("lottery") / "runs"
    settings = settings_in(runs)
    result = run_experiment(settings, **QUIET)
    specs = {spec.label: spec for spec in plan_runs(settings)}
    return settings, result, specs


def final_weights(run_path):
    return torch.load(run_path / "checkpoints" / "last.pt", weights_only=True)


def test_plan_orders_runs_and_names_each_ticket_by_its_dense_run_rewind_and_round(finished):
    settings, _, specs = finished
    assert list(specs) == [
        "dense seed 0",
        "magnitude p=1 rewind 0 seed 0",
        "magnitude p=2 (2 rounds) rewind 0 seed 0",  # round 1 is the one-shot p=1 ticket above: one run
        "magnitude p=1 rewind 2 seed 0",
        "magnitude p=2 (2 rounds) rewind 2 seed 0",
        "magnitude p=1 reinit seed 0",
    ]
    dense = specs["dense seed 0"]
    assert dense.train.snapshot_epochs == (2,)  # asked for by the rewind point; 0 is rebuilt from the seed
    rewound = specs["magnitude p=1 rewind 2 seed 0"]
    assert hashed_dict(rewound)["lottery"] == {"dense": dense.name, "rewind_epoch": 2}
    assert hashed_dict(rewound)["ticket"] == {"criterion": "magnitude", "p": 1, "samples_per_class": 4}
    second = hashed_dict(specs["magnitude p=2 (2 rounds) rewind 2 seed 0"])["lottery"]
    assert second == {"dense": dense.name, "rewind_epoch": 2, "source": rewound.name, "round": 2}
    assert hashed_dict(specs["magnitude p=1 reinit seed 0"])["lottery"] == {"dense": dense.name, "rewind_epoch": 0, "reinit": True}
    assert len({spec.name for spec in specs.values()}) == len(specs)


def test_the_dense_run_is_the_one_algorithm_2_uses(tmp_path):
    """Asking for snapshots does not rename the dense run, so both algorithms share one training."""
    at_init = load_settings("defaults", [*BASE, f"runs_dir={tmp_path}"])
    after = settings_in(tmp_path, "lottery.rewind_fractions=[0.25, 0.5]")
    dense_at_init, dense_after = plan_runs(at_init)[0], plan_runs(after)[0]
    assert dense_after.train.snapshot_epochs == (1, 2)  # 25% and 50% of 4 epochs
    assert dense_at_init.name == dense_after.name and dense_at_init.train.snapshot_epochs == ()
    assert hashed_dict(TrainSettings(snapshot_epochs=(5, 50))) == {}


def test_kept_weights_equal_the_snapshot_bitwise_buffers_included(finished):
    settings, _, specs = finished
    spec = specs["magnitude p=1 rewind 2 seed 0"]
    run_dir = RunDir(settings.runs_dir, spec)
    model, plan = lottery.lottery_ticket(spec, run_dir, data_source(settings.data), torch.device("cpu"))
    snapshot = load_snapshot(snapshot_path(RunDir(settings.runs_dir, specs["dense seed 0"]).checkpoints, 2))
    kept = model.state_dict()
    [removed] = plan.removed
    assert set(kept) == {key for key in snapshot if not key.startswith(removed + ".")}
    assert any("running_mean" in key for key in kept)  # BN statistics are rewound too
    assert all(torch.equal(kept[key], snapshot[key]) for key in kept)
    theta_0 = initial_model("test_resnet", OPTIONS, 0).state_dict()
    assert not torch.equal(kept["conv1.weight"], theta_0["conv1.weight"])  # epoch 2 is not theta_0


def test_rewind_to_zero_keeps_theta_0_and_the_control_draws_new_weights(finished):
    settings, _, specs = finished
    source, cpu = data_source(settings.data), torch.device("cpu")
    theta_0 = initial_model("test_resnet", OPTIONS, 0).state_dict()
    at_zero, _ = lottery.lottery_ticket(specs["magnitude p=1 rewind 0 seed 0"], RunDir(settings.runs_dir, specs["magnitude p=1 rewind 0 seed 0"]), source, cpu)
    assert all(torch.equal(value, theta_0[key]) for key, value in at_zero.state_dict().items())
    control_spec = specs["magnitude p=1 reinit seed 0"]
    control, plan = lottery.lottery_ticket(control_spec, RunDir(settings.runs_dir, control_spec), source, cpu)
    fresh = initial_model("test_resnet", OPTIONS, lottery.control_seed(0)).state_dict()
    assert all(torch.equal(value, fresh[key]) for key, value in control.state_dict().items())
    assert not torch.equal(control.state_dict()["conv1.weight"], theta_0["conv1.weight"])
    assert lottery.control_seed(0) == lottery.control_seed(0) >= 2**31 and lottery.control_seed(0) != lottery.control_seed(1)
    one_shot = json.loads((settings_path(settings, specs["magnitude p=1 rewind 0 seed 0"]) / "plan.json").read_text())
    assert list(plan.removed) == one_shot["removed"]  # the same pruned architecture as the rewound ticket


def settings_path(settings, spec):
    return RunDir(settings.runs_dir, spec).path


def test_scores_come_from_the_final_trained_weights_never_the_snapshot(finished):
    settings, _, specs = finished
    dense_path = settings_path(settings, specs["dense seed 0"])
    plan = ll.RemovalPlan.load(settings_path(settings, specs["magnitude p=1 rewind 2 seed 0"]) / "plan.json")
    network = initial_model("test_resnet", OPTIONS, 0)
    network.load_state_dict(final_weights(dense_path)["model"])
    trained = score_blocks(network, "magnitude")
    assert plan.scores == {name: trained[name] for name in plan.scores}  # the plan keeps candidates' scores
    network.load_state_dict(load_snapshot(snapshot_path(dense_path / "checkpoints", 2)))
    at_snapshot = dict(score_blocks(network, "magnitude"))
    assert all(plan.scores[name] != at_snapshot[name] for name in plan.scores)


def test_the_ticket_replays_the_learning_rate_schedule_from_its_rewind_point(finished):
    settings, result, specs = finished
    dense = final_weights(settings_path(settings, specs["dense seed 0"]))["history"]
    rewound = final_weights(settings_path(settings, specs["magnitude p=1 rewind 2 seed 0"]))["history"]
    full = final_weights(settings_path(settings, specs["magnitude p=1 rewind 0 seed 0"]))["history"]
    assert [row["epoch"] for row in rewound] == [3, 4]
    assert [row["lr"] for row in rewound] == [row["lr"] for row in dense[2:]]
    assert [row["lr"] for row in full] == [row["lr"] for row in dense] and len({row["lr"] for row in dense}) == 3
    by_name = {run["name"]: run for run in result.runs}
    run = by_name[specs["magnitude p=1 rewind 2 seed 0"].name]
    assert (run["kind"], run["rewind_epoch"], run["control"], run["round"], run["epochs"]) == ("lottery", 2, False, 1, 4)


def test_an_iterative_round_scores_the_previous_round_and_removes_k_more(finished):
    settings, _, specs = finished
    first = ll.RemovalPlan.load(settings_path(settings, specs["magnitude p=1 rewind 2 seed 0"]) / "plan.json")
    second_spec = specs["magnitude p=2 (2 rounds) rewind 2 seed 0"]
    second = ll.RemovalPlan.load(settings_path(settings, second_spec) / "plan.json")
    assert set(first.removed) < set(second.removed) and second.p == 2
    assert not set(second.scores) & set(first.removed)  # scored on the round-1 ticket, which lacks its blocks
    ticket = ll.remove_blocks(initial_model("test_resnet", OPTIONS, 0), first)
    ticket.load_state_dict(final_weights(settings_path(settings, specs["magnitude p=1 rewind 2 seed 0"]))["model"])
    trained = score_blocks(ticket, "magnitude")
    assert second.scores == {name: trained[name] for name in second.scores} and len(second.scores) == len(first.scores) - 1
    blocks = ll.find_blocks(initial_model("test_resnet", OPTIONS, 0))
    assert second.pruned_macs == blocks.total_macs - sum(blocks[name].macs for name in second.removed)


def test_rerunning_trains_nothing_and_the_table_has_the_rewind_column(finished):
    settings, first, _ = finished
    assert first.trained == 6
    stamps = {p: p.stat().st_mtime_ns for p in settings_path(settings, plan_runs(settings)[0]).parent.rglob("*") if p.is_file()}
    again = run_experiment(settings, **QUIET)
    assert again.trained == 0 and again.runs == first.runs
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    dense, rows = summarize(again.runs)
    assert [(r.criterion, r.rewind_epoch, r.control, r.rounds, r.p) for r in rows] == [
        ("magnitude", 0, False, 1, 1), ("magnitude", 0, False, 2, 2), ("magnitude", 2, False, 1, 1),
        ("magnitude", 2, False, 2, 2), ("magnitude", None, True, 1, 1),
    ]
    table = to_markdown(dense, rows)
    assert table.splitlines()[0].startswith("| criterion | rewind | p | Δacc pts | wins |")
    assert "| magnitude | epoch 2 (50%) | 2 (2 rounds) |" in table and "| magnitude | reinit | 1 |" in table


def without_timing(result):
    """A result without its clock readings, which differ between any two runs."""
    clock = ("seconds", "per_second", "memory", "ratio", "disturbed")
    return {key: value for key, value in result.items() if not any(word in key for word in clock)}


class _KillAfter(Callback):
    def on_epoch_end(self, state) -> None:
        if state.epoch == 3:  # the rewound ticket's first epoch (3) is done, its checkpoint not yet written
            raise KeyboardInterrupt("simulated kill")


def test_a_killed_ticket_resumes_to_the_uninterrupted_result(finished, tmp_path, monkeypatch):
    settings, clean, specs = finished
    only = ["lottery.rewind_epochs=[2]", "lottery.control=false", "lottery.rounds=1"]
    killed = settings_in(tmp_path / "runs", *only)
    real_train = tickets.train

    def train_then_die(model, loader, train_settings, *, callbacks=(), **kwargs):
        killer = [_KillAfter()] if "lottery-" in str(kwargs["checkpoint_dir"]) else []
        return real_train(model, loader, train_settings, callbacks=[*callbacks, *killer], **kwargs)

    monkeypatch.setattr(tickets, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(killed, **QUIET)
    monkeypatch.setattr(tickets, "train", real_train)
    resumed = run_experiment(killed, **QUIET)
    assert resumed.trained == 1
    name = specs["magnitude p=1 rewind 2 seed 0"].name
    [clean_run] = [run for run in clean.runs if run["name"] == name]
    [resumed_run] = [run for run in resumed.runs if run["name"] == name]
    assert without_timing(clean_run) == without_timing(resumed_run)
    a = final_weights(settings_path(settings, specs["magnitude p=1 rewind 2 seed 0"]))["model"]
    b = final_weights(tmp_path / "runs" / name)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_dense_run_of_algorithm_2_serves_algorithm_1_or_names_its_missing_snapshot(tmp_path):
    runs = tmp_path / "runs"
    at_init = load_settings("defaults", [*BASE, "pruning.criteria=[magnitude]", "pruning.p=[1]", f"runs_dir={runs}"])
    run_experiment(at_init, **QUIET)
    dense_dir = RunDir(runs, plan_runs(at_init)[0])
    before = {p: p.stat().st_mtime_ns for p in dense_dir.path.rglob("*")}
    reused = run_experiment(settings_in(runs, "lottery.rewind_epochs=[0]", "lottery.control=false", "lottery.rounds=1"), **QUIET)
    assert reused.trained == 1 and reused.runs[0]["name"] == dense_dir.path.name  # only the ticket trained
    assert {p: p.stat().st_mtime_ns for p in dense_dir.path.rglob("*")} == before

    folders = sorted(p.name for p in runs.iterdir())
    args = ["run", "defaults", *BASE, *LOTTERY, f"runs_dir={runs}", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert f"dense run {dense_dir.path.name} (dense seed 0) has no snapshot of epoch 2; it was trained without it" in message
    assert "choose lottery rewind points among epochs [0]" in message
    assert sorted(p.name for p in runs.iterdir()) == folders  # refused before any ticket was made


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lottery.rewind_epochs=[4]", "lottery.rewind_epochs [4] lie past the training: rewind to an epoch in 0..3"),
        ("lottery.rewind_fractions=[1.0]", "lottery.rewind_fractions must lie in [0, 1), not [1.0]"),
        ("lottery.rewind_fractions=[0.9]", "lottery.rewind_fractions [0.9] of 4 epochs round to the last epoch"),
        ("lottery.p=[4]", "lottery.p asks for 4 blocks but test_resnet allows at most 3"),
        ("lottery.rounds=4", "lottery.rounds x lottery.k = 4 x 1 = 4 blocks but test_resnet allows at most 3"),
        ("lottery.criteria=[nope]", "lottery: unknown criterion 'nope'"),
    ],
)
def test_bad_lottery_settings_are_one_line_before_any_work(tmp_path, override, message):
    result = CliRunner().invoke(app, ["run", "defaults", *BASE, *LOTTERY, override, f"runs_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_the_run_command_prints_table_1(finished):
    settings, _, _ = finished
    result = CliRunner().invoke(app, ["run", "defaults", *BASE, *LOTTERY, f"runs_dir={settings.runs_dir}", "-q"])
    assert result.exit_code == 0, result.output
    assert "lottery tickets after training" in result.stdout and "nothing trained" in result.output
    for header in ["criterion", "rewind", "Δacc pts", "wins", "MACs -%", "params -%", "speedup", "CO2 -%"]:
        assert header in result.stdout


def test_presets_share_their_dense_runs_with_algorithm_2():
    assert plan_runs(load_settings("mnist_lottery_cpu"))[0].name == plan_runs(load_settings("mnist_cpu"))[0].name
    table1 = load_settings("paper_table1_resnet32")
    assert plan_runs(table1)[0].name == plan_runs(load_settings("paper_resnet32"))[0].name
    assert table1.lottery.rewind_points(table1.train.epochs) == (0, 50, 100, 150)
    assert dataclasses.replace(table1, lottery=type(table1.lottery)()).lottery.enabled is False
