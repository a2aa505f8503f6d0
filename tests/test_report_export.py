"""The report's tables on disk: Markdown, CSV and LaTeX (booktabs) with every expected row, and the folder rules."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _report_helpers import AT_INIT_ACC, LOTTERY_ACC, LOTTERY_DENSE_ACC, cheap_figures, finished_report, write_run, write_runs
from layerlottery.cli import app
from layerlottery.errors import DataError
from layerlottery.reports.export import ReportTable, latex_escape, to_csv, to_latex, to_markdown
from layerlottery.reports.robustness import robustness_report_table
from layerlottery.reports.write import MARKER_FILE, write_report
from layerlottery.robustness.summary import robustness_table

runner = CliRunner()


def test_latex_escape_turns_every_special_character_into_text():
    text = r"50% of p_1 ± 2 & #3 costs $4 {x} ~y ^z \ Δacc † ‡ 1232 -> 1200"
    assert latex_escape(text) == (
        r"50\% of p\_1 $\pm$ 2 \& \#3 costs \$4 \{x\} \textasciitilde{}y \textasciicircum{}z \textbackslash{} "
        r"$\Delta$acc \dag{} \ddag{} 1232 $\rightarrow$ 1200"
    )


def test_one_table_in_three_forms():
    table = ReportTable("t", "A_title 100%", ["criterion", "Δacc pts"], [["snip_x", "+0.50±0.71"], ["grasp", "-1.25"]],
                        note="xi = 0 pts", records=[{"criterion": "snip_x", "acc_change_mean": 0.5}, {"criterion": "grasp", "acc_change_mean": -1.25}])
    markdown = to_markdown(table)
    assert "| snip_x | +0.50±0.71 |" in markdown and "|:---|---:|" in markdown and markdown.rstrip().endswith("xi = 0 pts")
    assert list(csv.DictReader(io.StringIO(to_csv(table)))) == [
        {"criterion": "snip_x", "acc_change_mean": "0.5"}, {"criterion": "grasp", "acc_change_mean": "-1.25"}]
    tex = to_latex(table)
    lines = tex.splitlines()
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\begin{tabular}{lr}" in tex and r"\caption{A\_title 100\%}" in tex
    assert r"snip\_x & +0.50$\pm$0.71 \\" in lines and r"grasp & -1.25 \\" in lines
    cells = tex.replace(r"\label{tab:t}", "").replace(" & ", " ")  # the column separators are meant
    assert not re.search(r"(?<!\\)[%_&#]", cells)  # nothing else unescaped


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="1 cells for 2 headers"):
        ReportTable("t", "t", ["a", "b"], [["x"]])


def _experiment(out: Path, model: str) -> Path:
    [folder] = out.glob(f"{model}-on-*")
    return folder


def _signed(value: float) -> str:
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def test_every_expected_row_is_in_the_md_csv_and_tex(tmp_path_factory):
    runs, _ = finished_report(tmp_path_factory)
    out = runs / "report"
    assert (out / "index.md").is_file()
    at_init = _experiment(out, "test_resnet")
    dense = AT_INIT_ACC[("dense", 0)]
    tickets = {key: acc for key, acc in AT_INIT_ACC.items() if key[0] != "dense"}
    markdown = (at_init / "tickets.md").read_text()
    tex = (at_init / "tickets.tex").read_text()
    for (criterion, p), acc in tickets.items():
        changes = [100 * (a - d) for a, d in zip(acc, dense)]
        mean, std = sum(changes) / 2, abs(changes[0] - changes[1]) / 2 ** 0.5
        assert f"| {criterion} | {p} | {_signed(mean)}±{std:.2f} |" in markdown
        assert f"{criterion} & {p} & {_signed(mean)}$\\pm${std:.2f} &" in tex
    records = list(csv.DictReader(io.StringIO((at_init / "tickets.csv").read_text())))
    assert {(r["criterion"], int(r["p"])) for r in records} == set(tickets)
    grasp1 = next(r for r in records if (r["criterion"], r["p"]) == ("grasp", "1"))
    assert float(grasp1["acc_change_mean"]) == pytest.approx(0.5) and float(grasp1["mac_reduction"]) == pytest.approx(0.2)
    assert tex.count(r"\\") == len(tickets) + 1  # header + one line per ticket

    lottery = _experiment(out, "test_resnet_b")
    grid_md = (lottery / "lottery-grid.md").read_text()
    assert "| p | criterion | epoch 0 (0%) | epoch 2 (50%) | reinit |" in grid_md
    for criterion in ("kl", "random"):
        cells = [LOTTERY_ACC.get((criterion, column)) for column in (0, 2, "reinit")]
        expected = " | ".join("-" if acc is None else _signed(100 * (acc - LOTTERY_DENSE_ACC)) for acc in cells)
        assert f"| 1 | {criterion} | {expected} |" in grid_md
    grid_csv = list(csv.DictReader(io.StringIO((lottery / "lottery-grid.csv").read_text())))
    assert len(grid_csv) == len(LOTTERY_ACC)
    kl_reinit = next(r for r in grid_csv if (r["criterion"], r["rewind"]) == ("kl", "reinit"))
    assert float(kl_reinit["acc_change_mean"]) == pytest.approx(-2.0)
    assert r"1 & kl & +0.50 & -1.00 & -2.00 \\" in (lottery / "lottery-grid.tex").read_text()
    assert r"epoch 0 (0\%)" in (lottery / "lottery-grid.tex").read_text()


def test_robustness_table_when_runs_have_robustness_json(tmp_path_factory):
    runs, result = finished_report(tmp_path_factory)
    output = result.output
    folder = _experiment(runs / "report", "test_resnet")
    markdown = (folder / "robustness.md").read_text()
    # dense: noise 0.80 - 0.01 s (mean 77), blur 70 -> 73.5; grasp p=1: noise 82, blur 70 -> 76.0, +2.50 on both seeds
    assert "| dense | 2 | 91.00 | 73.50 | - | 70.00 | 77.00 | 12.50 |" in markdown
    assert "| grasp p=1 | 2 | 91.50 | 76.00 | +2.50±0.00 | 70.00 | 82.00 | 12.50 |" in markdown
    records = list(csv.DictReader(io.StringIO((folder / "robustness.csv").read_text())))
    assert [r["run"] for r in records] == ["dense", "grasp p=1"]
    assert float(records[1]["corrupted_change_pts_mean"]) == pytest.approx(2.5)
    assert r"grasp p=1 & 2 & 91.50 & 76.00 & +2.50$\pm$0.00 &" in (folder / "robustness.tex").read_text()
    assert not (_experiment(runs / "report", "test_resnet_b") / "robustness.md").exists()
    # The terminal shows it too: accuracy ± spread over seeds, and each ticket's change against dense.
    assert "(settings " in output and ": robustness" in output and output.count(": robustness") == 1
    assert re.search(r"grasp p=1 .* 2 .* 91\.50±0\.71 .* \+0\.50±0\.71 .* 76\.00±0\.00 .* \+2\.50±0\.00 ", output)


def test_the_report_compares_only_parts_computed_on_the_same_images(tmp_path):
    runs = write_runs(tmp_path / "runs")
    path = runs / "ticket-grasp1-s0" / "robustness.json"
    record = json.loads(path.read_text())
    record["corruptions"]["gaussian_noise"]["samples"] = 50  # other images than its dense run's
    path.write_text(json.dumps(record))
    [rows] = [rows for name, rows in robustness_table(runs).items() if name.startswith("test_resnet on")]
    table = robustness_report_table(rows, "t")
    # Seed 0 pairs only the blur (+0 pts), seed 1 noise (+5) and blur (+0): +1.25 ± 1.77 pts; accuracies unchanged.
    assert table.rows[1][:5] == ["grasp p=1", "2", "91.50", "76.00", "+1.25±1.77"]
    assert table.records[1]["corrupted_change_pts_mean"] == pytest.approx(1.25)


def test_a_broken_robustness_json_is_named(tmp_path):
    runs = write_runs(tmp_path / "runs")
    (runs / "dense-dense0-s0" / "robustness.json").write_text('{"format": 1, "clean": {"accuracy": 7}}')
    with pytest.raises(DataError, match=r"dense-dense0-s0/robustness.json is not a robustness record \(clean.accuracy"):
        write_report(runs)
    assert not (runs / "report").exists()  # nothing half-written


def test_the_report_folder_replaces_an_earlier_report_and_nothing_else(tmp_path, monkeypatch):
    cheap_figures(monkeypatch)
    runs = write_runs(tmp_path / "runs", robustness=False)
    out = tmp_path / "paper"
    write_report(runs, out)
    (out / "stale.txt").write_text("from an earlier report")
    write_report(runs, out)
    assert (out / MARKER_FILE).is_file() and not (out / "stale.txt").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "draft.tex").write_text("keep me")
    with pytest.raises(DataError, match="is a folder with other files"):
        write_report(runs, mine)
    assert (mine / "draft.tex").read_text() == "keep me"


def test_cli_writes_files_unless_told_not_to_and_refuses_a_bad_out_in_one_line(tmp_path, monkeypatch):
    cheap_figures(monkeypatch)
    runs = write_runs(tmp_path / "runs", robustness=False)
    result = runner.invoke(app, ["report", str(runs), "--no-files"])
    assert result.exit_code == 0 and "grasp" in result.output and not (runs / "report").exists()
    result = runner.invoke(app, ["report", str(runs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Report written to" in result.output and (tmp_path / "out" / "index.md").is_file()
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["report", str(runs), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output and len(result.output.strip().splitlines()) == 1


def test_reports_never_train(tmp_path_factory):
    runs, result = finished_report(tmp_path_factory)  # built with every training entry point raising
    assert result.exit_code == 0, result.output
    assert "Report written to" in result.output and len(list((runs / "report").rglob("*.png"))) == 9


def test_an_experiment_without_a_dense_run_is_skipped_and_said_so(tmp_path, monkeypatch):
    cheap_figures(monkeypatch)
    runs = write_runs(tmp_path / "runs", robustness=False)
    write_run(runs, "lonely", "other_model", "ticket", 0, 0.5, criterion="snip", p=1)
    report = write_report(runs)
    assert [name.split(" ")[0] for name in report.skipped] == ["other_model"]
    assert "Skipped (no finished dense run yet): other_model" in (report.out / "index.md").read_text()
