"""Representation similarity beside accuracy: linear CKA of each ticket with the dense network of its seed.

After an experiment's runs, every finished ticket (at initialization, filter baseline, after training) whose
dense run of the same seed is finished gets ``similarity.json`` in its run directory::

    {"dense_run": "dense-1a9a10a8d958", "cka": 0.91, "samples": 2000}

``cka`` is :func:`~layerlottery.metrics.cka.penultimate_cka` of the two trained networks (their final weights,
``checkpoints/last.pt``, each in its own architecture rebuilt from its plan) on the whole test split; null
when it is undefined (a network whose penultimate features are constant). The file is written once,
atomically: a rerun computes nothing. Reports read it and never compute it (they load no data).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from layerlottery.atomic import atomic_write_text
from layerlottery.errors import DataError
from layerlottery.experiments.at_init import initial_model, model_options_for
from layerlottery.experiments.runs import FILTERS, RunDir, RunSpec
from layerlottery.experiments.sources import DataSource
from layerlottery.metrics.cka import penultimate_cka
from layerlottery.surgery import remove_blocks
from layerlottery.surgery.filters import apply_filter_plan
from layerlottery.training.checkpoint import checkpoint_path, load_checkpoint, model_fingerprint

Log = Callable[[str], None]


def pending_similarities(runs_dir: str, specs: Sequence[RunSpec]) -> list[tuple[RunDir, RunDir]]:
    """(ticket, dense run of its seed) pairs, both finished, whose ticket has no ``similarity.json`` yet."""
    dense = {spec.seed: RunDir(runs_dir, spec) for spec in specs if spec.kind == "dense"}
    pairs = []
    for spec in specs:
        if spec.kind == "dense" or spec.seed not in dense:
            continue
        ticket = RunDir(runs_dir, spec)
        if ticket.is_finished() and dense[spec.seed].is_finished() and not ticket.similarity_file.exists():
            pairs.append((ticket, dense[spec.seed]))
    return pairs


def compute_similarities(
    pairs: Sequence[tuple[RunDir, RunDir]], source: DataSource, device: torch.device, log: Log = print
) -> int:
    """Write ``similarity.json`` for each (ticket, dense) pair; returns how many were written.

    Each dense network is loaded once. Both networks see the test split in its fixed order.
    """
    dense_models: dict[str, nn.Module] = {}
    for ticket_dir, dense_dir in pairs:
        if dense_dir.spec.name not in dense_models:
            dense_models[dense_dir.spec.name] = trained_run_network(dense_dir, source, device)
        ticket = trained_run_network(ticket_dir, source, device)
        _train_loader, test_loader = source.loaders(ticket_dir.spec.train, ticket_dir.spec.seed, device)
        counted = _Counted(test_loader.epoch(0))  # unshuffled: every test image once
        try:
            cka: float | None = penultimate_cka(ticket, dense_models[dense_dir.spec.name], counted, device)
        except DataError as exc:  # constant features: CKA is undefined, shown as "-"
            log(f"note: no CKA for {ticket_dir.spec.label}: {exc}")
            cka = None
        record = {"dense_run": dense_dir.spec.name, "cka": cka, "samples": counted.samples}
        atomic_write_text(ticket_dir.similarity_file, json.dumps(record, indent=2) + "\n")
    return len(pairs)


def trained_run_network(run_dir: RunDir, source: DataSource, device: torch.device) -> nn.Module:
    """A finished run's final network: its architecture rebuilt from its plan, its ``last.pt`` weights loaded."""
    spec = run_dir.spec
    options = model_options_for(source, **spec.model.factory_options())
    network = initial_model(spec.model.name, options, spec.seed, device)  # the weights are replaced below
    if spec.kind == FILTERS:
        network = apply_filter_plan(network, run_dir.read_filter_plan())
    elif spec.ticket is not None:
        network = remove_blocks(network, run_dir.read_plan())
    path = checkpoint_path(run_dir.checkpoints)
    state = load_checkpoint(path, device, fingerprint=model_fingerprint(network))
    if int(state["epoch"]) != spec.train.epochs:
        raise DataError(f"{path} holds epoch {state['epoch']}, not the final epoch {spec.train.epochs}; delete its run to retrain it")
    network.load_state_dict(state["model"])
    return network


class _Counted:
    """Batches passed through, counting the samples."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches
        self.samples = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.samples += len(inputs)
            yield batch
