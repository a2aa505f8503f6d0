"""Deleting a block must equal forcing its residual branch to zero: the defining test of block removal."""

import pytest
import torch
from conftest import randomize_batchnorm

import layerlottery as ll


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet56"])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_removing_each_block_equals_zeroing_its_branch(name, shortcut):
    torch.manual_seed(0)
    dense = randomize_batchnorm(ll.create_model(name, shortcut=shortcut)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        full = dense(x)
    removable = ll.find_blocks(dense).removable
    assert len(removable) == (25 if name == "cifar_resnet56" else 7)  # all but the two stride-2 blocks
    for block in removable:
        pruned = ll.remove_blocks(dense, [block.name]).eval()
        with torch.no_grad(), ll.zero_branches(dense, [block.name]):
            zeroed = dense(x)
        with torch.no_grad():
            out = pruned(x)
        torch.testing.assert_close(out, zeroed, rtol=1e-6, atol=1e-6)
        # The block mattered, so the comparison above is not vacuous.
        assert not torch.allclose(out, full, atol=1e-4)


def test_removing_several_blocks_equals_zeroing_all_of_them():
    torch.manual_seed(1)
    dense = randomize_batchnorm(ll.create_model("cifar_resnet20", shortcut="B")).eval()
    names = ["layer1.1", "layer2.2", "layer3.1"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), ll.zero_branches(dense, names):
        zeroed = dense(x)
    with torch.no_grad():
        torch.testing.assert_close(ll.remove_blocks(dense, names).eval()(x), zeroed, rtol=1e-6, atol=1e-6)


def test_pruned_model_is_genuinely_shallower():
    dense = ll.create_model("cifar_resnet32")
    pruned = ll.remove_blocks(dense, ["layer1.2", "layer3.3"])
    assert len(pruned.layer1) == 4 and len(pruned.layer3) == 4
    assert len(list(pruned.modules())) == len(list(dense.modules())) - 2 * 6  # block, 2 convs, 2 BNs, shortcut
    assert not any(isinstance(m, torch.nn.Identity) and n.count(".") == 1 for n, m in pruned.named_modules())
    # Kept blocks keep their names and weights; the dense model is untouched.
    assert set(pruned.state_dict()) < set(dense.state_dict())
    assert torch.equal(pruned.layer1[2].conv1.weight, dense.layer1[3].conv1.weight)
    assert len(dense.layer1) == 5
    assert [b.name for b in ll.find_blocks(pruned)][:4] == ["layer1.0", "layer1.1", "layer1.3", "layer1.4"]


def test_removal_of_torchvision_block():
    import torchvision

    dense = randomize_batchnorm(torchvision.models.resnet18()).eval()
    x = torch.randn(1, 3, 64, 64)
    pruned = ll.remove_blocks(dense, ["layer3.1"]).eval()
    with torch.no_grad(), ll.zero_branches(dense, ["layer3.1"]):
        torch.testing.assert_close(pruned(x), dense(x), rtol=1e-5, atol=1e-5)


def test_bad_removals_are_clear_errors():
    model = ll.create_model("test_resnet")
    with pytest.raises(ll.PruningError, match="cannot be removed: projection"):
        ll.remove_blocks(model, ["layer2.0"])
    with pytest.raises(ll.PruningError, match="no residual block named 'layer4.1'"):
        ll.remove_blocks(model, ["layer4.1"])
    with pytest.raises(ll.PruningError, match="listed twice"):
        ll.remove_blocks(model, ["layer1.1", "layer1.1"])
    with pytest.raises(ll.PruningError, match="no residual blocks"):
        ll.remove_blocks(ll.create_model("test_plain_cnn"), ["features.0"])
