"""The command-line contract for run files of the wrong shape: one line, exit status 2, nothing touched.

Each row breaks one file of a finished tiny experiment (a dense run and one SNIP ticket, trained once per
session) the way a user, a full disk or a hand edit could, then runs a command over that runs folder.
Rows: (id, how to break the runs folder, command, expected exit status, message fragment). To be merged
into the project's contract table (tests/test_cli_contract.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from _runfiles_helpers import TINY_RUN, fresh_runs, read_json, run_folder, write_json
from typer.testing import CliRunner

from layerlottery.cli import app


def edit_json(kind: str, name: str, change: Callable) -> Callable[[Path], None]:
    """A breaker: replace ``name`` in the ``kind`` run folder by ``change(its JSON)``."""

    def breaker(runs: Path) -> None:
        path = run_folder(runs, kind) / name
        write_json(path, change(read_json(path)))

    return breaker


def write_text(kind: str, name: str, text: str) -> Callable[[Path], None]:
    return lambda runs: (run_folder(runs, kind) / name).write_text(text)


def unfinished_ticket_with_plan(change: Callable) -> Callable[[Path], None]:
    """The ticket as a kill left it (plan.json written, no result.json yet), its plan then edited."""

    def breaker(runs: Path) -> None:
        (run_folder(runs, "ticket") / "result.json").unlink()
        edit_json("ticket", "plan.json", change)(runs)

    return breaker


def updated(**fields) -> Callable[[dict], dict]:
    return lambda data: {**data, **fields}


def without(*names: str) -> Callable[[dict], dict]:
    return lambda data: {k: v for k, v in data.items() if k not in names}


def other_block(plan: dict) -> dict:
    """Swap the removed block for another candidate: same count, so only the scores can tell."""
    [removed] = plan["removed"]
    other = next(name for name in plan["scores"] if name != removed)
    return {**plan, "removed": [other]}


def two_blocks(plan: dict) -> dict:
    extra = next(name for name in plan["scores"] if name not in plan["removed"])
    return {**plan, "removed": sorted([*plan["removed"], extra])}


def result_of_p2(result: dict) -> dict:
    """The ticket's result claiming p=2 (two removed blocks) while its settings say p=1."""
    return {**result, "p": 2, "removed": [*result["removed"], "layer1.1"]}


def plan_replaced_by(text: str | None) -> Callable[[Path], None]:
    """The unfinished ticket's plan.json replaced by ``text``, or by a folder when ``text`` is None."""

    def breaker(runs: Path) -> None:
        unfinished_ticket_with_plan(lambda plan: plan)(runs)
        plan = run_folder(runs, "ticket") / "plan.json"
        if text is None:
            plan.unlink()
            plan.mkdir()
        else:
            plan.write_text(text)

    return breaker


def commands(runs: Path) -> dict[str, list[str]]:
    run = ["run", "defaults", *TINY_RUN, f"runs_dir={runs}", "-q"]
    return {"run": run, "run --dry-run": [*run, "--dry-run"], "report": ["report", str(runs)]}


