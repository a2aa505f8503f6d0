"""Hugging Face transformer layers as removable blocks: tiny random models, no downloads.

Removing layer i must equal skipping it (its output replaced by its input, h' = h), leave a model whose
configuration, cache indices, generation and save/load agree with a model built that shallow, and leave
the dense model untouched.
"""

from __future__ import annotations

import pytest
import torch
import transformers  # in the dev extra: these tests run wherever the suite does

from layerlottery.errors import ConfigError, PruningError
from layerlottery.models.blocks import block_input, find_blocks, zero_branches
from layerlottery.surgery.apply import remove_blocks
from layerlottery.surgery.layer_lists import renamed_layers

VOCAB = 100
SEQ = 6


def gpt2(layers: int = 4, **options):
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0, **options
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def llama_style(family: str, layers: int = 4):
    names = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}
    config_class = getattr(transformers, names[family] + "Config")
    model_class = getattr(transformers, names[family] + "ForCausalLM")
    options = dict(sliding_window=4, use_sliding_window=True, max_window_layers=2) if family == "qwen2" else {}
    config = config_class(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0, **options,
    )
    torch.manual_seed(0)
    return model_class(config).eval()


def bert(layers: int = 4):
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def tokens(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def output(model, ids):
    with torch.no_grad():
        result = model(ids, use_cache=False)
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


def skipping(model, names):
    """Context in which each named layer returns its input (h' = h): what removing it means."""
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, args, kwargs, _out: block_input(args, kwargs), with_kwargs=True)
        for name in names
    ]

    class _Skip:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            for handle in handles:
                handle.remove()

    return _Skip()


FAMILIES = {
    "gpt2": (gpt2, "transformer.h"),
    "llama": (lambda layers=4: llama_style("llama", layers), "model.layers"),
    "mistral": (lambda layers=4: llama_style("mistral", layers), "model.layers"),
    "qwen2": (lambda layers=4: llama_style("qwen2", layers), "model.layers"),
    "bert": (bert, "encoder.layer"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_removal_equals_skipping_and_counts_match_a_shallower_model(family):
    build, stage = FAMILIES[family]
    dense = build()
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    removed = [f"{stage}.1", f"{stage}.2"]
    blocks = find_blocks(dense, (SEQ,))
    assert [b.name for b in blocks] == [f"{stage}.{i}" for i in range(4)]
    assert all(b.removable and b.input_shape == b.output_shape == (SEQ, 32) for b in blocks)

    pruned = remove_blocks(dense, removed)
    ids = tokens()
    with skipping(dense, removed):
        skipped = output(dense, ids)
    torch.testing.assert_close(output(pruned, ids), skipped, rtol=1e-5, atol=1e-6)
    assert (output(dense, ids) - skipped).abs().max() > 1e-3  # the removed layers did change the outputs

    # The dense model is untouched, the pruned one is exactly a 2-layer model of the same family.
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())
    assert dense.config.num_hidden_layers == 4 and len(dense.get_submodule(stage)) == 4
    shallow = build(layers=2)
    assert pruned.config.num_hidden_layers == 2
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in shallow.parameters())
    assert sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in pruned.parameters()) == sum(
        blocks[name].params for name in removed
    )
    assert pruned.state_dict().keys() == shallow.state_dict().keys()
    pruned_blocks = find_blocks(pruned, (SEQ,))
    assert blocks.total_macs - pruned_blocks.total_macs == sum(blocks[name].macs for name in removed) > 0
    assert pruned_blocks.total_macs == find_blocks(shallow, (SEQ,)).total_macs
    # Kept layers are renumbered, and so are the cache slots their attention uses.
    assert renamed_layers(dense, removed) == {f"{stage}.0": f"{stage}.0", f"{stage}.3": f"{stage}.1"}
    indices = [m.layer_idx for layer in pruned.get_submodule(stage) for m in layer.modules() if hasattr(m, "layer_idx")]
    assert indices and sorted(set(indices)) == [0, 1]
    assert pruned.get_submodule(stage)[1] is not dense.get_submodule(stage)[3]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pre_norm_layer_removal_equals_zeroing_both_branches(family):
    build, stage = FAMILIES[family]
    dense = build()
    ids = tokens()
    with zero_branches(dense, [f"{stage}.2"]):
        zeroed = output(dense, ids)
    torch.testing.assert_close(output(remove_blocks(dense, [f"{stage}.2"]), ids), zeroed, rtol=1e-5, atol=1e-6)


def test_post_norm_layers_refuse_zeroing_as_a_stand_in_for_removal():
    with pytest.raises(PruningError, match="normalizes after its residual additions"):
        with zero_branches(bert(), ["encoder.layer.1"]):
            pass


def test_qwen2_layer_types_follow_the_kept_layers():
    dense = llama_style("qwen2")
    assert dense.config.layer_types == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    pruned = remove_blocks(dense, ["model.layers.1"])
    assert pruned.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_pruned_decoder_generates_with_cache_as_without_and_as_a_greedy_loop(family):
    build, stage = FAMILIES[family]
    pruned = remove_blocks(build(), [f"{stage}.0", f"{stage}.2"])
    ids = tokens(n=1)
    cached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    loop = ids
    for _ in range(8):
        next_token = output(pruned, loop)[:, -1].argmax(-1, keepdim=True)
        loop = torch.cat([loop, next_token], dim=1)
    assert cached.shape == (1, SEQ + 8)
    assert torch.equal(cached, uncached) and torch.equal(cached, loop)


@pytest.mark.parametrize("family", ["gpt2", "qwen2", "bert"])
def test_save_pretrained_then_plain_from_pretrained_gives_the_same_outputs(family, tmp_path):
    build, stage = FAMILIES[family]
    pruned = remove_blocks(build(), [f"{stage}.1"])
    pruned.save_pretrained(tmp_path)
    auto = transformers.AutoModel if family == "bert" else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 3
    assert getattr(reloaded.config, "layer_types", None) == getattr(pruned.config, "layer_types", None)
    ids = tokens()
    assert torch.equal(output(reloaded, ids), output(pruned, ids))


def test_removing_every_layer_is_refused_in_one_line():
    dense = gpt2(layers=2)
    with pytest.raises(PruningError, match="would leave none; keep at least one layer") as info:
        remove_blocks(dense, ["transformer.h.0", "transformer.h.1"])
    assert "\n" not in str(info.value)


def test_gpt2_attention_scaled_by_layer_index_is_not_removable():
    dense = gpt2(scale_attn_by_inverse_layer_idx=True)
    assert not any(block.removable for block in find_blocks(dense, (SEQ,)))
    with pytest.raises(PruningError, match="scale_attn_by_inverse_layer_idx ties"):
        remove_blocks(dense, ["transformer.h.1"])


def test_a_config_that_disagrees_with_the_layer_list_is_refused():
    dense = gpt2()
    del dense.transformer.h[3]  # by hand: the config still says 4
    with pytest.raises(PruningError, match="holds 3 layers but the model's config says num_hidden_layers=4"):
        remove_blocks(dense, ["transformer.h.1"])


def test_a_text_model_without_input_shape_is_asked_for_its_sequence_length():
    with pytest.raises(ConfigError, match=r"pass input_shape, e.g. \(128,\), the sequence length,"):
        find_blocks(gpt2())
