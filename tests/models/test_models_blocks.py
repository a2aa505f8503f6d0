import pytest
import torch
import torchvision

import layerlottery as ll


def test_resnet32_blocks_stages_shapes_and_removability():
    blocks = ll.find_blocks(ll.create_model("cifar_resnet32", shortcut="B"))
    assert len(blocks) == 15
    assert [b.name for b in blocks][:6] == ["layer1.0", "layer1.1", "layer1.2", "layer1.3", "layer1.4", "layer2.0"]
    assert list(blocks.stages()) == ["layer1", "layer2", "layer3"]
    first_of_stage2 = blocks["layer2.0"]
    assert (first_of_stage2.input_shape, first_of_stage2.output_shape) == ((16, 32, 32), (32, 16, 16))
    assert first_of_stage2.stride == 2 and not first_of_stage2.removable
    assert "shortcut" in first_of_stage2.reason
    assert blocks["layer3.4"].output_shape == (64, 8, 8) and blocks["layer3.4"].index == 4
    assert [b.name for b in blocks if not b.removable] == ["layer2.0", "layer3.0"]
    assert blocks["layer2.1"].params == 2 * 32 * 32 * 9 + 2 * 2 * 32


def test_block_macs_sum_with_stem_and_head_to_the_total():
    model = ll.create_model("cifar_resnet20", shortcut="B")
    blocks = ll.find_blocks(model)
    stem, head = 3 * 16 * 9 * 32 * 32, 64 * 10
    assert sum(b.macs for b in blocks) + stem + head == blocks.total_macs == ll.count_macs(model)
    assert blocks.total_params == ll.count_params(model)


def test_torchvision_resnets_are_understood():
    blocks = ll.find_blocks(torchvision.models.resnet18(), input_shape=(3, 64, 64))
    assert len(blocks) == 8 and [b.name for b in blocks.removable] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    bottleneck = ll.find_blocks(torchvision.models.resnet50(), input_shape=(3, 32, 32))
    assert len(bottleneck) == 16 and bottleneck["layer1.0"].kind == "torchvision_bottleneck"
    assert not bottleneck["layer1.0"].removable  # widens 64 -> 256 channels


def test_find_blocks_leaves_model_untouched():
    model = ll.create_model("test_resnet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ll.find_blocks(model)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_network_without_residual_blocks_is_refused():
    with pytest.raises(ll.PruningError, match="no residual blocks"):
        ll.find_blocks(ll.create_model("test_plain_cnn"))


def test_missing_input_shape_is_a_clear_error():
    with pytest.raises(ll.ConfigError, match="pass input_shape"):
        ll.find_blocks(torchvision.models.resnet18())


def test_unknown_block_name_lists_the_blocks():
    blocks = ll.find_blocks(ll.create_model("test_resnet"))
    with pytest.raises(ll.PruningError, match="no residual block named 'layer9.0'.*layer1.0"):
        blocks["layer9.0"]
