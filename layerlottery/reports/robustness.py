"""The report's robustness table (Markdown, CSV, LaTeX) from the runs' ``robustness.json``.

Reading the files, the per-run summary and the ticket-vs-dense pairing live with the evaluation that writes
them (:mod:`layerlottery.robustness.summary`); this module only lays the rows out as a :class:`ReportTable`.
"""

from __future__ import annotations

from typing import Sequence

from layerlottery.reports.export import ReportTable
from layerlottery.robustness.summary import RobustnessRow, points

NOTE = (
    "Accuracy in % (mean over seeds): clean test set; corrupted = mean over the corruptions and severities "
    "evaluated, and per family; Δcorrupted = ticket - dense of the same seed on the parts both computed on the "
    "same images (points, mean ± std over seeds); then shifted test sets and adversarial attacks when evaluated."
)


def robustness_report_table(rows: Sequence[RobustnessRow], title: str) -> ReportTable:
    """Accuracy (%) clean, under corruptions (all and per family), on shifted sets and under attacks."""
    keys = {key for row in rows for key in row.values}
    families, shifts, attacks = (sorted(k.split(":", 1)[1] for k in keys if k.startswith(p)) for p in ("family:", "shift:", "attack:"))
    headers = ["run", "seeds", "clean %", "corrupted %", "Δcorrupted pts"] + [f"{f} %" for f in families]
    headers += [f"{s} %" for s in shifts] + [f"{a} %" for a in attacks]
    parts = [f"family:{f}" for f in families] + [f"shift:{s}" for s in shifts] + [f"attack:{a}" for a in attacks]
    cells, records = [], []
    for row in rows:
        mean = {key: stat.mean for key, stat in row.values.items()}
        change = row.changes.get("mean_corruption")
        cells.append([row.label, str(len(row.seeds)), _percent(mean.get("clean")), _percent(mean.get("mean_corruption")),
                      points(change, signed=True)] + [_percent(mean.get(key)) for key in parts])  # fmt: skip
        records.append(
            {"run": row.label, "seeds": len(row.seeds), "clean_acc": mean.get("clean"), "corrupted_acc": mean.get("mean_corruption"),
             "corrupted_change_pts_mean": None if change is None else 100 * change.mean,
             "corrupted_change_pts_std": None if change is None else 100 * change.std,
             **{f"{key.split(':', 1)[1]}_acc": mean.get(key) for key in parts}}  # fmt: skip
        )
    return ReportTable("robustness", f"{title}: robustness", headers, cells, NOTE, records)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
