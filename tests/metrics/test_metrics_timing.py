"""Stopwatch, repeated-timing statistics, peak memory and speedup (CPU only)."""

from __future__ import annotations

import math
import time

import psutil
import pytest
import torch

from layerlottery.errors import ConfigError
from layerlottery.metrics.timing import Stopwatch, measure, peak_memory, reset_peak_memory, speedup


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


def test_peak_memory_on_cpu_is_bytes_and_grows_with_a_big_allocation():
    reset_peak_memory("cpu")  # documented no-op; must not fail
    before, label = peak_memory("cpu")
    assert label == "cpu_max_rss"
    assert before > 10 * 2**20  # a Python process with torch loaded is far above 10 MiB (so KiB were converted)
    rss_now = psutil.Process().memory_info().rss
    # enough to lift the resident set 64 MiB above the earlier peak, whatever ran before this test
    big = torch.ones((max(0, before - rss_now) + 64 * 2**20) // 4, dtype=torch.float32)
    after, _ = peak_memory(torch.device("cpu"))
    del big
    assert after >= before + 32 * 2**20


def test_speedup():
    assert speedup(3.0, 1.5) == 2.0
    assert speedup(1.0, 2.0) == 0.5
    with pytest.raises(ConfigError):
        speedup(1.0, 0.0)
    with pytest.raises(ConfigError):
        speedup(float("nan"), 1.0)
