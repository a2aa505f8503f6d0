"""Finished runs from a runs directory, grouped into experiments (same network, data and training)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from layerlottery.errors import DataError
from layerlottery.reports.results import read_checked_json, read_result_file, with_similarity

SKIP_HINT = "move the run folder away to report the rest (or delete it and rerun to retrain it)"


def collect_runs(runs_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """``{experiment description: [result, ...]}`` for every finished run under ``runs_dir``.

    A ticket's linear CKA with its dense run is read from its ``similarity.json`` when present (as ``cka``).
    Runs belong together when everything but their seed and ticket (at initialization or after training,
    which names its seed's dense run) is the same, so tickets are always
    compared with dense runs trained the same way. Unfinished runs (no ``result.json``) are left out. A run
    folder whose ``settings.json`` or ``result.json`` is broken stops the report with a DataError naming it.
    """
    return {key: [result for _, result in runs] for key, runs in collect_run_dirs(runs_dir).items()}


def collect_run_dirs(runs_dir: str | os.PathLike) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Like :func:`collect_runs`, with each result's run folder (where its metrics.csv and robustness.json are)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataError(f"runs directory {root} does not exist")
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for result_file in sorted(root.glob("*/result.json")):
        record = read_settings_record(result_file.parent / "settings.json")
        result = read_result_file(result_file, record["settings"], hint=SKIP_HINT)
        result = with_similarity(result, result_file.parent)  # CKA when the run computed it; never computed here
        shared = {k: v for k, v in record["hashed"].items() if k not in ("seed", "ticket", "lottery")}
        settings = record["settings"]
        label = f"{settings['model']['name']} on {settings['data']['name']}, {settings['train']['epochs']} epochs"
        digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{label} (settings {digest})"
        groups.setdefault(key, []).append((result_file.parent, result))
    return groups


def read_settings_record(path: Path) -> dict[str, Any]:
    """A run's ``settings.json`` (as ``RunDir.prepare`` writes it), checked to hold what the report reads."""
    return read_checked_json(path, _settings_problem, "a run's settings", SKIP_HINT)


def _settings_problem(record: Any) -> str:
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("hashed", "settings"):
        if not isinstance(record.get(key), dict):
            return f"{key} is missing or not an object"
    settings = record["settings"]
    for section, key in (("model", "name"), ("data", "name"), ("train", "epochs")):
        if not isinstance(settings.get(section), dict) or key not in settings[section]:
            return f"settings.{section}.{key} is missing"
    ticket = settings.get("ticket")
    if ticket is not None and not (isinstance(ticket, dict) and "criterion" in ticket and "p" in ticket):
        return "settings.ticket is neither null nor an object with criterion and p"
    return ""
