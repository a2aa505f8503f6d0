"""Attention MACs on the CPU: the CPU attention kernels are counted, exactly as by hand and as the math backend.

A transformer block's MACs per sample are the projections, ``Q K^T`` and ``A V`` (``T * T * d`` each per head,
so ``2 * T * T * E`` over all heads of width ``d = E / H``) and the MLP. torch's counter alone misses the
attention products on the CPU (its formulas cover the CUDA kernels); ``layerlottery.metrics.macs.flop_counter``
adds them, and the same model counted with the math backend (plain matrix products) must agree.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.utils.flop_counter as torch_flop_counter
import torchvision
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch.nn.attention import SDPBackend, sdpa_kernel

from layerlottery.metrics import count_macs
from layerlottery.metrics.macs import ATTENTION_FLOP_FORMULAS
from layerlottery.models.blocks import find_blocks
from layerlottery.surgery.apply import remove_blocks

transformers = pytest.importorskip("transformers")  # in the dev extra

E, HEADS = 32, 2


def block_macs_by_hand(tokens: int, embed: int, mlp_hidden: int) -> int:
    """QKV, output projection, Q K^T and A V over all heads, the MLP's two linears (biases add no MACs)."""
    projections = tokens * embed * 3 * embed + tokens * embed * embed
    attention = 2 * tokens * tokens * embed
    mlp = 2 * tokens * embed * mlp_hidden
    return projections + attention + mlp


def gpt2(layers: int = 3):
    config = transformers.GPT2Config(n_layer=layers, n_embd=E, n_head=HEADS, vocab_size=50, n_positions=32)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def timm_vit(depth: int = 3) -> TimmViT:
    torch.manual_seed(0)
    return TimmViT(img_size=16, patch_size=4, embed_dim=E, depth=depth, num_heads=HEADS, mlp_ratio=4, num_classes=10).eval()


def torchvision_vit(layers: int = 3) -> torchvision.models.VisionTransformer:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=layers, num_heads=HEADS, hidden_dim=E, mlp_dim=3 * E, num_classes=10
    ).eval()


@contextlib.contextmanager
def mha_slow_path():
    """nn.MultiheadAttention through its Python path (linears + SDPA) instead of the fused inference kernel."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


# model, input shape per sample, tokens a block sees, MLP width, the block removed
CASES = {
    "gpt2": (gpt2, (6,), 6, 4 * E, "transformer.h.1"),
    "timm_vit": (timm_vit, (3, 16, 16), 16 + 1, 4 * E, "blocks.1"),
    "torchvision_vit": (torchvision_vit, (3, 16, 16), 16 + 1, 3 * E, "encoder.layers.encoder_layer_1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_transformer_block_costs_its_hand_count_and_its_removal_saves_exactly_that(case):
    build, shape, tokens, mlp_hidden, name = CASES[case]
    model = build()
    blocks = find_blocks(model, shape)
    expected = block_macs_by_hand(tokens, E, mlp_hidden)
    assert [block.macs for block in blocks] == [expected] * len(blocks)
    pruned = remove_blocks(model, [name])
    assert count_macs(model, shape) - count_macs(pruned, shape) == expected


@pytest.mark.parametrize("case", ["gpt2", "timm_vit"])
def test_the_cpu_kernel_counts_what_the_math_backend_counts(case):
    build, shape, *_ = CASES[case]
    model = build()
    fused = find_blocks(model, shape)
    with sdpa_kernel(SDPBackend.MATH):  # attention as visible matrix products
        math = find_blocks(model, shape)
    assert [b.macs for b in fused] == [b.macs for b in math]
    assert fused.total_macs == math.total_macs


def test_the_fused_multi_head_attention_kernel_counts_what_its_python_path_counts():
    model = torchvision_vit()
    fused = find_blocks(model, (3, 16, 16))
    with mha_slow_path():
        slow = find_blocks(model, (3, 16, 16))
    assert [b.macs for b in fused] == [b.macs for b in slow]
    assert fused.total_macs == slow.total_macs


def test_torch_alone_misses_the_cpu_attention_so_the_formulas_matter():
    model = timm_vit(depth=1)
    with torch.no_grad(), torch_flop_counter.FlopCounterMode(display=False) as plain:
        model(torch.zeros(1, 3, 16, 16))
    tokens = 17
    assert plain.get_total_flops() // 2 == count_macs(model, (3, 16, 16)) - 2 * tokens * tokens * E


def test_the_formulas_stay_out_of_torchs_global_registry():
    count_macs(timm_vit(depth=1), (3, 16, 16))
    assert not set(ATTENTION_FLOP_FORMULAS) & set(torch_flop_counter.flop_registry)


def test_the_backward_kernel_is_counted_like_torchs_cuda_backward():
    q = torch.randn(2, HEADS, 5, E // HEADS, requires_grad=True)
    counter = torch_flop_counter.FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS)
    with counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    forward = torch_flop_counter.sdpa_flop_count(q.shape, q.shape, q.shape)
    backward = torch_flop_counter.sdpa_backward_flop_count(q.shape, q.shape, q.shape, q.shape)
    assert forward == 2 * 2 * (2 * HEADS) * 5 * 5 * (E // HEADS)
    assert counter.get_total_flops() == forward + backward
