"""``robustness.json``: its format, reading it (checked), and what it says per run and per ticket over seeds.

Never computes anything and loads no network: the evaluation (:mod:`layerlottery.robustness.evaluate`) writes
the file, the ``robustness`` and ``report`` commands read it through here.

Per run (:class:`RunRobustness`): clean accuracy, accuracy per corruption family and severity, per attack and
per shifted set. Per network over seeds (:class:`RobustnessRow`): the mean and spread of those, and for a
ticket the change against the dense run of the same seed and experiment, on the *paired* parts only (the same
corruption, severity, attack or shifted set, computed on the same images: same source, sample limit and seeds).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.table import Table

from layerlottery.reports.collect import collect_run_dirs
from layerlottery.reports.keys import TicketKey, key_of_result, ticket_label
from layerlottery.reports.results import read_checked_json

ROBUSTNESS_FILE = "robustness.json"
FORMAT = 1
REDO_HINT = "delete it and run `layerlottery robustness` on the run again"
SECTIONS = ("corruptions", "shift", "attacks")
"""The record's parts besides ``clean``, each ``{name: entry}``."""


# --------------------------------------------------------------------------------------- the file


def empty_record(run_name: str) -> dict[str, Any]:
    """A record with no part computed yet."""
    return {"format": FORMAT, "run": run_name, "clean": None, "corruptions": {}, "mean_corruption_accuracy": None,
            "shift": {}, "attacks": {}, "evaluation": {}}  # fmt: skip


def read_record(path: Path) -> dict[str, Any] | None:
    """``robustness.json`` at ``path``, checked, with the sections it lacks empty; None when there is none.

    DataError naming the file (and what to do) when it is unreadable or not a robustness record.
    """
    if not path.is_file():
        return None
    return {**empty_record(path.parent.name), **read_checked_json(path, record_problem, "a robustness record", REDO_HINT)}


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1  # NaN fails too


def record_problem(data: Any) -> str:
    """What is wrong with ``data`` as the contents of robustness.json, or ``""``."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format is {json.dumps(data.get('format'))}, not {FORMAT}"
    clean = data.get("clean")
    if clean is not None and not (isinstance(clean, dict) and _is_fraction(clean.get("accuracy"))):
        return "clean.accuracy is not a fraction from 0 to 1"
    for section in SECTIONS:
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
            return f"{section} is not an object of objects"
    for name, entry in data.get("corruptions", {}).items():
        if not (isinstance(entry.get("family"), str) and isinstance(entry.get("accuracy"), dict)):
            return f"corruptions.{name} lacks a family or its accuracy per severity"
        for severity, accuracy in entry["accuracy"].items():
            if not (severity.isdigit() and 1 <= int(severity) <= 5 and _is_fraction(accuracy)):
                return f"corruptions.{name}.accuracy.{severity} is not a severity 1..5 with a fraction"
    for section in ("shift", "attacks"):
        for name, entry in data.get(section, {}).items():
            if not _is_fraction(entry.get("accuracy")):
                return f"{section}.{name}.accuracy is not a fraction from 0 to 1"
    return ""


# ----------------------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunRobustness:
    """What one run's record says, flattened: accuracy per part, all as fractions in [0, 1]."""

    clean: float | None
    corruptions: dict[tuple[str, str, int], float]
    """(family, corruption, severity) -> accuracy."""
    attacks: dict[str, float]
    shift: dict[str, float]

    @property
    def mean_corruption(self) -> float | None:
        """Mean over every corruption and severity present (the record's ``mean_corruption_accuracy``)."""
        return statistics.fmean(self.corruptions.values()) if self.corruptions else None

    @property
    def families(self) -> dict[str, float]:
        """family -> mean over its corruptions and severities."""
        return _means((family, accuracy) for (family, _, _), accuracy in self.corruptions.items())

    @property
    def severities(self) -> dict[int, float]:
        """severity -> mean over every corruption."""
        return _means((severity, accuracy) for (_, _, severity), accuracy in self.corruptions.items())

    def curves(self) -> dict[str, dict[int, float]]:
        """family -> severity -> mean over the family's corruptions (the report's figure)."""
        return {family: _means((s, a) for (f, _, s), a in self.corruptions.items() if f == family) for family in self.families}

    def values(self) -> dict[str, float]:
        """Flat, as tables show them: ``clean``, ``mean_corruption``, ``family:<f>``, ``attack:<key>``, ``shift:<name>``."""
        values = {key: value for key, value in (("clean", self.clean), ("mean_corruption", self.mean_corruption)) if value is not None}
        values.update({f"family:{k}": v for k, v in self.families.items()})
        values.update({f"attack:{k}": v for k, v in self.attacks.items()})
        values.update({f"shift:{k}": v for k, v in self.shift.items()})
        return values


def _means(pairs: Any) -> dict[Any, float]:
    """``[(key, value), ...]`` -> ``{key: mean of its values}``, keys sorted."""
    groups: dict[Any, list[float]] = {}
    for key, value in pairs:
        groups.setdefault(key, []).append(value)
    return {key: statistics.fmean(values) for key, values in sorted(groups.items())}


