"""``layerlottery report``'s files: which tables and figures exist for which runs, and writing them.

For each experiment found in a runs directory (runs trained the same way, with a finished dense run) the
report holds, in ``<out>/<experiment>/``:

- tables as Markdown, CSV and LaTeX: ``tickets`` (the printed table: accuracy change and costs),
  ``lottery-grid`` (Table 1, tickets after training only), ``robustness`` (runs with a robustness.json);
- figures as PNG and SVG: ``accuracy-change`` (vs p, per criterion), ``curves-<setting>`` (test accuracy
  and loss per epoch, dense against its tickets), ``speedup`` (measured vs ideal), ``co2`` (per run),
  ``robustness`` (per corruption family and severity), ``lottery-grid`` (Table 1 as a heatmap).

A figure or table whose data no run holds is left out, with a note saying why in ``index.md``. Reports read
finished runs and never train. The report folder is written whole or not at all (staged, then renamed).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from layerlottery.atomic import atomic_directory, check_writable_folder, refuse_working_folder
from layerlottery.errors import DataError
from layerlottery.reports import figures
from layerlottery.reports.collect import collect_run_dirs
from layerlottery.reports.export import ReportTable, to_csv, to_latex, to_markdown
from layerlottery.reports.grid import LotteryGrid, lottery_grids
from layerlottery.reports.history import read_history
from layerlottery.reports.keys import TicketKey, key_of_result, setting_label, ticket_label
from layerlottery.reports.robustness import robustness_report_table
from layerlottery.reports.tables import _signed, summarize, table_cells
from layerlottery.robustness.summary import ROBUSTNESS_FILE, read_record, summarize_runs

MARKER_FILE = ".layerlottery-report"
"""Marks a folder as a report, so that writing a report again may replace it (and no other folder)."""
INDEX_FILE = "index.md"


@dataclass
class ExperimentReport:
    """One experiment's files (relative to its folder) and notes on what was left out and why."""

    name: str
    folder: str
    files: dict[str, bytes] = field(default_factory=dict)
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunFiles:
    """What the report reads of one finished run."""

    path: Path
    result: dict[str, Any]
    history: dict[int, dict[str, float]] | None
    """Per-epoch metrics (metrics.csv); None when the run has none."""
    robustness: dict[str, Any] | None
    """robustness.json; None when the run was not evaluated."""


@dataclass
class Report:
    """What ``write_report`` wrote: the folder, the experiments, and those skipped (no dense run yet)."""

    out: Path
    experiments: list[ExperimentReport]
    skipped: list[str]

    @property
    def files(self) -> list[str]:
        """Every file written, relative to ``out``."""
        return [INDEX_FILE] + [f"{e.folder}/{name}" for e in self.experiments for name in e.files]


def build_report(runs_dir: str | os.PathLike, xi: float = 0.0) -> tuple[list[ExperimentReport], list[str]]:
    """The report's files in memory, one :class:`ExperimentReport` per experiment with a finished dense run,
    and the names of the experiments skipped for want of one. DataError when ``runs_dir`` holds no run."""
    groups = collect_run_dirs(runs_dir)
    found, skipped = [], []
    for name, run_dirs in groups.items():
        if not any(result["kind"] == "dense" for _, result in run_dirs):
            skipped.append(name)
            continue
        # Everything read (and a broken file refused) before the first figure is drawn.
        found.append((name, [RunFiles(path, result, read_history(path), read_record(path / ROBUSTNESS_FILE))
                             for path, result in run_dirs]))
    if not found:
        raise DataError(f"no finished experiment (dense run + tickets) in {runs_dir}")
    folders: set[str] = set()
    experiments = [_experiment_report(name, _unique(experiment_folder(name), folders), runs, xi) for name, runs in found]
    return experiments, skipped


