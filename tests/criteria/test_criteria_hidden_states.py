"""Block Influence and angular distance: analytic oracles, an independent computation, purity."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from _criteria_helpers import assert_same, batch, snapshot, tiny_model
from torch import nn

from layerlottery.criteria import score_blocks
from layerlottery.errors import ConfigError, DataError
from layerlottery.models.blocks import BlockKind, register_block_kind


class Rotation(nn.Module):
    """``x + branch(x)`` with ``branch = R - I``: the block rotates 2-D tokens by ``angle``, exactly."""

    def __init__(self, angle: float) -> None:
        super().__init__()
        self.branch = nn.Linear(2, 2, bias=False, dtype=torch.float64)
        c, s = math.cos(angle), math.sin(angle)
        with torch.no_grad():
            self.branch.weight.copy_(torch.tensor([[c - 1, -s], [s, c - 1]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


register_block_kind(
    BlockKind(
        name="test_rotation",
        matches=lambda m: isinstance(m, Rotation),
        branch_end=lambda m: m.branch,
        has_identity_shortcut=lambda m: True,
    )
)

ANGLES = [0.0, math.pi / 3, math.pi, math.pi / 2]


class Rotations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Rotation(a) for a in ANGLES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).sum(dim=1)


def token_batch(n: int = 5, tokens: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, tokens, 2, generator=generator, dtype=torch.float64), torch.zeros(n, dtype=torch.long)


def test_rotations_give_the_closed_form_scores():
    model = Rotations()
    influence = score_blocks(model, "block_influence", token_batch(), batch_size=2)
    distance = score_blocks(model, "angular_distance", token_batch(), tokens="all")
    for index, angle in enumerate(ANGLES):
        # Identity: 0 and 0; negation (pi): BI 2 and distance 1; a right angle: BI 1 and distance 1/2.
        assert influence[f"blocks.{index}"] == pytest.approx(1 - math.cos(angle), abs=1e-12)
        assert distance[f"blocks.{index}"] == pytest.approx(angle / math.pi, abs=1e-12)
    assert influence["blocks.0"] == 0.0 and distance["blocks.0"] == 0.0


def test_angular_distance_over_runs_of_consecutive_blocks():
    scores = score_blocks(Rotations(), "angular_distance", token_batch(), tokens="last", n=2)
    assert scores["blocks.0"] == pytest.approx(ANGLES[1] / math.pi, abs=1e-12)  # 0 + pi/3
    assert scores["blocks.1"] == pytest.approx(2 / 3, abs=1e-12)  # pi/3 + pi = 4pi/3, which is 2pi/3 away
    assert scores["blocks.2"] == pytest.approx(0.5, abs=1e-12)  # pi + pi/2 is pi/2 away
    assert scores["blocks.3"] == 1.0  # no run of 2 starts at the last block
    with pytest.raises(ConfigError, match="n=5: no stage has 5 consecutive removable blocks"):
        score_blocks(Rotations(), "angular_distance", token_batch(), n=5)


def gpt2(layers: int = 4) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)  # left in training mode: scoring must turn dropout off itself


def ids(n: int = 3, length: int = 7) -> torch.Tensor:
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(2))


def test_a_layer_whose_branches_output_zero_scores_zero():
    model = gpt2()
    with torch.no_grad():
        for projection in (model.transformer.h[1].attn.c_proj, model.transformer.h[1].mlp.c_proj):
            projection.weight.zero_()
            projection.bias.zero_()
    influence = score_blocks(model, "block_influence", ids())
    distance = score_blocks(model, "angular_distance", ids())
    assert abs(influence["transformer.h.1"]) < 1e-12 and distance["transformer.h.1"] == 0.0
    assert min(influence[f"transformer.h.{i}"] for i in (0, 2, 3)) > 1e-6


def test_scores_match_hugging_face_hidden_states():
    model = gpt2()
    data = ids()
    influence = score_blocks(model, "block_influence", data, batch_size=2)
    distance = score_blocks(model, "angular_distance", (data, data), n=2)
    model.eval()
    with torch.no_grad():
        hidden = [h.double() for h in model(data, output_hidden_states=True).hidden_states]
    # hidden[i] enters layer i; the last entry is after the final LayerNorm, so layer 3 is not compared.
    for i in range(3):
        cos = nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1)
        assert influence[f"transformer.h.{i}"] == pytest.approx(1 - cos.mean().item(), rel=1e-9, abs=1e-12)
    for i in range(2):
        cos = nn.functional.cosine_similarity(hidden[i][:, -1], hidden[i + 2][:, -1], dim=-1)
        expected = torch.arccos(cos).mean().item() / math.pi
        assert distance[f"transformer.h.{i}"] == pytest.approx(expected, rel=1e-6)
    assert distance["transformer.h.3"] == 1.0


@pytest.mark.parametrize("criterion", ["block_influence", "angular_distance"])
def test_scoring_leaves_the_model_bitwise_unchanged(criterion):
    model = gpt2()
    before = snapshot(model)
    score_blocks(model, criterion, ids())
    assert_same(before, snapshot(model))
    cnn = tiny_model()
    before = snapshot(cnn)
    scores = score_blocks(cnn, criterion, batch(), tokens="all")
    assert_same(before, snapshot(cnn))
    assert all(0.0 < value <= 2.0 for value in scores.values())


def test_last_token_needs_sequence_hidden_states():
    with pytest.raises(ConfigError, match="tokens='last' needs \\(batch, tokens, features\\) hidden states"):
        score_blocks(tiny_model(), "angular_distance", batch())


def test_feature_maps_average_over_positions_per_block():
    """In a CNN each stage has its own number of positions; every block averages over its own."""
    model = tiny_model()
    inputs, labels = batch()
    scores = score_blocks(model, "block_influence", (inputs, labels), batch_size=5)
    seen = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, args, out, name=name: seen.__setitem__(name, (args[0], out)))
        for name in scores
    ]
    model.eval()
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    for name, (block_in, block_out) in seen.items():
        cos = nn.functional.cosine_similarity(block_in.double(), block_out.double(), dim=1)  # over channels
        assert scores[name] == pytest.approx(1 - cos.mean().item(), rel=1e-9), name


def test_a_text_model_takes_integer_token_ids_only():
    with pytest.raises(DataError, match="inputs are torch.float32; a text model takes integer token ids"):
        score_blocks(gpt2(), "block_influence", (ids().float(), torch.zeros(3, dtype=torch.long)))
    per_token = score_blocks(gpt2(), "block_influence", (ids(), ids()))  # language-model labels
    assert dict(per_token) == dict(score_blocks(gpt2(), "block_influence", [ids()]))


def test_gradient_criteria_on_a_text_model_are_one_line():
    with pytest.raises(DataError, match="not a logits tensor; gradient criteria need a classifier") as info:
        score_blocks(gpt2(), "snip", ids())
    assert "\n" not in str(info.value)
