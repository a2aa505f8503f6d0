"""`score` and `prune` on a language model with the user's text: the run's calibration windows, the library's
scores bit for bit, a saved ticket with exactly p fewer layers, and one-line refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import layerlottery as ll
from layerlottery.cli import app
from layerlottery.config import DataSettings
from layerlottery.data.text import sample_windows
from layerlottery.experiments.at_init import initial_model, model_options_for
from layerlottery.experiments.sources import data_source

pytest.importorskip("transformers")  # in the dev extra

runner = CliRunner()
MODEL = "hf:layerlottery/tiny-gpt2"
SEQ_LEN = 16
WINDOWS = 4
SEED = 3
SMALL = {"n_layer": 4, "n_embd": 32}  # 4 layers of width 32: a model built and scored in well under a second


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def small_lm_flags(corpus: Path) -> list[str | Path]:
    flags: list[str | Path] = ["--data", "text", "--data-path", corpus, "--data-option", f"seq_len={SEQ_LEN}"]
    for key, value in SMALL.items():
        flags += ["--model-option", f"{key}={value}"]
    return flags + ["--samples-per-class", str(WINDOWS), "--seed", str(SEED)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """About 3 KB of varied UTF-8 text (some multi-byte), enough for dozens of 16-byte windows in each split."""
    lines = [f"Line {i}: the {'quick' if i % 3 else 'slow'} fox number {i * 7 % 13} jumps; café {i}.\n" for i in range(60)]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def library_scores(corpus: Path, criterion: str, split: str = "train") -> dict[str, float]:
    """The same scores computed without the CLI: run's text source, theta_0 of SEED, ll.score_blocks."""
    source = data_source(DataSettings(name="text", data_dir=str(corpus), options={"seq_len": SEQ_LEN}))
    if split == "train":
        batch = source.scoring_batch(WINDOWS, SEED, torch.device("cpu"))  # what `run` scores its tickets with
    else:
        batch = sample_windows(source.corpus.test, SEQ_LEN, WINDOWS, SEED)
    model = initial_model(MODEL, model_options_for(source, **SMALL), SEED)
    return dict(ll.score_blocks(model, criterion, batch).to_dict()["scores"])


@pytest.mark.parametrize("criterion", ["snip", "block_influence"])
def test_score_prints_the_library_scores_of_the_runs_calibration_windows(corpus: Path, criterion: str) -> None:
    result = invoke("score", MODEL, "-c", criterion, *small_lm_flags(corpus), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = library_scores(corpus, criterion)
    assert report["scores"] == expected  # bitwise: JSON round-trips a float exactly
    assert list(expected) == [f"lm.transformer.h.{i}" for i in range(SMALL["n_layer"])]
    assert report["ranking"] == sorted(expected, key=lambda name: (expected[name], list(expected).index(name)))
    table = invoke("score", MODEL, "-c", criterion, *small_lm_flags(corpus))
    assert table.exit_code == 0 and f"{expected['lm.transformer.h.0']:.6g}" in table.stdout


def test_score_on_the_test_split_draws_windows_of_the_test_text(corpus: Path) -> None:
    result = invoke("score", MODEL, "-c", "snip", *small_lm_flags(corpus), "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert scores == library_scores(corpus, "snip", split="test")
    assert scores != library_scores(corpus, "snip", split="train")


def test_prune_removes_exactly_p_layers_and_the_saved_ticket_loads(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    result = invoke("prune", MODEL, "-c", "block_influence", "-p", "2", "--out", out, *small_lm_flags(corpus), "--json")
    assert result.exit_code == 0, result.output
    expected = library_scores(corpus, "block_influence")
    # The paper's default rules: layer 0 (first of its stage) is kept, the two lowest of layers 1-3 go.
    weakest = sorted(["lm.transformer.h.1", "lm.transformer.h.2", "lm.transformer.h.3"], key=expected.__getitem__)[:2]
    plan = ll.RemovalPlan.load(out / "plan.json")
    assert sorted(plan.removed) == sorted(weakest)
    assert set(weakest) <= set(plan.scores) and plan.scores == {name: expected[name] for name in plan.scores}
    assert json.loads((out / "summary.json").read_text())["data"] == "text"

    pruned, loaded_plan = ll.load_pruned(out / "pruned.pt")
    assert loaded_plan.removed == plan.removed
    assert len(pruned.lm.transformer.h) == SMALL["n_layer"] - 2 and pruned.lm.config.n_layer == SMALL["n_layer"] - 2
    tokens = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = pruned.eval()(tokens)
        exported = torch.export.load(str(out / "pruned.pt2")).module()(tokens)
    assert logits.shape == (2 * SEQ_LEN, 256)
    torch.testing.assert_close(exported, logits)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "text", "-c", "snip"], "--data text needs the text to score on"),
        (["--data", "text", "--data-path", "{missing}", "-c", "snip"], "does not exist"),
        (["--data", "text", "--data-path", "{empty}", "-c", "snip"], "holds 0 tokens"),
        (["--data", "digits", "-c", "snip"], "is a language model and reads text, not digits"),
        (["-c", "block_influence"], "is a language model and block_influence scores it on text"),
        (["--data", "text", "--data-path", "{corpus}", "-c", "synflow"], "synflow feeds an all-ones input"),
        (["--data", "text", "--data-path", "{corpus}", "-c", "hrank"], "hrank ranks 2-D feature maps"),
        (["--data", "text", "--data-path", "{corpus}", "-c", "pls"], "does not apply to a language model"),
        (["--data", "text", "--data-path", "{corpus}", "--data-option", "window=8", "-c", "snip"], "do not apply to text"),
    ],
)
def test_language_model_mistakes_are_one_line_and_write_nothing(corpus: Path, tmp_path: Path, args: list[str], message: str) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    paths = {"{corpus}": str(corpus), "{empty}": str(empty), "{missing}": str(tmp_path / "missing.txt")}
    out = tmp_path / "out"
    result = invoke("prune", MODEL, "-p", "1", "--out", out, *[paths.get(arg, arg) for arg in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_text_for_an_image_network_is_refused_in_one_line(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("prune", "test_resnet", "-c", "snip", "-p", "1", "--data", "text", "--data-path", corpus, "--out", out)
    assert result.exit_code == 2, result.output
    assert "--data text is for language models" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_data_path_is_the_data_dir_of_image_datasets_too(tmp_path: Path) -> None:
    # One option, two names: --data-path and --data-dir reach the same setting (data.data_dir).
    flags = ["score", "test_resnet", "-c", "snip", "--data", "synthetic", "--data-option", "image_size=8", "--json"]
    by_dir = invoke(*flags, "--data-dir", tmp_path)
    by_path = invoke(*flags, "--data-path", tmp_path)
    assert by_dir.exit_code == 0 and by_path.exit_code == 0, by_dir.output + by_path.output
    assert json.loads(by_dir.stdout)["scores"] == json.loads(by_path.stdout)["scores"]
