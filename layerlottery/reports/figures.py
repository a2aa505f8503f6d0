"""The report's figures, one function each, sized for a paper's column (3.3 in wide, 8 pt text).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (so no figure lingers in a
global registry and nothing leaks from one figure to the next), or None when the runs hold nothing to draw.
:func:`render` turns a figure into PNG (300 dpi) and SVG bytes. Colours are the Okabe-Ito palette, safe
for colour-blind readers, and each criterion keeps its colour and marker in every figure of a report.
"""

from __future__ import annotations

import functools
import io
import statistics
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
from matplotlib import colors as mcolors
from matplotlib.figure import Figure  # drawn by the Agg canvas when saved; pyplot (and its backend) never loaded
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from layerlottery.reports.grid import LotteryGrid
from layerlottery.reports.keys import TicketKey, key_of_row, setting_label
from layerlottery.reports.tables import DenseSummary, TicketRow
from layerlottery.robustness.summary import RobustnessRow

COLUMN_WIDTH_IN = 3.3
DPI = 300
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#999999")
"""Okabe & Ito (2008): distinguishable with any common colour-vision deficiency (yellow last: faint on white)."""
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
DENSE_COLOR = "#000000"
MIN_SPAN_PTS = 0.25
"""Accuracy-change axes and colour scales reach at least this far (points) either side of zero."""
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "svg.hashsalt": "layerlottery",  # the same runs give the same SVG bytes
}
"""Applied with ``matplotlib.rc_context`` around building and saving a figure, then restored."""


class Palette:
    """Criterion -> (colour, marker), fixed for a whole report so a criterion looks the same everywhere."""

    def __init__(self, criteria: Iterable[str]) -> None:
        names = sorted(set(criteria))
        self._style = {name: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]) for i, name in enumerate(names)}

    def color(self, criterion: str) -> str:
        return self._style.get(criterion, ("#999999", "o"))[0]

    def marker(self, criterion: str) -> str:
        return self._style.get(criterion, ("#999999", "o"))[1]


def render(figure: Figure) -> dict[str, bytes]:
    """``{"png": ..., "svg": ...}``: the figure at 300 dpi, and as vectors (text as paths: no font needed)."""
    out = {}
    with matplotlib.rc_context(STYLE):
        for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
            out[fmt] = buffer.getvalue()
    return out


