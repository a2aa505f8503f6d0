"""SynFlow (Tanaka et al. 2020): data-free synaptic flow, single-shot or iterative over blocks.

The network is *linearized*: every parameter and floating buffer (BN running statistics included) is
replaced by its absolute value, an all-ones input goes through, and R = sum(output). A weight's score is
|w * dR/dw|. Always in float64: R is a product of per-layer gains along 50+ layers (a ResNet-110 at
initialization reaches ~1e100 and beyond), which overflows float32 (max ~3e38) to inf, and its small
counterparts underflow to zero; there is deliberately no float32 option.

The iterative variant is the block analogue of Tanaka's iterative pruning: repeatedly eliminate (zero the
residual branch of) the weakest remaining block and rescore the others on the thinner network.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import torch
from torch import nn

from layerlottery.criteria.base import (
    Option,
    ScoringContext,
    aggregation_option,
    bn_mode_option,
    boolean,
    integer,
    register_criterion,
)
from layerlottery.criteria.common import block_scores, conv_linear_weights, require_grad_for_weights_only, set_bn_mode
from layerlottery.errors import PruningError
from layerlottery.models.blocks import zero_branches


def linearize(model: nn.Module) -> nn.Module:
    """In place: float64, and |.| of every parameter and floating buffer. Returns ``model``."""
    model.double()
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    return model


def synflow_pass(
    model: nn.Module, input_shape: Sequence[int], zeroed: Iterable[str] = ()
) -> tuple[float, dict[str, torch.Tensor]]:
    """R and per-weight |w * dR/dw| of an already :func:`linearize`-d model, with ``zeroed`` branches at zero.

    Raises :class:`PruningError` if R or a score is not finite.
    """
    weights = conv_linear_weights(model)
    first = next(iter(weights.values()), None)
    device = first.device if first is not None else torch.device("cpu")
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    with zero_branches(model, list(zeroed)), torch.enable_grad():
        flow = model(ones).sum()
        value = float(flow.detach())
        if not math.isfinite(value):
            raise PruningError(
                f"synflow's R = {value} is not finite even in float64; the network is too deep or its "
                "weights too large for synflow, use another criterion"
            )
        grads = torch.autograd.grad(flow, list(weights.values()), allow_unused=True)
    scores = {
        name: torch.zeros_like(w) if g is None else (w.detach() * g).abs()
        for (name, w), g in zip(weights.items(), grads)
    }
    if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
        raise PruningError("synflow scores overflowed even in float64; use another criterion for this network")
    return value, scores


def synflow_weight_scores(
    model: nn.Module, input_shape: Sequence[int], *, bn_mode: str = "eval"
) -> tuple[float, dict[str, torch.Tensor]]:
    """Single-shot synflow of every conv/linear weight: ``(R, {weight name: |w * dR/dw|})``, in float64.

    Works on a linearized copy; ``model`` is not changed. By Tanaka's conservation theorem the scores of
    each layer of a bias-free chain sum to R.
    """
    work = linearize(copy.deepcopy(model))
    require_grad_for_weights_only(work)
    set_bn_mode(work, bn_mode)
    return synflow_pass(work, input_shape)


def _check_rounds(options: dict) -> None:
    if options["rounds"] is not None and not options["iterative"]:
        raise ValueError("rounds only applies with iterative=True")


@register_criterion(
    "synflow",
    options={
        "aggregation": aggregation_option("sum"),
        # Eval mode: BN then scales by |gamma| / sqrt(|running var|), a fixed linear map; train mode would
        # normalize the single all-ones sample by its own statistics.
        "bn_mode": bn_mode_option("eval"),
        "iterative": Option(False, boolean, "eliminate the weakest block and rescore, repeatedly"),
        "rounds": Option(
            None, integer(minimum=1, allow_none=True), "eliminations when iterative; None: all blocks"
        ),
    },
    gradient_based=True,
    validate=_check_rounds,
    images_only="feeds an all-ones input through |weights| (no token ids)",
)
def synflow(context: ScoringContext) -> dict[str, float]:
    """SynFlow: aggregate |w * dR/dw| on the linearized float64 network with an all-ones input."""
    model = linearize(context.model)
    how = str(context.options["aggregation"])

    def score(zeroed: list[str]) -> dict[str, float]:
        _, per_weight = synflow_pass(model, context.input_shape, zeroed)
        return block_scores(per_weight, context.groups, how)

    scores = score([])
    if not context.options["iterative"]:
        return scores
    remaining = [block.name for block in context.blocks]
    rounds = context.options["rounds"]
    rounds = len(remaining) if rounds is None else min(int(rounds), len(remaining))  # type: ignore[arg-type]
    eliminated: list[str] = []
    for _ in range(rounds):
        weakest = min(remaining, key=lambda name: scores[name])  # ties: the first in network order
        eliminated.append(weakest)
        remaining.remove(weakest)
        if remaining:
            scores = score(eliminated)
    # Elimination order becomes the ranking: the first eliminated gets -k, the last -1, below every
    # surviving block, whose last (non-negative) score is kept.
    result = {name: float(-(len(eliminated) - position)) for position, name in enumerate(eliminated)}
    result.update({name: scores[name] for name in remaining})
    return result
