"""The torch.fx fallback: ``x + f(x)`` blocks of classes no block kind knows, and a one-line refusal."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock as TorchvisionBasic
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

from layerlottery.errors import PruningError
from layerlottery.models import create_model
from layerlottery.models.blocks import block_kind_of, find_blocks, zero_branches
from layerlottery.models.traced_blocks import analyse_residual
from layerlottery.surgery.apply import remove_blocks


class MixerBlock(nn.Module):
    """A user's own residual block: pre-norm MLP, ``x + mlp(norm(x))``."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Widen(nn.Module):
    """Residual, but with a projection shortcut: recognised, not removable."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(8, 8)
        self.branch = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) + self.branch(x)


class Mixer(nn.Module):
    default_input_shape = (5, 8)

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(MixerBlock(), Widen(), MixerBlock(), MixerBlock())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(1))


class Moody(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) if x.sum() > 0 else x


class MoodyNet(nn.Module):
    default_input_shape = (8,)

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Moody(), Moody())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def test_traced_blocks_are_found_removed_and_removal_equals_zeroing():
    torch.manual_seed(0)
    model = Mixer().eval()
    blocks = find_blocks(model)
    assert [(b.name, b.kind, b.removable) for b in blocks] == [
        ("blocks.0", "traced:MixerBlock", True),
        ("blocks.2", "traced:MixerBlock", True),
        ("blocks.3", "traced:MixerBlock", True),
    ]
    inputs = torch.randn(4, 5, 8)
    pruned = remove_blocks(model, ["blocks.2"])
    with torch.no_grad(), zero_branches(model, ["blocks.2"]):
        zeroed = model(inputs)
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), zeroed, rtol=1e-6, atol=1e-6)
        assert (model(inputs) - zeroed).abs().max() > 1e-4
    assert blocks.total_params - find_blocks(pruned).total_params == blocks["blocks.2"].params


def test_analysis_agrees_with_the_registered_kinds_of_known_blocks():
    """Tracing finds the branch end and shortcut that the hand-written kinds declare."""
    model = create_model("test_resnet", image_size=8)
    for block in [model.layer1[0], model.layer2[0]]:
        kind = block_kind_of(block)
        analysis = analyse_residual(block)
        assert block.get_submodule(analysis.branch_end) is kind.branch_end(block)
        assert analysis.identity_shortcut == kind.has_identity_shortcut(block)
    plain = TorchvisionBasic(16, 16)
    assert analyse_residual(plain).branch_end == "bn2" and analyse_residual(plain).identity_shortcut
    bottleneck = TorchvisionBottleneck(64, 16)
    assert analyse_residual(bottleneck).branch_end == "bn3"


def test_an_untraceable_model_is_one_line_naming_the_way_out():
    with pytest.raises(PruningError) as info:
        find_blocks(MoodyNet())
    message = str(info.value)
    assert message.startswith("MoodyNet could not be traced (Moody: ")
    assert "register a BlockKind" in message and "register_block_kind" in message and "\n" not in message
