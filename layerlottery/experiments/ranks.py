"""An experiment under torchrun: each run trained by every rank together (DistributedDataParallel), one after another.

``torchrun --nproc_per_node N -m layerlottery run PRESET`` starts N copies of the command; this module keeps
them in step. Rank 0 is the only one that touches the runs folder: it checks everything before training
(:func:`~layerlottery.experiments.tickets.preflight`), claims each run with its lock, scores tickets and writes
plans, checkpoints and results. It decides, run by run, what happens next and tells the other ranks
(:func:`layerlottery.distributed.main_only`), so they never read the runs folder and need no shared file system
(each loads the data itself). A run then trains on all ranks (:func:`~layerlottery.experiments.tickets.execute_run`
with the ticket's plan sent from rank 0), and all ranks meet at a barrier before the next.

A run claimed by another command is not waited for here (the ranks would idle together): it is skipped, and
once the others are done :class:`~layerlottery.experiments.parallel.RunsFailedError` names it; running the
command again trains what is left.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from layerlottery import distributed
from layerlottery.config import ExperimentSettings
from layerlottery.experiments import locks
from layerlottery.experiments.parallel import RunsFailedError, dependencies
from layerlottery.experiments.runs import RunDir, RunSpec

if TYPE_CHECKING:
    from layerlottery.experiments.tickets import Preflight

Log = Callable[[str], None]

TRAIN, FINISHED = "train", "finished"


def preflight_on_ranks(settings: ExperimentSettings) -> Preflight:
    """Rank 0 makes every check of :func:`~layerlottery.experiments.tickets.preflight` (and any download); the
    other ranks then learn which runs are pending and load the data themselves, without reading the runs folder."""
    from layerlottery.experiments.sources import data_source
    from layerlottery.experiments.tickets import Preflight, plan_runs, preflight
    from layerlottery.training import resolve_device
    from layerlottery.training.ddp import rank_device

    context = distributed.current()
    device = resolve_device(settings.train.device)
    rank_device(device, settings.train.device, context)  # a fixed cuda:N is refused before any work
    checked: Preflight | None = None

    def check() -> list[str]:
        nonlocal checked
        checked = preflight(settings)
        return [spec.name for spec in checked.pending]

    pending_names = distributed.main_only(check)
    if checked is None:  # ranks other than 0
        specs = plan_runs(settings)
        pending = [spec for spec in specs if spec.name in set(pending_names)]
        checked = Preflight(specs, pending, device, data_source(settings.data) if pending else None, [])
    # Run names hash every setting: other settings or another layerlottery on some node show here, before training.
    distributed.all_equal([spec.name for spec in checked.specs], "the experiment's runs (settings or version)")
    return checked


def train_runs_on_ranks(
    settings: ExperimentSettings, specs: Sequence[RunSpec], source: Any, *, progress: bool = True, log: Log = print
) -> int:
    """Train the unfinished runs of ``specs`` in order, each on every rank; returns how many were trained.

    Every rank calls this with the same ``specs`` (the others' ``log`` is silent). Raises
    :class:`~layerlottery.experiments.parallel.RunsFailedError` naming the runs left to other commands.
    """
    from layerlottery.experiments.tickets import execute_run

    context = distributed.current()
    by_name = {spec.name: spec for spec in specs}
    skipped: list[str] = []
    trained = 0
    for number, spec in enumerate(specs, start=1):
        run_dir = RunDir(settings.runs_dir, spec)
        claim: locks.RunLock | None = None

        def decide() -> str:
            nonlocal claim
            if run_dir.is_finished():
                return FINISHED
            for name in dependencies(spec):
                if name in by_name and not RunDir(settings.runs_dir, by_name[name]).is_finished():
                    return f"not started: it needs {by_name[name].label}, which is not finished"
            found = locks.acquire(run_dir.path, uuid.uuid4().hex)
            if not isinstance(found, locks.RunLock):
                return f"being trained by {found.describe()}"
            if run_dir.is_finished():  # finished by its owner between our look and the claim
                found.release()
                return FINISHED
            claim = found
            return TRAIN

        decision = distributed.main_only(decide)
        if decision == FINISHED:
            continue
        if decision != TRAIN:
            skipped.append(f"{spec.label} ({run_dir.path}: {decision})")
            log(f"[{number}/{len(specs)}] skipped {spec.label}: {decision}")
            continue
        try:
            log(f"[{number}/{len(specs)}] {spec.label}: {run_dir.path} (on {context.world_size} processes)")
            execute_run(spec, run_dir, source, settings, progress=progress and context.is_main)
            trained += 1
        finally:
            if claim is not None:
                claim.release()
        distributed.barrier()
    if skipped:
        raise RunsFailedError(
            f"{len(skipped)} of {len(specs)} run(s) were not trained: " + "; ".join(skipped)
            + ". The others are finished; run the same command again once they are free"
        )
    return trained


def initial_model_on_ranks(
    build: Callable[[], tuple[torch.nn.Module, Any]], architecture: Callable[[Any], torch.nn.Module]
) -> tuple[torch.nn.Module, Any]:
    """A run's starting network and plan on every rank: rank 0 ``build``s them (scoring a ticket once, writing
    its plan); the other ranks get the plan and build its ``architecture`` (their weights are replaced by rank
    0's when training starts). The plan is then checked to be the same on every rank."""
    context = distributed.current()
    built: list[torch.nn.Module] = []

    def find() -> Any:
        model, plan = build()
        built.append(model)
        return plan

    plan = distributed.main_only(find)
    model = built[0] if context.is_main else architecture(plan)
    distributed.all_equal(plan.to_dict() if plan is not None else None, "the removal plan")
    return model, plan
