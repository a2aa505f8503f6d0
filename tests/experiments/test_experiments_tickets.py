"""Algorithm 2 end to end on tiny synthetic data: every column, idempotent reruns, resume after a kill."""

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

import layerlottery as ll
from layerlottery.cli import app
from layerlottery.config import load_settings
from layerlottery.experiments import tickets
from layerlottery.experiments.tickets import plan_runs, preflight, run_experiment
from layerlottery.reports import summarize
from layerlottery.training import Callback

from _experiment_helpers import tiny_overrides

# Result fields that measure time, so a resumed run may differ from an uninterrupted one in them alone.
TIMING_RECORD = {"epoch_train_seconds", "typical_epoch_seconds", "slowest_epoch_ratio", "timing_disturbed"}

TINY = tiny_overrides(2, "pruning.criteria=[snip,grasp]", "pruning.p=[1,2]", "pruning.samples_per_class=4", "seeds=[0,1]")


def tiny_settings(tmp_path, *extra):
    return load_settings("defaults", TINY + [f"runs_dir={tmp_path / 'runs'}", *extra])


def test_plan_pairs_every_ticket_with_the_dense_run_of_its_seed(tmp_path):
    specs = plan_runs(tiny_settings(tmp_path))
    assert [s.label for s in specs[:5]] == ["dense seed 0", "snip p=1 seed 0", "snip p=2 seed 0", "grasp p=1 seed 0", "grasp p=2 seed 0"]
    assert len(specs) == 10 and len({s.name for s in specs}) == 10


def test_tiny_experiment_fills_every_column_and_reruns_as_a_no_op(tmp_path):
    settings = tiny_settings(tmp_path, "carbon.enabled=true", "carbon.grid_intensity_g_per_kwh=400")
    first = run_experiment(settings, progress=False, log=lambda _: None)
    assert first.trained == 10
    dense, rows = summarize(first.runs)
    assert dense.seeds == 2 and 0 <= dense.test_acc_mean <= 1
    assert [(r.criterion, r.p) for r in rows] == [("grasp", 1), ("grasp", 2), ("snip", 1), ("snip", 2)]
    blocks = ll.find_blocks(ll.create_model("test_resnet", image_size=8, num_classes=4, shortcut="B"))
    for row in rows:
        assert row.seeds == 2
        for field, value in dataclasses.asdict(row).items():
            # The rewind point is a column of tickets after training only (None at initialization), perplexity
            # one of language models only.
            assert value is not None or field in ("rewind_epoch", "rewind_fraction", "perplexity_mean"), field
        assert (row.rewind_epoch, row.control, row.rounds) == (None, False, 1)
        assert row.speedup_mean > 0 and row.co2_reduction_mean < 1 and row.energy_measured is False
        assert row.param_reduction > 0
    for run in first.runs:
        if run["kind"] == "ticket":
            assert len(run["removed"]) == run["p"]
            assert run["macs"] == blocks.total_macs - sum(blocks[name].macs for name in run["removed"])
            assert run["emissions_kg"] == pytest.approx(run["energy_kwh"] * 400 / 1000)

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    again = run_experiment(settings, progress=False, log=lambda _: None)
    assert again.trained == 0 and again.runs == first.runs
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()} == stamps

    run_dir = tmp_path / "runs" / first.runs[1]["name"]
    assert {"settings.json", "environment.json", "plan.json", "metrics.csv", "result.json"} <= {p.name for p in run_dir.iterdir()}
    assert json.loads((run_dir / "settings.json").read_text())["hashed"]["ticket"]["criterion"] == "snip"
    assert (run_dir / "metrics.csv").read_text().splitlines()[0] == "run,epoch,metric,value"


