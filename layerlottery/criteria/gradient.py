"""First-order gradient criteria on a data batch: ``snip`` (Lee et al. 2019) and ``gradnorm``."""

from __future__ import annotations

import math

import torch

from layerlottery.criteria.base import ScoringContext, aggregation_option, bn_mode_option, register_criterion
from layerlottery.criteria.common import block_scores, mean_loss_gradient

# Reference SNIP and GraSP score a freshly initialized network in train mode (batch statistics).
_DATA_OPTIONS = {"aggregation": aggregation_option("sum"), "bn_mode": bn_mode_option("train")}


def snip_weight_scores(context: ScoringContext) -> dict[str, torch.Tensor]:
    """Per-weight SNIP |g * w| of every conv/linear weight of ``context.model``, by qualified name.

    Shared by the block criterion below and the per-filter scores of the filter-pruning baseline.
    """
    weights = context.weights()
    assert context.batches is not None
    grads = mean_loss_gradient(context.model, context.batches, list(weights.values()))
    return {name: (g * w.detach()).abs() for (name, w), g in zip(weights.items(), grads)}


@register_criterion("snip", options=_DATA_OPTIONS, needs_data=True, gradient_based=True)
def snip(context: ScoringContext) -> dict[str, float]:
    """Connection sensitivity |g * w| = |dL/dc| for a multiplicative mask c = 1 on each weight, aggregated."""
    return block_scores(snip_weight_scores(context), context.groups, str(context.options["aggregation"]))


@register_criterion("gradnorm", options=_DATA_OPTIONS, needs_data=True, gradient_based=True)
def gradnorm(context: ScoringContext) -> dict[str, float]:
    """Gradient norm of the block's weights: sqrt(aggregate(g^2))."""
    weights = context.weights()
    assert context.batches is not None
    grads = mean_loss_gradient(context.model, context.batches, list(weights.values()))
    per_weight = {name: g.square() for name, g in zip(weights, grads)}
    return block_scores(per_weight, context.groups, str(context.options["aggregation"]), post=math.sqrt)
