"""Per-filter scores for the filter-pruning baseline: SNIP or GraSP per weight, aggregated per filter.

The per-weight scores are exactly those of the block criteria (the same functions, options and data
handling); only the aggregation differs: over one filter's weights instead of over a block's. A filter of
a block's first conv is scored by its own weights (``filter_weights="conv1"``, the default: the filter is
what is removed) or by those plus the next conv's input slice that reads its output
(``"conv1+conv2"``: every weight that disappears with it).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from layerlottery.criteria.base import (
    DegenerateScoresWarning,
    OptionValue,
    ScoringContext,
    get_criterion,
)
from layerlottery.criteria.common import materialize_batches, require_grad_for_weights_only, set_bn_mode
from layerlottery.criteria.gradient import snip_weight_scores
from layerlottery.criteria.grasp import grasp_weight_scores
from layerlottery.errors import ConfigError, PruningError
from layerlottery.surgery.filters import filter_sites

WeightScorer = Callable[[ScoringContext], Mapping[str, torch.Tensor]]

# stacklevel 3: GraSP's class-balance warning points at the caller of filter_scores.
FILTER_CRITERIA: dict[str, WeightScorer] = {
    "snip": snip_weight_scores,
    "grasp": functools.partial(grasp_weight_scores, warning_stacklevel=3),
}
"""Criteria with per-weight scores, usable per filter; their options are the block criteria's."""

FILTER_WEIGHTS = ("conv1", "conv1+conv2")


@dataclass(frozen=True)
class FilterScores:
    """One score per filter of each block's first conv (lower = less important), and how they were made."""

    criterion: str
    options: dict[str, OptionValue]
    """Every option of the criterion, defaults included, plus ``filter_weights``."""
    scores: dict[str, list[float]] = field(default_factory=dict)
    """First conv name (``layer1.0.conv1``) -> score of each of its filters, in network order."""


def filter_scores(
    model: torch.nn.Module,
    criterion: str,
    data: Any,
    *,
    filter_weights: str = "conv1",
    **options: Any,
) -> FilterScores:
    """Score every filter of every residual block's first conv with ``criterion`` (``snip`` or ``grasp``).

    ``data`` and ``options`` are as for :func:`~layerlottery.criteria.score_blocks` (``aggregation`` sum,
    mean or abs_sum, now over one filter's weights; ``bn_mode``; GraSP's temperature, samples_per_class,
    variant ...). The model is not changed: scoring runs on a deep copy. Raises :class:`ConfigError` for an
    unsupported criterion or option; :class:`PruningError` for non-finite scores. Warns
    :class:`DegenerateScoresWarning` when every score is zero (e.g. zero-initialized residual branches).
    """
    if criterion not in FILTER_CRITERIA:
        raise ConfigError(
            f"criterion {criterion!r} has no per-weight scores for filter pruning; choose one of: "
            + ", ".join(FILTER_CRITERIA)
        )
    if filter_weights not in FILTER_WEIGHTS:
        raise ConfigError(f"filter_weights must be one of {', '.join(map(repr, FILTER_WEIGHTS))}, not {filter_weights!r}")
    if data is None:
        raise ConfigError(f"criterion {criterion!r} needs data: pass a batch (inputs, labels) or an iterable of batches")
    resolved = get_criterion(criterion).resolve_options(options)
    sites = filter_sites(model)

    work = copy.deepcopy(model)
    batches = materialize_batches(data, work)
    require_grad_for_weights_only(work)
    set_bn_mode(work, str(resolved["bn_mode"]))
    context = ScoringContext(work, (), {}, batches, tuple(batches[0][0].shape[1:]), dict(resolved))
    with torch.enable_grad():
        per_weight = FILTER_CRITERIA[criterion](context)

    how = str(resolved["aggregation"])
    scores = {}
    for site in sites:
        parts = [per_weight[f"{site.conv}.weight"].flatten(1)]
        if filter_weights == "conv1+conv2":
            # conv2's weight is (out, in, k, k): its input channel j is the slice [:, j], moved to row j.
            parts.append(per_weight[f"{site.next_conv}.weight"].transpose(0, 1).flatten(1))
        scores[site.conv] = aggregate_rows(parts, how).tolist()

    values = [value for row in scores.values() for value in row]
    if not all(math.isfinite(value) for value in values):
        raise PruningError(f"{criterion} filter scores are not finite; check the model and data for NaN/inf")
    if all(value == 0.0 for value in values):
        warnings.warn(
            f"all {criterion} filter scores are exactly zero, so they cannot rank filters (ties fall back to "
            "network order); zero-initialized residual branches do this: score without zero-init",
            DegenerateScoresWarning,
            stacklevel=2,
        )
    return FilterScores(criterion, {**resolved, "filter_weights": filter_weights}, scores)


def aggregate_rows(parts: list[torch.Tensor], how: str) -> torch.Tensor:
    """Row i of the result aggregates row i of every part: per-filter :func:`~layerlottery.criteria.common.aggregate`.

    ``parts`` are 2-D (filters x weights); ``how`` is ``sum``, ``mean`` (per weight) or ``abs_sum``; float64.
    """
    if how == "abs_sum":
        parts = [part.abs() for part in parts]
    total = sum(part.detach().sum(dim=1, dtype=torch.float64) for part in parts)
    if how == "mean":
        total = total / sum(part.shape[1] for part in parts)
    return total.cpu()
