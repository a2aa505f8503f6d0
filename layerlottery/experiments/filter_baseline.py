"""The filter-pruning baseline of the paper's Table 3, as runs beside the layer tickets at initialization.

For each (criterion, p, seed) layer ticket, the baseline starts from the same theta_0, scores every filter of
every residual block's first conv with the same criterion, options and scoring batch (SNIP or GraSP per
weight, summed per filter), and removes as many filters as the layer ticket has fewer than the dense network
(:func:`~layerlottery.surgery.filters.filters_to_remove_for`: ResNet-32 p=1 in stage 1, 1232 -> 1200). The
narrower network (physically smaller convs) then trains through the same trainer as every other run.

The layer plan that sets the target is the layer ticket's own ``plan.json`` when that run has written it (it
trains first), else it is found the same way (:func:`~layerlottery.experiments.at_init.ticket_at_init`, one
scoring). The filter plan is saved once in the run directory (``filter_plan.json``) and replayed on resume
from the seed, never rescored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from layerlottery.criteria import get_criterion
from layerlottery.experiments.at_init import initial_model, model_options_for, ticket_for_spec
from layerlottery.experiments.runs import RunDir, RunSpec
from layerlottery.experiments.sources import DataSource
from layerlottery.surgery import RemovalPlan
from layerlottery.surgery.filters import (
    FilterPlan,
    apply_filter_plan,
    count_filters,
    filter_ticket_at_init,
    filters_to_remove_for,
)


def filter_ticket(spec: RunSpec, run_dir: RunDir, source: DataSource, device: torch.device) -> tuple[nn.Module, FilterPlan]:
    """The baseline at theta_0: its filter plan found once (saved before training), then replayed on resume."""
    ticket = spec.ticket
    assert ticket is not None and spec.kind == "filters"
    options = model_options_for(source, **spec.model.factory_options())
    if run_dir.filter_plan_file.is_file():  # resuming: the same theta_0, the same filters, no rescoring
        plan = run_dir.read_filter_plan()
        return apply_filter_plan(initial_model(spec.model.name, options, spec.seed, device), plan), plan
    batch = source.scoring_batch(ticket.samples_per_class, spec.seed, device) if get_criterion(ticket.criterion).needs_data else None
    layer_spec = spec.layer_ticket
    layer_plan = _layer_plan(layer_spec, RunDir(run_dir.path.parent, layer_spec), batch, options, device)
    dense = initial_model(spec.model.name, options, spec.seed, device)
    target = filters_to_remove_for(dense, layer_plan)
    found = filter_ticket_at_init(
        spec.model.name,
        ticket.criterion,
        batch,
        target,
        seed=spec.seed,
        model_options=options,
        criterion_options=ticket.criterion_options,
        samples_per_class=ticket.samples_per_class,
        device=device,
    )
    # Which layer ticket set the target: recorded so the plan explains itself.
    selection = {**found.plan.selection, "layer_ticket": layer_spec.name, "layer_removed": list(layer_plan.removed)}
    plan = dataclasses.replace(found.plan, selection=selection)
    plan.save(run_dir.filter_plan_file)
    return found.pruned, plan


def _layer_plan(
    layer_spec: RunSpec, layer_dir: RunDir, batch: Any, options: dict[str, Any], device: torch.device
) -> RemovalPlan:
    """The layer ticket's removal plan: its own ``plan.json`` (checked) when written, else found the same way."""
    if layer_dir.plan_file.is_file():
        return layer_dir.read_plan()
    ticket = layer_spec.ticket
    assert ticket is not None
    return ticket_for_spec(ticket, layer_spec.model.name, layer_spec.seed, batch, options, device).plan


def result_fields(spec: RunSpec, plan: RemovalPlan | FilterPlan | None, model: nn.Module) -> dict[str, Any]:
    """What every run's ``result.json`` records about filters; for the baseline, also what it removed."""
    fields: dict[str, Any] = {"filters": count_filters(model)}
    if spec.ticket is not None and spec.lottery is None:
        fields["structure"] = spec.ticket.structure
    if isinstance(plan, FilterPlan):
        fields.update(
            filters_removed=plan.n_removed,
            dense_filters=plan.dense_filters,
            layer_ticket=plan.selection.get("layer_ticket"),
            layer_removed=plan.selection.get("layer_removed"),
        )
    return fields
