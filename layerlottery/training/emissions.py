"""Energy and CO2 of training, epoch by epoch, with CodeCarbon (offline).

Only the training steps are measured: the meter runs from the start of an epoch until its steps are done
and is paused for evaluation and checkpointing. Each epoch's energy goes into that epoch's history row,
which the resume checkpoint keeps, so an interrupted run's total is the sum over all its epochs, measured
in whichever process trained them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from layerlottery.metrics.energy import EnergyMeter, all_measured
from layerlottery.training.callbacks import Callback, TrainState


class EmissionsRecorder(Callback):
    """Adds ``energy_kwh`` and ``emissions_kg`` to every epoch's history row (``None`` when disabled)."""

    def __init__(
        self,
        enabled: bool = True,
        country_iso_code: str = "USA",
        grid_intensity_g_per_kwh: float | None = None,
        measure_power_secs: float = 5.0,
    ) -> None:
        self.meter = EnergyMeter(
            country_iso_code=country_iso_code,
            grid_intensity_g_per_kwh=grid_intensity_g_per_kwh,
            measure_power_secs=measure_power_secs,
            enabled=enabled,
        )
        self._measured_so_far = (0.0, 0.0)

    def on_epoch_start(self, state: TrainState) -> None:
        self.meter.resume()

    def on_epoch_trained(self, state: TrainState, row: dict[str, Any]) -> None:
        if not self.meter.enabled:
            row["energy_kwh"] = row["emissions_kg"] = None
            return
        self.meter.pause()
        report = self.meter.report()
        assert report is not None
        energy, emissions = report.energy_kwh, report.emissions_kg
        row["energy_kwh"] = energy - self._measured_so_far[0]
        row["emissions_kg"] = emissions - self._measured_so_far[1]
        self._measured_so_far = (energy, emissions)

    def totals(self, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Energy and CO2 of the whole training (and of each epoch) from its history rows, and how they were obtained."""
        energies = [row.get("energy_kwh") for row in history]
        if not self.meter.enabled or any(e is None for e in energies):
            return {"energy_kwh": None, "emissions_kg": None, "energy_measured": None, "energy_source": None}
        return {
            "energy_kwh": sum(energies),
            "emissions_kg": sum(row["emissions_kg"] for row in history),
            # Per epoch too: a report compares typical epochs, which one disturbed stretch cannot swing.
            "epoch_emissions_kg": [row["emissions_kg"] for row in history],
            "energy_measured": all_measured(self.meter.energy_source),
            "energy_source": dict(self.meter.energy_source),
            "grid_intensity_g_per_kwh": self.meter.grid_intensity_g_per_kwh,
            "energy_tool": self.meter.tool,
        }
