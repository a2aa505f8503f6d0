"""A finished run's per-epoch metrics, read back from its ``metrics.csv`` (rows ``run, epoch, metric, value``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from layerlottery.errors import DataError

METRICS_FILE = "metrics.csv"


def read_history(run_dir: Path) -> dict[int, dict[str, float]] | None:
    """``{epoch: {metric: value}}`` of the epochs the run trained, or None when it has no metrics.csv.

    The ``final`` rows (the result's totals) are left out. Epochs are the dense run's numbering: a ticket
    rewound to epoch 4 has rows from epoch 5 on.
    """
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    history: dict[int, dict[str, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                epoch, metric, value = row["epoch"], row["metric"], float(row["value"])
                if epoch != "final" and math.isfinite(value):
                    history.setdefault(int(epoch), {})[metric] = value
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path} is not a run's metrics (run, epoch, metric, value rows: {exc}); "
            "move the run folder away to report the rest"
        ) from None
    return dict(sorted(history.items()))
