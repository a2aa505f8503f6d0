"""The paper's tables from finished runs: accuracy change vs dense (Table 2) and cost reductions (Table 4).

Every ticket is compared with the dense network *of the same seed* (same initialization theta_0), then
the per-seed differences are averaged: mean and sample standard deviation over seeds.

Time and CO2 resist a disturbed stretch: a run's training time is its typical (lower-median) epoch times the
epochs it trained, and its CO2 likewise from its per-epoch emissions, so a competing process that stalls a few
epochs 100x does not swing the speedup. A run with an epoch slower than
:data:`~layerlottery.metrics.timing.DISTURBED_FACTOR` x its typical epoch is marked ``timing disturbed`` (†)
rather than shown as if clean. Results written before per-epoch times were recorded fall back to totals.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from rich.table import Table

from layerlottery.metrics.energy import describe_energy_sources
from layerlottery.metrics.timing import DISTURBED_FACTOR, run_timing

DISTURBED_MARK = "†"
"""Beside a speedup or CO2 whose runs include one with a visibly disturbed epoch (see ``timing_disturbed``)."""
MORE_CO2_MARK = "‡"
"""Beside a negative CO2 reduction: the ticket emitted more than the dense network."""


@dataclass(frozen=True)
class DenseSummary:
    """The dense baseline over seeds."""

    seeds: int
    test_acc_mean: float
    test_acc_std: float
    macs: int
    params: int
    train_seconds_mean: float
    emissions_kg_mean: float | None
    typical_train_seconds_mean: float | None = None
    """Mean over seeds of the typical epoch x epochs (None when a run has no per-epoch times)."""
    timing_disturbed: bool = False
    """A dense run had an epoch slower than ``DISTURBED_FACTOR`` x its typical epoch."""
    energy_sources: dict[str, list[str]] | None = None
    """Per component ("cpu", "gpu", "ram") where its energy came from, over all runs ("nvml", "rapl",
    "tdp_estimate", "estimate", ...); None when no run recorded it."""
    filters: int | None = None
    """Filters (conv output channels) of the dense network; None for results written before it was recorded."""
    perplexity_mean: float | None = None
    """Test perplexity of a language model (exp of the mean next-token loss), mean over seeds; None otherwise."""


@dataclass(frozen=True)
class TicketRow:
    """One (criterion, p) ticket over seeds, relative to the dense network."""

    criterion: str
    p: int
    seeds: int
    test_acc_mean: float
    acc_change_mean: float
    """Accuracy change vs dense in percentage points (ticket - dense), mean over seeds."""
    acc_change_std: float
    wins: bool
    """Mean ticket accuracy + xi >= mean dense accuracy."""
    mac_reduction: float
    param_reduction: float
    speedup_mean: float
    speedup_std: float
    co2_reduction_mean: float | None
    energy_measured: bool | None
    """True if energy came from hardware counters, False if estimated, None if not measured."""
    rewind_epoch: int | None = None
    """Tickets after training (Algorithm 1): the dense epoch the kept weights were rewound to; None at init."""
    rewind_fraction: float | None = None
    """``rewind_epoch`` as a fraction of the training epochs."""
    control: bool = False
    """Algorithm 1's control: the pruned architecture re-initialized at random and trained in full."""
    rounds: int = 1
    """Iterative rounds that removed the p blocks (1 = one shot)."""
    structure: str = "layers"
    """``layers`` (p blocks removed) or ``filters``: the filter-pruning baseline removing as many filters as the
    layer ticket of the same criterion, p and seed has fewer (the paper's Table 3)."""
    filters: int | None = None
    """Filters left (mean over seeds; None when a run did not record it)."""
    cka_mean: float | None = None
    """Linear CKA of the ticket's penultimate features with its dense run's on the test set, mean over the seeds
    that have it (``similarity.json``); None when none has."""
    cka_std: float = 0.0
    cka_seeds: int = 0
    """How many seeds the CKA is averaged over."""
    perplexity_mean: float | None = None
    """Test perplexity of a language-model ticket, mean over seeds (lower is better); None for image models."""
    timing_disturbed: bool = False
    """One of these runs, or a dense run they are compared with, had an epoch slower than ``DISTURBED_FACTOR``
    x its typical epoch: its speedup and CO2 come from typical epochs but deserve a rerun on a quiet machine."""


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _numbers(values: Any) -> list[float] | None:
    """``values`` if it is a non-empty list of finite numbers >= 0, else None (a result from before such lists
    were recorded, or a hand-edited one: the caller then falls back to the run's totals)."""
    if not isinstance(values, list) or not values:
        return None
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values)
    return values if ok else None


