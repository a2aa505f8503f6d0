"""The filter-pruning baseline: remove filters (output channels) of each residual block's first conv.

The paper compares layer pruning with filter pruning *at the same filter count*: a layer ticket that deletes
p blocks has fewer filters than the dense network (ResNet-32 with projection shortcuts counts 1232; removing
one stage-1 block leaves 1200), and the baseline removes exactly as many filters, chosen by the same SNIP or
GraSP scores summed per filter, from the first conv of every residual block. The block's second conv loses
the matching input channels and the BN between them the matching features, so the network gets physically
narrower (smaller convs, not masks) and keeps its depth and output shapes.

* :func:`count_filters` / :func:`filters_to_remove_for`: the filter count and the target a layer plan sets;
* :func:`filter_sites`: the convs whose filters can go (``conv1 -> bn1 -> conv2`` of every residual block);
* :func:`select_filters`: the global ranking of per-filter scores, lowest removed, a minimum kept per conv;
* :func:`remove_filters` / :func:`apply_filter_plan`: the channel surgery (Torch-Pruning's dependency graph);
* :class:`FilterPlan`: the choice as JSON that replays on a fresh model of the same seed;
* :func:`filter_ticket_at_init`: all of it from a model name and a seed, like ``ticket_at_init`` for layers.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from layerlottery.errors import ConfigError, PruningError
from layerlottery.metrics.macs import count_macs, count_params, resolve_input_shape
from layerlottery.models.blocks import residual_modules
from layerlottery.surgery.apply import remove_blocks
from layerlottery.surgery.plan import PlanRecord, RemovalPlan

if TYPE_CHECKING:
    from layerlottery.criteria.filters import FilterScores

FILTER_PLAN_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------- counting


def count_filters(model: nn.Module) -> int:
    """Number of filters: the output channels of every convolution (stem, block convs, projection shortcuts).

    This is the paper's count: ``cifar_resnet32`` with shortcut B has 16 (stem) + 5 x 2 x (16 + 32 + 64)
    (the blocks' two convs) + 32 + 64 (the two 1x1 projection shortcuts) = 1232 filters. Linear layers are
    not filters. With shortcut A (no projection convs) the same network has 1136.
    """
    return sum(module.out_channels for module in model.modules() if isinstance(module, _ConvNd))


def filters_to_remove_for(model: nn.Module, plan: RemovalPlan | Sequence[str]) -> int:
    """How many filters the layer ticket ``plan`` has fewer than ``model``: the baseline's target.

    E.g. 32 for ResNet-32 when the plan deletes one stage-1 block (2 convs x 16 filters: 1232 -> 1200),
    64 for a stage-2 block, 128 for a stage-3 block.
    """
    return count_filters(model) - count_filters(remove_blocks(model, plan))


# ------------------------------------------------------------------------------------------------ sites


@dataclass(frozen=True)
class FilterSite:
    """One prunable conv: the first conv of a residual block, the BN after it, and the conv that reads it."""

    block: str
    conv: str
    """Qualified name of the conv whose filters (output channels) can go, e.g. ``layer1.0.conv1``."""
    bn: str
    next_conv: str
    """The conv whose input channels shrink to match (the block's second conv)."""
    width: int
    """Number of filters of ``conv`` in the model the sites were read from."""


def filter_sites(model: nn.Module) -> list[FilterSite]:
    """The first conv of every residual block, in network order, with the modules its filters couple to.

    Every registered block kind (this project's ``BasicBlock``, torchvision's ``BasicBlock`` and
    ``Bottleneck``) names them ``conv1 -> bn1 -> conv2``. Raises :class:`PruningError` for a network without
    residual blocks or a block that does not have that structure.
    """
    sites = []
    for name, block, _kind in residual_modules(model, required=True):
        conv, bn, next_conv = (getattr(block, attr, None) for attr in ("conv1", "bn1", "conv2"))
        shaped = (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, _BatchNorm)
            and isinstance(next_conv, nn.Conv2d)
            and conv.groups == 1
            and next_conv.groups == 1
            and conv.out_channels == bn.num_features == next_conv.in_channels
        )
        if not shaped:
            raise PruningError(
                f"block {name} has no conv1 -> bn1 -> conv2 chain of matching widths (ungrouped Conv2d, "
                "BatchNorm, Conv2d); filter pruning supports ResNet BasicBlock/Bottleneck-style blocks"
            )
        sites.append(FilterSite(name, f"{name}.conv1", f"{name}.bn1", f"{name}.conv2", int(conv.out_channels)))
    return sites


# ------------------------------------------------------------------------------------------- selection


def min_kept(width: int, min_keep_fraction: float) -> int:
    """Filters a conv of ``width`` filters keeps at least: ceil(fraction x width), and never fewer than 1."""
    return max(1, math.ceil(min_keep_fraction * width - 1e-9))


def select_filters(
    scores: Mapping[str, Sequence[float]], n_filters: int, *, min_keep_fraction: float = 0.0
) -> dict[str, list[int]]:
    """Remove the ``n_filters`` lowest-scoring filters over all convs of ``scores`` (one global ranking).

    ``scores`` maps each conv to one score per filter (lower = less important), e.g.
    ``FilterScores.scores``. A conv already down to its minimum (:func:`min_kept`) is skipped and the next
    lowest filter taken. Ties go by network order (the order of ``scores``), then filter index, so the
    result is a pure function of the scores. Returns conv -> sorted indices of its removed filters (every
    conv listed, possibly with ``[]``). Raises :class:`PruningError` when the minimums leave too few filters.
    """
    if isinstance(n_filters, bool) or not isinstance(n_filters, int) or n_filters < 0:
        raise ConfigError(f"n_filters_to_remove must be an integer >= 0, not {n_filters!r}")
    if not 0.0 <= min_keep_fraction < 1.0:
        raise ConfigError(f"min_keep_fraction must be in [0, 1), not {min_keep_fraction!r}")
    left = {conv: len(values) for conv, values in scores.items()}
    floor = {conv: min_kept(width, min_keep_fraction) for conv, width in left.items()}
    available = sum(max(0, left[conv] - floor[conv]) for conv in left)
    if n_filters > available:
        raise PruningError(
            f"n_filters_to_remove={n_filters} but only {available} filters of {len(left)} convs can go while each "
            f"keeps at least max(1, ceil({min_keep_fraction} x width)); ask for fewer or lower min_keep_fraction"
        )
    ranked = sorted(
        ((float(value), order, index, conv) for order, (conv, values) in enumerate(scores.items())
         for index, value in enumerate(values))
    )
    removed: dict[str, list[int]] = {conv: [] for conv in scores}
    taken = 0
    for _value, _order, index, conv in ranked:
        if taken == n_filters:
            break
        if left[conv] > floor[conv]:
            removed[conv].append(index)
            left[conv] -= 1
            taken += 1
    return {conv: sorted(indices) for conv, indices in removed.items()}


# ------------------------------------------------------------------------------------------------ surgery


def remove_filters(
    model: nn.Module, removed: Mapping[str, Sequence[int]], input_shape: Sequence[int] | None = None
) -> nn.Module:
    """A copy of ``model`` without the listed filters of each block's first conv; ``model`` is unchanged.

    ``removed`` maps a first conv (``layer1.0.conv1``) to the indices of its filters to delete, counted in
    ``model``. The conv, its BN and the next conv's input channels are sliced by Torch-Pruning's dependency
    graph (traced with one zero sample of ``input_shape``, default the model's ``default_input_shape``), which
    must find exactly that coupling: a filter that also feeds anything else is refused. Kept weights and BN
    statistics are bitwise the corresponding slices of the original.
    """
    import torch_pruning as tp  # lazy: only filter pruning needs it

    sites = {site.conv: site for site in filter_sites(model)}
    checked = _checked_removal(sites, removed)
    pruned = copy.deepcopy(model)
    if not any(checked.values()):
        return pruned
    shape = resolve_input_shape(pruned, input_shape)
    first = next(pruned.parameters())
    example = torch.zeros((1, *shape), device=first.device, dtype=first.dtype)
    flags = {module: module.training for module in pruned.modules()}
    pruned.eval()  # tracing runs one forward pass: in train mode it would move the BN running statistics
    try:
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    finally:
        for module, flag in flags.items():
            module.training = flag
    modules = dict(pruned.named_modules())
    for conv_name, indices in checked.items():
        if not indices:
            continue
        site = sites[conv_name]
        group = graph.get_pruning_group(modules[conv_name], tp.prune_conv_out_channels, idxs=list(indices))
        touched = {id(dep.target.module) for dep, _ in group.items if dep.target.module in flags}
        expected = {id(modules[site.conv]), id(modules[site.bn]), id(modules[site.next_conv])}
        if touched != expected:
            names = sorted(name for name, module in modules.items() if id(module) in touched)
            raise PruningError(
                f"the filters of {conv_name} feed {names}, not just {site.bn} and {site.next_conv}; "
                "this block's structure is not supported by filter pruning"
            )
        group.prune()
    return pruned


def _checked_removal(
    sites: Mapping[str, FilterSite], removed: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    checked = {}
    for conv, indices in removed.items():
        site = sites.get(conv)
        if site is None:
            raise PruningError(f"{conv!r} is not the first conv of a residual block; prunable convs: {', '.join(sites)}")
        values = tuple(int(i) for i in indices)
        if len(set(values)) != len(values) or any(not 0 <= i < site.width for i in values):
            raise PruningError(f"filter indices of {conv} must be distinct and in 0..{site.width - 1}, not {list(values)}")
        if len(values) >= site.width:
            raise PruningError(f"cannot remove all {site.width} filters of {conv}; keep at least one")
        checked[conv] = tuple(sorted(values))
    return checked


# --------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class FilterPlan(PlanRecord):
    """Which filters went and why, as JSON that rebuilds the narrower network on a fresh model.

    ``removed`` lists, per first conv, the indices of its removed filters in the dense network.
    ``build_model()`` rebuilds the pruned network from the registered ``model`` initialized from ``seed``
    (theta_0, the same weights the plan was chosen on); :func:`apply_filter_plan` applies it to any model.
    """

    KIND: ClassVar[str] = "filter plan"

    removed: dict[str, list[int]]
    widths: dict[str, int] = field(default_factory=dict)
    """Dense width (filter count) of every first conv, checked on replay."""
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    input_shape: tuple[int, ...] | None = None
    criterion: str | None = None
    criterion_options: dict[str, Any] = field(default_factory=dict)
    """Every setting of the criterion, defaults included, plus ``filter_weights``."""
    scores: dict[str, list[float]] = field(default_factory=dict)
    """Per first conv, one score per filter of the dense network (lower = less important)."""
    selection: dict[str, Any] = field(default_factory=dict)
    """How filters were picked: the target count, global ranking, per-conv minimum."""
    dense_filters: int | None = None
    pruned_filters: int | None = None
    dense_macs: int | None = None
    pruned_macs: int | None = None
    dense_params: int | None = None
    pruned_params: int | None = None
    format_version: int = FILTER_PLAN_FORMAT_VERSION

    @property
    def n_removed(self) -> int:
        """Number of removed filters."""
        return sum(len(indices) for indices in self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = "filter_plan"
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterPlan:
        if not isinstance(data, dict) or data.get("kind") != "filter_plan" or "removed" not in data:
            raise ConfigError("not a layerlottery filter plan: a JSON object with kind 'filter_plan' is expected")
        version = data.get("format_version", FILTER_PLAN_FORMAT_VERSION)
        if version != FILTER_PLAN_FORMAT_VERSION:
            raise ConfigError(
                f"filter plan format {version} is not supported by this layerlottery (format "
                f"{FILTER_PLAN_FORMAT_VERSION}); upgrade layerlottery"
            )
        values = {key: value for key, value in data.items() if key != "kind"}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"filter plan has unknown fields {unknown}; was it written by a newer layerlottery?")
        if values.get("input_shape") is not None:
            values["input_shape"] = tuple(values["input_shape"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FilterPlan:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"filter plan {path} does not exist")
        return cls.from_json(path.read_text())

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The registered dense model at theta_0 of ``seed``, with this plan's filters removed."""
        if self.model is None:
            raise ConfigError("this filter plan names no registered model; call apply_filter_plan(your_model, plan)")
        from layerlottery.experiments.at_init import initial_model  # lazy: experiments import surgery
        from layerlottery.models import create_model

        if self.seed is None:
            dense = create_model(self.model, **self.model_options).to(device)
        else:
            dense = initial_model(self.model, self.model_options, self.seed, device)
        return apply_filter_plan(dense, self)


def apply_filter_plan(model: nn.Module, plan: FilterPlan) -> nn.Module:
    """A copy of ``model`` without the plan's filters; refuses a model whose first convs differ from the plan's."""
    widths = {site.conv: site.width for site in filter_sites(model)}
    if plan.widths and widths != plan.widths:
        differing = sorted(set(widths.items()) ^ set(plan.widths.items()))[:3]
        raise PruningError(
            f"the model's first convs do not match the filter plan's (e.g. {differing}); "
            "apply the plan to the architecture it was made for"
        )
    return remove_filters(model, plan.removed, plan.input_shape)


# ----------------------------------------------------------------------------------------- entry point


class FilterTicket(NamedTuple):
    """A filter-pruned network at initialization and its plan (which records the scores)."""

    pruned: nn.Module
    plan: FilterPlan


def filter_ticket_at_init(
    model: str,
    criterion: str,
    scoring_batch: Any,
    n_filters_to_remove: int,
    *,
    seed: int = 0,
    model_options: Mapping[str, Any] | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    filter_weights: str = "conv1",
    min_keep_fraction: float = 0.0,
    samples_per_class: int | None = 10,
    device: torch.device | str = "cpu",
) -> FilterTicket:
    """The filter-pruning baseline: theta_0 of ``model`` from ``seed``, ``n_filters_to_remove`` filters gone.

    Scores every filter of every block's first conv with ``criterion`` (``snip`` or ``grasp``, options as
    for blocks, e.g. ``aggregation``) on ``scoring_batch`` (a batch or an iterable of batches), ranks them
    globally and removes the lowest, each conv keeping at least ``max(1, ceil(min_keep_fraction x width))``.
    ``filter_weights`` is ``"conv1"`` (score a filter by its own weights) or ``"conv1+conv2"`` (plus the
    next conv's input slice it feeds). GraSP's ``samples_per_class`` follows the argument unless
    ``criterion_options`` sets it, as for layer tickets. Get the target from a layer plan with
    :func:`filters_to_remove_for`. Returns ``(pruned, plan)``; the plan replays with ``plan.build_model()``.
    """
    from layerlottery.criteria import get_criterion
    from layerlottery.criteria.filters import filter_scores  # lazy: criteria.filters imports this module
    from layerlottery.experiments.at_init import initial_model

    options = dict(model_options or {})
    extra = dict(criterion_options or {})
    if "samples_per_class" in get_criterion(criterion).options:
        extra.setdefault("samples_per_class", samples_per_class)
    dense = initial_model(model, options, seed, device)
    # Fail on an infeasible target before scoring (GraSP's double backward is the expensive part).
    select_filters({site.conv: [0.0] * site.width for site in filter_sites(dense)}, n_filters_to_remove,
                   min_keep_fraction=min_keep_fraction)
    scores = filter_scores(dense, criterion, scoring_batch, filter_weights=filter_weights, **extra)
    removed = select_filters(scores.scores, n_filters_to_remove, min_keep_fraction=min_keep_fraction)
    return prune_filters(
        dense, removed, scores=scores, model=model, model_options=options, seed=seed,
        selection={"n_filters_to_remove": n_filters_to_remove, "ranking": "global, lowest removed",
                   "convs": "first conv of every residual block", "min_keep_fraction": min_keep_fraction},
    )


def prune_filters(
    dense: nn.Module,
    removed: Mapping[str, Sequence[int]],
    *,
    scores: FilterScores | None = None,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    selection: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
) -> FilterTicket:
    """Remove ``removed`` from ``dense``: the narrower copy and its :class:`FilterPlan` (counts included).

    ``removed`` maps first convs to filter indices (convs not listed lose nothing); the other arguments are
    recorded in the plan so that it replays (``model``, ``model_options``, ``seed``) and explains itself.
    """
    shape = resolve_input_shape(dense, input_shape)
    widths = {site.conv: site.width for site in filter_sites(dense)}
    listed = {conv: sorted(int(i) for i in removed.get(conv, ())) for conv in widths}
    pruned = remove_filters(dense, listed, shape)
    plan = FilterPlan(
        removed=listed,
        widths=widths,
        model=model,
        model_options=dict(model_options or {}),
        seed=seed,
        input_shape=shape,
        criterion=scores.criterion if scores is not None else None,
        criterion_options=dict(scores.options) if scores is not None else {},
        scores={conv: list(values) for conv, values in scores.scores.items()} if scores is not None else {},
        selection=dict(selection or {}),
        dense_filters=count_filters(dense),
        pruned_filters=count_filters(pruned),
        dense_macs=count_macs(dense, shape),
        pruned_macs=count_macs(pruned, shape),
        dense_params=count_params(dense),
        pruned_params=count_params(pruned),
    )
    return FilterTicket(pruned, plan)