def summarize_record(record: Mapping[str, Any]) -> RunRobustness:
    """One run's (checked) record as a :class:`RunRobustness`."""
    clean = record.get("clean")
    return RunRobustness(
        clean=clean["accuracy"] if clean else None,
        corruptions={
            (entry["family"], name, int(severity)): accuracy
            for name, entry in record.get("corruptions", {}).items()
            for severity, accuracy in entry["accuracy"].items()
        },
        attacks={key: entry["accuracy"] for key, entry in record.get("attacks", {}).items()},
        shift={name: entry["accuracy"] for name, entry in record.get("shift", {}).items()},
    )


# ---------------------------------------------------------------------------------- ticket vs dense


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two entries were computed alike (same settings, same images): everything but the accuracy agrees."""
    return {k: v for k, v in a.items() if k != "accuracy"} == {k: v for k, v in b.items() if k != "accuracy"}


def paired_changes(ticket: Mapping[str, Any], dense: Mapping[str, Any]) -> dict[str, float]:
    """Ticket minus dense accuracy on the parts both computed alike: ``clean``, ``mean_corruption`` (over the
    common corruptions and severities), each family (``family:noise``), attack (``attack:<key>``) and shifted
    set (``shift:<name>``). A part one of them lacks, or computed on other images, is left out."""
    changes: dict[str, float] = {}
    if ticket.get("clean") and dense.get("clean") and _same(ticket["clean"], dense["clean"]):
        changes["clean"] = ticket["clean"]["accuracy"] - dense["clean"]["accuracy"]
    differences: list[tuple[str, float]] = []
    for name, entry in ticket.get("corruptions", {}).items():
        other = dense.get("corruptions", {}).get(name)
        if other is None or not _same(entry, other):
            continue
        for severity, accuracy in entry["accuracy"].items():
            if severity in other["accuracy"]:
                differences.append((entry["family"], accuracy - other["accuracy"][severity]))
    if differences:
        changes["mean_corruption"] = statistics.fmean(difference for _, difference in differences)
        changes.update({f"family:{family}": mean for family, mean in _means(differences).items()})
    for section, prefix in (("attacks", "attack"), ("shift", "shift")):
        for key, entry in ticket.get(section, {}).items():
            other = dense.get(section, {}).get(key)
            if other is not None and _same(entry, other):
                changes[f"{prefix}:{key}"] = entry["accuracy"] - other["accuracy"]
    return changes


# ------------------------------------------------------------------------------------- over seeds


@dataclass(frozen=True)
class Stat:
    """Mean and spread (sample standard deviation; 0 for one value) over seeds."""

    mean: float
    std: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Stat:
        return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


@dataclass(frozen=True)
class RobustnessRow:
    """One network of an experiment (dense, or one ticket) over the seeds that have a robustness record."""

    label: str
    """``dense`` or the ticket's label (:func:`~layerlottery.reports.keys.ticket_label`), e.g. ``grasp p=2``."""
    kind: str
    seeds: list[int]
    values: dict[str, Stat]
    """``clean``, ``mean_corruption``, ``family:<f>``, ``attack:<key>``, ``shift:<name>``: accuracies."""
    changes: dict[str, Stat] = field(default_factory=dict)
    """The same keys: ticket minus the dense run of each seed, on paired parts (empty for dense)."""
    key: TicketKey | None = None
    """The ticket (None for dense)."""
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    """family -> severity -> accuracy, mean over the family's corruptions and the seeds."""


def _gather(mappings: Any) -> dict[Any, list[float]]:
    """``[{key: value}, ...]`` -> ``{key: [value, ...]}`` over the mappings that have the key."""
    gathered: dict[Any, list[float]] = {}
    for mapping in mappings:
        for key, value in mapping.items():
            gathered.setdefault(key, []).append(value)
    return gathered


