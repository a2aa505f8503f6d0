"""The ``hf:`` model source: Hugging Face causal LMs wrapped as token classifiers, built from tiny local
configurations (no downloads), checked against the Hugging Face model's own outputs and loss."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import transformers

from layerlottery.criteria import get_criterion, list_criteria, score_blocks
from layerlottery.errors import ConfigError, LayerLotteryError
from layerlottery.experiments.at_init import initial_model
from layerlottery.metrics import count_macs
from layerlottery.metrics.cka import penultimate_cka
from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks
from layerlottery.models.hf_causal_lm import CausalLM, hf_model_of, save_hf_pretrained
from layerlottery.surgery import remove_blocks, select_blocks
from layerlottery.surgery.layer_lists import renamed_layers
from layerlottery.training.loop import evaluate
from layerlottery.data.text import TextLoader

SEQ = 12
VOCAB = 256


def gpt2_config(folder, layers: int = 4, **fields):
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=32, n_head=2, n_positions=32, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, **fields
    )
    config.save_pretrained(folder)
    return str(folder)


def llama_config(folder, layers: int = 4):
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    config.save_pretrained(folder)
    return str(folder)


@pytest.fixture(params=["gpt2", "llama"])
def config_dir(request, tmp_path):
    return (gpt2_config if request.param == "gpt2" else llama_config)(tmp_path / request.param)


def tokens(n: int = 3, length: int = SEQ + 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_theta0_is_a_function_of_the_seed(config_dir):
    options = {"num_classes": VOCAB, "seq_len": SEQ}
    first, again, other = (initial_model(f"hf:{config_dir}", options, seed) for seed in (0, 0, 1))
    pairs = list(zip(first.state_dict().values(), again.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))
    assert isinstance(first, CausalLM) and first.default_input_shape == (SEQ,)


def test_logits_are_the_hf_models_flattened_and_perplexity_is_exp_of_its_loss(config_dir):
    model = initial_model(f"hf:{config_dir}", {"num_classes": VOCAB, "seq_len": SEQ}, 0).eval()
    stream = tokens(1, 5 * SEQ + 1).reshape(-1)  # 5 windows
    loader = TextLoader(stream, SEQ, batch_size=2, shuffle=False)
    loss, _accuracy = evaluate(model, loader, "cpu")
    windows = torch.stack([stream[k * SEQ : k * SEQ + SEQ + 1] for k in range(5)])  # each reads T, predicts T
    with torch.no_grad():
        hf = model.lm(windows, labels=windows)  # Hugging Face shifts the labels itself
        assert torch.equal(model(windows[:, :SEQ]), hf.logits[:, :SEQ].reshape(-1, VOCAB))
    assert math.exp(loss) == pytest.approx(math.exp(hf.loss.item()), rel=1e-5)


def test_options_fit_the_data_and_mistakes_are_one_line(tmp_path):
    folder = gpt2_config(tmp_path / "g")
    model = create_model(f"hf:{folder}", num_classes=300, seq_len=8, n_layer=2, n_embd=16)
    assert model.lm.config.vocab_size == 300 and len(model.lm.transformer.h) == 2 and model.lm.config.n_embd == 16
    assert model(tokens(2, 8)).shape == (16, 300)
    mistakes = [
        (dict(shortcut="A"), "shortcut"),
        (dict(zero_init_residual=True), "zero_init_residual"),
        (dict(in_channels=3, image_size=32, num_classes=10), "reads text"),
        (dict(seq_len=64), "longer than the 32 positions"),
        (dict(hidden_sizes=3), "no option or configuration field 'hidden_sizes'"),
        (dict(attn_implementation="flash"), "attn_implementation"),
        (dict(pretrained=True), "could not be built"),  # a folder with a config and no weights
    ]
    for options, words in mistakes:
        with pytest.raises(ConfigError, match=words) as caught:
            create_model(f"hf:{folder}", **options)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="no Hugging Face model configuration"):
        create_model(f"hf:{tmp_path / 'nothing'}")


def test_pretrained_loads_the_saved_weights_and_checks_the_vocabulary(tmp_path):
    folder = gpt2_config(tmp_path / "g")
    torch.manual_seed(3)
    trained = transformers.GPT2LMHeadModel(transformers.AutoConfig.from_pretrained(folder))
    trained.save_pretrained(tmp_path / "trained")
    model = create_model(f"hf:{tmp_path / 'trained'}", pretrained=True, num_classes=200, seq_len=SEQ)  # ids < 200 fit
    assert all(torch.equal(a, b) for a, b in zip(model.lm.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(ConfigError, match="tokenize with the model's own tokenizer"):
        create_model(f"hf:{tmp_path / 'trained'}", pretrained=True, num_classes=VOCAB + 1)


def test_shipped_tiny_gpt2_builds_without_download():
    model = create_model("hf:layerlottery/tiny-gpt2", num_classes=VOCAB, seq_len=16)
    assert len(model.lm.transformer.h) == 6 and model.lm.config.n_embd == 128
    with pytest.raises(ConfigError, match="without trained weights"):
        create_model("hf:layerlottery/tiny-gpt2", pretrained=True)
    with pytest.raises(ConfigError, match="tiny-gpt2"):
        create_model("hf:layerlottery/nope")


def test_missing_transformers_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'layerlottery\[hf\]'"):
        create_model(f"hf:{tmp_path}")


def test_pruned_model_saves_loads_and_generates_with_plain_transformers(config_dir, tmp_path):
    model = initial_model(f"hf:{config_dir}", {"num_classes": VOCAB, "seq_len": SEQ}, 0).eval()
    blocks = find_blocks(model)
    layers = [block.name for block in blocks]
    assert layers[0].startswith("lm.") and layers[-1].endswith(".3") and all(block.removable for block in blocks)
    scores = score_blocks(model, "block_influence", tokens())
    plan = select_blocks(blocks, scores, p=1, protect="none", min_per_stage=1)
    pruned = remove_blocks(model, plan)
    (removed,) = plan.removed
    assert count_macs(model) - count_macs(pruned) == next(b.macs for b in blocks if b.name == removed)
    assert hf_model_of(pruned).config.num_hidden_layers == 3
    assert set(renamed_layers(model, plan.removed).values()) <= {b.name for b in find_blocks(pruned)}

    folder = save_hf_pretrained(pruned, tmp_path / "pruned")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()  # plain transformers
    ids = tokens(2, SEQ)
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits.reshape(-1, VOCAB), pruned(ids), atol=1e-5)
    generated = loaded.generate(ids[:, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 7)
    with pytest.raises(LayerLotteryError, match="already exists"):
        save_hf_pretrained(pruned, folder)


def _hf_loss(model: CausalLM, windows: torch.Tensor) -> torch.Tensor:
    return model.lm(windows, labels=windows, use_cache=False).loss  # mean next-token cross-entropy, HF's own


def test_snip_and_gradnorm_use_the_language_model_loss(config_dir):
    model = initial_model(f"hf:{config_dir}", {"num_classes": VOCAB, "seq_len": SEQ}, 0)
    windows = tokens(4, SEQ + 1)
    snip = score_blocks(model, "snip", windows)  # bare token ids: each sequence's next tokens are its labels
    gradnorm = score_blocks(model, "gradnorm", (windows[:, :-1], windows[:, 1:]))
    reference = initial_model(f"hf:{config_dir}", {"num_classes": VOCAB, "seq_len": SEQ}, 0).eval()
    weights = {name: p for name, p in reference.named_parameters() if p.dim() >= 2}
    grads = dict(zip(weights, torch.autograd.grad(_hf_loss(reference, windows), list(weights.values()))))
    for block in find_blocks(reference):
        names = [name for name in weights if name.startswith(block.name + ".")]
        expected_snip = sum(float((grads[n] * weights[n].detach()).abs().sum(dtype=torch.float64)) for n in names)
        expected_norm = math.sqrt(sum(float(grads[n].square().sum(dtype=torch.float64)) for n in names))
        assert snip[block.name] == pytest.approx(expected_snip, rel=1e-4)
        assert gradnorm[block.name] == pytest.approx(expected_norm, rel=1e-4)


def test_grasp_is_w_times_hessian_gradient_of_the_language_model_loss(tmp_path):
    folder = gpt2_config(tmp_path / "g", layers=2)
    model = initial_model(f"hf:{folder}", {"num_classes": VOCAB, "seq_len": SEQ}, 0)
    windows = tokens(2, SEQ + 1)
    scores = score_blocks(model, "grasp", windows, temperature=1.0)
    reference = initial_model(f"hf:{folder}", {"num_classes": VOCAB, "seq_len": SEQ}, 0).eval()
    reference.lm.set_attn_implementation("eager")  # fused attention has no second derivative
    weights = {name: p for name, p in reference.named_parameters() if p.dim() >= 2}
    params = list(weights.values())
    grads = torch.autograd.grad(_hf_loss(reference, windows), params, create_graph=True)
    inner = sum((g.detach() * g2).sum() for g, g2 in zip(grads, grads))
    hg = dict(zip(weights, torch.autograd.grad(inner, params)))
    for block in find_blocks(reference):
        expected = sum(float((weights[n].detach() * hg[n]).sum(dtype=torch.float64)) for n in weights if n.startswith(block.name + "."))
        assert scores[block.name] == pytest.approx(expected, rel=1e-3, abs=1e-9)


@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion_scores_a_language_model_or_refuses_in_one_line(criterion, tmp_path):
    model = initial_model(f"hf:{gpt2_config(tmp_path / 'g', layers=3)}", {"num_classes": VOCAB, "seq_len": SEQ}, 0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    if get_criterion(criterion).images_only:
        with pytest.raises(ConfigError, match="does not apply to a language model") as caught:
            score_blocks(model, criterion, tokens())
        assert "\n" not in str(caught.value)
        return
    scores = score_blocks(model, criterion, tokens())
    assert list(scores) == [f"lm.transformer.h.{i}" for i in range(3)]
    assert all(math.isfinite(value) for value in scores.values())
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_cka_reads_a_language_models_head_token_by_token(tmp_path):
    model = initial_model(f"hf:{gpt2_config(tmp_path / 'g')}", {"num_classes": VOCAB, "seq_len": SEQ}, 0)
    one_sequence = [tokens(1, SEQ)]  # one sample, SEQ tokens: rows of (tokens, width) features, not one row
    assert penultimate_cka(model, model, one_sequence) == pytest.approx(1.0)


def test_a_plan_replays_its_language_model_ticket_bit_for_bit(tmp_path):
    from layerlottery.experiments.at_init import ticket_at_init
    from layerlottery.surgery import RemovalPlan

    name = f"hf:{gpt2_config(tmp_path / 'g')}"
    ticket = ticket_at_init(
        name, "snip", scoring_batch=tokens(), p=1, protect="none", min_per_stage=1, seed=5,
        model_options={"num_classes": VOCAB, "seq_len": SEQ},
    )  # fmt: skip
    ticket.plan.save(tmp_path / "plan.json")
    rebuilt = RemovalPlan.load(tmp_path / "plan.json").build_model()
    assert rebuilt.lm.config.n_layer == 3 and rebuilt.default_input_shape == (SEQ,)
    pairs = zip(ticket.pruned.state_dict().items(), rebuilt.state_dict().items())
    assert all(a == b and torch.equal(x, y) for (a, x), (b, y) in pairs)
