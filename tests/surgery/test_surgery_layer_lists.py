"""Score -> select -> remove on a Hugging Face decoder: the plan keeps original names, the model stays usable."""

from __future__ import annotations

import torch
import transformers

from layerlottery.criteria import score_blocks
from layerlottery.models.blocks import find_blocks
from layerlottery.surgery.apply import remove_blocks
from layerlottery.surgery.layer_lists import renamed_layers
from layerlottery.surgery.plan import RemovalPlan
from layerlottery.surgery.select import select_blocks

SEQ = 6


def llama(layers: int = 6):
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_block_influence_plan_replays_and_records_original_names(tmp_path):
    dense = llama()
    ids = torch.randint(1, 100, (4, SEQ), generator=torch.Generator().manual_seed(0))
    scores = score_blocks(dense, "block_influence", ids)
    blocks = find_blocks(dense, (SEQ,))
    plan = select_blocks(blocks, scores, p=2, min_per_stage=1)
    lowest = sorted((value, name) for name, value in scores.items() if name != "model.layers.0")[:2]
    assert plan.removed == tuple(sorted(name for _, name in lowest))

    replayed = RemovalPlan.load(plan.save(tmp_path / "plan.json"))
    pruned = remove_blocks(dense, replayed)
    assert pruned.config.num_hidden_layers == 4
    assert plan.dense_params - plan.pruned_params == sum(blocks[name].params for name in plan.removed)
    assert sum(p.numel() for p in pruned.parameters()) == plan.pruned_params
    assert find_blocks(pruned, (SEQ,)).total_macs == plan.pruned_macs

    mapping = renamed_layers(dense, plan.removed)
    kept = [f"model.layers.{i}" for i in range(6) if f"model.layers.{i}" not in plan.removed]
    assert list(mapping) == kept and list(mapping.values()) == [f"model.layers.{i}" for i in range(4)]
    for old, new in mapping.items():
        assert torch.equal(pruned.get_submodule(new).mlp.down_proj.weight, dense.get_submodule(old).mlp.down_proj.weight)

    # A pruned model can be pruned again (its names are the renumbered ones) and still generates with a cache.
    again = remove_blocks(pruned, ["model.layers.3"])
    assert again.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in again.model.layers] == [0, 1, 2]
    cached = again.generate(ids[:1], max_new_tokens=4, do_sample=False, use_cache=True)
    assert torch.equal(cached, again.generate(ids[:1], max_new_tokens=4, do_sample=False, use_cache=False))