def summarize_runs(runs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[RobustnessRow]:
    """One row for the dense network and one per ticket of one experiment, from ``(result, record)`` pairs.

    Each ticket is compared with the dense run of its seed (:func:`paired_changes`). Rows come in the
    tickets table's order (dense first, then :meth:`~layerlottery.reports.keys.TicketKey.sort_key`).
    """
    dense = {result["seed"]: record for result, record in runs if result["kind"] == "dense"}
    groups: dict[TicketKey | None, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for result, record in runs:
        groups.setdefault(key_of_result(result), []).append((result, record))
    order = ([None] if None in groups else []) + sorted((k for k in groups if k is not None), key=TicketKey.sort_key)
    rows = []
    for key in order:
        members = groups[key]
        summaries = [summarize_record(record) for _, record in members]
        pairs = [(record, dense[r["seed"]]) for r, record in members if key is not None and r["seed"] in dense]
        curves = [summary.curves() for summary in summaries]
        rows.append(RobustnessRow(
            label="dense" if key is None else ticket_label(key),
            kind=members[0][0]["kind"],
            seeds=sorted(result["seed"] for result, _ in members),
            values={k: Stat.of(v) for k, v in _gather(s.values() for s in summaries).items()},
            changes={k: Stat.of(v) for k, v in _gather(paired_changes(t, d) for t, d in pairs).items()},
            key=key,
            curves={family: {s: statistics.fmean(v) for s, v in sorted(_gather(c.get(family, {}) for c in curves).items())}
                    for family in sorted({family for c in curves for family in c})},
        ))  # fmt: skip
    return rows


def robustness_table(runs_dir: str | os.PathLike[str]) -> dict[str, list[RobustnessRow]]:
    """``{experiment: [row, ...]}`` for the runs under ``runs_dir`` that have a ``robustness.json``.

    Experiments are grouped as :func:`~layerlottery.reports.collect_runs` groups them; see :func:`summarize_runs`.
    """
    tables: dict[str, list[RobustnessRow]] = {}
    for group, run_dirs in collect_run_dirs(runs_dir).items():
        runs = [(result, record) for path, result in run_dirs if (record := read_record(path / ROBUSTNESS_FILE)) is not None]
        if runs:
            tables[group] = summarize_runs(runs)
    return tables


# ------------------------------------------------------------------------------------------- tables


def points(stat: Stat | None, signed: bool = False) -> str:
    """A fraction's mean over seeds in % (or points, ``signed``), ``±`` its spread over several seeds; ``-``
    for none. A change that rounds to nothing reads ``0.00``, never ``+0.00`` or ``-0.00``."""
    if stat is None or math.isnan(stat.mean):
        return "-"
    text = f"{100 * stat.mean:+.2f}" if signed else f"{100 * stat.mean:.2f}"
    text = "0.00" if text in ("+0.00", "-0.00") else text
    return f"{text}±{100 * stat.std:.2f}" if stat.n > 1 else text


def table_columns(keys: set[str]) -> list[str]:
    """Value keys in table order: clean, mean corruption, families, shifted sets, attacks."""
    fixed = [key for key in ("clean", "mean_corruption") if key in keys]
    return fixed + sorted(k for k in keys if k.startswith("family:")) + sorted(k for k in keys if k.startswith("shift:")) + sorted(k for k in keys if k.startswith("attack:"))


def column_title(key: str) -> str:
    """``mean_corruption`` -> ``mCA``, ``family:noise`` -> ``noise``, ``attack:pgd-linf-eps0.1-a0.025-s10-r1`` ->
    ``pgd linf eps0.1 s10`` (the full attack is in robustness.json)."""
    if key == "mean_corruption":
        return "mCA"
    if key.startswith("attack:"):
        parts = key.split(":", 1)[1].split("-")
        return " ".join(part for i, part in enumerate(parts) if i < 3 or part.startswith("s"))  # name norm eps steps
    return key.split(":", 1)[1] if ":" in key else key


def to_rich(rows: Sequence[RobustnessRow], title: str) -> Table:
    """Accuracy (%) per column, and for tickets the change against dense in points, mean ± std over seeds."""
    columns = table_columns({key for row in rows for key in row.values})
    table = Table(title=title)
    table.add_column("network", no_wrap=True, min_width=max([len("network")] + [len(row.label) for row in rows]))
    table.add_column("seeds", justify="right", min_width=len("seeds"))
    for key in columns:
        table.add_column(f"{column_title(key)} %", justify="right", no_wrap=True)
        table.add_column("Δ", justify="right", no_wrap=True)
    for row in rows:
        cells = [row.label, str(len(row.seeds))]
        for key in columns:
            cells += [points(row.values.get(key)), points(row.changes.get(key), signed=True) if row.kind != "dense" else ""]
        table.add_row(*cells)
    return table


def runs_table(evaluations: Sequence[Any], title: str = "Robustness") -> Table:
    """One row per evaluated run (:class:`~layerlottery.robustness.evaluate.RunEvaluation`): accuracies in %."""
    summaries = [(e, summarize_record(e.record).values()) for e in evaluations]
    columns = table_columns({key for _evaluation, values in summaries for key in values})
    table = Table(title=title)
    table.add_column("run", no_wrap=True)
    for key in columns:
        table.add_column(f"{column_title(key)} %", justify="right", no_wrap=True)
    table.add_column("computed", justify="right")
    for evaluation, values in summaries:
        cells = [f"{evaluation.label} ({evaluation.path.name})"]
        cells += [f"{100 * values[key]:.2f}" if key in values else "-" for key in columns]
        table.add_row(*cells, str(evaluation.computed))
    return table


def rows_to_dict(rows: Sequence[RobustnessRow]) -> list[dict[str, Any]]:
    """Rows as plain JSON data."""
    def stats(values: Mapping[str, Stat]) -> dict[str, Any]:
        return {k: {"mean": s.mean, "std": s.std, "n": s.n} for k, s in values.items()}

    return [{"label": r.label, "kind": r.kind, "seeds": r.seeds, "values": stats(r.values), "changes": stats(r.changes)} for r in rows]
