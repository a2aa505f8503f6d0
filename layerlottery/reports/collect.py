"""Finished runs from a runs directory, grouped into experiments (same network, data and training)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from layerlottery.errors import DataError


def collect_runs(runs_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """``{experiment description: [result, ...]}`` for every finished run under ``runs_dir``.

    Runs belong together when everything but their seed and ticket is the same, so tickets are always
    compared with dense runs trained the same way. Unfinished runs (no ``result.json``) are left out.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataError(f"runs directory {root} does not exist")
    groups: dict[str, list[dict[str, Any]]] = {}
    for result_file in sorted(root.glob("*/result.json")):
        try:
            record = json.loads((result_file.parent / "settings.json").read_text())
            result = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{result_file.parent} is unreadable ({exc}); move it away to report the rest") from None
        shared = {k: v for k, v in record["hashed"].items() if k not in ("seed", "ticket")}
        settings = record["settings"]
        label = f"{settings['model']['name']} on {settings['data']['name']}, {settings['train']['epochs']} epochs"
        digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{label} (settings {digest})"
        groups.setdefault(key, []).append(result)
    return groups