def write_report(runs_dir: str | os.PathLike, out: str | os.PathLike | None = None, xi: float = 0.0) -> Report:
    """Write the report of the finished runs in ``runs_dir`` to ``out`` (default ``runs_dir/report``).

    ``out`` may be new, empty, or an earlier report (which is replaced); any other folder is refused, so a
    report never deletes files it did not write.
    """
    out_path = Path(out) if out is not None else Path(runs_dir) / "report"
    _check_out(out_path)
    experiments, skipped = build_report(runs_dir, xi)
    with atomic_directory(out_path, overwrite=True) as staging:
        (staging / MARKER_FILE).write_text("written by `layerlottery report`; rewriting the report replaces this folder\n")
        (staging / INDEX_FILE).write_text(_index(experiments, skipped), encoding="utf-8")
        for experiment in experiments:
            for name, data in experiment.files.items():
                path = staging / experiment.folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return Report(out_path, experiments, skipped)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; name a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise DataError(f"--out {out} is a folder with other files (not an earlier report); name a new folder")
    if out.exists():
        refuse_working_folder(out)
    check_writable_folder(out, "--out")  # one line now, not an OSError once the figures are drawn


def experiment_folder(name: str) -> str:
    """A file-system-safe folder name: ``cifar_resnet20 on mnist, 15 epochs (settings 1a2b3c4d)`` ->
    ``cifar_resnet20-on-mnist-15-epochs-settings-1a2b3c4d``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "experiment"


def _unique(folder: str, taken: set[str]) -> str:
    candidate, n = folder, 2
    while candidate in taken:
        candidate, n = f"{folder}-{n}", n + 1
    taken.add(candidate)
    return candidate


# ---------------------------------------------------------------------------------------- one experiment


def _experiment_report(name: str, folder: str, runs: Sequence[RunFiles], xi: float) -> ExperimentReport:
    report = ExperimentReport(name, folder)
    results = [run.result for run in runs]
    dense, rows = summarize(results, xi)
    palette = figures.Palette(r["criterion"] for r in results if r["criterion"])

    headers, cells, dense_line = table_cells(dense, rows, xi)
    _add_table(report, ReportTable("tickets", f"{name}: tickets vs dense", headers, cells, dense_line, [asdict(row) for row in rows]))
    grids = lottery_grids(rows)
    if grids:
        _add_table(report, grid_table(grids, name))
    robustness = [(run.result, run.robustness) for run in runs if run.robustness is not None]
    robust_rows = summarize_runs(robustness)
    if robust_rows:
        _add_table(report, robustness_report_table(robust_rows, name))
    else:
        report.notes.append(f"No run has a {ROBUSTNESS_FILE} (`layerlottery robustness RUN_DIR...` writes it): no robustness table or figure.")

    _add_figure(report, "accuracy-change", figures.accuracy_change_figure(dense, rows, palette), "no ticket has finished")
    _add_curves(report, runs, palette)
    _add_figure(report, "speedup", figures.speedup_figure(rows, palette), "no ticket has finished")
    _add_figure(
        report, "co2", figures.co2_figure(_co2_groups(results), palette, estimated=any(r.get("energy_measured") is False for r in results)),
        "no run recorded its emissions (carbon.enabled was false)",
    )
    if robust_rows:
        _add_figure(report, "robustness", figures.robustness_figure(robust_rows, palette), "no run evaluated corruptions")
    if grids:
        _add_figure(report, "lottery-grid", figures.lottery_grid_figure(grids), "no ticket after training")
    return report


def _add_table(report: ExperimentReport, table: ReportTable) -> None:
    report.tables.append(table)
    label = f"tab:{report.folder}-{table.name}"
    for suffix, text in (("md", to_markdown(table)), ("csv", to_csv(table)), ("tex", to_latex(table, label))):
        report.files[f"{table.name}.{suffix}"] = text.encode("utf-8")


def _add_figure(report: ExperimentReport, name: str, figure: Any, why_not: str) -> None:
    if figure is None:
        report.notes.append(f"No {name} figure: {why_not}.")
        return
    for fmt, data in figures.render(figure).items():
        report.files[f"{name}.{fmt}"] = data
    report.figures.append(name)


def _add_curves(report: ExperimentReport, runs: Sequence[RunFiles], palette: figures.Palette) -> None:
    """One figure per ticket setting (p, rewind point, rounds): dense against each criterion's tickets."""
    dense: list[dict[int, dict[str, float]]] = []
    settings: dict[tuple[Any, ...], tuple[TicketKey, dict[str, list[dict[int, dict[str, float]]]]]] = {}
    missing = 0
    for run in runs:
        history = run.history
        if history is None:
            missing += 1
            continue
        key = key_of_result(run.result)
        if key is None:
            dense.append(history)
        else:
            series = key.criterion + (f" {key.structure}" if key.structure != "layers" else "")
            by_setting = settings.setdefault(key.setting(with_p=True), (key, {}))[1]
            by_setting.setdefault(series, []).append(history)
    if missing:
        report.notes.append(f"{missing} run(s) have no metrics.csv: left out of the training curves.")
    for setting in sorted(settings, key=lambda s: (s[2], s[3], s[1], s[0])):
        key, tickets = settings[setting]
        title = f"Dense vs tickets, {setting_label(key)}"
        _add_figure(report, "curves-" + _setting_slug(key), figures.training_curves_figure(dense, tickets, title, palette), "no per-epoch metrics")