def _figure(height: float, rows: int = 1, cols: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    """A column-wide figure and its axes (a 2-D array); call under :data:`STYLE` (see :func:`_styled`)."""
    figure = Figure(figsize=(COLUMN_WIDTH_IN, height), layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False, **subplots)


def _styled(build: Any) -> Any:
    """Run a figure builder under :data:`STYLE` (ticks and labels take their sizes when created)."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def _panels(keys: Iterable[TicketKey]) -> list[tuple[Any, ...]]:
    """Settings without p (at init, each rewind point, the control), in the table's order."""
    return sorted({key.setting(with_p=False) for key in keys}, key=lambda s: (s[2], s[3], s[1]))


def _panel_title(setting: tuple[Any, ...]) -> str:
    _, rounds, control, rewind = setting
    key = TicketKey("", 0, rewind_epoch=None if rewind < 0 else rewind, control=control, rounds=rounds)
    return setting_label(key, with_p=False)


# -------------------------------------------------------------------------------- 1. accuracy change vs p


@_styled
def accuracy_change_figure(dense: DenseSummary, rows: Sequence[TicketRow], palette: Palette) -> Figure | None:
    """Accuracy change vs dense (points) against the blocks removed, per criterion; one panel per setting.

    Points: mean over seeds of ticket - dense of the same seed; error bars: the seeds' standard deviation;
    shaded: the dense network's own seed spread (0 ± its std), the noise a ticket must beat.
    """
    if not rows:
        return None
    keyed = [(key_of_row(row), row) for row in rows]
    panels = _panels(key for key, _ in keyed)
    figure, axes = _figure(0.6 + 1.9 * len(panels), rows=len(panels), sharex=True, sharey=True)
    criteria = sorted({row.criterion for row in rows})
    band = 100 * dense.test_acc_std
    for ax, setting in zip(axes[:, 0], panels):
        ax.axhline(0, color=DENSE_COLOR, linewidth=0.8)
        if dense.seeds > 1:
            ax.axhspan(-band, band, color="0.6", alpha=0.3, linewidth=0)
        for index, criterion in enumerate(criteria):
            for structure in ("layers", "filters"):
                points = sorted(
                    (row.p, row.acc_change_mean, row.acc_change_std)
                    for key, row in keyed
                    if key.setting(with_p=False) == setting and row.criterion == criterion and row.structure == structure
                )
                if not points:
                    continue
                offset = (index - (len(criteria) - 1) / 2) * 0.07  # dodge: error bars side by side, not on top
                color = palette.color(criterion)
                ax.errorbar(
                    [p + offset for p, _, _ in points], [m for _, m, _ in points], yerr=[s for _, _, s in points],
                    color=color, marker=palette.marker(criterion), capsize=2, elinewidth=0.8,
                    linestyle="-" if structure == "layers" else "--",
                    markerfacecolor=color if structure == "layers" else "white",
                )
        if len(panels) > 1:
            ax.set_title(_panel_title(setting))
        ax.set_ylabel("Accuracy change\nvs dense (pts)")
    ps = sorted({row.p for row in rows})
    axes[-1, 0].set_xticks(ps)
    axes[-1, 0].set_xlim(ps[0] - 0.5, ps[-1] + 0.5)
    # At least +-MIN_SPAN_PTS in view: a 0.05-point difference should look as small as it is.
    low, high = axes[-1, 0].get_ylim()
    axes[-1, 0].set_ylim(min(low, -MIN_SPAN_PTS), max(high, MIN_SPAN_PTS))
    axes[-1, 0].set_xlabel("Blocks removed, p")
    handles = [_handle(palette, c) for c in criteria]
    if any(row.structure != "layers" for row in rows):
        handles.append(Line2D([], [], color="0.3", linestyle="--", marker="o", markerfacecolor="white", label="filter baseline"))
    dense_label = f"dense ± std ({dense.seeds} seeds)" if dense.seeds > 1 else "dense (1 seed)"
    handles.append(_dense_band_handle(dense_label, dense.seeds > 1))
    figure.legend(handles=handles, loc="outside lower center", ncols=3)
    return figure


def _handle(palette: Palette, criterion: str, **kwargs: Any) -> Line2D:
    return Line2D([], [], color=palette.color(criterion), marker=palette.marker(criterion), label=criterion, **kwargs)


def _dense_band_handle(label: str, band: bool) -> Any:
    if band:
        return Patch(facecolor="0.6", alpha=0.3, edgecolor=DENSE_COLOR, linewidth=0.8, label=label)
    return Line2D([], [], color=DENSE_COLOR, linewidth=0.8, label=label)


# ------------------------------------------------------------------------------------ 2. training curves


@_styled
def training_curves_figure(
    dense: Sequence[Mapping[int, Mapping[str, float]]],
    tickets: Mapping[str, Sequence[Mapping[int, Mapping[str, float]]]],
    title: str,
    palette: Palette,
) -> Figure | None:
    """Test accuracy (%) and test loss per epoch: dense (black, ± seed std shaded) against each criterion's
    tickets of one setting (mean over seeds). Histories are ``{epoch: {metric: value}}`` (see ``read_history``)."""
    if not dense and not tickets:
        return None
    figure, axes = _figure(3.6, rows=2, sharex=True)
    acc_ax, loss_ax = axes[0, 0], axes[1, 0]
    losses: list[float] = []
    dense_label = f"dense (± std, {len(dense)} seeds)" if len(dense) > 1 else "dense"
    series = [(dense_label, DENSE_COLOR, None, dense)] + [
        (criterion, palette.color(criterion), palette.marker(criterion), runs) for criterion, runs in sorted(tickets.items())
    ]
    for label, color, marker, runs in series:
        for ax, metric, scale in ((acc_ax, "test_acc", 100.0), (loss_ax, "test_loss", 1.0)):
            epochs, means, stds = _mean_curve(runs, metric, scale)
            if not epochs:
                continue
            markevery = max(1, len(epochs) // 8)
            is_dense = label == dense_label
            ax.plot(epochs, means, color=color, marker=marker, markevery=markevery, label=label if ax is acc_ax else None,
                    linewidth=1.6 if is_dense else 1.0, zorder=3 if is_dense else 2)
            if is_dense and len(runs) > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=DENSE_COLOR, alpha=0.15, linewidth=0)
            if metric == "test_loss":
                losses += means
    acc_ax.set_ylabel("Test accuracy (%)")
    loss_ax.set_ylabel("Test loss (cross-entropy)")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        loss_ax.set_yscale("log")
    loss_ax.set_xlabel("Epoch")
    loss_ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.set_title(title)
    figure.legend(loc="outside lower center", ncols=min(4, len(series)))
    return figure


def _mean_curve(
    runs: Sequence[Mapping[int, Mapping[str, float]]], metric: str, scale: float
) -> tuple[list[int], list[float], list[float]]:
    """Per epoch, the mean and std over the runs that have ``metric`` then (evaluated epochs only)."""
    epochs = sorted({e for run in runs for e, row in run.items() if metric in row})
    means, stds = [], []
    for epoch in epochs:
        values = [scale * run[epoch][metric] for run in runs if metric in run.get(epoch, {})]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return epochs, means, stds


# ------------------------------------------------------------------------- 3. measured vs ideal speedup


def ideal_speedup(row: TicketRow) -> float:
    """Dense / ticket multiply-accumulates per training run: the MAC ratio, times the epoch ratio for a
    ticket rewound to epoch k (it trains only the epochs after k)."""
    epochs_ratio = 1 / (1 - row.rewind_fraction) if row.rewind_fraction else 1.0
    return epochs_ratio / (1 - row.mac_reduction)


@_styled
def speedup_figure(rows: Sequence[TicketRow], palette: Palette) -> Figure | None:
    """Measured training speedup (mean ± seed std) against the ideal one; on the dashed y = x line the
    time saved equals the computation removed."""
    if not rows:
        return None
    figure, axes = _figure(3.3)
    ax = axes[0, 0]
    keyed = [(key_of_row(row), row) for row in rows]
    settings = _panels(key for key, _ in keyed)
    setting_marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(settings)}
    xs = [ideal_speedup(row) for row in rows]
    ys = [row.speedup_mean for row in rows]
    criteria = sorted({row.criterion for row in rows})
    for (key, row), x in zip(keyed, xs):
        color = palette.color(row.criterion)
        dodge = 1 + 0.012 * (criteria.index(row.criterion) - (len(criteria) - 1) / 2)  # criteria side by side
        ax.errorbar(
            x * dodge, row.speedup_mean, yerr=row.speedup_std, color=color, capsize=2, elinewidth=0.8,
            marker=setting_marker[key.setting(with_p=False)] if len(settings) > 1 else palette.marker(row.criterion),
            markerfacecolor=color if row.structure == "layers" else "white", linestyle="none",
        )
    low = min([1.0] + xs + [y - r.speedup_std for y, r in zip(ys, rows)]) * 0.95
    high = max(xs + [y + r.speedup_std for y, r in zip(ys, rows)]) * 1.05
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=0.8)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    rewound = any(row.rewind_fraction for row in rows)
    ax.set_xlabel("Ideal speedup (dense / ticket MACs" + (" × epochs trained)" if rewound else ")"))
    ax.set_ylabel("Measured training speedup (×)")
    handles = [Line2D([], [], color="0.4", linestyle="--", label="y = x")]
    if len(settings) > 1:
        handles += [Line2D([], [], color=palette.color(c), marker="o", linestyle="none", label=c)
                    for c in sorted({row.criterion for row in rows})]
        handles += [Line2D([], [], color="0.3", marker=setting_marker[s], linestyle="none", markerfacecolor="white",
                           label=_panel_title(s)) for s in settings]
    else:
        handles += [_handle(palette, c, linestyle="none") for c in sorted({row.criterion for row in rows})]
    figure.legend(handles=handles, loc="outside lower center", ncols=3)
    return figure


