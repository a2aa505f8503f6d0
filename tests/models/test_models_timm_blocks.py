"""timm's vision transformer and ResNet blocks: found, removable where deletion is skipping, removed exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_batchnorm
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from layerlottery.errors import PruningError
from layerlottery.models.blocks import find_blocks, zero_branches
from layerlottery.surgery.apply import remove_blocks


def vit(depth: int = 4) -> VisionTransformer:
    torch.manual_seed(0)
    # init_values: LayerScale on both branches, so the branch ends are real modules, not Identity.
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, num_classes=10, init_values=0.5
    ).eval()


def timm_resnet(block=BasicBlock, act_layer=torch.nn.ReLU) -> ResNet:
    torch.manual_seed(0)
    model = ResNet(block=block, layers=[2, 2, 1, 1], num_classes=10, act_layer=act_layer)
    return randomize_batchnorm(model).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_vit_blocks_are_removable_and_removal_equals_zeroing_both_branches():
    dense = vit()
    blocks = find_blocks(dense, (3, 32, 32))
    assert [b.name for b in blocks] == [f"blocks.{i}" for i in range(4)]
    assert all(b.kind == "timm_vit" and b.removable and b.input_shape == (17, 32) for b in blocks)
    removed = ["blocks.1", "blocks.3"]
    pruned = remove_blocks(dense, removed)
    with torch.no_grad(), zero_branches(dense, removed):
        zeroed = dense(images())
    with torch.no_grad():
        kept = pruned(images())
        assert (dense(images()) - zeroed).abs().max() > 1e-3
    torch.testing.assert_close(kept, zeroed, rtol=1e-5, atol=1e-6)
    assert list(pruned.blocks._modules) == ["0", "2"]  # an nn.Sequential keeps the names of what stays
    assert set(pruned.state_dict()) < set(dense.state_dict())
    assert find_blocks(pruned, (3, 32, 32)).total_params == sum(p.numel() for p in vit(depth=2).parameters())
    pruned_macs = find_blocks(pruned, (3, 32, 32)).total_macs
    assert blocks.total_macs - pruned_macs == sum(blocks[name].macs for name in removed) > 0


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_timm_resnet_identity_blocks_are_removable_and_removal_equals_zeroing(block):
    dense = timm_resnet(block)
    blocks = find_blocks(dense, (3, 32, 32))
    # layer1.0 of a bottleneck ResNet widens 64 -> 256 (projection); every first block of layer2..4 strides.
    expected = ["layer1.1", "layer2.1"] if block is Bottleneck else ["layer1.0", "layer1.1", "layer2.1"]
    assert [b.name for b in blocks.removable] == expected
    assert "projection/downsampling shortcut" in blocks["layer2.0"].reason
    pruned = remove_blocks(dense, ["layer1.1", "layer2.1"])
    with torch.no_grad(), zero_branches(dense, ["layer1.1", "layer2.1"]):
        zeroed = dense(images())
    with torch.no_grad():
        torch.testing.assert_close(pruned(images()), zeroed, rtol=1e-5, atol=1e-5)
        assert (dense(images()) - zeroed).abs().max() > 1e-3
    removed_params = blocks["layer1.1"].params + blocks["layer2.1"].params
    assert sum(p.numel() for p in pruned.parameters()) == blocks.total_params - removed_params


def test_timm_resnet_without_a_final_relu_is_not_removable():
    blocks = find_blocks(timm_resnet(act_layer=torch.nn.SiLU), (3, 32, 32))
    assert not blocks.removable
    assert blocks["layer1.1"].reason == "final activation is SiLU, not ReLU, so deleting the block is not skipping it"
    with pytest.raises(PruningError, match="not ReLU"):
        remove_blocks(timm_resnet(act_layer=torch.nn.SiLU), ["layer1.1"])
