"""The paper's tables from finished runs: accuracy change vs dense (Table 2) and cost reductions (Table 4).

Every ticket is compared with the dense network *of the same seed* (same initialization theta_0), then
the per-seed differences are averaged: mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from rich.table import Table


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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    results: Iterable[Mapping[str, Any]], xi: float = 0.0
) -> tuple[DenseSummary, list[TicketRow]]:
    """Dense baseline and one row per (criterion, p), from the ``result.json`` contents of finished runs."""
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
    )
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        if r["kind"] == "ticket" and r["seed"] in dense:
            groups.setdefault((r["criterion"], r["p"]), []).append(r)
    rows = []
    for (criterion, p), runs in sorted(groups.items()):
        changes = [100 * (r["test_acc"] - dense[r["seed"]]["test_acc"]) for r in runs]
        speedups = [dense[r["seed"]]["train_seconds"] / r["train_seconds"] for r in runs]
        co2 = [
            1 - r["emissions_kg"] / dense[r["seed"]]["emissions_kg"]
            for r in runs
            if r.get("emissions_kg") is not None and dense[r["seed"]].get("emissions_kg")
        ]
        measured = [r.get("energy_measured") for r in runs]
        change_mean, change_std = _mean_std(changes)
        speed_mean, speed_std = _mean_std(speedups)
        test_acc = statistics.fmean(r["test_acc"] for r in runs)
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
            )
        )
    return dense_summary, rows


HEADERS = ["criterion", "p", "Δacc pts", "wins", "acc %", "MACs -%", "params -%", "speedup", "CO2 -%"]


def _signed(value: float) -> str:
    """``+0.84``, and ``0.00`` rather than ``-0.00`` for a change that rounds to nothing."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _cells(row: TicketRow) -> list[str]:
    spread = f"±{row.acc_change_std:.2f}" if row.seeds > 1 else ""
    speed_spread = f"±{row.speedup_std:.2f}" if row.seeds > 1 else ""
    co2 = "n/a" if row.co2_reduction_mean is None else f"{100 * row.co2_reduction_mean:.2f}"
    return [
        row.criterion,
        str(row.p),
        f"{_signed(row.acc_change_mean)}{spread}",
        "yes" if row.wins else "no",
        f"{100 * row.test_acc_mean:.2f}",
        f"{100 * row.mac_reduction:.2f}",
        f"{100 * row.param_reduction:.2f}",
        f"{row.speedup_mean:.2f}x{speed_spread}",
        co2,
    ]


def _dense_line(dense: DenseSummary, rows: Sequence[TicketRow], xi: float) -> str:
    spread = f" ± {100 * dense.test_acc_std:.2f}" if dense.seeds > 1 else ""
    estimated = any(row.energy_measured is False for row in rows)
    return (
        f"Dense: {100 * dense.test_acc_mean:.2f}%{spread} test accuracy over {dense.seeds} seed(s), "
        f"{dense.macs:,} MACs, {dense.params:,} params, {dense.train_seconds_mean:.1f} s training. "
        f"Mean ± std over seeds; speedup = dense / ticket training time of the same seed. "
        f"A ticket wins when its accuracy + xi >= the dense accuracy (xi = {xi:g} pts)."
        + (" CO2 is a CodeCarbon estimate (no hardware energy counters)." if estimated else "")
    )


def to_rich(dense: DenseSummary, rows: Sequence[TicketRow], xi: float = 0.0, title: str = "Tickets at initialization") -> tuple[Table, str]:
    """A rich table and the dense baseline line under it."""
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("criterion", "wins") else "right")
    for row in rows:
        cells = _cells(row)
        cells[3] = "[green]yes[/]" if row.wins else "[red]no[/]"
        table.add_row(*cells)
    return table, _dense_line(dense, rows, xi)


def to_markdown(dense: DenseSummary, rows: Sequence[TicketRow], xi: float = 0.0) -> str:
    """The table as Markdown, with the dense baseline line under it."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + _dense_line(dense, rows, xi) + "\n"


def to_csv(rows: Sequence[TicketRow]) -> str:
    """Every field of every row, for scripts."""
    out = io.StringIO()
    fields = list(asdict(rows[0])) if rows else list(TicketRow.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return out.getvalue()
