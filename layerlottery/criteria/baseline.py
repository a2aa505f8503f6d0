"""Data-free baselines: ``random`` scores and weight ``magnitude``."""

from __future__ import annotations

import math

import torch

from layerlottery.criteria.base import Option, ScoringContext, aggregation_option, integer, one_of, register_criterion
from layerlottery.criteria.common import block_scores


@register_criterion("random", options={"seed": Option(0, integer(minimum=0), "seed of the private generator")})
def random_scores(context: ScoringContext) -> dict[str, float]:
    """Uniform [0, 1) per block, from a generator seeded with ``seed`` (the global RNG is left alone)."""
    generator = torch.Generator().manual_seed(int(context.options["seed"]))
    draws = torch.rand(len(context.blocks), generator=generator, dtype=torch.float64)
    return {block.name: float(value) for block, value in zip(context.blocks, draws)}


@register_criterion(
    "magnitude",
    options={
        "norm": Option("l1", one_of("l1", "l2"), "l1: aggregate |w|; l2: sqrt(aggregate w^2)"),
        # The paper rejected raw L1 because block sums grow with the stage's width (later stages always
        # win); the per-parameter mean removes that bias, hence the default.
        "aggregation": aggregation_option("mean"),
    },
)
def magnitude(context: ScoringContext) -> dict[str, float]:
    """Norm of the block's conv weights: aggregate(|w|) for L1, sqrt(aggregate(w^2)) for L2."""
    # float64 before squaring: float32 squares lose digits that the L2 norm's sqrt would expose.
    weights = {name: w.detach().double() for name, w in context.weights().items()}
    how = str(context.options["aggregation"])
    if context.options["norm"] == "l1":
        per_weight = {name: w.abs() for name, w in weights.items()}
        return block_scores(per_weight, context.groups, how)
    per_weight = {name: w.square() for name, w in weights.items()}
    return block_scores(per_weight, context.groups, how, post=math.sqrt)
