"""`run --dry-run` says, per run, whether it is finished, partial (epoch k of n) or new."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from layerlottery.cli import app
from layerlottery.config import load_settings
from layerlottery.experiments.runs import RunDir, run_progress
from layerlottery.experiments.tickets import plan_runs
from layerlottery.training.checkpoint import checkpoint_path

OVERRIDES = ["train.epochs=5", "seeds=[0]", "pruning.p=[1,2]", "pruning.criteria=[snip]"]


def test_finished_partial_and_new(tmp_path) -> None:
    settings = load_settings("quickstart", [*OVERRIDES, f"runs_dir={tmp_path}"])
    finished, partial, new = (RunDir(tmp_path, spec) for spec in plan_runs(settings))
    finished.prepare()
    finished.result_file.write_text("{}")
    partial.prepare()
    assert str(run_progress(partial)) == "partial (epoch 0 of 5)"  # prepared, no epoch finished yet
    torch.save({"epoch": 3, "model": {"w": torch.zeros(4)}}, checkpoint_path(partial.checkpoints))
    assert [str(run_progress(d)) for d in (finished, partial, new)] == ["finished", "partial (epoch 3 of 5)", "new"]
    checkpoint_path(partial.checkpoints).write_bytes(b"not a checkpoint")
    assert str(run_progress(partial)) == "partial (checkpoint unreadable)"

    # The command shows the same (a real result file is checked before anything runs: leave it out here).
    finished.result_file.unlink()
    result = CliRunner().invoke(app, ["run", "quickstart", *OVERRIDES, "--runs-dir", str(tmp_path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [(r["status"], r["epochs_done"]) for r in runs] == [("partial", 0), ("partial", None), ("new", 0)]
