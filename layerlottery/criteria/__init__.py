"""Block criteria: score every removable residual block, lower = less important.

``score_blocks(model, "grasp", batch)`` runs a registered criterion on a private copy of the model and
returns :class:`BlockScores` (block name -> score, plus the criterion and every resolved option). Criteria:
``random``, ``magnitude`` (data-free baselines), ``snip``, ``gradnorm``, ``grasp`` (need data) and
``synflow`` (data-free, float64) for networks at initialization; ``hrank``, ``expectabs``, ``kl`` and ``pls``
(need data, BN in eval mode by default) read what a trained network computes, as do ``block_influence``
and ``angular_distance`` (transformer layers: how much a block turns its hidden states). Add one with
:func:`register_criterion`.
"""

from layerlottery.criteria import baseline as _baseline  # noqa: F401  (registers random, magnitude)
from layerlottery.criteria import feature_maps as _feature_maps  # noqa: F401  (registers hrank, expectabs)
from layerlottery.criteria import gradient as _gradient  # noqa: F401  (registers snip, gradnorm)
from layerlottery.criteria import grasp as _grasp  # noqa: F401  (registers grasp)
from layerlottery.criteria import hidden_states as _hidden_states  # noqa: F401  (block_influence, angular_distance)
from layerlottery.criteria import kl as _kl  # noqa: F401  (registers kl)
from layerlottery.criteria import pls as _pls  # noqa: F401  (registers pls)
from layerlottery.criteria import synflow as _synflow  # noqa: F401  (registers synflow)
from layerlottery.criteria.base import (
    ClassBalanceWarning,
    Criterion,
    DegenerateScoresWarning,
    Option,
    ScoringContext,
    get_criterion,
    list_criteria,
    register_criterion,
)
from layerlottery.criteria.feature_maps import feature_map_ranks
from layerlottery.criteria.grasp import hessian_gradient_product
from layerlottery.criteria.pls import pls_vip, vip_scores
from layerlottery.criteria.scores import BlockScores
from layerlottery.criteria.scoring import score_blocks
from layerlottery.criteria.synflow import synflow_weight_scores

__all__ = [
    "BlockScores",
    "ClassBalanceWarning",
    "Criterion",
    "DegenerateScoresWarning",
    "feature_map_ranks",
    "Option",
    "ScoringContext",
    "get_criterion",
    "hessian_gradient_product",
    "list_criteria",
    "pls_vip",
    "register_criterion",
    "score_blocks",
    "synflow_weight_scores",
    "vip_scores",
]
