"""Algorithm 2 of the paper, end to end: dense runs and tickets at initialization, per seed.

For each seed the dense network is built from that seed (theta_0) and trained. For each criterion and each
p, the same theta_0 is scored, the p weakest blocks are removed, and the shallower network is trained from
its theta_0 weights. Every run is idempotent and resumable (see :mod:`layerlottery.experiments.runs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from layerlottery.config import ExperimentSettings
from layerlottery.criteria import get_criterion
from layerlottery.errors import PruningError
from layerlottery.experiments.at_init import initial_model, model_options_for, ticket_at_init
from layerlottery.experiments.runs import RunDir, RunSpec, TicketSpec
from layerlottery.experiments.sources import DataSource, data_source
from layerlottery.metrics import count_macs, count_params
from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks
from layerlottery.surgery import RemovalPlan, max_removable, parse_protect, remove_blocks
from layerlottery.training import resolve_device, train
from layerlottery.training.emissions import EmissionsRecorder

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExperimentResult:
    """The finished runs of one experiment, as their ``result.json`` contents, in run order."""

    settings: ExperimentSettings
    runs: list[dict[str, Any]]
    trained: int
    """How many runs were trained (or resumed) by this call; 0 when everything was already done."""


def plan_runs(settings: ExperimentSettings) -> list[RunSpec]:
    """Every run of the experiment: per seed the dense network, then each (criterion, p) ticket."""
    specs = []
    pruning = settings.pruning
    for seed in settings.seeds:
        base = dict(model=settings.model, data=settings.data, train=settings.train, seed=seed)
        specs.append(RunSpec(**base))
        for criterion in pruning.criteria:
            for p in pruning.p:
                ticket = TicketSpec(
                    criterion=criterion,
                    p=p,
                    criterion_options=dict(pruning.criterion_options.get(criterion, {})),
                    samples_per_class=pruning.samples_per_class,
                    protect=pruning.protect,
                    min_per_stage=pruning.min_per_stage,
                )
                specs.append(RunSpec(**base, ticket=ticket))
    return specs


def check_feasible(settings: ExperimentSettings) -> None:
    """Refuse, before any training, a p that the network's blocks and the selection rules cannot give."""
    pruning = settings.pruning
    model = create_model(
        settings.model.name, shortcut=settings.model.shortcut, zero_init_residual=settings.model.zero_init_residual
    )
    # Removability is structural, so the model's default input size tells it for any input size.
    limit = max_removable(find_blocks(model), parse_protect(pruning.protect), pruning.min_per_stage)
    if max(pruning.p) > limit:
        raise PruningError(
            f"pruning.p asks for {max(pruning.p)} blocks but {settings.model.name} allows at most {limit} "
            f"(protect={pruning.protect}, min_per_stage={pruning.min_per_stage})"
        )


def run_experiment(settings: ExperimentSettings, *, progress: bool = True, log: Log = print) -> ExperimentResult:
    """Run (or resume, or just read) every run of the experiment and return their results."""
    settings.validate()
    check_feasible(settings)
    specs = plan_runs(settings)
    source: DataSource | None = None  # loaded on first need: a finished experiment reads no data
    results, trained = [], 0
    for index, spec in enumerate(specs, start=1):
        run_dir = RunDir(settings.runs_dir, spec)
        if run_dir.is_finished():
            results.append(run_dir.read_result())
            continue
        log(f"[{index}/{len(specs)}] {spec.label}: {run_dir.path}")
        source = source or data_source(settings.data)
        results.append(execute_run(spec, run_dir, source, settings, progress=progress))
        trained += 1
    return ExperimentResult(settings, results, trained)


def execute_run(
    spec: RunSpec, run_dir: RunDir, source: DataSource, settings: ExperimentSettings, *, progress: bool = True
) -> dict[str, Any]:
    """Train one run to completion (resuming if it was interrupted) and write its result."""
    run_dir.prepare()
    device = resolve_device(spec.train.device)
    model, plan = _initial_model(spec, run_dir, source, device)
    train_loader, test_loader = source.loaders(spec.train, spec.seed, device)
    carbon = settings.carbon
    emissions = EmissionsRecorder(
        enabled=carbon.enabled, country_iso_code=carbon.country_iso_code,
        grid_intensity_g_per_kwh=carbon.grid_intensity_g_per_kwh,
    )
    outcome = train(
        model, train_loader, spec.train, eval_loader=test_loader, checkpoint_dir=run_dir.checkpoints,
        callbacks=[emissions], progress=progress, seed=spec.seed,
    )
    energy = emissions.totals(outcome.history)
    result = {
        "name": spec.name,
        "label": spec.label,
        "kind": spec.kind,
        "seed": spec.seed,
        "criterion": spec.ticket.criterion if spec.ticket else None,
        "p": spec.ticket.p if spec.ticket else 0,
        "removed": list(plan.removed) if plan else [],
        "test_acc": outcome.final_test_acc,
        "best_test_acc": outcome.best_test_acc,
        "test_loss": outcome.final_test_loss,
        "epochs": outcome.epochs,
        "train_seconds": outcome.train_seconds,
        "images_per_second": outcome.images_per_second,
        "compile_seconds": outcome.compile_seconds,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "peak_memory_kind": outcome.peak_memory_kind,
        "macs": count_macs(model, source.input_shape),
        "params": count_params(model),
        "device": str(device),
        **energy,
    }
    run_dir.write_result(result, outcome.history)
    return result


def _initial_model(
    spec: RunSpec, run_dir: RunDir, source: DataSource, device: torch.device
) -> tuple[torch.nn.Module, RemovalPlan | None]:
    """theta_0 of the run's network: dense from the seed, or the ticket (plan found once, then replayed)."""
    options = model_options_for(
        source, shortcut=spec.model.shortcut, zero_init_residual=spec.model.zero_init_residual
    )
    if spec.ticket is None:
        return initial_model(spec.model.name, options, spec.seed, device), None
    if run_dir.plan_file.is_file():  # resuming: the same theta_0, the same blocks, no rescoring
        plan = RemovalPlan.load(run_dir.plan_file)
        return remove_blocks(initial_model(spec.model.name, options, spec.seed, device), plan), plan
    ticket = spec.ticket
    needs_data = get_criterion(ticket.criterion).needs_data
    found = ticket_at_init(
        spec.model.name,
        ticket.criterion,
        scoring_batch=source.scoring_batch(ticket.samples_per_class, spec.seed, device) if needs_data else None,
        p=ticket.p,
        protect=parse_protect(ticket.protect),
        min_per_stage=ticket.min_per_stage,
        seed=spec.seed,
        samples_per_class=ticket.samples_per_class,
        model_options=options,
        criterion_options=ticket.criterion_options,
        device=device,
    )
    found.plan.save(run_dir.plan_file)
    return found.pruned, found.plan
