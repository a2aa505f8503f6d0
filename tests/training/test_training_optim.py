"""Optimizer settings and the per-epoch learning-rate sequence of every schedule."""

from __future__ import annotations

import math

import pytest
import torch
from _training_helpers import settings, tiny_resnet

from layerlottery.training import build_optimizer, build_scheduler


def lr_sequence(train_settings) -> list[float]:
    """The lr in effect during each epoch, stepping the scheduler once per epoch as the loop does."""
    optimizer = build_optimizer(tiny_resnet(), train_settings)
    scheduler = build_scheduler(optimizer, train_settings)
    rates = []
    for _ in range(train_settings.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_optimizer_is_sgd_with_nesterov_momentum_and_decay_on_every_parameter():
    model = tiny_resnet()
    optimizer = build_optimizer(model, settings(lr=0.05, momentum=0.8, nesterov=True, weight_decay=5e-4))
    assert isinstance(optimizer, torch.optim.SGD)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.8, True, 5e-4)
    # BatchNorm weights and biases are decayed too, as in the reference scripts.
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}


def test_adamw_takes_the_rate_and_decoupled_decay_and_keeps_cuda_graphs_out():
    from layerlottery.training.graphed import graph_fallback_reason

    model = tiny_resnet()
    run = settings(optimizer="adamw", lr=0.003, weight_decay=0.01)
    optimizer = build_optimizer(model, run)
    assert isinstance(optimizer, torch.optim.AdamW)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["weight_decay"], group["betas"]) == (0.003, 0.01, (0.9, 0.999))
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    reason = graph_fallback_reason(settings(optimizer="adamw", device="cpu"), torch.device("cuda"), optimizer)
    assert reason is not None and "adamw" in reason


def test_an_unknown_optimizer_is_refused_in_one_line():
    from layerlottery.errors import ConfigError

    with pytest.raises(ConfigError, match="train.optimizer must be one of sgd, adamw, not 'adam'"):
        settings(optimizer="adam").validate()


def test_multistep_multiplies_by_gamma_at_each_milestone_fraction():
    rates = lr_sequence(settings(epochs=8, lr=0.1, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1))
    assert rates == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2, rel=1e-12)


def test_multistep_default_milestones_are_epochs_100_and_150_of_200():
    rates = lr_sequence(settings(epochs=200, lr=0.01, schedule="multistep"))
    assert rates[99] == pytest.approx(0.01) and rates[100] == pytest.approx(0.001)
    assert rates[149] == pytest.approx(0.001) and rates[150] == pytest.approx(0.0001)


def test_cosine_anneals_from_lr_towards_zero_over_the_epochs():
    epochs = 10
    rates = lr_sequence(settings(epochs=epochs, lr=0.2, schedule="cosine"))
    expected = [0.2 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_constant_keeps_the_lr():
    assert lr_sequence(settings(epochs=5, lr=0.03, schedule="constant")) == [0.03] * 5