class _KillAfter(Callback):
    """Raises in the middle of the run, after `epoch` epochs, before that epoch's checkpoint is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch + 1:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_a_kill_equals_an_uninterrupted_experiment(tmp_path, monkeypatch):
    extra = ["train.epochs=3", "seeds=[0]", "pruning.criteria=[grasp]", "pruning.p=[2]"]
    clean = run_experiment(tiny_settings(tmp_path / "clean", *extra), progress=False, log=lambda _: None)

    settings = tiny_settings(tmp_path / "killed", *extra)
    real_train = tickets.train

    def train_then_die(model, loader, train_settings, *, callbacks=(), **kwargs):
        killer = [_KillAfter(1)] if "ticket-" in str(kwargs["checkpoint_dir"]) else []
        return real_train(model, loader, train_settings, callbacks=[*callbacks, *killer], **kwargs)

    monkeypatch.setattr(tickets, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(settings, progress=False, log=lambda _: None)
    monkeypatch.setattr(tickets, "train", real_train)
    resumed = run_experiment(settings, progress=False, log=lambda _: None)
    assert resumed.trained == 1  # the dense run had finished; only the ticket resumed

    timing = {"train_seconds", "images_per_second", "peak_memory_bytes", "compile_seconds", *TIMING_RECORD}
    for a, b in zip(clean.runs, resumed.runs):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    for name in (run["name"] for run in clean.runs):
        a = torch.load(tmp_path / "clean" / "runs" / name / "checkpoints" / "last.pt", weights_only=True)
        b = torch.load(tmp_path / "killed" / "runs" / name / "checkpoints" / "last.pt", weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_run_command_prints_the_table_and_rejects_bad_settings(tmp_path):
    runner = CliRunner()
    args = ["run", "defaults", *TINY, "seeds=[0]", "pruning.p=[1]", f"runs_dir={tmp_path / 'runs'}", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for header in ["criterion", "Δacc pts", "wins", "MACs -%", "params -%", "speedup", "CO2 -%"]:
        assert header in result.stdout
    assert (tmp_path / "runs" / "experiment-table.md").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing trained" in again.output
    bad = runner.invoke(app, ["run", "defaults", "train.lr=-1"])
    assert bad.exit_code == 2 and "train.lr must be > 0" in bad.output and "Traceback" not in bad.output
    too_many = runner.invoke(app, ["run", "defaults", *TINY, "pruning.p=[1,4]", f"runs_dir={tmp_path / 'more'}"])
    assert too_many.exit_code == 2 and "pruning.p asks for 4 blocks but test_resnet allows at most 3" in too_many.output
    assert not (tmp_path / "more").exists()  # refused before any work
    dry = runner.invoke(app, ["pai", "--model", "cifar_resnet20", "--criteria", "grasp", "-p", "1,2", "--seeds", "0,1", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert len(json.loads(dry.stdout)["runs"]) == 6


def test_image_folder_experiment(tmp_path):
    """The DataLoader path: ImageNet-layout folders, decoded by workers, same experiment and table."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in range(3):
            folder = tmp_path / "images" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(20, 20, 3, generator=generator) * 80 + 80 * label).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    settings = tiny_settings(
        tmp_path, "data.name=folder", f"data.data_dir={tmp_path / 'images'}", "data.image_size=16",
        "data.workers=0", "data.options={}", "seeds=[0]", "pruning.criteria=[grasp]", "pruning.p=[1]",
        "pruning.samples_per_class=2", "train.batch_size=6",
    )
    result = run_experiment(settings, progress=False, log=lambda _: None)
    dense, rows = summarize(result.runs)
    assert result.trained == 2 and len(rows) == 1 and rows[0].criterion == "grasp"
    assert result.runs[0]["macs"] == ll.count_macs(ll.create_model("test_resnet", num_classes=3, image_size=16, shortcut="B"))
    with pytest.raises(ll.ConfigError, match="data.name=folder needs data.data_dir"):
        tiny_settings(tmp_path, "data.name=folder", "data.options={}")
    # The checks before any work read a folder's class sizes and test split from its file list.
    more = dataclasses.replace(settings, runs_dir=str(tmp_path / "more"), seeds=(1,))
    assert preflight(more).warnings == [
        "warning: the test split holds only 6 image(s), so accuracies move in steps of 16.67 points; "
        "compare tickets on 100 or more test images"
    ]
    greedy = dataclasses.replace(more, pruning=dataclasses.replace(more.pruning, samples_per_class=7))
    with pytest.raises(ll.DataError, match="pruning.samples_per_class is 7 but class 0 of folder holds only 6 training images"):
        preflight(greedy)


def test_sigkill_at_any_moment_then_rerun_equals_an_uninterrupted_run(tmp_path):
    """A real kill -9 of the command line in the middle of training, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    extra = ["train.epochs=40", "seeds=[0]", "pruning.criteria=[grasp]", "pruning.p=[1]", "-q"]
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    command = [sys.executable, "-m", "layerlottery.cli", "run", "defaults", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, *extra, f"runs_dir={clean_dir}"], check=True, capture_output=True, env=env, timeout=600)

    victim = subprocess.Popen([*command, *extra, f"runs_dir={killed_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not list(killed_dir.glob("dense-*/checkpoints/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    [checkpoint] = killed_dir.glob("dense-*/checkpoints/last.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] < 40  # killed in the middle of the run
    assert not list(killed_dir.glob("*/result.json"))

    subprocess.run([*command, *extra, f"runs_dir={killed_dir}"], check=True, capture_output=True, env=env, timeout=600)
    timing = {"train_seconds", "images_per_second", "peak_memory_bytes", "compile_seconds", *TIMING_RECORD}
    for clean_result in clean_dir.glob("*/result.json"):
        resumed = json.loads((killed_dir / clean_result.parent.name / "result.json").read_text())
        clean = json.loads(clean_result.read_text())
        assert {k: v for k, v in clean.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}


def test_report_reads_finished_runs_without_training(tmp_path):
    run_experiment(tiny_settings(tmp_path, "seeds=[0]", "pruning.p=[1]"), progress=False, log=lambda _: None)
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--json", "--no-files"])
    assert result.exit_code == 0, result.output
    [(name, table)] = json.loads(result.stdout).items()
    assert name.startswith("test_resnet on synthetic, 2 epochs")
    assert [(row["criterion"], row["p"]) for row in table["tickets"]] == [("grasp", 1), ("snip", 1)]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_ticket_keeps_the_theta0_of_the_dense_network_of_its_seed():
    from layerlottery.experiments.at_init import initial_model, ticket_at_init

    options = {"image_size": 8, "num_classes": 4}
    rng = torch.get_rng_state()
    dense = initial_model("test_resnet", options, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    ticket = ticket_at_init("test_resnet", "magnitude", p=2, seed=3, model_options=options)
    kept = ticket.pruned.state_dict()
    assert set(kept) < set(dense.state_dict()) and len(ticket.plan.removed) == 2
    assert all(torch.equal(value, dense.state_dict()[key]) for key, value in kept.items())
    other = initial_model("test_resnet", options, seed=4)
    assert not torch.equal(other.conv1.weight, dense.conv1.weight)
