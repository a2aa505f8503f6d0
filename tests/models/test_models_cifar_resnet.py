import pytest
import torch

import layerlottery as ll
from layerlottery.models.cifar_resnet import BasicBlock


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_depth_gives_6n_plus_2_layers(depth):
    model = ll.create_model(f"cifar_resnet{depth}")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == (depth - 2) // 2  # two conv layers per block, plus stem conv and fc
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_shortcut_b_adds_exactly_two_projections():
    a = ll.create_model("cifar_resnet32", shortcut="A")
    b = ll.create_model("cifar_resnet32", shortcut="B")
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1x1 conv + BN affine, stages 2 and 3
    assert ll.count_params(b) - ll.count_params(a) == projections
    assert ll.count_params(a) == 464_154  # the well-known ResNet-32 (option A) size, 0.46M


def test_options_change_input_and_output():
    model = ll.create_model("cifar_resnet20", num_classes=100, in_channels=1, image_size=28)
    assert model.default_input_shape == (1, 28, 28)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 100)


def test_zero_init_residual_zeroes_last_bn_of_every_branch():
    model = ll.create_model("test_resnet", zero_init_residual=True)
    for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
        assert torch.count_nonzero(block.bn2.weight) == 0
        assert torch.all(block.bn1.weight == 1)
    default = ll.create_model("test_resnet")
    assert all(torch.all(m.bn2.weight == 1) for m in default.modules() if isinstance(m, BasicBlock))


def test_kaiming_init_scale():
    torch.manual_seed(0)
    conv = ll.create_model("cifar_resnet56").layer3[4].conv1
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)


def test_shortcut_b_is_the_default_and_gives_the_papers_macs():
    default = ll.create_model("cifar_resnet32")
    assert default.shortcut_style == "B" and ll.create_model("test_resnet").shortcut_style == "B"
    assert ll.count_macs(default) == 69_124_736  # the paper's Table 4 (option A: 68,862,592)
    assert ll.count_macs(ll.create_model("cifar_resnet32", shortcut="A")) == 69_124_736 - 262_144


def test_registry_lists_models_and_rejects_bad_names_and_options():
    names = ll.list_models()
    paper = ["cifar_resnet110", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56"]
    assert names == paper  # the test fixtures are hidden from listings...
    assert ll.list_models(include_hidden=True) == sorted([*paper, "test_plain_cnn", "test_resnet"])
    assert isinstance(ll.create_model("test_resnet"), torch.nn.Module)  # ...but build like any other model
    with pytest.raises(ll.ConfigError, match="unknown model 'resnet33'.*cifar_resnet32"):
        ll.create_model("resnet33")
    with pytest.raises(ll.ConfigError, match="shortcut must be 'A'"):
        ll.create_model("cifar_resnet20", shortcut="C")
    with pytest.raises(ll.ConfigError, match="does not accept"):
        ll.create_model("cifar_resnet20", colour="blue")
