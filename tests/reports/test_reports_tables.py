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


# -- time and CO2 that one disturbed stretch cannot swing, and the marks ----------------------------------------

DENSE_EPOCHS = [1.2, 1.0, 1.1, 1.0, 1.05]  # typical (lower median) 1.05 s
TICKET_EPOCHS = [0.9, 0.7, 0.75, 0.7, 0.72]  # typical 0.72 s


def _timed(kind, epochs, kg_per_epoch, seed=0, criterion=None, p=0, source=None):
    run = _run(kind, seed, 0.9, sum(epochs), kg_per_epoch * len(epochs), 1000 if kind == "dense" else 800,
               500, criterion, p)
    run.update(epoch_train_seconds=list(epochs), epoch_emissions_kg=[kg_per_epoch * s for s in epochs])
    if source is not None:
        run.update(energy_source=source, energy_measured=False)
    return run


def _stall(epochs, epoch, factor=100):
    stalled = list(epochs)
    stalled[epoch] *= factor
    return stalled


def test_speedup_and_co2_come_from_typical_epochs_and_a_clean_run_is_not_marked():
    dense, (row,) = summarize([_timed("dense", DENSE_EPOCHS, 2.0), _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1)])
    assert row.speedup_mean == pytest.approx(1.05 / 0.72)  # typical epochs x 5 epochs each
    assert row.co2_reduction_mean == pytest.approx(1 - 0.72 / 1.05)
    assert not row.timing_disturbed and not dense.timing_disturbed
    assert dense.typical_train_seconds_mean == pytest.approx(5 * 1.05)
    text = to_markdown(dense, [row])
    assert "†" not in text and "timing disturbed" not in text and "| 1.46x |" in text
    assert "typical (lower-median) epoch x epochs" in text


@pytest.mark.parametrize("who", ["dense", "ticket"])
def test_a_100x_epoch_leaves_the_speedup_as_it_was_and_marks_the_row(who):
    clean = summarize([_timed("dense", DENSE_EPOCHS, 2.0), _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1)])
    # The stall hits the slowest epoch of one run (the quickstart's 40 s instead of 0.4 s).
    dense_epochs = _stall(DENSE_EPOCHS, 0) if who == "dense" else DENSE_EPOCHS
    ticket_epochs = _stall(TICKET_EPOCHS, 0) if who == "ticket" else TICKET_EPOCHS
    dense, (row,) = summarize([_timed("dense", dense_epochs, 2.0), _timed("ticket", ticket_epochs, 2.0, criterion="snip", p=1)])
    assert row.speedup_mean == clean[1][0].speedup_mean
    assert row.co2_reduction_mean == clean[1][0].co2_reduction_mean
    assert row.timing_disturbed and dense.timing_disturbed == (who == "dense")
    # Totals would have said 0.08x or 22x; the typical epochs still say 1.46x, marked.
    totals = sum(dense_epochs) / sum(ticket_epochs)
    assert not 0.5 < totals < 5
    text = to_markdown(dense, [row])
    assert "| 1.46x † |" in text and "| 31.43 † |" in text
    assert "† timing disturbed: an epoch of one of these runs" in text and "more than 3x the run's typical epoch" in text


def test_a_ticket_that_emits_more_co2_is_marked_not_printed_as_a_plain_negative_percent():
    dense, (row,) = summarize([_timed("dense", DENSE_EPOCHS, 1.0), _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1)])
    assert row.co2_reduction_mean == pytest.approx(1 - 2 * 0.72 / 1.05)
    text = to_markdown(dense, [row])
    assert "| -37.14 ‡ |" in text and "‡ negative: the ticket emitted more CO2 than the dense network" in text


def test_results_without_per_epoch_times_fall_back_to_totals_and_say_so():
    dense, rows = summarize(RESULTS)
    assert rows[0].speedup_mean == pytest.approx(1.25) and dense.typical_train_seconds_mean is None
    assert "dense / ticket total training time of the same seed" in to_markdown(dense, rows)


