"""Wall-clock timing and peak memory that are honest about CUDA's asynchrony.

CUDA kernels are queued and return at once, so reading the clock without synchronizing times the
launch, not the work. Every measurement here synchronizes the given CUDA device before each clock
read; on the CPU nothing is needed. Times come from ``time.perf_counter`` (looked up at call time, so
tests can substitute a fake clock).

A training run's epochs are summarized by :func:`run_timing`: its typical epoch, which one disturbed stretch
(another process taking a core) cannot swing, and whether such a stretch visibly happened.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:  # torch is imported where a device is used, so reports can read timings without loading it
    import torch

from layerlottery.errors import ConfigError

__all__ = [
    "DISTURBED_FACTOR",
    "RunTiming",
    "Stopwatch",
    "TimingStats",
    "measure",
    "peak_memory",
    "reset_peak_memory",
    "run_timing",
    "speedup",
]


def _device(device: torch.device | str | None) -> torch.device:
    import torch

    return torch.device("cpu") if device is None else torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates the wall-clock time of ``with sw.segment(): ...`` blocks.

    A segment that raises is still recorded: the time was spent.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = _device(device)
        self._laps: list[float] = []

    @contextlib.contextmanager
    def segment(self) -> Iterator[None]:
        """Time the enclosed block (CUDA-synchronized at both ends) and add it as a lap."""
        _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self._laps.append(time.perf_counter() - start)

    @property
    def laps(self) -> tuple[float, ...]:
        """Seconds of each finished segment, in order."""
        return tuple(self._laps)

    @property
    def count(self) -> int:
        """Number of finished segments."""
        return len(self._laps)

    @property
    def total_seconds(self) -> float:
        """Sum of all finished segments, in seconds."""
        return math.fsum(self._laps)

    def reset(self) -> None:
        """Forget all laps."""
        self._laps.clear()


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings, in seconds.

    ``iqr_s`` is Q3 - Q1 with linear interpolation between order statistics (``statistics.quantiles``
    with ``method="inclusive"``, the same as NumPy's default); ``stdev_s`` is the sample standard
    deviation. Both are 0 for a single repeat.
    """

    median_s: float
    mean_s: float
    stdev_s: float
    min_s: float
    max_s: float
    iqr_s: float
    repeats: int
    warmup: int
    samples_s: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = asdict(self)
        out["samples_s"] = list(self.samples_s)
        return out


def _stats(samples: list[float], warmup: int) -> TimingStats:
    if len(samples) > 1:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        iqr, stdev = q3 - q1, statistics.stdev(samples)
    else:
        iqr, stdev = 0.0, 0.0
    return TimingStats(
        median_s=statistics.median(samples),
        mean_s=statistics.fmean(samples),
        stdev_s=stdev,
        min_s=min(samples),
        max_s=max(samples),
        iqr_s=iqr,
        repeats=len(samples),
        warmup=warmup,
        samples_s=tuple(samples),
    )


