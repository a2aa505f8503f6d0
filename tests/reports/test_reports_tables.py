"""The paper's table from run results: per-seed pairing, mean and spread, the winning mark with xi."""

import pytest

from layerlottery.reports import summarize, to_csv, to_markdown


def _run(kind, seed, acc, seconds, kg, macs, params, criterion=None, p=0):
    return {"kind": kind, "seed": seed, "test_acc": acc, "train_seconds": seconds, "emissions_kg": kg,
            "macs": macs, "params": params, "criterion": criterion, "p": p, "energy_measured": False}


RESULTS = [
    _run("dense", 0, 0.90, 100.0, 2.0, 1000, 500),
    _run("dense", 1, 0.92, 110.0, 2.2, 1000, 500),
    _run("ticket", 0, 0.91, 80.0, 1.5, 800, 450, "grasp", 2),
    _run("ticket", 1, 0.92, 88.0, 1.65, 800, 450, "grasp", 2),
    _run("ticket", 0, 0.89, 50.0, 1.0, 600, 400, "snip", 4),
    _run("ticket", 1, 0.905, 55.0, 1.1, 600, 400, "snip", 4),
]


def test_tickets_are_compared_with_the_dense_run_of_the_same_seed():
    dense, rows = summarize(RESULTS)
    assert dense.seeds == 2 and dense.test_acc_mean == pytest.approx(0.91) and dense.macs == 1000
    grasp, snip = rows
    assert (grasp.criterion, grasp.p, snip.criterion, snip.p) == ("grasp", 2, "snip", 4)
    assert grasp.acc_change_mean == pytest.approx(0.5) and grasp.acc_change_std == pytest.approx(0.7071, abs=1e-4)
    assert grasp.speedup_mean == pytest.approx(1.25) and grasp.speedup_std == pytest.approx(0.0)
    assert grasp.co2_reduction_mean == pytest.approx(0.25)
    assert grasp.mac_reduction == pytest.approx(0.2) and grasp.param_reduction == pytest.approx(0.1)
    assert grasp.wins and not snip.wins
    assert snip.acc_change_mean == pytest.approx(-1.25)


def test_xi_margin_turns_a_near_miss_into_a_win():
    _, rows = summarize(RESULTS, xi=1.25)
    assert rows[1].wins
    _, rows = summarize(RESULTS, xi=1.2)
    assert not rows[1].wins


def test_markdown_and_csv():
    dense, rows = summarize(RESULTS)
    text = to_markdown(dense, rows)
    assert "| grasp | 2 | +0.50±0.71 | yes |" in text and "CO2 is a CodeCarbon estimate" in text
    assert to_csv(rows).splitlines()[0].startswith("criterion,p,seeds,test_acc_mean,acc_change_mean")


def test_no_dense_run_is_an_error():
    with pytest.raises(ValueError, match="no finished dense run"):
        summarize(RESULTS[2:])