GPU_RUN = {"cpu": "tdp_estimate", "gpu": "nvml", "ram": "estimate"}


def test_energy_footnote_says_which_parts_were_measured_and_which_estimated():
    results = [_timed("dense", DENSE_EPOCHS, 2.0, source=GPU_RUN),
               _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1, source=GPU_RUN)]
    dense, rows = summarize(results)
    assert dense.energy_sources == {"cpu": ["tdp_estimate"], "gpu": ["nvml"], "ram": ["estimate"]}
    text = to_markdown(dense, rows)
    assert "Energy measured: GPU (NVML); estimated: CPU (CodeCarbon's estimate from the processor's TDP and load), " \
           "RAM (CodeCarbon's estimate from the memory size)." in text
    assert "no hardware energy counters" not in text


def test_energy_footnote_of_a_cpu_machine_without_counters_and_of_mixed_runs():
    cpu_only = {"cpu": "tdp_estimate", "gpu": None, "ram": "estimate"}
    dense, rows = summarize([_timed("dense", DENSE_EPOCHS, 2.0, source=cpu_only),
                             _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1, source=cpu_only)])
    text = to_markdown(dense, rows)
    assert "Energy estimated: CPU (CodeCarbon's estimate from the processor's TDP and load), RAM" in text
    assert "measured:" not in text and "GPU" not in text
    # Seeds run on two machines: a component read from a counter on one and estimated on the other is estimated.
    rapl = {"cpu": "rapl", "gpu": None, "ram": "estimate"}
    dense, rows = summarize([_timed("dense", DENSE_EPOCHS, 2.0, source=rapl),
                             _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1, source=cpu_only)])
    assert "estimated: CPU (RAPL counters / CodeCarbon's estimate" in to_markdown(dense, rows)


@pytest.mark.parametrize("bad", [["0.4", 0.5], [None, 0.5], [True, 0.5], [float("nan"), 0.5], [-1.0, 0.5], [], "0.4"])
def test_unusable_per_epoch_lists_fall_back_to_the_totals(bad):
    ticket = _timed("ticket", TICKET_EPOCHS, 2.0, criterion="snip", p=1)
    ticket.update(epoch_train_seconds=bad, epoch_emissions_kg=bad)
    _, (row,) = summarize([_timed("dense", DENSE_EPOCHS, 2.0), ticket])
    assert row.speedup_mean == pytest.approx(sum(DENSE_EPOCHS) / sum(TICKET_EPOCHS))
    assert row.co2_reduction_mean == pytest.approx(1 - ticket["emissions_kg"] / (2.0 * 5))
    ticket.update(epoch_train_seconds=[0.0, 0.0])  # no epoch timed a step (every one compiled)
    _, (row,) = summarize([_timed("dense", DENSE_EPOCHS, 2.0), ticket])
    assert row.speedup_mean == pytest.approx(sum(DENSE_EPOCHS) / sum(TICKET_EPOCHS))


def test_language_model_runs_show_perplexity_beside_next_token_accuracy():
    ppl = {("dense", 0): 11.0, ("dense", 1): 13.0, ("ticket", 0): 12.0, ("ticket", 1): 15.0}
    results = [dict(r, perplexity=ppl[(r["kind"], r["seed"])]) for r in RESULTS[:4]]
    dense, rows = summarize(results)
    assert dense.perplexity_mean == pytest.approx(12.0) and rows[0].perplexity_mean == pytest.approx(13.5)
    text = to_markdown(dense, rows)
    header = text.splitlines()[0]
    assert "| acc % | perplexity | MACs -% |" in header
    assert "| 91.50 | 13.50 |" in text and "next-token test accuracy (perplexity 12.00)" in text
    # Image runs keep the table as it was: no perplexity column.
    assert "perplexity" not in to_markdown(*summarize(RESULTS))
