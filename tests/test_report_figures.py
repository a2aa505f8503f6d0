"""The report's figures: which exist for which runs, valid PNG/SVG files, the plotted values, no global state."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import matplotlib
import matplotlib.image
import pytest

from _report_helpers import LOTTERY_ACC, LOTTERY_DENSE_ACC, finished_report, write_runs
from layerlottery.reports import figures
from layerlottery.reports.collect import collect_runs
from layerlottery.reports.grid import lottery_grids
from layerlottery.reports.tables import summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = {
    "test_resnet": {"accuracy-change", "curves-p1-init", "speedup", "co2", "robustness"},
    "test_resnet_b": {"accuracy-change", "curves-p1-rewind2", "speedup", "lottery-grid"},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs, result = finished_report(tmp_path_factory)
    assert result.exit_code == 0, result.output
    return runs / "report"


def test_each_experiment_has_its_figures_as_valid_png_and_svg(report):
    for model, names in EXPECTED.items():
        [folder] = report.glob(f"{model}-on-*")
        assert {p.stem for p in folder.glob("*.png")} == names == {p.stem for p in folder.glob("*.svg")}
        for name in names:
            png = (folder / f"{name}.png").read_bytes()
            assert png.startswith(PNG_MAGIC)
            pixels = matplotlib.image.imread(folder / f"{name}.png")
            assert pixels.shape[1] == round(figures.COLUMN_WIDTH_IN * figures.DPI)  # one paper column at 300 dpi
            assert pixels.shape[0] > 300 and pixels.std() > 0.01  # not blank
            root = ElementTree.parse(folder / f"{name}.svg").getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_what_was_left_out_is_said_in_the_index(report):
    index = (report / "index.md").read_text()
    assert "No run has a robustness.json" in index  # the lottery experiment was not evaluated
    assert "No co2 figure: no run recorded its emissions" in index
    assert "4 run(s) have no metrics.csv" in index  # the p = 2 tickets of both seeds
    assert "3 run(s) have no metrics.csv" in index  # the lottery tickets not rewound to epoch 2
    assert "![lottery-grid](test_resnet_b-on-synthetic" in index


def _rows(tmp_path, model):
    runs = write_runs(tmp_path / "runs")
    [results] = [r for name, r in collect_runs(runs).items() if name.startswith(f"{model} on")]
    return summarize(results)


def test_accuracy_change_points_are_the_tables_means_with_seed_spread(tmp_path):
    dense, rows = _rows(tmp_path, "test_resnet")
    figure = figures.accuracy_change_figure(dense, rows, figures.Palette(["grasp", "snip"]))
    [ax] = figure.axes
    plotted = sorted(round(y, 6) for line in ax.lines if line.get_linestyle() == "-" and line.get_marker() != "None" for y in line.get_ydata())
    assert plotted == sorted(round(r.acc_change_mean, 6) for r in rows)  # grasp and snip at p = 1, 2
    error_bars = sorted(round(float(abs(s[1, 1] - s[0, 1])) / 2, 6) for c in ax.collections for s in c.get_segments())
    assert error_bars == sorted(round(r.acc_change_std, 6) for r in rows)
    band = 100 * dense.test_acc_std  # the dense seed spread, shaded around zero
    [patch] = [p for p in ax.patches if p.get_height() > 0]
    assert (patch.get_y(), patch.get_y() + patch.get_height()) == pytest.approx((-band, band))
    assert ax.get_ylabel() == "Accuracy change\nvs dense (pts)" and ax.get_xlabel() == "Blocks removed, p"


def test_the_heatmap_writes_table_1s_values_in_its_cells(tmp_path):
    _, rows = _rows(tmp_path, "test_resnet_b")
    [grid] = lottery_grids(rows)
    assert grid.criteria == ["kl", "random"] and grid.columns == ["epoch 0 (0%)", "epoch 2 (50%)", "reinit"]
    figure = figures.lottery_grid_figure([grid])
    texts = {t.get_text() for t in figure.axes[0].texts}
    expected = {f"{100 * (acc - LOTTERY_DENSE_ACC):+.2f}".replace("+0.00", "0.00") for acc in LOTTERY_ACC.values()}
    assert texts == expected  # one seed: no spread line; random has no reinit cell


def test_speedup_is_drawn_against_the_ideal_mac_ratio(tmp_path):
    _, rows = _rows(tmp_path, "test_resnet")
    grasp2 = next(r for r in rows if (r.criterion, r.p) == ("grasp", 2))
    assert figures.ideal_speedup(grasp2) == pytest.approx(1000 / 600)  # dense / ticket MACs, full training
    _, lottery = _rows(tmp_path / "b", "test_resnet_b")
    rewound = next(r for r in lottery if r.rewind_epoch == 2)
    assert figures.ideal_speedup(rewound) == pytest.approx(1000 / 800 * 4 / 2)  # and half the epochs


def test_figures_leave_no_global_state_behind(tmp_path):
    dense, rows = _rows(tmp_path, "test_resnet")
    before = dict(matplotlib.rcParams)
    palette = figures.Palette(["grasp", "snip"])
    first = figures.render(figures.accuracy_change_figure(dense, rows, palette))
    assert dict(matplotlib.rcParams) == before  # the style applied only while drawing
    second = figures.render(figures.accuracy_change_figure(dense, rows, palette))
    assert first == second  # the same runs give byte-identical files (no date, fixed SVG ids)
    import sys

    if "matplotlib.pyplot" in sys.modules:  # imported by some other test: still no figure registered there
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_nothing_to_draw_gives_no_figure():
    assert figures.accuracy_change_figure(None, [], figures.Palette([])) is None  # type: ignore[arg-type]
    assert figures.co2_figure([("dense", None, [])], figures.Palette([]), estimated=False) is None
    assert figures.robustness_figure([], figures.Palette([])) is None
    assert figures.lottery_grid_figure([]) is None


def test_the_palette_keeps_a_criterion_s_colour_and_is_colour_blind_safe():
    palette = figures.Palette(["snip", "grasp", "kl"])
    assert palette.color("grasp") == figures.OKABE_ITO[0] and palette.color("snip") == figures.OKABE_ITO[2]
    assert len({palette.color(c) for c in ("snip", "grasp", "kl")}) == 3

