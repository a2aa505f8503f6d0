"""snip and gradnorm against independent formulations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from _criteria_helpers import batch, double_copy, removable_names, tiny_model
from torch.func import functional_call

from layerlottery.criteria import score_blocks


def _mask_sensitivities(model, inputs, labels):
    """|dL/dc| for a multiplicative mask c = 1 on every conv/linear weight (Lee et al.'s definition)."""
    model = copy.deepcopy(model)  # train-mode forward passes move BN statistics
    weights = {name: p.detach() for name, p in model.named_parameters() if p.dim() >= 2}
    masks = {name: torch.ones_like(w, requires_grad=True) for name, w in weights.items()}
    logits = functional_call(model, {name: weights[name] * masks[name] for name in weights}, (inputs,))
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(masks.values()))
    return {name: g.abs() for name, g in zip(masks, grads)}


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_snip_equals_the_mask_gradient(bn_mode, aggregation):
    model = double_copy(tiny_model())
    model.train(bn_mode == "train")
    inputs, labels = batch(16, dtype=torch.float64)
    scores = score_blocks(model, "snip", (inputs, labels), bn_mode=bn_mode, aggregation=aggregation)
    sensitivity = _mask_sensitivities(model, inputs, labels)
    for block in removable_names(model):
        parts = [s for name, s in sensitivity.items() if name.startswith(block + ".")]
        assert len(parts) == 2
        total = sum(float(s.sum()) for s in parts)
        if aggregation == "mean":
            total /= sum(s.numel() for s in parts)
        assert scores[block] == pytest.approx(total, rel=1e-10)


def test_snip_in_train_mode_differs_from_eval_mode():
    # bn_mode must really switch BN statistics (randomized running stats make the two differ).
    model, data = tiny_model(), batch(16)
    assert score_blocks(model, "snip", data, bn_mode="train") != score_blocks(model, "snip", data, bn_mode="eval")


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_gradnorm_is_the_norm_of_the_blocks_gradient(aggregation):
    model = double_copy(tiny_model())
    inputs, labels = batch(16, dtype=torch.float64)
    scores = score_blocks(model, "gradnorm", (inputs, labels), aggregation=aggregation)
    reference = copy.deepcopy(model).train()
    F.cross_entropy(reference(inputs), labels).backward()
    modules = dict(reference.named_modules())
    for block in removable_names(model):
        grads = [modules[block].conv1.weight.grad, modules[block].conv2.weight.grad]
        squares = sum(float((g**2).sum()) for g in grads)
        if aggregation == "mean":
            squares /= sum(g.numel() for g in grads)
        assert scores[block] == pytest.approx(math.sqrt(squares), rel=1e-10)
