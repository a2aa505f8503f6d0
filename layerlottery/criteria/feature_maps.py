"""Feature-map criteria of trained networks: ``hrank`` (Lin et al. 2020) and ``expectabs``.

Both read each block's output (after its final ReLU by default; ``activation="branch"`` reads the residual
branch before the addition), reduce it per filter and per batch, and average over filters:

* HRank: the matrix rank of every H x W map, averaged over samples, then over filters. A block whose
  filters produce low-rank maps carries little information.
* expectABS: mean |activation| per filter over samples and positions, then the mean over filters.
"""

from __future__ import annotations

from typing import Callable

import torch

from layerlottery.criteria.activations import (
    activation_option,
    sample_options,
    stream_block_activations,
)
from layerlottery.criteria.common import scoring_samples
from layerlottery.criteria.base import Batch, Option, OptionValue, ScoringContext, register_criterion
from layerlottery.errors import DataError


def _non_negative_or_none(value: object) -> OptionValue:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < float("inf"):
        raise ValueError("expected a finite number >= 0, or None")
    return float(value)


def feature_map_ranks(maps: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Rank of every H x W map of ``maps`` (N, C, H, W) -> (N, C) integer tensor.

    ``rtol=None`` is torch's (and the HRank reference's ``torch.matrix_rank``) tolerance: singular values
    below ``max(H, W) * eps(dtype) * largest singular value`` count as zero.
    """
    if maps.dim() != 4:
        raise DataError(f"hrank needs (batch, channels, height, width) feature maps, got shape {tuple(maps.shape)}")
    return torch.linalg.matrix_rank(maps, rtol=rtol)


class _PerFilterMean:
    """Per block, per filter: running float64 sums and the count of values summed."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, per_filter_sum: torch.Tensor, count: int) -> None:
        if name in self.sums:
            self.sums[name] += per_filter_sum
            self.counts[name] += count
        else:
            self.sums[name] = per_filter_sum.clone()
            self.counts[name] = count

    def mean_over_filters(self) -> dict[str, float]:
        return {name: float((total / self.counts[name]).mean()) for name, total in self.sums.items()}


def _score(
    context: ScoringContext, batches: list[Batch], reduce: Callable[[torch.Tensor], tuple[torch.Tensor, int]]
) -> dict[str, float]:
    means = _PerFilterMean()
    stream_block_activations(context, batches, lambda name, out, _labels: means.add(name, *reduce(out)))
    return means.mean_over_filters()


_RTOL = Option(None, _non_negative_or_none, "rank tolerance relative to the largest singular value; None: max(H, W) * eps")


@register_criterion(
    "hrank",
    options={"activation": activation_option(), "rtol": _RTOL, **sample_options()},
    needs_data=True,
    images_only="ranks 2-D feature maps",
)
def hrank(context: ScoringContext) -> dict[str, float]:
    """HRank: rank of each filter's H x W output map, averaged over samples, then over filters."""
    rtol = context.options["rtol"]

    def reduce(out: torch.Tensor) -> tuple[torch.Tensor, int]:
        ranks = feature_map_ranks(out, None if rtol is None else float(rtol))  # type: ignore[arg-type]
        return ranks.sum(dim=0, dtype=torch.float64), out.shape[0]

    return _score(context, scoring_samples(context, "hrank"), reduce)


@register_criterion(
    "expectabs",
    options={"activation": activation_option(), **sample_options()},
    needs_data=True,
)
def expectabs(context: ScoringContext) -> dict[str, float]:
    """expectABS: mean |activation| of each filter over samples and positions, then mean over filters."""

    def reduce(out: torch.Tensor) -> tuple[torch.Tensor, int]:
        per_filter = out.abs().transpose(0, 1).reshape(out.shape[1], -1)  # (C, N * positions)
        return per_filter.sum(dim=1, dtype=torch.float64), per_filter.shape[1]

    return _score(context, scoring_samples(context, "expectabs"), reduce)
