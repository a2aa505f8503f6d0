"""Cost accounting: MACs, FLOPs and parameters."""

from layerlottery.metrics.macs import count_flops, count_macs, count_params, flops_by_module

__all__ = ["count_flops", "count_macs", "count_params", "flops_by_module"]

# Energy/CO2 (CodeCarbon, offline; imported lazily inside) and wall-clock/peak-memory timing.
from layerlottery.metrics.energy import EnergyMeter, EnergyReport, co2_reduction, energy_reduction  # noqa: E402
from layerlottery.metrics.timing import (  # noqa: E402
    Stopwatch,
    TimingStats,
    measure,
    peak_memory,
    reset_peak_memory,
    speedup,
)

__all__ += [
    "EnergyMeter",
    "EnergyReport",
    "co2_reduction",
    "energy_reduction",
    "Stopwatch",
    "TimingStats",
    "measure",
    "peak_memory",
    "reset_peak_memory",
    "speedup",
]
