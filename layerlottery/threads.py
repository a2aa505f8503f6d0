"""How torch's CPU threads wait and how many train: defaults chosen to degrade gracefully under load.

Measured in ``benchmarks/results/threads_under_load.md`` (ResNet-20 on the quickstart's digits, a 2-core
machine shared with other jobs, paired interleaved chunks): with torch's defaults, two OpenMP threads whose
idle thread spins (GNU OpenMP spins ``GOMP_SPINCOUNT`` = 300,000 times at every barrier before it sleeps) took
3 s per step, 11-22x the time of one thread, single steps up to 13 s: the spinning thread holds the core that
the thread it waits for needs, at hundreds of barriers per step. A 30x shorter spin still cost 3.5x. With
``OMP_WAIT_POLICY=PASSIVE`` (an idle thread sleeps at once) the same two threads took 0.9-1.1x the time of one
thread, with and without a competing busy process; on a machine to itself they can use both cores.

Two knobs, handled differently because only one of them changes results:

- The wait policy changes no number, only how idle threads wait. OpenMP reads it once, when torch loads it,
  so :func:`prefer_passive_waiting` (called by ``import layerlottery``) sets ``OMP_WAIT_POLICY=PASSIVE`` when
  torch is not loaded yet and the user chose no policy. Import torch after layerlottery for it to apply (the
  command line always does); set ``OMP_WAIT_POLICY`` yourself to choose otherwise.
- The thread count changes the last bits of results (reductions split differently), so it is never taken from
  the momentary load, which would make reruns differ: training uses torch's count (its default is one thread
  per core) unless ``LAYERLOTTERY_THREADS`` says otherwise. Reruns with the same count are bitwise identical.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from layerlottery.errors import ConfigError

__all__ = ["THREADS_ENV", "prefer_passive_waiting", "threads_setting", "training_threads"]

THREADS_ENV = "LAYERLOTTERY_THREADS"
"""Environment variable: how many CPU threads torch uses while layerlottery trains (unset: torch's count)."""

# Any of these means the user chose how OpenMP threads wait (GNU: policy or spin count; Intel: block time).
_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy or torch already loaded OpenMP.

    Returns whether it was set. Both GNU OpenMP (libgomp) and Intel's (libiomp5) honour the variable.
    """
    if "torch" in sys.modules or any(name in os.environ for name in _WAIT_SETTINGS):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def threads_setting() -> int | None:
    """The thread count ``LAYERLOTTERY_THREADS`` asks for, or None when it is unset or empty."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV} must be a whole number of CPU threads >= 1, not {raw!r}; unset it for torch's default")
    return threads


@contextlib.contextmanager
def training_threads() -> Iterator[int]:
    """Use ``LAYERLOTTERY_THREADS`` CPU threads in the enclosed block (torch's count when unset); yields the count.

    The caller's count comes back afterwards, so a library call leaves the process as it found it.
    """
    import torch

    wanted = threads_setting()
    before = torch.get_num_threads()
    if wanted is None or wanted == before:
        yield before
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)
