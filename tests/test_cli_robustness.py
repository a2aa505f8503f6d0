"""`layerlottery robustness`: evaluates finished runs into robustness.json, prints a table or JSON, computes
nothing the second time, and refuses bad input with one line, exit status 2 and nothing written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from _robustness_helpers import fresh_runs, run_folders
from layerlottery.cli import app
from layerlottery.robustness.attacks import parse_attack
from layerlottery.robustness.evaluate import ROBUSTNESS_FILE

runner = CliRunner()
FAST = ["--corruptions", "noise", "--severities", "2,4", "--attack", "fgsm:linf:eps=0.03", "--attack-samples", "16", "--device", "cpu", "-q"]


@pytest.fixture
def runs(tmp_path_factory, tmp_path):
    return fresh_runs(tmp_path_factory, tmp_path / "runs")


def invoke(*args: str):
    return runner.invoke(app, ["robustness", *args])


def test_evaluates_runs_and_prints_a_table_then_computes_nothing_again(runs):
    dense, ticket = run_folders(runs, "dense")[0], run_folders(runs, "ticket")[0]
    result = invoke(str(dense), str(ticket), *FAST)
    assert result.exit_code == 0, result.output
    for run in (dense, ticket):
        assert run.name in result.stdout
        record = json.loads((run / ROBUSTNESS_FILE).read_text())
        assert set(record["corruptions"]) == {"gaussian_noise", "shot_noise", "impulse_noise"}
        assert [list(e["accuracy"]) for e in record["corruptions"].values()] == [["2", "4"]] * 3
        assert list(record["attacks"]) == [parse_attack("fgsm:linf:eps=0.03").key]
    assert "mCA %" in result.stdout and "noise %" in result.stdout
    assert "(16 part(s) computed now)" in result.stdout  # 2 runs x (clean + 3 x 2 + 1 attack)

    again = invoke(str(dense), str(ticket), *FAST, "--json")
    assert again.exit_code == 0, again.output
    payload = json.loads(again.stdout)
    assert [row["computed"] for row in payload] == [0, 0]
    assert payload[0]["clean"] == json.loads((dense / ROBUSTNESS_FILE).read_text())["clean"]


def test_a_runs_directory_means_every_finished_run_in_it(runs):
    result = invoke(str(runs), "--corruptions", "none", "--attack", "none", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(row["path"] for row in json.loads(result.stdout)) == sorted(str(p) for p in run_folders(runs, "dense") + run_folders(runs, "ticket"))
    assert len(list(runs.glob(f"*/{ROBUSTNESS_FILE}"))) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruptions", "fog"], "unknown corruption 'fog'"),
        (["--severities", "6"], "must lie in 1..5"),
        (["--severities", "two"], "--severities takes whole numbers"),
        (["--attack", "pgd:linf:eps=-0.03"], "eps must be a finite number >= 0"),
        (["--attack", "pgd:linf:steps=3"], "eps is missing"),
        (["--attack", "cw:l2:eps=1"], "unknown attack 'cw'"),
        (["--source", "cifar10c"], "CIFAR-10 test images, but this run trained on synthetic"),
        (["--attack-samples", "-1"], "--attack-samples must be >= 0"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bad_flags_are_one_line_with_status_2_and_nothing_written(runs, args, message):
    result = invoke(str(runs), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1 and result.output.startswith("error:")
    assert not list(runs.glob(f"*/{ROBUSTNESS_FILE}"))


def test_a_folder_without_a_finished_run_is_one_line_with_status_2(runs, tmp_path):
    dense, ticket = run_folders(runs, "dense")[0], run_folders(runs, "ticket")[0]
    (ticket / "result.json").unlink()
    for target, message in [(ticket, "has not finished"), (tmp_path, "is not a run directory"), (runs / "nope", "is not a run directory")]:
        result = invoke(str(dense), str(target), "--corruptions", "none", "--attack", "none")
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.count("\n") == 1
    assert not list(runs.glob(f"*/{ROBUSTNESS_FILE}"))
