"""Trained weights for scoring: run directories, checkpoint files and state dicts, through the library and
`layerlottery score/prune --checkpoint`; weights of another architecture are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from layerlottery.cli import app
from layerlottery.config import DataSettings, ModelSettings, TrainSettings
from layerlottery.criteria import score_blocks
from layerlottery.experiments.runs import RunDir, RunSpec
from layerlottery.experiments.trained import load_trained_model, read_trained_state
from layerlottery.models import create_model
from layerlottery.surgery import load_pruned
from layerlottery.training.checkpoint import CheckpointError, model_fingerprint, save_checkpoint, save_snapshot

runner = CliRunner()
SYNTHETIC_8 = ["--data", "synthetic", "--data-option", "image_size=8"]


def _trained(seed: int = 3, **options) -> torch.nn.Module:
    """A test_resnet whose weights are not any seed's theta_0: layer1.1 scaled up, BN statistics moved."""
    torch.manual_seed(seed)
    model = create_model("test_resnet", image_size=8, **options)
    with torch.no_grad():
        model.layer1[1].conv1.weight.mul_(50.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.fill_(2.0)
    return model


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _run_dir(tmp_path, model: torch.nn.Module, name: str = "test_resnet", finished: bool = True) -> RunDir:
    spec = RunSpec(ModelSettings(name=name), DataSettings(name="synthetic"), TrainSettings(epochs=1), seed=0)
    run = RunDir(tmp_path / "runs", spec)
    run.prepare()
    state = {key: 0 for key in ("settings", "seed", "epoch", "optimizer", "scheduler", "history", "timing", "rng")}
    save_checkpoint(run.checkpoints / "last.pt", {**state, "fingerprint": model_fingerprint(model), "model": model.state_dict()})
    if finished:
        run.result_file.write_text("{}")
    return run


# ------------------------------------------------------------------------------------------- library


def test_every_kind_of_weights_file_loads_bitwise(tmp_path):
    model = _trained()
    files = {
        "plain.pt": model.state_dict(),
        "wrapped.pt": {"state_dict": model.state_dict()},
        "parallel.pt": {f"module.{key}": value for key, value in model.state_dict().items()},
    }
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
    save_snapshot(tmp_path / "epoch_000.pt", model, 0)
    run = _run_dir(tmp_path, model)
    for path in [*(tmp_path / name for name in files), tmp_path / "epoch_000.pt", run.path, run.checkpoints]:
        loaded = load_trained_model(path, "test_resnet", {"image_size": 8})
        assert _same_state(loaded, model), path


def test_weights_of_another_architecture_are_refused_naming_the_difference(tmp_path):
    torch.save(_trained(num_classes=5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match=r"fc.weight is \(5, 8\) there, \(10, 8\) here") as info:
        load_trained_model(tmp_path / "five.pt", "test_resnet", {"image_size": 8})
    assert "\n" not in str(info.value)
    torch.save(_trained(blocks_per_stage=2).state_dict(), tmp_path / "shallow.pt")
    with pytest.raises(CheckpointError, match=r"tensors missing \(e.g. layer1.2.conv1.weight\)"):
        load_trained_model(tmp_path / "shallow.pt", "test_resnet", {"image_size": 8})
    run = _run_dir(tmp_path, _trained(), name="cifar_resnet20")
    with pytest.raises(CheckpointError, match="trained cifar_resnet20, not test_resnet; pass cifar_resnet20"):
        load_trained_model(run.path, "test_resnet", {"image_size": 8})


def test_unfinished_runs_pruned_networks_and_other_files_are_refused(tmp_path):
    run = _run_dir(tmp_path, _trained(), finished=False)
    with pytest.raises(CheckpointError, match="has not finished"):
        read_trained_state(run.path)
    assert len(read_trained_state(run.checkpoints / "last.pt").state) > 0  # the file itself is accepted
    torch.save({"format": "layerlottery-pruned", "state_dict": {}}, tmp_path / "pruned.pt")
    torch.save({"lr": torch.tensor(0.1), "epochs": 3}, tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    for path, message in [
        ("pruned.pt", "is a pruned network"),
        ("other.pt", "holds no state dict"),
        ("empty", "is not a run directory"),
        ("missing.pt", "no weights file at"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            read_trained_state(tmp_path / path)


# ----------------------------------------------------------------------------------------------- CLI


def test_score_with_checkpoint_scores_the_trained_weights(tmp_path):
    model = _trained()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    args = ["score", "test_resnet", "-c", "magnitude", *SYNTHETIC_8, "--json"]
    trained = runner.invoke(app, [*args, "--checkpoint", str(tmp_path / "weights.pt")])
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    assert report["scores"] == dict(score_blocks(model, "magnitude"))
    assert report["ranking"][-1] == "layer1.1" and report["checkpoint"] == str(tmp_path / "weights.pt")
    initial = json.loads(runner.invoke(app, args).stdout)
    assert initial["scores"] != report["scores"] and initial["checkpoint"] is None


def test_score_a_trained_run_with_a_post_training_criterion(tmp_path):
    run = _run_dir(tmp_path, _trained())
    result = runner.invoke(app, ["score", "test_resnet", "-c", "kl", *SYNTHETIC_8, "--checkpoint", str(run.path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["options"]["bn_mode"] == "eval" and len(report["scores"]) == 7


def test_prune_with_checkpoint_keeps_the_trained_weights(tmp_path):
    model = _trained()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "ticket"
    result = runner.invoke(
        app,
        ["prune", "test_resnet", "-c", "expectabs", *SYNTHETIC_8, "-p", "1", "--checkpoint", str(tmp_path / "weights.pt"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    pruned, plan = load_pruned(out / "pruned.pt")
    trained = model.state_dict()
    for key, value in pruned.state_dict().items():
        assert torch.equal(value, trained[key]), key  # every kept tensor is the trained one, bitwise
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(tmp_path / "weights.pt")


def test_checkpoint_of_another_architecture_is_one_line_with_status_2(tmp_path):
    torch.save(_trained(num_classes=5).state_dict(), tmp_path / "five.pt")
    out = tmp_path / "ticket"
    for args in (
        ["score", "test_resnet", "-c", "magnitude", *SYNTHETIC_8],
        ["prune", "test_resnet", "-c", "magnitude", *SYNTHETIC_8, "-p", "1", "--out", str(out)],
    ):
        result = runner.invoke(app, [*args, "--checkpoint", str(tmp_path / "five.pt")])
        assert result.exit_code == 2
        assert "does not fit test_resnet" in result.output and "fc.weight" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()  # nothing half-written
