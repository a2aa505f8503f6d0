"""A Hugging Face causal LM through a whole experiment: a trained tiny GPT-2 from a local folder (no
download), text from a generated file, dense + a Block Influence ticket, perplexity in the results, the
pruned run saved as a Hugging Face folder that plain transformers loads and generates with."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

from typer.testing import CliRunner

from layerlottery.cli import app
from layerlottery.config import load_settings
from layerlottery.errors import ConfigError, DataError, PruningError
from layerlottery.experiments.hf_export import save_run_hf
from layerlottery.experiments.runs import RunDir
from layerlottery.experiments.similarity import trained_run_network
from layerlottery.experiments.sources import data_source
from layerlottery.experiments.tickets import preflight, run_experiment
from layerlottery.models.blocks import find_blocks
from layerlottery.reports.collect import collect_runs

SEQ = 16


def words(count: int, seed: int = 0) -> str:
    vocabulary = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    generator = torch.Generator().manual_seed(seed)
    return " ".join(vocabulary[i] for i in torch.randint(0, len(vocabulary), (count,), generator=generator).tolist())


@pytest.fixture
def trained_lm(tmp_path):
    """A 'trained' GPT-2 in a local folder, as from_pretrained reads the Hub's."""
    config = transformers.GPT2Config(n_layer=4, n_embd=32, n_head=2, n_positions=32, vocab_size=256, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "lm")
    return tmp_path / "lm"


def settings(tmp_path, lm, text, *extra):
    return load_settings("lm_quickstart", [
        f"model.name=hf:{lm}", "model.options={pretrained: true}",
        f"data.data_dir={text}", f"data.options={{seq_len: {SEQ}}}",
        "train.epochs=1", "train.batch_size=8", "train.lr=0.05", "train.device=cpu", "carbon.enabled=false",
        "pruning.criteria=[block_influence]", "pruning.p=[1]", "pruning.samples_per_class=4",
        f"runs_dir={tmp_path / 'runs'}", *extra,
    ])  # fmt: skip


def test_dense_and_ticket_report_perplexity_and_the_ticket_saves_as_a_hf_folder(tmp_path, trained_lm):
    text = tmp_path / "corpus.txt"
    text.write_text(words(400))
    config = settings(tmp_path, trained_lm, text)
    result = run_experiment(config, progress=False, log=lambda _line: None)
    dense, ticket = result.runs
    for run in (dense, ticket):
        assert run["perplexity"] == pytest.approx(math.exp(run["test_loss"]))
        assert run["best_perplexity"] == run["perplexity"] and run["tokens_per_second"] == run["images_per_second"]
        assert run["tokenizer"] == "bytes" and run["seq_len"] == SEQ
    assert ticket["criterion"] == "block_influence" and len(ticket["removed"]) == 1
    (removed,) = ticket["removed"]
    dense_blocks = {block.name: block for block in find_blocks(_built(config))}
    assert dense["macs"] - ticket["macs"] == dense_blocks[removed].macs  # at seq_len tokens per sample
    (group,) = collect_runs(tmp_path / "runs").values()  # reports read LM runs
    assert sorted(r["kind"] for r in group) == ["dense", "ticket"]
    report = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--no-files"])
    assert report.exit_code == 0 and "block_influence" in report.output

    ticket_dir = RunDir(config.runs_dir, _ticket_spec(config))
    folder = save_run_hf(ticket_dir.path, tmp_path / "pruned")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()  # no layerlottery involved
    assert loaded.config.num_hidden_layers == 3 and len(loaded.transformer.h) == 3
    ids = torch.tensor([list(b"the cat sat")])
    assert loaded.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0).shape == (1, ids.shape[1] + 4)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["n_layer"] == 3
    network = trained_run_network(ticket_dir, data_source(config.data), torch.device("cpu")).eval()
    with torch.no_grad():  # the folder holds the trained ticket itself
        assert torch.allclose(loaded(ids).logits.reshape(-1, 256), network(ids), atol=1e-5)


def _built(config):
    from layerlottery.models import create_model

    return create_model(config.model.name, **config.model.factory_options(), num_classes=256, seq_len=SEQ)


def _ticket_spec(config):
    from layerlottery.experiments.tickets import plan_runs

    return next(spec for spec in plan_runs(config) if spec.ticket is not None)


def test_mistakes_stop_before_training(tmp_path, trained_lm):
    text = tmp_path / "corpus.txt"
    text.write_text(words(400))
    with pytest.raises(DataError, match="does not exist"):
        preflight(settings(tmp_path, trained_lm, tmp_path / "missing.txt"))
    (tmp_path / "short.txt").write_text("the cat")
    with pytest.raises(DataError, match="fewer than one window"):
        preflight(settings(tmp_path, trained_lm, tmp_path / "short.txt"))
    with pytest.raises(PruningError, match="allows at most 2"):  # 4 layers, the first protected, 2 kept per stage
        preflight(settings(tmp_path, trained_lm, text, "pruning.p=[3]"))
    for section in ("pruning", "lottery"):  # criteria that need images or classes, at init and after training
        with pytest.raises(ConfigError, match="synflow" if section == "pruning" else "hrank"):
            criterion = "synflow" if section == "pruning" else "hrank"
            extra = ["lottery.rewind_epochs=[0]"] if section == "lottery" else []
            preflight(settings(tmp_path, trained_lm, text, f"{section}.criteria=[{criterion}]", f"{section}.p=[1]", *extra))
    # Data the network cannot read: images for the language model, text for an image network (both lottery sections too).
    for extra in ([], ["lottery.criteria=[random]", "lottery.p=[1]", "lottery.rewind_epochs=[0]"]):
        with pytest.raises(ConfigError, match="is a language model and reads text, not digits images; set data.name=text"):
            preflight(settings(tmp_path, trained_lm, text, "data.name=digits", "data.options={}", *extra))
        with pytest.raises(ConfigError, match="data.name=text is for language models .* and test_resnet reads images"):
            preflight(settings(tmp_path, trained_lm, text, "model.name=test_resnet", "model.options={}", *extra))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
