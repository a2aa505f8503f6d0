"""The command line: tables and JSON from the library, one-line errors with status 2, atomic output."""

import json

import pytest
import torch
from typer.testing import CliRunner

import layerlottery as ll
from layerlottery.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_models_lists_the_registry():
    result = invoke("models", "--json")
    assert result.exit_code == 0
    from layerlottery.models.registry import list_model_sources

    sources = [f"{prefix}:NAME" for prefix in list_model_sources()]  # then torchvision:NAME, timm:NAME, ...
    assert [row["name"] for row in json.loads(result.stdout)] == ll.list_models() + sources
    assert "cifar_resnet56" in invoke("models").stdout


def test_blocks_reports_the_papers_counts():
    result = invoke("blocks", "cifar_resnet32", "--shortcut", "B", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total_macs"] == 69_124_736 and report["max_removable"] == 9
    assert [row["status"] for row in report["blocks"]].count("candidate") == 12
    table = invoke("blocks", "cifar_resnet32", "--shortcut", "B").stdout
    assert "layer3.4" in table and "69,124,736 MACs" in table


def test_blocks_of_a_language_model_use_its_own_sequence_length_and_vocabulary():
    result = invoke("blocks", "hf:layerlottery/tiny-gpt2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = ll.create_model("hf:layerlottery/tiny-gpt2")  # the shipped config, no image options
    assert report["total_macs"] == ll.count_macs(model) and report["total_params"] == ll.count_params(model)
    assert len(report["blocks"]) == 6 and report["max_removable"] == 4


def test_score_ranks_blocks_lowest_first():
    result = invoke("score", "test_resnet", "-c", "snip", "--data", "synthetic", "--data-option", "image_size=8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ranked = [report["scores"][name] for name in report["ranking"]]
    assert ranked == sorted(ranked) and report["criterion"] == "snip"
    assert report["options"]["aggregation"] == "sum"


def test_data_free_criterion_needs_no_dataset():
    result = invoke("score", "cifar_resnet20", "-c", "magnitude", "-o", "norm=l2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["options"]["norm"] == "l2"


def test_prune_writes_a_complete_ticket(tmp_path):
    out = tmp_path / "ticket"
    args = ["prune", "cifar_resnet20", "--shortcut", "B", "-c", "grasp", "-p", "2", "--data", "synthetic", "--out", str(out)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Cost" in result.stdout and "MACs" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "pruned.pt", "pruned.pt2", "summary.json"]
    plan = ll.RemovalPlan.load(out / "plan.json")
    assert plan.p == 2 and plan.criterion == "grasp" and plan.model_options["shortcut"] == "B"
    pruned, loaded_plan = ll.load_pruned(out / "pruned.pt")
    assert loaded_plan == plan and ll.count_macs(pruned) == plan.pruned_macs
    program = torch.export.load(str(out / "pruned.pt2")).module()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(program(x), pruned.eval()(x))
    assert json.loads((out / "summary.json").read_text())["plan"]["removed"] == list(plan.removed)

    again = invoke(*args)
    assert again.exit_code == 2 and "already exists" in again.output
    assert invoke(*args, "--overwrite").exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ticket"]  # no staging folders left


@pytest.mark.parametrize("out", [".", ".."])
def test_prune_overwrite_never_empties_the_working_folder(tmp_path, monkeypatch, out):
    """The data-loss case: `--out . --overwrite` in a folder of the user's files must refuse, before any work."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    (tmp_path / "other.txt").write_text("also mine")
    monkeypatch.chdir(work)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = invoke("prune", "cifar_resnet20", "-c", "magnitude", "-p", "1", "--out", out, "--overwrite")
    assert result.exit_code == 2
    assert "only replaces a ticket folder" in result.output or "current folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["blocks", "resnet33"], "unknown model 'resnet33'"),
        (["score", "cifar_resnet20", "-c", "hrankk"], "unknown criterion 'hrankk'"),
        (["score", "cifar_resnet20", "-c", "grasp", "--data", "imagenet"], "unknown dataset 'imagenet'"),
        (["score", "cifar_resnet20", "-c", "magnitude", "-o", "norm"], "KEY=VALUE"),
        (["score", "cifar_resnet20", "-c", "magnitude", "-o", "norm=l3"], "invalid option norm='l3'"),
        (["score", "cifar_resnet20", "-c", "snip", "--data", "mnist", "--data-dir", "/nonexistent"], "not found"),
        (["prune", "cifar_resnet32", "-c", "random", "-p", "10", "--out", "{out}"], "at most 9 of 15"),
        (["prune", "cifar_resnet32", "-c", "random", "--out", "{out}"], "-p N"),
        (["prune", "test_plain_cnn", "-c", "random", "-p", "1", "--out", "{out}"], "no residual blocks"),
    ],
)
def test_user_errors_are_one_line_with_status_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke(*[a.replace("{out}", str(out)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_help_teaches_with_examples():
    result = invoke("prune", "--help")
    assert result.exit_code == 0
    assert "Examples" in result.stdout and "--mac-reduction" in result.stdout


def test_public_api_resolves_and_cli_starts_without_torch():
    import subprocess
    import sys

    for name in ll.__all__:
        assert getattr(ll, name) is not None
    code = "import sys, layerlottery.cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