# ----------------------------------------------------------------------------------- 4. CO2 per run


@_styled
def co2_figure(
    groups: Sequence[tuple[str, str | None, Sequence[float]]], palette: Palette, estimated: bool
) -> Figure | None:
    """Training emissions of each run (CO2-equivalent, in mg, g or kg as the values need), one row per group
    ``(label, criterion or None for dense, [kg per seed])``: dots are seeds, the bar their mean. None when
    no run recorded its emissions."""
    groups = [g for g in groups if g[2]]
    if not groups:
        return None
    figure, axes = _figure(1.0 + 0.17 * len(groups))
    ax = axes[0, 0]
    largest = max(kg for _, _, kilograms in groups for kg in kilograms)
    unit, scale = ("kg", 1.0) if largest >= 1 else ("g", 1e3) if largest >= 1e-3 else ("mg", 1e6)
    for position, (label, criterion, kilograms) in enumerate(groups):
        amounts = [scale * kg for kg in kilograms]
        color = DENSE_COLOR if criterion is None else palette.color(criterion)
        ax.barh(position, statistics.fmean(amounts), color=color, alpha=0.35, height=0.7, linewidth=0)
        ax.plot(amounts, [position] * len(amounts), linestyle="none", marker="o" if criterion is None else palette.marker(criterion),
                color=color, markersize=3)
    ax.set_yticks(range(len(groups)), [label for label, _, _ in groups])
    ax.invert_yaxis()  # dense on top, as in the tables
    ax.grid(axis="y", visible=False)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"Training emissions per run ({unit} CO₂e)" + ("\nenergy estimated by CodeCarbon" if estimated else ""))
    return figure


