"""The filter-pruning baseline (Table 3) end to end on tiny synthetic data: the same filter count as its layer
ticket, the same columns, reruns that train nothing, resume that replays the saved filter plan, unchanged
hashes of existing runs, and the refusal of a criterion without per-filter scores."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from layerlottery.config import hashed_dict, load_settings
from layerlottery.errors import ConfigError, DataError
from layerlottery.experiments import filter_baseline
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.similarity import trained_run_network
from layerlottery.experiments.sources import data_source
from layerlottery.experiments.tickets import plan_runs, preflight, run_experiment
from layerlottery.reports import collect_runs, summarize, to_markdown
from layerlottery.surgery.filters import count_filters

from _experiment_helpers import tiny_overrides

TINY = tiny_overrides(1, "pruning.criteria=[snip,grasp]", "pruning.p=[1]", "pruning.samples_per_class=4", "seeds=[0,1]")
QUIET = dict(progress=False, log=lambda _: None)


def settings_in(runs_dir, *extra):
    return load_settings("defaults", [*TINY, "pruning.filter_baseline=true", f"runs_dir={runs_dir}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("filters") / "runs"
    settings = settings_in(runs)
    return settings, run_experiment(settings, **QUIET)


def _by_label(settings):
    return {spec.label: RunDir(settings.runs_dir, spec) for spec in plan_runs(settings)}


def test_each_layer_ticket_gets_a_filter_baseline_and_layer_hashes_do_not_move(tmp_path):
    with_baseline = plan_runs(settings_in(tmp_path))
    without = plan_runs(load_settings("defaults", [*TINY, f"runs_dir={tmp_path}"]))
    assert [s.label for s in with_baseline[:5]] == [
        "dense seed 0", "snip p=1 seed 0", "snip filters as p=1 seed 0", "grasp p=1 seed 0", "grasp filters as p=1 seed 0",
    ]
    # The layer tickets and dense runs are the very runs of the experiment without the baseline.
    assert [s.name for s in with_baseline if s.kind != "filters"] == [s.name for s in without]
    filters = [s for s in with_baseline if s.kind == "filters"]
    assert len(filters) == 4 and all(s.name.startswith("filters-") for s in filters)
    assert "structure" not in hashed_dict(with_baseline[1])["ticket"]
    assert hashed_dict(filters[0])["ticket"] == {**hashed_dict(with_baseline[1])["ticket"], "structure": "filters"}


def test_the_baseline_removes_exactly_as_many_filters_as_its_layer_ticket_has_fewer(finished):
    settings, result = finished
    assert result.trained == 10
    source = data_source(settings.data)
    runs = _by_label(settings)
    results = {run["label"]: run for run in result.runs}
    for seed in (0, 1):
        dense = trained_run_network(runs[f"dense seed {seed}"], source, torch.device("cpu"))
        for criterion in ("snip", "grasp"):
            layer_dir, filter_dir = runs[f"{criterion} p=1 seed {seed}"], runs[f"{criterion} filters as p=1 seed {seed}"]
            layer = trained_run_network(layer_dir, source, torch.device("cpu"))
            narrow = trained_run_network(filter_dir, source, torch.device("cpu"))
            assert count_filters(narrow) == count_filters(layer) < count_filters(dense)
            record = results[filter_dir.spec.label]
            assert record["kind"] == "filters" and record["structure"] == "filters" and record["removed"] == []
            assert record["filters"] == count_filters(narrow) == results[layer_dir.spec.label]["filters"]
            assert record["filters_removed"] == count_filters(dense) - count_filters(layer) == record["dense_filters"] - record["filters"]
            assert record["layer_ticket"] == layer_dir.spec.name
            assert record["layer_removed"] == results[layer_dir.spec.label]["removed"]
            # Same depth, narrower first convs: physically fewer MACs and parameters than the dense network.
            assert len(list(narrow.modules())) == len(list(dense.modules()))
            assert record["macs"] < results[f"dense seed {seed}"]["macs"]
            plan = json.loads(filter_dir.filter_plan_file.read_text())
            assert plan["criterion"] == criterion and plan["seed"] == seed and plan["selection"]["layer_ticket"] == layer_dir.spec.name


def test_the_table_shows_the_baseline_beside_its_layer_ticket_with_the_paired_change(finished):
    settings, result = finished
    dense, rows = summarize(result.runs)
    assert [(r.criterion, r.structure, r.p) for r in rows] == [
        ("grasp", "layers", 1), ("grasp", "filters", 1), ("snip", "layers", 1), ("snip", "filters", 1),
    ]
    by_seed = {run["seed"]: run for run in result.runs if run["kind"] == "dense"}
    baselines = [run for run in result.runs if run["kind"] == "filters" and run["criterion"] == "snip"]
    changes = [100 * (run["test_acc"] - by_seed[run["seed"]]["test_acc"]) for run in baselines]
    snip_filters = rows[3]
    assert snip_filters.acc_change_mean == pytest.approx(sum(changes) / 2)
    assert snip_filters.acc_change_std == pytest.approx(abs(changes[0] - changes[1]) / 2**0.5)
    assert snip_filters.seeds == 2 and snip_filters.filters == rows[2].filters
    markdown = to_markdown(dense, rows)
    header = markdown.splitlines()[0]
    assert "| structure | filters |" in header and "Δacc pts" in header and "speedup" in header
    assert f"| snip | filters | {dense.filters} -> {rows[3].filters} | 1 |" in markdown
    # The report (no training, no data) builds the same rows from the run directories.
    (reported,) = collect_runs(settings.runs_dir).values()
    columns = lambda row: (row.criterion, row.structure, row.p, row.acc_change_mean, row.speedup_mean, row.filters, row.cka_mean)  # noqa: E731
    assert [columns(row) for row in summarize(reported)[1]] == [columns(row) for row in rows]


def test_rerun_trains_nothing_and_touches_no_file(finished):
    settings, result = finished
    root = settings.runs_dir
    stamps = {p: p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}
    again = run_experiment(settings, **QUIET)
    assert again.trained == 0 and again.runs == result.runs
    assert {p: p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()} == stamps


def test_resume_replays_the_saved_filter_plan_without_rescoring(finished, tmp_path, monkeypatch):
    settings, result = finished
    copy = tmp_path / "runs"
    shutil.copytree(settings.runs_dir, copy)
    settings = dataclasses.replace(settings, runs_dir=str(copy))
    run = _by_label(settings)["grasp filters as p=1 seed 1"]
    trained = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    # As if killed after the plan was written, before the first epoch finished.
    run.result_file.unlink()
    shutil.rmtree(run.checkpoints)
    run.checkpoints.mkdir()
    plan_stamp = run.filter_plan_file.stat().st_mtime_ns

    def no_scoring(*args, **kwargs):
        raise AssertionError("a resumed filter baseline must replay its plan, not score again")

    monkeypatch.setattr(filter_baseline, "filter_ticket_at_init", no_scoring)
    monkeypatch.setattr(filter_baseline, "ticket_for_spec", no_scoring)
    resumed = run_experiment(settings, **QUIET)
    assert resumed.trained == 1
    assert run.filter_plan_file.stat().st_mtime_ns == plan_stamp
    again = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)


def test_a_filter_plan_of_another_run_stops_the_experiment_before_training(finished, tmp_path):
    settings, _ = finished
    copy = tmp_path / "runs"
    shutil.copytree(settings.runs_dir, copy)
    settings = dataclasses.replace(settings, runs_dir=str(copy))
    runs = _by_label(settings)
    target, other = runs["snip filters as p=1 seed 0"], runs["grasp filters as p=1 seed 0"]
    target.result_file.unlink()
    shutil.copy(other.filter_plan_file, target.filter_plan_file)
    with pytest.raises(DataError, match="filter_plan.json is a plan for .*'grasp'.* but the run is .*'snip'"):
        preflight(settings)


def test_a_criterion_without_per_filter_scores_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"pruning.filter_baseline scores filters with snip or grasp only, not magnitude"):
        settings_in(tmp_path, "pruning.criteria=[snip,magnitude]")
    assert not (tmp_path / "runs").exists()
