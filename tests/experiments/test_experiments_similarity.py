"""Linear CKA of every ticket with the dense run of its seed: computed once after the runs, equal to
penultimate_cka of the loaded networks, never recomputed by a rerun, shown by run and report."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from layerlottery.config import load_settings
from layerlottery.experiments import similarity
from layerlottery.experiments.at_init import initial_model
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.sources import data_source
from layerlottery.experiments.tickets import plan_runs, run_experiment
from layerlottery.metrics.cka import penultimate_cka
from layerlottery.reports import collect_runs, summarize, to_markdown
from layerlottery.surgery import RemovalPlan, remove_blocks

from _experiment_helpers import tiny_overrides

BASE = tiny_overrides(2, "seeds=[0]")
AT_INIT = ["pruning.criteria=[snip]", "pruning.p=[1]", "pruning.samples_per_class=4"]
LOTTERY = ["lottery.criteria=[magnitude]", "lottery.p=[1]", "lottery.rewind_epochs=[1]"]
OPTIONS = {"image_size": 8, "num_classes": 4, "in_channels": 3, "shortcut": "B"}
QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished experiment at initialization and one after training, in the same runs directory (they
    share the dense run)."""
    runs = tmp_path_factory.mktemp("similarity") / "runs"
    at_init = load_settings("defaults", [*BASE, *AT_INIT, f"runs_dir={runs}"])
    after = load_settings("defaults", [*BASE, *LOTTERY, f"runs_dir={runs}"])
    after_result = run_experiment(after, **QUIET)  # first: its dense run keeps the rewind snapshot
    return (at_init, run_experiment(at_init, **QUIET)), (after, after_result)


def _final(network, run_dir):
    network.load_state_dict(torch.load(run_dir.checkpoints / "last.pt", weights_only=True)["model"])
    return network


def test_cka_of_each_ticket_equals_penultimate_cka_of_the_loaded_networks(finished):
    source = data_source(finished[0][0].data)
    for settings, result in finished:
        specs = plan_runs(settings)
        dense_dir = RunDir(settings.runs_dir, specs[0])
        dense = _final(initial_model("test_resnet", OPTIONS, 0), dense_dir)
        for spec in specs[1:]:
            run_dir = RunDir(settings.runs_dir, spec)
            plan = RemovalPlan.load(run_dir.plan_file)
            ticket = _final(remove_blocks(initial_model("test_resnet", OPTIONS, 0), plan), run_dir)
            _train, loader = source.loaders(spec.train, 0, torch.device("cpu"))
            expected = penultimate_cka(ticket, dense, loader.epoch(0))
            record = json.loads(run_dir.similarity_file.read_text())
            assert record == {"dense_run": dense_dir.spec.name, "cka": pytest.approx(expected, abs=1e-12), "samples": len(source.test)}
            assert 0 < record["cka"] <= 1
            (shown,) = [run for run in result.runs if run["name"] == spec.name]
            assert shown["cka"] == record["cka"]
    assert not RunDir(finished[0][0].runs_dir, plan_runs(finished[0][0])[0]).similarity_file.exists()  # dense: none


def test_rerun_computes_nothing_and_a_missing_file_is_computed_without_training(finished, tmp_path, monkeypatch):
    settings, result = finished[0]
    copy = tmp_path / "runs"
    shutil.copytree(settings.runs_dir, copy)
    settings = dataclasses.replace(settings, runs_dir=str(copy))
    ticket = RunDir(copy, plan_runs(settings)[1])
    stamp = ticket.similarity_file.stat().st_mtime_ns

    def no_cka(*args, **kwargs):
        raise AssertionError("a rerun must not compute CKA again")

    monkeypatch.setattr(similarity, "penultimate_cka", no_cka)
    monkeypatch.setattr(similarity, "trained_run_network", no_cka)
    again = run_experiment(settings, **QUIET)
    assert again.trained == 0 and again.runs == result.runs
    assert ticket.similarity_file.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    # A finished experiment from before CKA (no similarity.json): the rerun adds it, training nothing.
    ticket.similarity_file.unlink()
    again = run_experiment(settings, **QUIET)
    assert again.trained == 0 and again.runs == result.runs
    assert ticket.similarity_file.is_file()


def test_run_and_report_show_cka_and_a_missing_value_as_a_dash(finished, tmp_path, monkeypatch):
    settings, result = finished[0]
    dense, rows = summarize(result.runs)
    (row,) = rows
    markdown = to_markdown(dense, rows)
    assert markdown.splitlines()[0].endswith("| CKA |") and f"| {row.cka_mean:.3f} |" in markdown
    assert row.cka_seeds == 1 and row.cka_mean == [r["cka"] for r in result.runs if r["kind"] == "ticket"][0]

    copy = tmp_path / "runs"
    shutil.copytree(settings.runs_dir, copy)
    monkeypatch.setattr(similarity, "penultimate_cka", lambda *a, **k: pytest.fail("report must not compute CKA"))
    (group,) = collect_runs(copy).values()
    reported = {r["label"]: r for r in group}
    assert reported["snip p=1 seed 0"]["cka"] == row.cka_mean
    # Without similarity.json a ticket has no CKA: "-" beside the others, no column when none has one.
    (copy / reported["snip p=1 seed 0"]["name"] / "similarity.json").unlink()
    (group,) = collect_runs(copy).values()
    dense, rows = summarize(group)
    lines = to_markdown(dense, rows).splitlines()
    assert "| magnitude | epoch 1 (50%) |" in "\n".join(lines) and lines[0].endswith("| CKA |")
    snip_line = next(line for line in lines if line.startswith("| snip |"))
    assert snip_line.endswith("| - |")


def test_a_broken_similarity_file_is_one_line_naming_it(finished, tmp_path):
    from layerlottery.errors import DataError

    settings, result = finished[0]
    copy = tmp_path / "runs"
    shutil.copytree(settings.runs_dir, copy)
    path = Path(copy) / result.runs[1]["name"] / "similarity.json"
    path.write_text('{"cka": 7}')
    with pytest.raises(DataError, match="similarity.json is not a similarity record"):
        collect_runs(copy)