NOT_A_RESULT = "result.json is not a finished run's result"
CASES = [
    # result.json of a finished run: read by `run` (skipping the run) and by `report`
    ("result-empty-object", edit_json("dense", "result.json", lambda _: {}), "run", 2, f"{NOT_A_RESULT} (kind, seed, criterion, p, removed, test_acc"),
    ("result-empty-object", edit_json("dense", "result.json", lambda _: {}), "report", 2, f"{NOT_A_RESULT} (kind, seed"),
    ("result-list", edit_json("dense", "result.json", lambda _: []), "run", 2, f"{NOT_A_RESULT} (a JSON list, not an object of results)"),
    ("result-list", edit_json("ticket", "result.json", lambda _: []), "report", 2, f"{NOT_A_RESULT} (a JSON list"),
    ("result-test-acc-null", edit_json("ticket", "result.json", updated(test_acc=None)), "run", 2, "(test_acc is null, not a number from 0 to 1); delete the run folder to retrain it"),
    ("result-test-acc-null", edit_json("ticket", "result.json", updated(test_acc=None)), "run --dry-run", 2, "(test_acc is null"),
    ("result-test-acc-null", edit_json("ticket", "result.json", updated(test_acc=None)), "report", 2, "(test_acc is null, not a number from 0 to 1); move the run folder away"),
    ("result-test-acc-text", edit_json("dense", "result.json", updated(test_acc="91%")), "report", 2, '(test_acc is "91%", not a number from 0 to 1)'),
    ("result-macs-missing", edit_json("dense", "result.json", without("macs")), "report", 2, "(macs missing)"),
    ("result-of-other-p", edit_json("ticket", "result.json", result_of_p2), "run", 2, "(p is 2, but the run's settings say 1)"),
    ("result-of-other-p", edit_json("ticket", "result.json", result_of_p2), "report", 2, "(p is 2, but the run's settings say 1)"),
    ("result-not-json", write_text("dense", "result.json", '{"kind": "dense", '), "run", 2, "result.json is unreadable"),
    ("result-not-json", write_text("dense", "result.json", '{"kind": "dense", '), "report", 2, "result.json is unreadable"),
    # settings.json, which `report` groups runs by
    ("settings-list", edit_json("dense", "settings.json", lambda _: []), "report", 2, "settings.json is not a run's settings (not a JSON object)"),
    ("settings-no-model", edit_json("ticket", "settings.json", lambda r: {**r, "settings": without("model")(r["settings"])}), "report", 2, "(settings.model.name is missing)"),
    ("settings-not-json", write_text("dense", "settings.json", "nope"), "report", 2, "settings.json is unreadable"),
    # plan.json of a ticket that was interrupted before it finished: read when `run` resumes it
    ("plan-removed-null", unfinished_ticket_with_plan(updated(removed=None)), "run", 2, "plan.json: removal plan field 'removed' must be a list of block names"),
    ("plan-removed-null", unfinished_ticket_with_plan(updated(removed=None)), "run --dry-run", 2, "not null; delete the run folder to retrain it"),
    ("plan-removed-string", unfinished_ticket_with_plan(updated(removed="layer1.1")), "run", 2, "must be a list of block names, e.g. [\"layer1.1\"], not the string 'layer1.1'"),
    ("plan-other-blocks", unfinished_ticket_with_plan(other_block), "run", 2, "but its own scores under the run's selection rules pick"),
    ("plan-more-blocks", unfinished_ticket_with_plan(two_blocks), "run", 2, "removes 2 block(s) (layer1.1, layer3.2), but the run's p is 1"),
    ("plan-other-seed", unfinished_ticket_with_plan(updated(seed=7)), "run", 2, "was found for seed 7, but the run's seed is 0"),
    ("plan-other-criterion", unfinished_ticket_with_plan(updated(criterion="grasp")), "run", 2, "was chosen by criterion grasp, but the run's criterion is snip"),
    ("plan-other-model", unfinished_ticket_with_plan(updated(model="cifar_resnet20")), "run", 2, "is a plan for cifar_resnet20, but the run trains test_resnet"),
    ("plan-other-shortcut", unfinished_ticket_with_plan(lambda p: {**p, "model_options": {**p["model_options"], "shortcut": "A"}}), "run", 2, "is for model.shortcut=A, but the run has B"),
    ("plan-scores-missing", unfinished_ticket_with_plan(updated(scores={})), "run", 2, "cannot come from the run's selection rules (no score for blocks"),
    ("plan-not-json", plan_replaced_by("["), "run", 2, "plan.json: removal plan is not valid JSON"),
    ("plan-is-folder", plan_replaced_by(None), "run", 2, "is a folder without a plan.json"),
]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case,breaker,command,status,fragment", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_broken_run_files_give_one_line_and_touch_nothing(tmp_path_factory, tmp_path, case, breaker, command, status, fragment):
    runs = fresh_runs(tmp_path_factory, tmp_path / "runs")
    breaker(runs)
    before = snapshot(runs)
    result = CliRunner().invoke(app, commands(runs)[command])
    assert result.exit_code == status, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert snapshot(runs) == before  # nothing written, nothing deleted, no table file


@pytest.mark.parametrize("command", ["run", "report"])
def test_the_unbroken_experiment_passes_the_same_commands(tmp_path_factory, tmp_path, command):
    """The control row: the fixture is a valid finished experiment, so the table's failures are the edits'."""
    runs = fresh_runs(tmp_path_factory, tmp_path / "runs")
    result = CliRunner().invoke(app, commands(runs)[command])
    assert result.exit_code == 0, result.output
    assert "snip" in result.output
