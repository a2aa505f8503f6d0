"""Stopwatch, repeated-timing statistics, peak memory and speedup (CPU only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from layerlottery.errors import ConfigError
from layerlottery.metrics.timing import (
    DISTURBED_FACTOR,
    Stopwatch,
    measure,
    peak_memory,
    reset_peak_memory,
    run_timing,
    speedup,
)


def test_stopwatch_sums_segments_and_skips_the_gaps():
    sw = Stopwatch("cpu")
    with sw.segment():
        time.sleep(0.05)
    time.sleep(0.1)  # between segments: must not count
    with sw.segment():
        time.sleep(0.05)
    assert sw.count == 2 and len(sw.laps) == 2
    assert all(lap >= 0.045 for lap in sw.laps)
    assert sw.total_seconds == pytest.approx(sum(sw.laps))
    assert 0.095 <= sw.total_seconds < 0.19  # with the 0.1 s gap it would be >= 0.2


def test_stopwatch_records_a_segment_that_raises():
    sw = Stopwatch()
    with pytest.raises(KeyError), sw.segment():
        raise KeyError("boom")
    assert sw.count == 1
    sw.reset()
    assert sw.count == 0 and sw.total_seconds == 0.0


class _FakeClock:
    """perf_counter that only moves when the timed function says so."""

    def __init__(self, durations):
        self.now = 100.0
        self.durations = iter(durations)
        self.calls = 0

    def perf_counter(self):
        return self.now

    def work(self):
        self.calls += 1
        self.now += next(self.durations)


def test_measure_statistics_on_a_fake_clock(monkeypatch):
    # 2 warm-up calls (huge, must be ignored) then 5 timed calls.
    clock = _FakeClock([1000.0, 500.0, 5.0, 1.0, 3.0, 2.0, 4.0])
    monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
    stats = measure(clock.work, warmup=2, repeats=5, device="cpu")
    assert clock.calls == 7
    assert stats.samples_s == (5.0, 1.0, 3.0, 2.0, 4.0)
    assert stats.median_s == 3.0
    assert stats.mean_s == 3.0
    assert stats.min_s == 1.0 and stats.max_s == 5.0
    assert stats.iqr_s == 2.0  # Q1 = 2, Q3 = 4 (inclusive / NumPy-style interpolation)
    assert stats.stdev_s == pytest.approx(math.sqrt(2.5))
    assert (stats.repeats, stats.warmup) == (5, 2)


def test_measure_interpolates_quartiles_and_handles_one_repeat(monkeypatch):
    clock = _FakeClock([1.0, 2.0, 3.0, 10.0, 7.0])
    monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
    stats = measure(clock.work, warmup=0, repeats=4, device=None)
    # sorted 1, 2, 3, 10: Q1 = 1.75, Q3 = 4.75 -> IQR 3.0; median 2.5
    assert stats.median_s == 2.5 and stats.iqr_s == pytest.approx(3.0)
    single = measure(clock.work, warmup=0, repeats=1, device="cpu")
    assert single.samples_s == (7.0,) and single.iqr_s == 0.0 and single.stdev_s == 0.0


@pytest.mark.parametrize("kwargs", [{"warmup": -1, "repeats": 3}, {"warmup": 0, "repeats": 0}, {"warmup": 0, "repeats": 2.5}])
def test_measure_rejects_bad_counts(kwargs):
    with pytest.raises(ConfigError):
        measure(lambda: None, device="cpu", **kwargs)


_PEAK_PROBE = """
import json, os
read, write = os.pipe()
if os.fork() == 0:
    import torch
    from layerlottery.metrics.timing import peak_memory, reset_peak_memory
    before, label = peak_memory("cpu")
    big = torch.ones(256 * 2**20 // 4, dtype=torch.float32)  # writes every page: all 256 MiB become resident
    after, _ = peak_memory(torch.device("cpu"))
    checksum = float(big[:8].sum())
    del big  # a large tensor is unmapped at once: the resident set falls, the peak stays
    kept, _ = peak_memory("cpu")
    restarted = reset_peak_memory("cpu")
    reset, _ = peak_memory("cpu")
    got = dict(before=before, after=after, kept=kept, restarted=restarted, reset=reset, label=label, sum=checksum)
    os.write(write, json.dumps(got).encode())
    os._exit(0)
os.close(write)
print(os.read(read, 4096).decode())
os.wait()
"""


@pytest.fixture(scope="module")
def peak_probe() -> dict:
    # The CPU peak is a high-water mark: inside pytest (often above 1 GiB by now) a modest allocation need not
    # lift it, and getrusage's peak even carries over fork and exec. So the measuring process is forked from a
    # bare interpreter: it starts with that interpreter's small peak.
    probe = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(probe.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks; Windows reads psutil's peak working set instead")
def test_peak_memory_on_cpu_is_bytes_grows_with_a_big_allocation_and_outlives_it(peak_probe):
    got = peak_probe
    assert got["label"] == "cpu_max_rss" and got["sum"] == 8.0
    assert got["before"] > 10 * 2**20  # a Python process with torch loaded is far above 10 MiB (so KiB were converted)
    assert got["after"] >= got["before"] + 128 * 2**20  # half the allocation: room for the kernel's lagging counters
    assert got["kept"] >= got["after"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks; Windows reads psutil's peak working set instead")
def test_reset_peak_memory_on_cpu_restarts_the_peak_where_the_os_allows(peak_probe):
    got = peak_probe
    if sys.platform == "linux":
        assert got["restarted"]  # /proc/self/clear_refs, Linux 4.0 and later
    if got["restarted"]:  # the 256 MiB tensor is gone, and so is its peak
        assert got["reset"] <= got["kept"] - 128 * 2**20
    else:
        assert got["reset"] >= got["kept"]


def test_peak_memory_reads_vmhwm_in_bytes_and_falls_back_to_getrusage(tmp_path, monkeypatch):
    import resource

    from layerlottery.metrics import timing

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 9999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n")
    monkeypatch.setattr(timing, "_PROC_STATUS", str(status))
    assert peak_memory("cpu") == (2048 * 1024, "cpu_max_rss")
    monkeypatch.setattr(timing, "_PROC_STATUS", str(tmp_path / "absent"))  # not Linux: the lifetime peak
    scale = 1 if sys.platform == "darwin" else 1024
    lifetime = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale  # noqa: E731
    low = lifetime()
    assert low <= peak_memory("cpu")[0] <= lifetime()
    monkeypatch.setattr(timing, "_PROC_CLEAR_REFS", str(tmp_path / "no" / "clear_refs"))
    assert reset_peak_memory("cpu") is False


def test_speedup():
    assert speedup(3.0, 1.5) == 2.0
    assert speedup(1.0, 2.0) == 0.5
    with pytest.raises(ConfigError):
        speedup(1.0, 0.0)
    with pytest.raises(ConfigError):
        speedup(float("nan"), 1.0)


# -- a run's typical epoch and the disturbance mark ------------------------------------------------------------

CLEAN_EPOCHS = [0.52, 0.40, 0.41, 0.39, 0.42, 0.40, 0.43]


def test_typical_epoch_is_the_lower_median_and_a_clean_run_is_not_flagged():
    timing = run_timing(CLEAN_EPOCHS)
    assert timing.typical_epoch_s == 0.41 and timing.epochs == 7  # sorted: .39 .40 .40 [.41] .42 .43 .52
    assert timing.slowest_ratio == pytest.approx(0.52 / 0.41)
    assert not timing.disturbed and timing.factor == DISTURBED_FACTOR
    # Two epochs: the faster one, since a disturbance only ever adds time.
    assert run_timing([0.4, 40.0]).typical_epoch_s == 0.4


@pytest.mark.parametrize("stalled", range(len(CLEAN_EPOCHS)))
def test_one_100x_epoch_moves_the_typical_epoch_by_at_most_one_rank_and_is_flagged(stalled):
    epochs = list(CLEAN_EPOCHS)
    epochs[stalled] *= 100
    timing = run_timing(epochs)
    assert timing.disturbed and timing.slowest_ratio > 90
    # The median can only step to its neighbour in the sorted clean times (.40 .41 .42), never towards 100x.
    assert timing.typical_epoch_s in (0.40, 0.41, 0.42)
    if CLEAN_EPOCHS[stalled] > 0.41:  # a stall of an epoch above the median leaves it exactly as it was
        assert timing.typical_epoch_s == run_timing(CLEAN_EPOCHS).typical_epoch_s


def test_the_disturbance_threshold_is_strict_and_adjustable():
    assert not run_timing([1.0, 1.0, 3.0]).disturbed  # exactly 3x: not more than the factor
    assert run_timing([1.0, 1.0, 3.01]).disturbed
    assert not run_timing([1.0, 1.0, 3.01], factor=4).disturbed
    record = run_timing([1.0, 1.0, 5.0]).to_record()
    assert record == {"typical_epoch_seconds": 1.0, "slowest_epoch_ratio": 5.0, "timing_disturbed": True}


@pytest.mark.parametrize("epochs", [[], [1.0, 0.0], [1.0, math.nan], [1.0, -2.0]])
def test_run_timing_refuses_what_is_not_a_time(epochs):
    with pytest.raises(ConfigError, match="epoch times must be positive"):
        run_timing(epochs)


def test_run_timing_refuses_a_factor_that_would_flag_every_run():
    with pytest.raises(ConfigError, match="factor must be a number > 1"):
        run_timing([1.0], factor=1.0)