# -------------------------------------------------------------------------------------- 5. robustness


@_styled
def robustness_figure(rows: Sequence[RobustnessRow], palette: Palette) -> Figure | None:
    """Accuracy (%) against corruption severity (0 = clean), one panel per corruption family; dense in
    black, each ticket a line in its criterion's colour (mean over the family's corruptions and the seeds)."""
    families = sorted({family for row in rows for family in row.curves})
    if not families:
        return None
    figure, axes = _figure(0.7 + 1.45 * len(families), rows=len(families), sharex=True)
    ticket_styles = ["-", "--", ":", "-."]
    settings = _panels(row.key for row in rows if row.key is not None)
    # Tickets of one criterion share a colour: their line style tells them apart, by setting (rewind point,
    # rounds) where there are several, else by p.
    keys = sorted({row.key for row in rows if row.key is not None}, key=lambda key: key.sort_key())
    by_p = len(settings) == 1
    distinct = sorted({key.p for key in keys}) if by_p else settings

    def style_of(key: TicketKey) -> str:
        return ticket_styles[distinct.index(key.p if by_p else key.setting(with_p=False)) % len(ticket_styles)]

    for ax, family in zip(axes[:, 0], families):
        for row in rows:
            by_severity: dict[int, float] = dict(row.curves.get(family, {}))
            if not by_severity:
                continue
            if "clean" in row.values:
                by_severity[0] = row.values["clean"].mean
            severities = sorted(by_severity)
            dense = row.key is None
            color = DENSE_COLOR if dense else palette.color(row.key.criterion)  # type: ignore[union-attr]
            style = "-" if dense else style_of(row.key)  # type: ignore[arg-type]
            ax.plot(severities, [100 * by_severity[s] for s in severities], color=color, linestyle=style,
                    marker="o" if dense else palette.marker(row.key.criterion),  # type: ignore[union-attr]
                    linewidth=1.6 if dense else 1.0, label=row.label, zorder=3 if dense else 2)
        ax.set_title(f"{family} corruptions")
        ax.set_ylabel("Accuracy (%)")
    axes[-1, 0].set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    axes[-1, 0].set_xlabel("Corruption severity")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    return figure


# ---------------------------------------------------------------------- 6. Table 1 grid as a heatmap


@_styled
def lottery_grid_figure(grids: Sequence[LotteryGrid]) -> Figure | None:
    """Table 1 as a heatmap: accuracy change vs dense (points) per criterion (rows) and rewind point
    (columns, the re-initialized control last), one panel per number of removed blocks; values written in."""
    if not grids:
        return None
    height = sum(0.55 + 0.3 * len(g.criteria) for g in grids) + 0.5
    figure, axes = _figure(height, rows=len(grids), height_ratios=[len(g.criteria) + 1.5 for g in grids])
    limit = max([abs(v) for g in grids for line in g.mean for v in line if v is not None] + [MIN_SPAN_PTS])
    norm = mcolors.TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    cmap = matplotlib.colormaps["RdBu"]  # ColorBrewer's diverging palette, colour-blind safe: blue = better
    image = None
    for ax, grid in zip(axes[:, 0], grids):
        values = [[float("nan") if v is None else v for v in line] for line in grid.mean]
        image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
        for i, line in enumerate(grid.mean):
            for j, value in enumerate(line):
                if value is None:
                    continue
                text = f"{value:+.2f}" if f"{value:.2f}" not in ("0.00", "-0.00") else "0.00"
                if grid.seeds[i][j] > 1:
                    text += f"\n±{grid.std[i][j]:.2f}"
                dark = abs(value) > 0.6 * limit
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5 if grid.seeds[i][j] > 1 else 7,
                        color="white" if dark else "black", linespacing=0.95)
        ax.set_xticks(range(len(grid.columns)), grid.columns)
        ax.set_yticks(range(len(grid.criteria)), grid.criteria)
        ax.tick_params(length=0)
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(grid.title)
    axes[-1, 0].set_xlabel("Rewind point (dense epoch)")
    figure.colorbar(image, ax=axes[:, 0].tolist(), label="Δ accuracy vs dense (pts)", shrink=0.9, aspect=25)
    return figure
