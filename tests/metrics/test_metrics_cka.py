"""Linear CKA: its defining invariances, an n x n HSIC oracle, streaming, and penultimate features of models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import layerlottery as ll
from layerlottery.errors import DataError
from layerlottery.metrics.cka import LinearCKAAccumulator, linear_cka, penultimate_cka


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def correlated_pair(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Y shares part of X's signal: CKA strictly between 0 and 1."""
    x = gaussian(n, 12, seed)
    mix = gaussian(12, 7, seed + 1)
    return x, torch.tanh(x @ mix) + 0.5 * gaussian(n, 7, seed + 2)


def hsic_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """The n x n kernel form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XX^T, L = YY^T, H = I - 11^T / n."""
    n = len(x)
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2

    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


def test_cka_of_a_representation_with_itself_is_one():
    x, y = correlated_pair()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(y.float(), y.float()) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_the_n_by_n_hsic_form():
    x, y = correlated_pair()
    value = linear_cka(x, y)
    assert 0.05 < value < 0.95  # a non-trivial case
    assert value == pytest.approx(hsic_cka(x, y), rel=1e-10)


def test_cka_is_invariant_to_orthogonal_transforms_isotropic_scaling_and_shifts():
    x, y = correlated_pair()
    q_x, _ = torch.linalg.qr(gaussian(12, 12, 5))
    q_y, _ = torch.linalg.qr(gaussian(7, 7, 6))
    reference = linear_cka(x, y)
    assert linear_cka(x @ q_x, y @ q_y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x, x @ q_x) == pytest.approx(1.0, abs=1e-12)
    # Not invariant to an arbitrary (anisotropic) rescaling of features: the checks above are not vacuous.
    stretch = torch.ones(12, dtype=torch.float64)
    stretch[0] = 20.0
    assert abs(linear_cka(x * stretch, y) - reference) > 0.01


def test_cka_of_independent_features_is_near_zero():
    # For independent zero-mean features, E||Y^T X||_F^2 ~ n d1 d2 and ||X^T X||_F ~ n sqrt(d1 (1 + d1/n)), so
    # CKA ~ sqrt(d1 d2) / n = 0.004 here; its relative spread is about sqrt(2 / (d1 d2)) = 9%, so the bounds
    # below (within 2x of that expectation) hold by many standard deviations for any seed.
    n, d1, d2 = 4000, 16, 16
    value = linear_cka(gaussian(n, d1, 10), gaussian(n, d2, 11))
    expected = math.sqrt(d1 * d2) / n
    assert expected / 2 < value < 2 * expected < 0.01


def test_streaming_over_uneven_batches_equals_one_shot():
    x, y = correlated_pair(n=257)
    x, y = x + 1e3, y * 50 - 7e2  # large means: the reference shift keeps the centering exact
    accumulator = LinearCKAAccumulator()
    for start, stop in ((0, 1), (1, 64), (64, 200), (200, 257)):
        accumulator.update(x[start:stop].float(), y[start:stop])
    assert accumulator.samples == 257
    assert accumulator.value() == pytest.approx(linear_cka(x.float(), y), rel=1e-10)


def test_cka_refuses_what_it_cannot_compare():
    x, y = correlated_pair()
    with pytest.raises(DataError, match="same samples"):
        linear_cka(x, y[:-1])
    with pytest.raises(DataError, match="constant"):
        linear_cka(x, torch.ones(len(x), 3))
    with pytest.raises(DataError, match="at least 2 samples"):
        linear_cka(x[:1], y[:1])
    with pytest.raises(DataError, match="2-D"):
        linear_cka(x[:, 0], y)
    accumulator = LinearCKAAccumulator()
    accumulator.update(x[:5], y[:5])
    with pytest.raises(DataError, match="widths changed"):
        accumulator.update(x[:5, :3], y[:5])


def _model(seed: int, **options) -> nn.Module:
    torch.manual_seed(seed)
    return ll.create_model("test_resnet", image_size=8, **options)


def _penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    trunk = copy.deepcopy(model).eval()
    trunk.fc = nn.Identity()  # the model's output is then the input of its head
    with torch.no_grad():
        return trunk(x)


def test_penultimate_cka_streams_the_heads_inputs_of_both_models():
    dense, other = _model(0).train(), _model(1)
    ticket = ll.remove_blocks(dense, ["layer1.1", "layer3.2"])
    x = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    batches = [(x[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 48, 16)]
    before = {key: value.clone() for key, value in dense.state_dict().items()}

    value = penultimate_cka(dense, ticket, batches)
    assert value == pytest.approx(linear_cka(_penultimate(dense, x), _penultimate(ticket, x)), rel=1e-9)
    assert 0.0 < value < 1.0
    assert penultimate_cka(dense, dense, [x[:16], x[16:]]) == pytest.approx(1.0, abs=1e-9)
    assert penultimate_cka(dense, other, batches) < value  # an unrelated network is less similar than its ticket
    # The models are left as they were: training flags restored, weights and BN statistics unchanged.
    assert dense.training and all(module.training for module in dense.modules())
    assert all(torch.equal(value, before[key]) for key, value in dense.state_dict().items())