def _setting_slug(key: TicketKey) -> str:
    part = "reinit" if key.control else f"rewind{key.rewind_epoch}" if key.rewind_epoch is not None else "init"
    return f"p{key.p}-{part}" + (f"-{key.rounds}rounds" if key.rounds > 1 else "")


def _co2_groups(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, str | None, list[float]]]:
    """``(label, criterion, [kg per seed])``: dense first, then the tickets in the table's order."""
    groups: dict[TicketKey | None, list[float]] = {}
    for result in results:
        kilograms = result.get("emissions_kg")
        groups.setdefault(key_of_result(result), [])
        if kilograms is not None:
            groups[key_of_result(result)].append(kilograms)
    tickets = sorted((k for k in groups if k is not None), key=TicketKey.sort_key)
    rows: list[tuple[str, str | None, list[float]]] = [("dense", None, groups[None])] if None in groups else []
    return rows + [(ticket_label(k), k.criterion, groups[k]) for k in tickets]


# ------------------------------------------------------------------------------------ the extra tables


def grid_table(grids: Sequence[LotteryGrid], title: str) -> ReportTable:
    """Table 1: one row per (p, rounds, criterion), one column per rewind point, cells mean±std in points."""
    columns: list[str] = []
    for grid in grids:
        columns += [c for c in grid.columns if c not in columns]
    multi_rounds = any(g.rounds > 1 for g in grids)
    headers = ["p"] + (["rounds"] if multi_rounds else []) + ["criterion"] + columns
    rows, records = [], []
    for grid in grids:
        for i, criterion in enumerate(grid.criteria):
            cells = [str(grid.p)] + ([str(grid.rounds)] if multi_rounds else []) + [criterion]
            for column in columns:
                j = grid.columns.index(column) if column in grid.columns else None
                mean = None if j is None else grid.mean[i][j]
                if mean is None:
                    cells.append("-")
                    continue
                seeds, std = grid.seeds[i][j], grid.std[i][j]  # type: ignore[index]
                cells.append(_signed(mean) + (f"±{std:.2f}" if seeds > 1 else ""))
                records.append({"p": grid.p, "rounds": grid.rounds, "criterion": criterion, "rewind": column,
                                "acc_change_mean": mean, "acc_change_std": std, "seeds": seeds})
            rows.append(cells)
    note = (
        "Accuracy change of tickets after training vs the dense network of the same seed, in points (mean ± std "
        "over seeds): blocks chosen on the trained dense weights, kept weights rewound to the dense epoch of the "
        "column (its share of training in brackets), then trained for the remaining epochs; reinit = the pruned "
        "network re-initialized at random and trained in full."
    )
    return ReportTable("lottery-grid", f"{title}: Algorithm 1, criterion x rewind point", headers, rows, note, records)


# ----------------------------------------------------------------------------------------------- index


def _index(experiments: Sequence[ExperimentReport], skipped: Sequence[str]) -> str:
    """``index.md``: every experiment's tables inline and figures linked, with what was left out and why."""
    parts = ["# Report", ""]
    for experiment in experiments:
        parts += [f"## {experiment.name}", ""]
        for table in experiment.tables:
            parts += [to_markdown(table), ""]
        for name in experiment.figures:
            parts += [f"![{name}]({experiment.folder}/{name}.png)", ""]
        parts += [f"- {note}" for note in experiment.notes] + ([""] if experiment.notes else [])
    if skipped:
        parts += ["Skipped (no finished dense run yet): " + "; ".join(skipped), ""]
    return "\n".join(parts)
