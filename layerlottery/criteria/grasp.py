"""GraSP (Wang et al. 2020), the paper's default: gradient-signal preservation via a Hessian-gradient product.

Per weight, the reference computes ``S = -w * (H g)`` and removes the weights with the *largest* S (they
least reduce, or most increase, the gradient flow when removed). A block's importance is therefore
``-(sum of S over the block)`` = aggregate(w * H g), lowest removed (``variant="reference"``); Frankle et
al. (2021) found ranking by ``|S|`` at least as good (``variant="abs"``).

Following the reference: logits are divided by a temperature T (200 for CIFAR), and the data are
class-balanced, the first ``samples_per_class`` samples of each class (10 for CIFAR-10 ResNet-32).

By default the sample goes through the network as one batch, which matches Synaptic-Flow's GraSP bit for
bit. Two behaviours of the reference code (Wang et al.) are options, off by default:

* ``halves=True``: sort the sample by class and forward it in two halves, each with its own BatchNorm
  batch statistics, as the reference does (its scores are then ours times 4, as it sums two half-batch
  means where we take one mean over the sample: the same ranking);
* ``reinit_head=True``: re-initialize the linear layers of the scoring copy (Xavier normal, from a
  generator seeded with ``seed``; the classifier in these ResNets) before scoring, as the reference does
  to its copy of the network.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from layerlottery.criteria.base import (
    Batch,
    Option,
    ScoringContext,
    aggregation_option,
    bn_mode_option,
    boolean,
    integer,
    one_of,
    positive_float,
    register_criterion,
)
from layerlottery.criteria.common import block_scores, hessian_gradient_products, scoring_samples
from layerlottery.errors import ConfigError, DataError


def hessian_gradient_product(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    params: Sequence[torch.Tensor],
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """``H g`` for L = mean cross-entropy of ``model(inputs) / temperature``: Hessian of L times its gradient.

    Both w.r.t. ``params`` (parameters of ``model``, all requiring grad), by double backward, without
    touching any ``.grad``. The model runs as it is: in train mode its BN running statistics move, so pass
    a copy if that matters.
    """
    own = {id(p) for p in model.parameters()}
    foreign = [index for index, p in enumerate(params) if id(p) not in own]
    if foreign:
        # Their gradients would silently be zero; most likely the params of a copy of the model.
        raise ConfigError(f"params {foreign} are not parameters of the model; pass tensors from model.parameters()")
    frozen = [index for index, p in enumerate(params) if not p.requires_grad]
    if frozen:
        raise ConfigError(f"params {frozen} do not require grad; H g needs requires_grad=True on every param")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, not {temperature}")
    return hessian_gradient_products(model, [(inputs, labels)], list(params), float(temperature))[1]


@register_criterion(
    "grasp",
    options={
        "aggregation": aggregation_option("sum"),
        "bn_mode": bn_mode_option("train"),
        "temperature": Option(200.0, positive_float, "logits are divided by this before the loss"),
        "samples_per_class": Option(
            10, integer(minimum=1, allow_none=True), "first N samples of each class; None: all the data as given"
        ),
        "variant": Option("reference", one_of("reference", "abs"), "reference: w * Hg; abs: |w * Hg|"),
        "halves": Option(False, boolean, "forward the class-sorted sample in two halves (separate BN statistics)"),
        "reinit_head": Option(False, boolean, "re-initialize the linear layer(s) (the classifier) of the scoring copy, Xavier normal"),
        "seed": Option(0, integer(minimum=0), "seed of the head's re-initialization (reinit_head only)"),
    },
    needs_data=True,
    gradient_based=True,
)
def grasp(context: ScoringContext) -> dict[str, float]:
    """GraSP: block importance aggregate(w * H g) (= -sum of the reference S), or aggregate(|w * H g|)."""
    # stacklevel 5: the class-balance warning points at score_blocks' caller (through Criterion.__call__).
    importance = grasp_weight_scores(context, warning_stacklevel=5)
    return block_scores(importance, context.groups, str(context.options["aggregation"]))


def grasp_weight_scores(context: ScoringContext, warning_stacklevel: int = 2) -> dict[str, torch.Tensor]:
    """Per-weight GraSP importance ``w * H g`` (or ``|w * H g|``) of every conv/linear weight, by name.

    Applies the criterion's data options (class-balanced selection, temperature, halves, reinit_head);
    shared by the block criterion and the per-filter scores of the filter-pruning baseline. ``warning_stacklevel`` makes the
    class-balance warning point at the caller's caller that matters.
    """
    options = context.options
    batches = scoring_samples(context, "grasp", stacklevel=warning_stacklevel + 1)
    if options["halves"]:
        batches = class_sorted_halves(batches)
    if options["reinit_head"]:
        reinitialize_head(context.model, int(options["seed"]))  # type: ignore[arg-type]
    weights = context.weights()
    _, products = hessian_gradient_products(
        context.model, batches, list(weights.values()), float(options["temperature"])  # type: ignore[arg-type]
    )
    importance = {name: w.detach() * hg for (name, w), hg in zip(weights.items(), products)}
    if options["variant"] == "abs":
        importance = {name: value.abs() for name, value in importance.items()}
    return importance


def class_sorted_halves(batches: Sequence[Batch]) -> list[Batch]:
    """The samples of ``batches`` sorted by class (stably) and cut into two halves, as the GraSP reference
    forwards them: with 10 classes of 10 samples, classes 0-4 and classes 5-9."""
    inputs = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    if len(labels) < 2:
        raise DataError(f"grasp: halves=true needs at least 2 samples, got {len(labels)}")
    order = torch.sort(labels, stable=True).indices
    inputs, labels = inputs[order], labels[order]
    middle = len(labels) // 2
    return [(inputs[:middle], labels[:middle]), (inputs[middle:], labels[middle:])]


def reinitialize_head(model: nn.Module, seed: int) -> None:
    """Xavier-normal weights for every ``nn.Linear`` of ``model`` (the scoring copy), from ``seed`` alone.

    As the reference's ``reinit``, which re-draws each linear layer's weight (biases kept); in the CIFAR
    ResNets that is the classifier alone.
    """
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError("grasp: reinit_head=true needs a model with an nn.Linear layer (its classifier)")
    generator = torch.Generator().manual_seed(seed)
    for linear in linears:
        # Drawn on the CPU, then copied: the same weights whatever device the model is on.
        fresh = torch.empty(linear.weight.shape, dtype=linear.weight.dtype)
        nn.init.xavier_normal_(fresh, generator=generator)
        with torch.no_grad():
            linear.weight.copy_(fresh)