def _epoch_seconds(run: Mapping[str, Any]) -> list[float] | None:
    """The run's per-epoch training seconds, or None when it has none usable."""
    seconds = _numbers(run.get("epoch_train_seconds"))
    return seconds if seconds is not None and any(s > 0 for s in seconds) else None


def _typical_seconds(run: Mapping[str, Any]) -> float | None:
    """Training time that one disturbed stretch cannot swing: typical epoch x epochs trained."""
    seconds = _epoch_seconds(run)
    if seconds is None:
        return None
    # Epochs whose every step was a compile warm-up time nothing; they still count as trained epochs.
    return run_timing([s for s in seconds if s > 0]).typical_epoch_s * len(seconds)


def _disturbed(run: Mapping[str, Any]) -> bool:
    seconds = _epoch_seconds(run)
    if seconds is None:
        return bool(run.get("timing_disturbed", False))
    return run_timing([s for s in seconds if s > 0]).disturbed


def _speedup(dense: Mapping[str, Any], ticket: Mapping[str, Any]) -> float:
    """dense / ticket training time of one seed, from typical epochs when both runs recorded them."""
    d, t = _typical_seconds(dense), _typical_seconds(ticket)
    if d is None or t is None:
        d, t = dense["train_seconds"], ticket["train_seconds"]
    return d / t


def _typical_emissions(run: Mapping[str, Any]) -> float | None:
    """CO2 as typical epoch x epochs, like the time it tracks; None without per-epoch emissions."""
    per_epoch = _numbers(run.get("epoch_emissions_kg"))
    return None if per_epoch is None else statistics.median_low(per_epoch) * len(per_epoch)


def _co2_reduction(dense: Mapping[str, Any], ticket: Mapping[str, Any]) -> float | None:
    """1 - ticket / dense CO2 of one seed (typical epochs when both recorded them), None when unmeasured."""
    d, t = _typical_emissions(dense), _typical_emissions(ticket)
    if not d or t is None:
        d, t = dense.get("emissions_kg"), ticket.get("emissions_kg")
    if not d or t is None:
        return None
    return 1 - t / d


def _energy_sources(results: Sequence[Mapping[str, Any]]) -> dict[str, list[str]] | None:
    """Per component, every energy source the runs recorded (a mix shows as several)."""
    found: dict[str, set[str]] = {}
    for run in results:
        source = run.get("energy_source")
        if isinstance(source, Mapping):
            for component, label in source.items():
                if isinstance(label, str):  # None: the component was not there
                    found.setdefault(component, set()).add(label)
    return {component: sorted(labels) for component, labels in found.items()} or None