def measure(
    fn: Callable[[], object], *, warmup: int, repeats: int, device: torch.device | str | None
) -> TimingStats:
    """Call ``fn()`` ``warmup`` times untimed, then time ``repeats`` calls one by one.

    Warm-up absorbs one-off costs (cuDNN autotuning, allocator growth, lazy initialization) that would
    otherwise land in the first sample. Each call is timed separately, synchronizing ``device`` before
    and after, so the median and IQR are robust to the occasional slow call.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1, got {repeats!r}")
    dev = _device(device)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(repeats):
        _sync(dev)
        start = time.perf_counter()
        fn()
        _sync(dev)
        samples.append(time.perf_counter() - start)
    return _stats(samples, warmup)


_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"


def peak_memory(device: torch.device | str | None) -> tuple[int, str]:
    """Peak memory in bytes and what it counts.

    CUDA: ``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak_memory`
    (``"cuda_allocated"``; tensors only, not the caching allocator's reserve or the CUDA context).
    Otherwise the peak resident set size of this process (``"cpu_max_rss"``: interpreter, libraries and data
    included). On Linux that is ``VmHWM``, since the process started or since :func:`reset_peak_memory`;
    not ``getrusage``'s ``ru_maxrss``, which Linux carries over fork and exec, so that a worker started by a
    big process would report its parent's peak. Elsewhere: ``ru_maxrss`` (macOS) or psutil's peak working set
    (Windows), both over the process's lifetime.
    """
    dev = _device(device)
    if dev.type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(dev)), "cuda_allocated"
    linux_peak = _linux_peak_rss()
    if linux_peak is not None:
        return linux_peak, "cpu_max_rss"
    try:
        import resource
    except ImportError:  # Windows: no getrusage; psutil (a CodeCarbon dependency) has the peak working set
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss)), "cpu_max_rss"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024), "cpu_max_rss"


def _linux_peak_rss() -> int | None:
    """``VmHWM`` of ``/proc/self/status`` in bytes, or None where there is no such file."""
    try:
        with open(_PROC_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device | str | None) -> bool:
    """Restart peak tracking; returns whether it was restarted.

    CUDA: always. CPU: on Linux 4.0 and later, by writing 5 to ``/proc/self/clear_refs`` (the peak becomes
    the current resident set); elsewhere, or where that file is not writable, the CPU peak is the process's
    lifetime peak and False is returned.
    """
    dev = _device(device)
    if dev.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(dev)
        return True
    try:
        with open(_PROC_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def speedup(dense_seconds: float, ticket_seconds: float) -> float:
    """How many times faster the ticket is: ``dense_seconds / ticket_seconds`` (> 1 means faster)."""
    for name, value in (("dense_seconds", dense_seconds), ("ticket_seconds", ticket_seconds)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return dense_seconds / ticket_seconds


DISTURBED_FACTOR = 3.0
"""An epoch that took more than this many times the run's typical (median) epoch marks its timing as disturbed.

Epochs of one run do the same work. In 6-epoch runs of the quickstart's network on a 2-core machine that other
jobs kept busy (load 6-8), the slowest epoch took 1.2-2.9x the typical one, the first epoch no more than the
rest; the stall reported in issue 11 was 100x, and a team of spinning OpenMP threads beside a busy process
makes steps 11-22x slower (``benchmarks/results/threads_under_load.md``). 3x lets ordinary sharing pass and
marks the stalls.
"""


@dataclass(frozen=True)
class RunTiming:
    """Training time of one run as a statistic that one disturbed stretch cannot swing.

    ``typical_epoch_s`` is the lower median of the per-epoch training times: an epoch that really ran, and
    for two epochs the faster one, since a disturbance only ever adds time. ``disturbed`` is True when the
    slowest epoch took more than ``factor`` x that median (``slowest_ratio``); the typical time is then still
    sound unless half the epochs were hit, but the run's totals (seconds, energy, CO2) are not.
    """

    typical_epoch_s: float
    slowest_ratio: float
    disturbed: bool
    epochs: int
    factor: float = DISTURBED_FACTOR

    def to_record(self) -> dict[str, Any]:
        """The fields a run's result keeps (``result.json``)."""
        return {
            "typical_epoch_seconds": self.typical_epoch_s,
            "slowest_epoch_ratio": self.slowest_ratio,
            "timing_disturbed": self.disturbed,
        }


def run_timing(epoch_seconds: Sequence[float], factor: float = DISTURBED_FACTOR) -> RunTiming:
    """The typical epoch time of a run and whether one of its epochs was visibly disturbed (see :class:`RunTiming`)."""
    seconds = [float(s) for s in epoch_seconds]
    if not seconds or not all(math.isfinite(s) and s > 0 for s in seconds):
        raise ConfigError(f"epoch times must be positive numbers of seconds, got {list(epoch_seconds)!r}")
    if not (math.isfinite(factor) and factor > 1):
        raise ConfigError(f"the disturbance factor must be a number > 1, got {factor!r}")
    typical = statistics.median_low(seconds)
    slowest = max(seconds) / typical
    return RunTiming(typical_epoch_s=typical, slowest_ratio=slowest, disturbed=slowest > factor, epochs=len(seconds), factor=factor)
