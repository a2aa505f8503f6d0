"""Small models, batches and state snapshots shared by the criteria tests."""

from __future__ import annotations

import copy

import torch
from conftest import randomize_batchnorm

from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks

ALL_CRITERIA = ["random", "magnitude", "snip", "grasp", "synflow", "gradnorm"]
DATA_CRITERIA = ["snip", "grasp", "gradnorm"]
# grasp's default class balancing would warn on tiny random batches; tests that do not study it use all data.
QUIET = {"grasp": {"samples_per_class": None}}


def tiny_model(seed: int = 0, **options: object) -> torch.nn.Module:
    """test_resnet on 8x8 images with non-trivial BN statistics."""
    torch.manual_seed(seed)
    return randomize_batchnorm(create_model("test_resnet", image_size=8, **options), seed)


def batch(n: int = 12, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, 8, 8, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return inputs, labels


def removable_names(model: torch.nn.Module) -> list[str]:
    return [block.name for block in find_blocks(model).removable]


def snapshot(model: torch.nn.Module) -> dict:
    """Every tensor, gradient and flag that scoring must leave bitwise unchanged."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "dtypes": {k: v.dtype for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: (len(m._forward_hooks), len(m._forward_pre_hooks)) for k, m in model.named_modules()},
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert before["dtypes"] == after["dtypes"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    for key, grad in before["grads"].items():
        if grad is None:
            assert after["grads"][key] is None, key
        else:
            assert torch.equal(grad, after["grads"][key]), key


def double_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).double()
