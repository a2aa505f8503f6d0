"""What a finished run's ``result.json`` must hold for resuming and for the reports: one definition.

``RunDir.read_result`` (when an experiment skips a finished run) and ``collect_runs`` (``layerlottery
report``) both read results through :func:`read_result_file`, so a result of the wrong shape is refused
with one line naming the file, never a KeyError deep in a table. Plain JSON checks: no torch import.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from layerlottery.errors import DataError

RETRAIN_HINT = "delete the run folder to retrain it"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The fields of result.json that resuming and the reports read, with what each must hold. The one
# definition: RunDir.read_result and reports.collect_runs both check results with it. A field the reports
# start reading belongs here too (optional when results written before it lack it).
RESULT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kind": (lambda v: isinstance(v, str) and bool(v), "a run kind such as 'dense'"),
    "seed": (_is_int, "a whole number"),
    "criterion": (lambda v: v is None or isinstance(v, str), "a criterion name or null"),
    "p": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "removed": (lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v), "a list of block names"),
    "test_acc": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "train_seconds": (lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
    "macs": (lambda v: _is_int(v) and v > 0, "a whole number > 0"),
    "params": (lambda v: _is_int(v) and v > 0, "a whole number > 0"),
}
OPTIONAL_RESULT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "emissions_kg": (lambda v: v is None or (_is_number(v) and v >= 0), "null or a number >= 0"),
    "energy_measured": (lambda v: v is None or isinstance(v, bool), "null, true or false"),
    "energy_source": (lambda v: v is None or isinstance(v, dict), "null or an object"),
    "epoch_train_seconds": (
        lambda v: v is None or (isinstance(v, list) and all(_is_number(s) and s >= 0 for s in v)),
        "null or a list of seconds",
    ),
    "epoch_emissions_kg": (
        lambda v: v is None or (isinstance(v, list) and all(e is None or (_is_number(e) and e >= 0) for e in v)),
        "null or a list of kilograms",
    ),
    "timing_disturbed": (lambda v: isinstance(v, bool), "true or false"),
    # Lottery tickets after training (kind "lottery") only:
    "rewind_epoch": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "control": (lambda v: isinstance(v, bool), "true or false"),
    "round": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    # Filter counts (every run since the filter baseline) and the baseline itself (kind "filters"):
    "structure": (lambda v: v in ("layers", "filters"), "'layers' or 'filters'"),
    "filters": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),  # 0: no convolutions (a transformer)
    "filters_removed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "dense_filters": (lambda v: _is_int(v) and v > 0, "a whole number > 0"),
}

SIMILARITY_FILE = "similarity.json"
"""Beside a ticket's result: linear CKA of its penultimate features with the dense run's of the same seed."""


def result_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's result must say about itself, from its settings as ``settings.json`` records them.

    The kind follows ``RunSpec.kind``: a lottery ticket (after training), a filter-pruning baseline, a ticket
    at initialization, or dense.
    """
    ticket = settings.get("ticket")
    if not isinstance(ticket, Mapping):
        return {"kind": "dense", "seed": settings.get("seed"), "criterion": None, "p": 0}
    kind = "lottery" if settings.get("lottery") else "filters" if ticket.get("structure") == "filters" else "ticket"
    return {"kind": kind, "seed": settings.get("seed"), "criterion": ticket.get("criterion"), "p": ticket.get("p")}


def result_problem(data: Any, settings: Mapping[str, Any] | None = None) -> str:
    """What is wrong with ``data`` as a finished run's result (of the run with ``settings``), or ``""``."""
    if not isinstance(data, dict):
        kind = "null" if data is None else "list" if isinstance(data, list) else f"value {json.dumps(data)}"[:40]
        return f"a JSON {kind}, not an object of results"
    missing = [name for name in RESULT_FIELDS if name not in data]
    if missing:
        return f"{', '.join(missing)} missing"
    for name, (accepts, expected) in {**RESULT_FIELDS, **OPTIONAL_RESULT_FIELDS}.items():
        if name in data and not accepts(data[name]):
            return f"{name} is {json.dumps(data[name])}, not {expected}"
    # A filter baseline removes no block: its p is that of the layer ticket whose filter count it matches.
    if data["kind"] == "filters" and (data["removed"] or "filters_removed" not in data):
        return "a filter baseline lists filters_removed and no removed blocks"
    if data["kind"] != "filters" and len(data["removed"]) != data["p"]:
        return f"p is {data['p']} but {len(data['removed'])} removed block(s) are listed"
    for name, value in (result_identity(settings) if settings is not None else {}).items():
        if data[name] != value:
            return f"{name} is {json.dumps(data[name])}, but the run's settings say {json.dumps(value)}"
    return ""


def read_checked_json(path: Path, problem: Callable[[Any], str], what: str, hint: str) -> Any:
    """The JSON in ``path`` once ``problem`` (what is wrong with it, or ``""``) finds nothing wrong.

    Otherwise one DataError line naming the file, saying it is unreadable or not ``what`` (and why), and ``hint``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); {hint}") from None
    found = problem(data)
    if found:
        raise DataError(f"{path} is not {what} ({found}); {hint}")
    return data


def read_result_file(
    path: Path, settings: Mapping[str, Any] | None = None, hint: str = RETRAIN_HINT
) -> dict[str, Any]:
    """A run's ``result.json``, checked to hold what the reports read; DataError naming the file and ``hint``."""
    return read_checked_json(path, lambda data: result_problem(data, settings), "a finished run's result", hint)


def read_similarity_file(path: Path, hint: str = "delete it and rerun the experiment to recompute it") -> dict[str, Any] | None:
    """A ticket's ``similarity.json`` ({"dense_run", "cka", "samples"}), or None when there is none yet.

    ``cka`` is null when it could not be computed (e.g. constant features); DataError naming the file if broken.
    """
    if not path.is_file():
        return None
    return read_checked_json(path, _similarity_problem, "a similarity record", hint)


def _similarity_problem(data: Any) -> str:
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("dense_run"), str)
        and (data.get("cka") is None or (_is_number(data["cka"]) and -1e-6 <= data["cka"] <= 1 + 1e-6))
        and _is_int(data.get("samples")) and data["samples"] >= 0
    )
    return "" if ok else "dense_run, cka from 0 to 1 or null, samples"


def with_similarity(result: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """``result`` plus ``cka`` from the run's ``similarity.json`` when there is one (reports read it there)."""
    record = read_similarity_file(run_dir / SIMILARITY_FILE)
    return {**result, "cka": record["cka"]} if record is not None else dict(result)
