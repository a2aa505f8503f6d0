"""``kl``: how much the network's prediction changes when a block's residual branch is switched off.

For every sample x, KL(p(x) || q_b(x)), with p the softmax output of the network and q_b that of the same
network with block b's residual branch forced to zero (which is what deleting the block leaves, see
:func:`~layerlottery.models.blocks.zero_branches`), averaged over class-balanced samples. A block whose
removal leaves the predictions unchanged scores 0, the lowest possible score.

Cost: one forward pass per removable block plus one, on the scoring samples only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerlottery.criteria.activations import chunks, sample_options
from layerlottery.criteria.common import scoring_samples
from layerlottery.criteria.base import ScoringContext, register_criterion
from layerlottery.errors import DataError
from layerlottery.models.blocks import zero_branches


def _log_probabilities(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)
    if logits.dim() != 2:
        raise DataError(f"the model returns outputs of shape {tuple(logits.shape)}; kl needs (batch, classes) logits")
    # float64 softmax: a divergence of nearly identical float32 distributions would be rounding noise.
    return F.log_softmax(logits.double(), dim=1)


@register_criterion("kl", options=sample_options(), needs_data=True)
def kl(context: ScoringContext) -> dict[str, float]:
    """KL divergence of the softmax output with the block's residual branch zeroed from the full network's."""
    batches = scoring_samples(context, "kl")
    model = context.model
    totals = {block.name: torch.zeros((), dtype=torch.float64) for block in context.blocks}
    count = 0
    with torch.no_grad():
        for inputs, labels in chunks(batches, int(context.options["batch_size"])):  # type: ignore[arg-type]
            full = _log_probabilities(model, inputs)
            for name in totals:
                with zero_branches(model, [name]):
                    ablated = _log_probabilities(model, inputs)
                # kl_div(input=log q, target=log p) = sum p (log p - log q) = KL(p || q), per sample, summed.
                totals[name] += F.kl_div(ablated, full, log_target=True, reduction="sum").cpu()
            count += len(labels)
    return {name: float(total / count) for name, total in totals.items()}
