"""Shared fixtures: small seeded models and the shared MNIST folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The tests' tensors are tiny: a second thread buys nothing and, on a shared 2-core machine, thread
# oversubscription made single tests 10-50x slower. One thread keeps the suite's time predictable.
torch.set_num_threads(1)

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN layer non-trivial affine parameters and running statistics (in place).

    At initialization BN is the identity in eval mode (mean 0, var 1, weight 1, bias 0), which would let
    a broken test pass by accident.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"shared MNIST set not found at {SHARED_MNIST} (it lives beside the checkout in ../shared/data)")
    return SHARED_MNIST
