"""Cost accounting and comparisons: MACs/FLOPs/parameters, wall-clock and peak memory, energy/CO2, CKA.

Names are imported on first use (PEP 562), so code that only reads finished results (``layerlottery
report``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # MACs, FLOPs and parameters (PyTorch's FlopCounterMode)
    "count_flops": "layerlottery.metrics.macs",
    "count_macs": "layerlottery.metrics.macs",
    "count_params": "layerlottery.metrics.macs",
    "flops_by_module": "layerlottery.metrics.macs",
    # representation similarity between two networks (linear CKA, Kornblith et al. 2019)
    "LinearCKAAccumulator": "layerlottery.metrics.cka",
    "linear_cka": "layerlottery.metrics.cka",
    "penultimate_cka": "layerlottery.metrics.cka",
    # energy/CO2 (CodeCarbon, offline) and wall-clock/peak-memory timing
    "EnergyMeter": "layerlottery.metrics.energy",
    "EnergyReport": "layerlottery.metrics.energy",
    "co2_reduction": "layerlottery.metrics.energy",
    "energy_reduction": "layerlottery.metrics.energy",
    "Stopwatch": "layerlottery.metrics.timing",
    "TimingStats": "layerlottery.metrics.timing",
    "measure": "layerlottery.metrics.timing",
    "peak_memory": "layerlottery.metrics.timing",
    "reset_peak_memory": "layerlottery.metrics.timing",
    "speedup": "layerlottery.metrics.timing",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from layerlottery.metrics.cka import LinearCKAAccumulator, linear_cka, penultimate_cka
    from layerlottery.metrics.energy import EnergyMeter, EnergyReport, co2_reduction, energy_reduction
    from layerlottery.metrics.macs import count_flops, count_macs, count_params, flops_by_module
    from layerlottery.metrics.timing import Stopwatch, TimingStats, measure, peak_memory, reset_peak_memory, speedup


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlottery.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
