"""Algorithm 1 of the paper: layer-pruned lottery tickets after training, with rewinding, per seed.

For each seed the dense network is trained once (the very run Algorithm 2 compares with: same settings,
same directory), keeping its weights after each rewind epoch. For each criterion, rewind point i and p:

1. the dense network's *final* weights are scored (never a snapshot's);
2. the p weakest blocks go, by the same selection rules as tickets at initialization;
3. every remaining parameter and buffer (stem, kept blocks, downsampling blocks, head, BatchNorm running
   statistics) is set to the dense run's weights after epoch i (epoch 0: theta_0, rebuilt from the seed,
   so rewinding to 0 needs no snapshot);
4. the ticket trains epochs i+1 .. n on the same schedule, as if the run resumed at epoch i (fresh
   optimizer momentum, the same batches per epoch). Rewinding to 0 retrains the full schedule.

The paper's control trains each pruned architecture from a fresh random initialization, the full schedule;
its weights are drawn from :func:`control_seed`, never theta_0's seed. The iterative variant (beyond the
paper) repeats train -> remove k -> rewind: round r scores the trained ticket of round r - 1 and rewinds
to the same dense snapshot; its round 1 is the one-shot ticket of p = k (the same run).

Every ticket is its own hash-named, resumable run (:mod:`layerlottery.experiments.runs`); its hash holds
the dense run's name, the scored run's name (iterative rounds), the criterion with options, p, and the
rewind point. The training itself is :func:`layerlottery.experiments.tickets.execute_run`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerlottery.config import ExperimentSettings
from layerlottery.criteria import get_criterion, score_blocks
from layerlottery.errors import ConfigError, DataError, PruningError
from layerlottery.experiments.at_init import initial_model, model_options_for, run_criterion_options
from layerlottery.experiments.runs import LotterySpec, RunDir, RunSpec, TicketSpec
from layerlottery.experiments.sources import DataSource
from layerlottery.models.blocks import NetworkBlocks, find_blocks
from layerlottery.surgery import RemovalPlan, max_removable, parse_protect, remove_blocks, select_blocks
from layerlottery.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_snapshot,
    model_fingerprint,
    snapshot_path,
)

_SNAPSHOT_FILE = re.compile(r"epoch_(\d+)\.pt")


def plan_runs(settings: ExperimentSettings) -> list[RunSpec]:
    """Every run, in an order that trains each run after the runs it needs: per seed the dense network, then
    per criterion each (rewind point, p) ticket and the iterative rounds, then the controls."""
    lottery = settings.lottery
    rewinds = lottery.rewind_points(settings.train.epochs)
    # Snapshot epochs are not hashed: asking the dense run for snapshots keeps its name (Algorithm 2's).
    snapshots = sorted(set(settings.train.snapshot_epochs) | {epoch for epoch in rewinds if epoch > 0})
    dense_train = dataclasses.replace(settings.train, snapshot_epochs=tuple(snapshots))
    ticket_train = dataclasses.replace(settings.train, snapshot_epochs=())
    specs: dict[str, RunSpec] = {}  # by name: iterative round 1 is the one-shot ticket of p = k

    def add(spec: RunSpec) -> RunSpec:
        return specs.setdefault(spec.name, spec)

    for seed in settings.seeds:
        dense = add(RunSpec(settings.model, settings.data, dense_train, seed))
        for criterion in lottery.criteria:

            def ticket(p: int, lottery_spec: LotterySpec) -> RunSpec:
                found = TicketSpec(
                    criterion=criterion,
                    p=p,
                    criterion_options=dict(lottery.criterion_options.get(criterion, {})),
                    samples_per_class=lottery.samples_per_class,
                    protect=lottery.protect,
                    min_per_stage=lottery.min_per_stage,
                    selection=lottery.selection,
                )
                return RunSpec(settings.model, settings.data, ticket_train, seed, found, lottery_spec)

            for rewind in rewinds:
                for p in lottery.p:
                    add(ticket(p, LotterySpec(dense=dense.name, rewind_epoch=rewind)))
                previous: RunSpec | None = None
                for round_ in range(1, lottery.rounds + 1) if lottery.rounds > 1 else ():
                    source = previous.name if previous is not None else None
                    step = LotterySpec(dense=dense.name, rewind_epoch=rewind, source=source, round=round_)
                    previous = add(ticket(round_ * lottery.k, step))
            if lottery.control:
                for p in lottery.p:
                    add(ticket(p, LotterySpec(dense=dense.name, rewind_epoch=0, reinit=True)))
    return list(specs.values())


def check_feasible(settings: ExperimentSettings, model: nn.Module) -> None:
    """Refuse, before any training, a p (or rounds x k) the selection rules cannot give, and a dense run on
    disk that lacks a snapshot a rewind point needs; ``model`` is a fresh instance of ``settings.model``."""
    lottery = settings.lottery
    for criterion in lottery.criteria:  # e.g. hrank and pls need images and classes, not a language model
        get_criterion(criterion).check_model(model)
    # Removability is structural, so the model's default input size tells it for any input size.
    blocks = find_blocks(model)
    limit = max_removable(blocks, parse_protect(lottery.protect), lottery.min_per_stage, lottery.selection)
    rules = f"protect={lottery.protect}, min_per_stage={lottery.min_per_stage}, selection={lottery.selection}"
    if lottery.p and max(lottery.p) > limit:
        raise PruningError(
            f"lottery.p asks for {max(lottery.p)} blocks but {settings.model.name} allows at most {limit} ({rules})"
        )
    if lottery.rounds > 1 and lottery.k > limit:
        raise PruningError(f"lottery.k = {lottery.k} blocks per round but {settings.model.name} allows at most {limit} ({rules})")
    # Iterative rounds remove blocks anywhere, so their total is bounded by the greedy limit; a contiguous round
    # runs among the blocks still present, which only their scores decide (a later round may find no run).
    limit = max_removable(blocks, parse_protect(lottery.protect), lottery.min_per_stage)
    if lottery.rounds > 1 and lottery.rounds * lottery.k > limit:
        raise PruningError(
            f"lottery.rounds x lottery.k = {lottery.rounds} x {lottery.k} = {lottery.rounds * lottery.k} blocks but "
            f"{settings.model.name} allows at most {limit} ({rules})"
        )
    check_snapshots(settings, plan_runs(settings))


def check_snapshots(settings: ExperimentSettings, specs: list[RunSpec]) -> None:
    """Each dense run already on disk must hold (or still be able to take) every snapshot its tickets rewind to.

    A finished dense run trained without a snapshot cannot grow one; neither can an interrupted run past
    that epoch. Both are refused in one line naming the run, the epoch, and the rewind points it can serve.
    """
    needed: dict[str, set[int]] = {}
    for spec in specs:
        if spec.lottery is not None and not spec.lottery.reinit and spec.lottery.rewind_epoch > 0:
            needed.setdefault(spec.lottery.dense, set()).add(spec.lottery.rewind_epoch)
    for spec in specs:
        if spec.kind != "dense" or spec.name not in needed:
            continue
        run_dir = RunDir(settings.runs_dir, spec)
        if run_dir.is_finished():
            trained_to = spec.train.epochs
        elif checkpoint_path(run_dir.checkpoints).is_file():
            trained_to = int(load_checkpoint(checkpoint_path(run_dir.checkpoints), "cpu")["epoch"])
        else:
            continue  # not started: it will keep every snapshot asked of it
        missing = sorted(e for e in needed[spec.name] if e <= trained_to and not snapshot_path(run_dir.checkpoints, e).is_file())
        if missing:
            kept = sorted({0, *available_snapshots(run_dir.checkpoints)})
            when = "it was trained without it" if run_dir.is_finished() else f"it is trained past epoch {missing[0]} without it"
            raise ConfigError(
                f"dense run {spec.name} ({spec.label}) has no snapshot of epoch {missing[0]}; {when}: delete "
                f"{run_dir.path} to retrain it, or choose lottery rewind points among epochs {kept}"
            )


def available_snapshots(directory: str | Path) -> list[int]:
    """Epochs of the rewind snapshots in a checkpoint directory."""
    found = (_SNAPSHOT_FILE.fullmatch(path.name) for path in Path(directory).glob("epoch_*.pt"))
    return sorted(int(match.group(1)) for match in found if match)


def control_seed(seed: int) -> int:
    """The seed the control's random re-initialization is drawn from: a hash of the run's seed, at least 2**31.

    It is a function of the seed (reruns give the same control), and it is never a seed an experiment uses
    for theta_0 (those are small), so the control never starts from the dense network's weights.
    """
    digest = hashlib.sha256(f"layerlottery.control/{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big") | (1 << 31)


def lottery_ticket(
    spec: RunSpec, run_dir: RunDir, source: DataSource, device: torch.device
) -> tuple[nn.Module, RemovalPlan]:
    """The ticket at its starting point: blocks chosen on trained weights, kept weights rewound.

    The plan is found once and saved in the run directory; a resumed run replays it without rescoring.
    """
    assert spec.lottery is not None and spec.ticket is not None
    options = model_options_for(source, **spec.model.factory_options())
    runs_dir = run_dir.path.parent
    if run_dir.plan_file.is_file():
        plan = RemovalPlan.load(run_dir.plan_file)
    else:
        plan = find_plan(spec, runs_dir, source, options, device)
        plan.save(run_dir.plan_file)
    return remove_blocks(starting_weights(spec, runs_dir, options, device), plan), plan


def find_plan(
    spec: RunSpec, runs_dir: Path, source: DataSource, options: dict[str, Any], device: torch.device
) -> RemovalPlan:
    """Score the trained network (the dense run, or the previous round's ticket) and choose the blocks to remove.

    The returned plan lists every removed block relative to the dense network, with this step's scores.
    """
    lottery, ticket = spec.lottery, spec.ticket
    assert lottery is not None and ticket is not None
    scored_path = runs_dir / (lottery.source or lottery.dense)  # a run directory (see RunDir)
    if not (scored_path / "result.json").is_file():
        raise DataError(f"{spec.label} scores run {scored_path.name}, which has not finished; run the experiment again")
    previous = RemovalPlan.load(scored_path / "plan.json") if lottery.source else None
    trained = trained_network(spec.model.name, options, previous, scored_path / "checkpoints", spec.train.epochs, device)
    blocks = find_blocks(trained)
    criterion_options = run_criterion_options(ticket.criterion, ticket.criterion_options, spec.seed, ticket.samples_per_class)
    data = source.scoring_batch(ticket.samples_per_class, spec.seed, device) if get_criterion(ticket.criterion).needs_data else None
    scores = score_blocks(trained, ticket.criterion, data, blocks=blocks, **criterion_options)
    already = previous.p if previous is not None else 0
    plan = select_blocks(
        blocks, scores, p=ticket.p - already, protect=parse_protect(ticket.protect), min_per_stage=ticket.min_per_stage,
        model=spec.model.name, model_options=options, selection=ticket.selection,
    )
    if previous is None:
        return plan
    dense_blocks = find_blocks(initial_model(spec.model.name, options, spec.seed, device))
    return _after(previous, plan, dense_blocks)


def trained_network(
    model: str, options: dict[str, Any], plan: RemovalPlan | None, checkpoints: Path, epochs: int, device: torch.device
) -> nn.Module:
    """The final weights of a finished run (its resume checkpoint ``last.pt``), in its (pruned) architecture."""
    network = initial_model(model, options, 0, device)  # the architecture; its weights are replaced below
    if plan is not None:
        network = remove_blocks(network, plan)
    path = checkpoint_path(checkpoints)
    state = load_checkpoint(path, device, fingerprint=model_fingerprint(network))
    if int(state["epoch"]) != epochs:
        raise DataError(f"{path} holds epoch {state['epoch']}, not the final epoch {epochs}; delete its run to retrain it")
    network.load_state_dict(state["model"])
    return network


def starting_weights(spec: RunSpec, runs_dir: Path, options: dict[str, Any], device: torch.device) -> nn.Module:
    """The dense network whose weights the kept blocks start from: the dense run after the rewind epoch
    (theta_0 from the seed for epoch 0), or a fresh draw from :func:`control_seed` for the control."""
    lottery = spec.lottery
    assert lottery is not None
    if lottery.reinit:
        return initial_model(spec.model.name, options, control_seed(spec.seed), device)
    network = initial_model(spec.model.name, options, spec.seed, device)
    if lottery.rewind_epoch > 0:
        load_snapshot(snapshot_path(runs_dir / lottery.dense / "checkpoints", lottery.rewind_epoch), network)
    return network


def result_fields(spec: RunSpec) -> dict[str, Any]:
    """What a lottery ticket's ``result.json`` records beyond a ticket at initialization's."""
    lottery = spec.lottery
    assert lottery is not None
    return {
        "rewind_epoch": lottery.rewind_epoch,
        "control": lottery.reinit,
        "round": lottery.round,
        "dense_run": lottery.dense,
        "scored_run": lottery.source or lottery.dense,
    }


def _after(previous: RemovalPlan, step: RemovalPlan, dense: NetworkBlocks) -> RemovalPlan:
    """An iterative round's plan relative to the dense network: the earlier rounds' blocks plus this round's."""
    order = {name: position for position, name in enumerate(dense.names)}
    removed = sorted({*previous.removed, *step.removed}, key=order.__getitem__)
    if len(removed) != previous.p + step.p:  # a bug: select_blocks chose among blocks still present
        raise PruningError(f"round removes {step.removed}, already removed {previous.removed}")
    return dataclasses.replace(
        step,
        removed=tuple(removed),
        selection={**step.selection, "p": len(removed), "k": step.p, "removed_before": list(previous.removed)},
        dense_macs=dense.total_macs,
        pruned_macs=dense.total_macs - sum(dense[name].macs for name in removed),
        dense_params=dense.total_params,
        pruned_params=dense.total_params - sum(dense[name].params for name in removed),
    )
