"""``score_blocks``: run a registered criterion on a private copy of the model and check what it returns."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from layerlottery.criteria.base import DegenerateScoresWarning, ScoringContext, get_criterion
from layerlottery.criteria.common import (
    block_weight_groups,
    materialize_batches,
    require_grad_for_weights_only,
    set_bn_mode,
    zero_init_branches,
)
from layerlottery.criteria.scores import BlockScores
from layerlottery.errors import ConfigError, DataError, PruningError
from layerlottery.models.blocks import NetworkBlocks, find_blocks


def score_blocks(
    model: nn.Module,
    criterion: str,
    data: Any = None,
    *,
    input_shape: Sequence[int] | None = None,
    blocks: NetworkBlocks | None = None,
    **options: Any,
) -> BlockScores:
    """Score every structurally removable block of ``model`` with ``criterion``; lower = less important.

    ``data`` is one ``(inputs, labels)`` batch or an iterable of batches (read once into a list); several
    batches act as one batch of all their samples (the mean loss over all samples; exactly so with
    ``bn_mode="eval"``, while in train mode BN normalizes each batch by its own statistics). Data-free
    criteria ignore it. ``input_shape`` (one sample, no batch dimension) defaults to ``blocks.input_shape``,
    then the model's ``default_input_shape``, then the data's sample shape. ``blocks`` saves a
    :func:`find_blocks` pass. ``options`` are the criterion's (see ``get_criterion(name).options``); all of
    them, defaults included, are recorded in the result.

    The model is never changed: scoring runs on a deep copy (weights, BN statistics, gradients, training
    and ``requires_grad`` flags of ``model`` stay bitwise as they were).

    Raises :class:`ConfigError` for an unknown criterion or option, an invalid option value, or a data
    criterion without data; :class:`PruningError` if there is nothing to score or the scores are not finite.
    Warns :class:`DegenerateScoresWarning` when the scores cannot rank the blocks (all zero).
    """
    spec = get_criterion(criterion)
    resolved = spec.resolve_options(options)
    spec.check_model(model)
    if spec.needs_data and data is None:
        raise ConfigError(
            f"criterion {spec.name!r} needs data: pass a batch (inputs, labels) or an iterable of batches"
        )

    work = copy.deepcopy(model)
    batches = materialize_batches(data, work) if spec.needs_data else None
    shape = _input_shape(work, input_shape, blocks, batches)
    _check_channels(work, shape, batches, explicit=input_shape is not None)
    if blocks is None:
        blocks = find_blocks(work, shape)
    removable = tuple(blocks.removable)
    if not removable:
        raise PruningError(
            f"{type(model).__name__} has no removable blocks (identity shortcut, same input and output shape); "
            "there is nothing to score"
        )
    groups = block_weight_groups(work, removable)
    zero_init = spec.gradient_based and zero_init_branches(work, removable)

    require_grad_for_weights_only(work)
    if "bn_mode" in resolved:
        set_bn_mode(work, str(resolved["bn_mode"]))
    context = ScoringContext(work, removable, groups, batches, shape, dict(resolved))
    with torch.enable_grad():  # a caller's no_grad() must not silently zero every gradient criterion
        raw = spec(context)

    missing = [block.name for block in removable if block.name not in raw]
    if missing:
        raise RuntimeError(f"criterion {spec.name!r} returned no score for {missing}")  # a bug in the criterion
    scores = {block.name: float(raw[block.name]) for block in removable}
    bad = [name for name, value in scores.items() if not math.isfinite(value)]
    if bad:
        raise PruningError(
            f"{spec.name} scores of {', '.join(bad)} are not finite; check the model and data for NaN/inf "
            "(or a temperature/aggregation setting that overflows)"
        )
    _warn_if_degenerate(spec.name, scores, zero_init)
    return BlockScores(spec.name, resolved, scores)


def _input_shape(
    model: nn.Module, explicit: Sequence[int] | None, blocks: NetworkBlocks | None, batches: list | None
) -> tuple[int, ...]:
    if explicit is not None:
        shape = tuple(int(s) for s in explicit)
        if not shape or min(shape) < 1:
            raise ConfigError(f"input_shape {shape} must be positive sizes per sample, without the batch dimension")
        return shape
    if blocks is not None:
        return tuple(blocks.input_shape)
    default = getattr(model, "default_input_shape", None)
    if default is not None:
        return tuple(int(s) for s in default)
    if batches:
        return tuple(batches[0][0].shape[1:])
    raise ConfigError(
        f"{type(model).__name__} has no default_input_shape; pass input_shape, e.g. (3, 32, 32) without the batch size"
    )


def _check_channels(model: nn.Module, shape: tuple[int, ...], batches: list | None, explicit: bool) -> None:
    """Refuse inputs with another channel count than the model's stem takes, before any forward pass.

    The stem is the first convolution the model registers (``conv1`` of every ResNet here and in
    torchvision); a model without convolutions is not checked.
    """
    stem = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if stem is None:
        return
    expected = stem.in_channels
    given = [(f"input_shape {shape} has", shape[0])] if explicit else []
    given += [("inputs have", batch[0].shape[1]) for batch in batches or []]
    for what, channels in given:
        if channels != expected:
            raise DataError(
                f"{what} {channels} channels but the model expects {expected} (in_channels of its first "
                f"convolution); give {expected}-channel images or a model built for {channels} channels"
            )


def _warn_if_degenerate(name: str, scores: dict[str, float], zero_init: bool) -> None:
    all_zero = all(value == 0.0 for value in scores.values())
    if zero_init:
        # Iterative criteria turn the tie into an elimination order, so the scores need not be zero.
        what = f"all {name} scores are zero" if all_zero else f"{name} scores cannot rank blocks"
        message = (
            f"{what}: the residual branches end in zero-initialized BatchNorm (zero_init_residual), "
            "so gradients cannot rank blocks; score without zero-init or use magnitude/random"
        )
    elif all_zero:
        message = (
            f"all {name} scores are exactly zero, so they cannot rank blocks (ties fall back to network order); "
            "check the model's weights and the data"
        )
    else:
        return
    # stacklevel 3: point at the caller of score_blocks, not at this helper.
    warnings.warn(message, DegenerateScoresWarning, stacklevel=3)
