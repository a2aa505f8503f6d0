"""A ticket at initialization (the paper's Algorithm 2, steps 1-2): score theta_0, remove the p weakest blocks.

Training the ticket (step 3) belongs to the training engine; this module gives the pruned network with its
theta_0 weights, the scores, and the removal plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from layerlottery.criteria import BlockScores, get_criterion, score_blocks
from layerlottery.data import ImageDataset
from layerlottery.errors import ConfigError
from layerlottery.experiments.trained import load_trained_weights
from layerlottery.models import create_model
from layerlottery.models.blocks import NetworkBlocks, find_blocks
from layerlottery.surgery import RemovalPlan, parse_protect, remove_blocks, select_blocks

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Ticket:
    """A pruned network at initialization and how it was found."""

    dense: nn.Module
    pruned: nn.Module
    blocks: NetworkBlocks
    """The dense network's blocks (names, costs, removability)."""
    scores: BlockScores
    plan: RemovalPlan


def model_options_for(dataset: Any, **options: Any) -> dict[str, Any]:
    """Model options that fit ``dataset`` (channels, classes, image size), overridden by ``options``.

    ``dataset`` is anything with ``input_shape`` and ``num_classes``, or None: images (C, H, W) give
    ``in_channels``, ``num_classes`` and ``image_size``; token sequences (seq_len,) give ``num_classes`` (the
    vocabulary) and ``seq_len``.
    """
    fitted: dict[str, Any] = {}
    if dataset is not None and len(dataset.input_shape) == 1:
        fitted = {"num_classes": dataset.num_classes, "seq_len": dataset.input_shape[0]}
    elif dataset is not None:
        channels, height, _width = dataset.input_shape
        fitted = {"in_channels": channels, "num_classes": dataset.num_classes, "image_size": height}
    return {**fitted, **options}


def initial_model(
    name: str, options: Mapping[str, Any], seed: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """theta_0: the network ``name`` initialized from ``seed`` alone.

    The one definition of a run's initialization, so the dense network and every ticket of a seed start
    from the same weights. torch's generator is forked, so the caller's random stream is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name, **options)
    return model.to(device)


def scoring_data(
    dataset: ImageDataset | None,
    criterion: str,
    samples_per_class: int = 10,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Batch | None:
    """The batch a criterion scores with: ``samples_per_class`` images of every class, or ``None`` if data-free.

    Class-balanced sampling follows the GraSP reference (10 per class for CIFAR-10); it is used for every
    data criterion so that their scores see the same images.
    """
    if not get_criterion(criterion).needs_data:
        return None
    if dataset is None:
        raise ConfigError(f"criterion {criterion!r} needs data; pass a dataset")
    return dataset.class_balanced(samples_per_class, seed=seed, device=device)


def run_criterion_options(
    criterion: str, options: Mapping[str, Any] | None, seed: int, samples_per_class: int
) -> dict[str, Any]:
    """The criterion's options for one run: criteria that draw randomly or sample per class follow the run's
    seed and ``samples_per_class`` unless ``options`` say otherwise."""
    spec = get_criterion(criterion)
    extra = dict(options or {})
    if "seed" in spec.options:
        extra.setdefault("seed", seed)
    if "samples_per_class" in spec.options:
        extra.setdefault("samples_per_class", samples_per_class)
    return extra


def ticket_at_init(
    model: str,
    criterion: str,
    *,
    dataset: ImageDataset | None = None,
    scoring_batch: Batch | None = None,
    p: int | None = None,
    fraction: float | None = None,
    mac_reduction: float | None = None,
    protect: str | Sequence[str] | None = "first",
    min_per_stage: int = 2,
    selection: str = "greedy",
    seed: int = 0,
    samples_per_class: int = 10,
    model_options: Mapping[str, Any] | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
) -> Ticket:
    """Build ``model`` from ``seed`` (theta_0), score its blocks with ``criterion``, remove the weakest.

    With ``checkpoint`` (a finished run directory, a checkpoint or a state dict file, see
    :mod:`layerlottery.experiments.trained`), the trained weights stored there replace theta_0: they are
    scored, and the pruned network keeps them.

    ``model_options`` are fitted to ``dataset`` (channels, classes, image size) unless given. Data
    criteria score ``scoring_batch`` if given, else ``samples_per_class`` images of each class of
    ``dataset``. The ``random`` criterion takes its seed from ``seed`` unless ``criterion_options`` sets one.
    ``selection`` is ``greedy`` (the p lowest scores) or ``contiguous`` (see :func:`select_blocks`).
    """
    options = model_options_for(dataset, **(model_options or {}))
    spec = get_criterion(criterion)
    spec.resolve_options(dict(criterion_options or {}))  # fail before building anything
    dense = initial_model(model, options, seed, device)
    if checkpoint is not None:
        load_trained_weights(dense, checkpoint, model)
    blocks = find_blocks(dense)
    extra = run_criterion_options(criterion, criterion_options, seed, samples_per_class)
    data = scoring_batch if scoring_batch is not None else scoring_data(dataset, criterion, samples_per_class, seed, device)
    scores = score_blocks(dense, criterion, data, blocks=blocks, **extra)
    plan = select_blocks(
        blocks,
        scores,
        p=p,
        fraction=fraction,
        mac_reduction=mac_reduction,
        protect=protect,
        min_per_stage=min_per_stage,
        model=model,
        model_options=options,
        seed=seed,
        selection=selection,
    )
    return Ticket(dense=dense, pruned=remove_blocks(dense, plan), blocks=blocks, scores=scores, plan=plan)


def ticket_for_spec(
    ticket: Any,
    model: str,
    seed: int,
    scoring_batch: Batch | None,
    model_options: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> Ticket:
    """The ticket at initialization a run's ``TicketSpec`` describes (its criterion with options, p and the
    selection rules), for ``model`` at theta_0 of ``seed``, scored on ``scoring_batch``."""
    return ticket_at_init(
        model,
        ticket.criterion,
        scoring_batch=scoring_batch,
        p=ticket.p,
        protect=parse_protect(ticket.protect),
        min_per_stage=ticket.min_per_stage,
        selection=ticket.selection,
        seed=seed,
        samples_per_class=ticket.samples_per_class,
        model_options=model_options,
        criterion_options=ticket.criterion_options,
        device=device,
    )