def summarize(
    results: Iterable[Mapping[str, Any]], xi: float = 0.0
) -> tuple[DenseSummary, list[TicketRow]]:
    """Dense baseline and one row per (criterion, p), from the ``result.json`` contents of finished runs.

    Tickets after training (kind ``lottery``) get one row per (criterion, rewind point or control, rounds, p).
    """
    results = list(results)
    dense = {r["seed"]: r for r in results if r["kind"] == "dense"}
    if not dense:
        raise ValueError("no finished dense run among the results; the table compares tickets with it")
    dense_runs = list(dense.values())
    emissions = [r.get("emissions_kg") for r in dense_runs]
    dense_summary = DenseSummary(
        seeds=len(dense_runs),
        test_acc_mean=statistics.fmean(r["test_acc"] for r in dense_runs),
        test_acc_std=_mean_std([r["test_acc"] for r in dense_runs])[1],
        macs=dense_runs[0]["macs"],
        params=dense_runs[0]["params"],
        train_seconds_mean=statistics.fmean(r["train_seconds"] for r in dense_runs),
        emissions_kg_mean=statistics.fmean(emissions) if all(e is not None for e in emissions) else None,
        typical_train_seconds_mean=(
            statistics.fmean(typical) if None not in (typical := [_typical_seconds(r) for r in dense_runs]) else None
        ),
        timing_disturbed=any(_disturbed(r) for r in dense_runs),
        energy_sources=_energy_sources(results),
        filters=dense_runs[0].get("filters"),
        perplexity_mean=_perplexity(dense_runs),
    )
    groups: dict[tuple[str, bool, int, int, int, bool], list[Mapping[str, Any]]] = {}
    for r in results:
        if r["kind"] in ("ticket", "lottery", "filters") and r["seed"] in dense:
            # Table 1's order: criterion, then rewind point (control last), then p; at-init tickets first.
            # A filter baseline follows the layer ticket of its criterion and p (Table 3).
            rewind = r.get("rewind_epoch", -1) if r["kind"] == "lottery" else -1
            key = (r["criterion"], bool(r.get("control", False)), rewind, r.get("round", 1), r["p"], r["kind"] == "filters")
            groups.setdefault(key, []).append(r)
    rows = []
    for (criterion, control, rewind, rounds, p, filter_baseline), runs in sorted(groups.items()):
        changes = [100 * (r["test_acc"] - dense[r["seed"]]["test_acc"]) for r in runs]
        speedups = [_speedup(dense[r["seed"]], r) for r in runs]
        co2 = [c for r in runs if (c := _co2_reduction(dense[r["seed"]], r)) is not None]
        measured = [r.get("energy_measured") for r in runs]
        change_mean, change_std = _mean_std(changes)
        speed_mean, speed_std = _mean_std(speedups)
        test_acc = statistics.fmean(r["test_acc"] for r in runs)
        filters = [r.get("filters") for r in runs]
        cka = [r["cka"] for r in runs if isinstance(r.get("cka"), (int, float))]
        cka_mean, cka_std = _mean_std(cka) if cka else (None, 0.0)
        rows.append(
            TicketRow(
                criterion=criterion,
                p=p,
                seeds=len(runs),
                test_acc_mean=test_acc,
                acc_change_mean=change_mean,
                acc_change_std=change_std,
                wins=100 * test_acc + xi >= 100 * dense_summary.test_acc_mean - 1e-9,
                mac_reduction=1 - runs[0]["macs"] / dense_summary.macs,
                param_reduction=1 - runs[0]["params"] / dense_summary.params,
                speedup_mean=speed_mean,
                speedup_std=speed_std,
                co2_reduction_mean=statistics.fmean(co2) if len(co2) == len(runs) else None,
                energy_measured=None if None in measured else all(measured),
                rewind_epoch=None if rewind < 0 or control else rewind,
                rewind_fraction=None if rewind < 0 or control else rewind / runs[0]["epochs"],
                control=control,
                rounds=rounds,
                structure="filters" if filter_baseline else "layers",
                filters=round(statistics.fmean(filters)) if None not in filters else None,
                cka_mean=cka_mean,
                cka_std=cka_std,
                cka_seeds=len(cka),
                perplexity_mean=_perplexity(runs),
                timing_disturbed=any(_disturbed(r) or _disturbed(dense[r["seed"]]) for r in runs),
            )
        )
    return dense_summary, rows


def _perplexity(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean test perplexity when every run has one (language models), else None."""
    values = [r.get("perplexity") for r in runs]
    return statistics.fmean(values) if values and all(isinstance(v, (int, float)) for v in values) else None  # type: ignore[arg-type]


HEADERS = ["criterion", "p", "Δacc pts", "wins", "acc %", "MACs -%", "params -%", "speedup", "CO2 -%"]
REWIND = "rewind"
"""The column tickets after training add after the criterion (Table 1): the rewind point, or the control."""
STRUCTURE = "structure"
"""The column a filter-pruning baseline adds after the criterion (Table 3): layers or filters."""
FILTERS = "filters"
"""With the structure column: dense -> ticket filter counts, e.g. ``1232 -> 1200``."""
CKA = "CKA"
"""Linear CKA with the dense run's penultimate features, shown when some ticket has it."""
PERPLEXITY = "perplexity"
"""Test perplexity, after the accuracy column, for language models (their accuracy is next-token accuracy)."""


def _headers(rows: Sequence[TicketRow]) -> list[str]:
    headers = [HEADERS[0]]
    if any(_after_training(row) for row in rows):
        headers.append(REWIND)
    if any(row.structure != "layers" for row in rows):
        headers += [STRUCTURE, FILTERS]
    headers += HEADERS[1:]
    if any(row.perplexity_mean is not None for row in rows):
        headers.insert(headers.index("acc %") + 1, PERPLEXITY)
    if any(row.cka_mean is not None for row in rows):
        headers.append(CKA)
    return headers


def _after_training(row: TicketRow) -> bool:
    return row.rewind_epoch is not None or row.control


def _rewind_cell(row: TicketRow) -> str:
    if row.control:
        return "reinit"
    if row.rewind_epoch is None:
        return "at init"
    return f"epoch {row.rewind_epoch} ({100 * (row.rewind_fraction or 0):.0f}%)"


def _signed(value: float) -> str:
    """``+0.84``, and ``0.00`` rather than ``-0.00`` for a change that rounds to nothing."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _filters_cell(row: TicketRow, dense: DenseSummary | None) -> str:
    if row.filters is None:
        return "-"
    return f"{dense.filters} -> {row.filters}" if dense is not None and dense.filters else str(row.filters)


def _cka_cell(row: TicketRow) -> str:
    if row.cka_mean is None:
        return "-"
    spread = f"±{row.cka_std:.3f}" if row.cka_seeds > 1 else ""
    return f"{row.cka_mean:.3f}{spread}"


def _cells(row: TicketRow, headers: Sequence[str] = HEADERS, dense: DenseSummary | None = None) -> list[str]:
    spread = f"±{row.acc_change_std:.2f}" if row.seeds > 1 else ""
    speed_spread = f"±{row.speedup_std:.2f}" if row.seeds > 1 else ""
    disturbed = f" {DISTURBED_MARK}" if row.timing_disturbed else ""
    if row.co2_reduction_mean is None:
        co2 = "n/a"
    else:
        more = f" {MORE_CO2_MARK}" if f"{100 * row.co2_reduction_mean:.2f}".startswith("-") else ""
        co2 = f"{100 * row.co2_reduction_mean:.2f}{more}{disturbed}"
    cells = [
        row.criterion,
        str(row.p) if row.rounds == 1 else f"{row.p} ({row.rounds} rounds)",
        f"{_signed(row.acc_change_mean)}{spread}",
        "yes" if row.wins else "no",
        f"{100 * row.test_acc_mean:.2f}",
        f"{100 * row.mac_reduction:.2f}",
        f"{100 * row.param_reduction:.2f}",
        f"{row.speedup_mean:.2f}x{speed_spread}{disturbed}",
        co2,
    ]
    extra = {
        REWIND: _rewind_cell(row), STRUCTURE: row.structure, FILTERS: _filters_cell(row, dense), CKA: _cka_cell(row),
        PERPLEXITY: "-" if row.perplexity_mean is None else f"{row.perplexity_mean:.2f}",
    }
    by_header = dict(zip(HEADERS, cells))
    return [by_header[header] if header in by_header else extra[header] for header in headers]


def _dense_line(dense: DenseSummary, rows: Sequence[TicketRow], xi: float) -> str:
    spread = f" ± {100 * dense.test_acc_std:.2f}" if dense.seeds > 1 else ""
    typical = dense.typical_train_seconds_mean
    seconds = f"{dense.train_seconds_mean if typical is None else typical:.1f} s training"
    if dense.timing_disturbed:
        seconds += f" {DISTURBED_MARK} ({dense.train_seconds_mean:.1f} s measured in all)"
    time_basis = (
        "dense / ticket training time of the same seed, each its typical (lower-median) epoch x epochs, "
        "which one disturbed stretch cannot swing"
        if typical is not None
        else "dense / ticket total training time of the same seed"
    )
    accuracy = "test accuracy"
    if dense.perplexity_mean is not None:
        accuracy = f"next-token test accuracy (perplexity {dense.perplexity_mean:.2f})"
    return (
        f"Dense: {100 * dense.test_acc_mean:.2f}%{spread} {accuracy} over {dense.seeds} seed(s), "
        f"{dense.macs:,} MACs, {dense.params:,} params, {seconds}. "
        f"Mean ± std over seeds; speedup = {time_basis}. "
        f"A ticket wins when its accuracy + xi >= the dense accuracy (xi = {xi:g} pts)."
        + _energy_note(dense, rows)
        + _marks_note(dense, rows)
        + (
            " filters = the filter-pruning baseline: the criterion's scores summed per filter, as many filters"
            " removed from the blocks' first convs as the layer ticket of the same seed has fewer (filters column:"
            " dense -> ticket count)."
            if any(row.structure != "layers" for row in rows) else ""
        )
        + (
            " CKA = linear CKA of the ticket's penultimate features with the dense network's of the same seed on"
            " the test set (1 = the same representation up to rotation and scale)."
            if any(row.cka_mean is not None for row in rows) else ""
        )
        + (
            " Tickets after training: blocks chosen on the trained dense weights, kept weights rewound to the"
            " dense run's epoch shown, then trained for the remaining epochs only (their speedup and CO2 count"
            " those epochs, not the dense training they need); reinit = the pruned network re-initialized at"
            " random and trained in full."
            if any(_after_training(row) for row in rows) else ""
        )
    )


def _energy_note(dense: DenseSummary, rows: Sequence[TicketRow]) -> str:
    """Which parts of the energy (and so of the CO2) were measured and which estimated."""
    if any(row.co2_reduction_mean is not None for row in rows) or dense.emissions_kg_mean is not None:
        described = describe_energy_sources(dense.energy_sources or {})
        if described:
            return f" CO2 = energy x grid intensity (CodeCarbon). {described}"
        if any(row.energy_measured is False for row in rows):  # results older than the per-component record
            return " CO2 is a CodeCarbon estimate (not every component was read from a hardware counter)."
    return ""


def _marks_note(dense: DenseSummary, rows: Sequence[TicketRow]) -> str:
    notes = ""
    if dense.timing_disturbed or any(row.timing_disturbed for row in rows):
        notes += (
            f" {DISTURBED_MARK} timing disturbed: an epoch of one of these runs (or of the dense run it is compared"
            f" with) took more than {DISTURBED_FACTOR:g}x the run's typical epoch, as when another process takes a"
            " CPU core; speedup and CO2 come from typical epochs, but rerun on a quiet machine before quoting them."
        )
    if any(row.co2_reduction_mean is not None and f"{100 * row.co2_reduction_mean:.2f}".startswith("-") for row in rows):
        notes += f" {MORE_CO2_MARK} negative: the ticket emitted more CO2 than the dense network."
    return notes


def to_rich(dense: DenseSummary, rows: Sequence[TicketRow], xi: float = 0.0, title: str = "Tickets at initialization") -> tuple[Table, str]:
    """A rich table and the dense baseline line under it."""
    table = Table(title=title)
    headers = _headers(rows)
    for header in headers:
        table.add_column(header, justify="left" if header in ("criterion", "wins", REWIND, STRUCTURE) else "right")
    for row in rows:
        cells = _cells(row, headers, dense)
        cells[headers.index("wins")] = "[green]yes[/]" if row.wins else "[red]no[/]"
        table.add_row(*cells)
    return table, _dense_line(dense, rows, xi)


def to_markdown(dense: DenseSummary, rows: Sequence[TicketRow], xi: float = 0.0) -> str:
    """The table as Markdown, with the dense baseline line under it."""
    headers = _headers(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cells(row, headers, dense)) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + _dense_line(dense, rows, xi) + "\n"


def table_cells(dense: DenseSummary, rows: Sequence[TicketRow], xi: float = 0.0) -> tuple[list[str], list[list[str]], str]:
    """Headers, display cells and the dense baseline line, exactly as the printed table shows them
    (for the report's file forms: :mod:`layerlottery.reports.export`)."""
    headers = _headers(rows)
    return headers, [_cells(row, headers, dense) for row in rows], _dense_line(dense, rows, xi)


def rewind_label(row: TicketRow) -> str:
    """The rewind column's cell: ``at init``, ``epoch 4 (50%)`` or ``reinit`` (the control)."""
    return _rewind_cell(row)


def to_csv(rows: Sequence[TicketRow]) -> str:
    """Every field of every row, for scripts."""
    out = io.StringIO()
    fields = list(asdict(rows[0])) if rows else list(TicketRow.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return out.getvalue()
