"""Energy and CO2 of training runs, measured with CodeCarbon in offline mode.

:class:`EnergyMeter` wraps CodeCarbon's ``OfflineEmissionsTracker``. It never touches the network: the
country's grid carbon intensity comes from CodeCarbon's bundled energy-mix tables (or from the user), is
looked up once when the meter is built, and is handed back to CodeCarbon as a forced intensity, so no
Electricity Maps token found in a CodeCarbon config file or environment variable can trigger a request.
Emissions are always ``energy_kwh * grid_intensity_g_per_kwh / 1000``.

Where the watts come from matters as much as the number. CodeCarbon reads hardware energy counters
when it can (RAPL under ``/sys/class/powercap`` for Intel/AMD CPUs, NVML for NVIDIA GPUs) and otherwise
*estimates* CPU power from the processor's TDP scaled by its load, and RAM power from the installed
memory size. Every :class:`EnergyReport` says which applied to each component in ``energy_source``, and
``measured`` is True only when every tracked component was read from a hardware counter. In containers
and VMs without RAPL access the CPU figure is a TDP estimate and the RAM figure always is, so the energy
is then roughly proportional to wall time: report it as an estimate.

Excluding evaluation from training energy: CodeCarbon has no pause, so each measured stretch is its
own short-lived tracker (hardware detection is cached per process, so only the first costs ~1 s, and
that happens when the meter is built) and the meter sums the segments::

    meter = EnergyMeter(country_iso_code="FRA")
    for epoch in range(epochs):
        with meter.segment():      # measured
            train_one_epoch()
        evaluate()                 # not measured
    report = meter.stop()          # sum over segments; duration_s excludes the gaps
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from layerlottery.errors import ConfigError

__all__ = [
    "EnergyMeter",
    "EnergyReport",
    "MEASURED_SOURCES",
    "all_measured",
    "co2_reduction",
    "describe_energy_sources",
    "energy_reduction",
]

# energy_source values that come from hardware counters or power sensors, not from a model.
MEASURED_SOURCES = frozenset(
    {"rapl", "windows_emi", "intel_power_gadget", "powermetrics", "raspberry_pmic", "nvml", "amdsmi"}
)

# CodeCarbon CPU ``_mode`` -> our label. "cpu_load" is TDP x a load curve; "constant" a fixed share of TDP.
_CPU_MODES = {
    "intel_rapl": "rapl",
    "windows_emi": "windows_emi",
    "intel_power_gadget": "intel_power_gadget",
    "cpu_load": "tdp_estimate",
    "constant": "constant_estimate",
}

_COUNTRY_RE = re.compile(r"^[A-Za-z]{3}$")
# Regions CodeCarbon resolves with its own per-region tables; elsewhere the country mix is used.
_REGIONAL_TABLE_COUNTRIES = ("USA", "CAN")


@dataclass(frozen=True)
class EnergyReport:
    """Energy and emissions of the measured segments of one run.

    Energies are in kWh, emissions in kg CO2-equivalent, the intensity in g CO2eq per kWh.
    ``energy_source`` maps "cpu", "gpu" and "ram" to where the number came from ("rapl", "nvml",
    "tdp_estimate", "constant_estimate", "estimate", ...; ``None`` for a component not present);
    ``measured`` is True only if every present component is in :data:`MEASURED_SOURCES`.
    ``duration_s`` is the tracked time only (gaps between segments excluded).
    """

    energy_kwh: float
    emissions_kg: float
    duration_s: float
    cpu_energy_kwh: float
    gpu_energy_kwh: float
    ram_energy_kwh: float
    country_iso_code: str
    grid_intensity_g_per_kwh: float
    energy_source: Mapping[str, str | None]
    measured: bool
    tool: str
    segments: int = 1
    cpu_model: str | None = None
    gpu_model: str | None = None
    region: str | None = None
    intensity_source: str = "codecarbon_country_mix"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = asdict(self)
        out["energy_source"] = dict(self.energy_source)
        return out


def _validate_country(country_iso_code: str) -> str:
    if not isinstance(country_iso_code, str) or not _COUNTRY_RE.match(country_iso_code):
        raise ConfigError(
            f"country_iso_code {country_iso_code!r} must be a 3-letter ISO 3166 alpha-3 code such as 'USA', 'FRA' or 'DEU'"
        )
    return country_iso_code.upper()


def grid_intensity(country: str, region: str | None) -> float:
    """g CO2eq/kWh for ``country`` (and ``region``) from CodeCarbon's bundled tables, offline.

    CodeCarbon silently falls back to the world average for an unknown country and to the country mix
    for an unknown US/Canadian region; we turn both into a ConfigError instead of a quiet wrong number.
    """
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()
    if country not in mix:
        raise ConfigError(
            f"country_iso_code {country!r} is not in CodeCarbon's energy-mix table; use a 3-letter code such as "
            "'USA' or 'FRA', or pass grid_intensity_g_per_kwh"
        )
    geo = GeoMetadata(country_iso_code=country, country_name=mix[country].get("country_name"), region=region)
    one_kwh = Energy.from_energy(kWh=1.0)
    emissions = Emissions(DataSource())  # no API token: offline tables only
    if region is not None and country in _REGIONAL_TABLE_COUNTRIES:
        try:
            kg = emissions.get_region_emissions(one_kwh, geo)
        except Exception as exc:  # ValueError for USA, KeyError for CAN
            raise ConfigError(
                f"region {region!r} is not in CodeCarbon's table for {country}; use a state/province name such as "
                "'california' or leave region unset"
            ) from exc
    else:
        kg = emissions.get_private_infra_emissions(one_kwh, geo)
    return float(kg) * 1000.0


def _describe_hardware(hardware: list[Any]) -> dict[str, str | None]:
    """Map CodeCarbon's detected hardware objects to energy_source labels.

    Classified by class name rather than isinstance because CodeCarbon's hardware cache rebuilds the
    objects, and names are what its own cache keys on.
    """
    source: dict[str, str | None] = {"cpu": None, "gpu": None, "ram": None}
    for hw in hardware:
        kind = type(hw).__name__
        if kind == "CPU":
            mode = str(getattr(hw, "_mode", "unknown"))
            source["cpu"] = _CPU_MODES.get(mode, f"unknown:{mode}")
        elif kind == "RAM":
            source["ram"] = "estimate"  # CodeCarbon models RAM power from its size; there is no counter
        elif kind == "GPU":
            names = sorted({type(d).__name__ for d in getattr(getattr(hw, "devices", None), "devices", [])})
            labels = [{"NvidiaGPUDevice": "nvml", "AMDGPUDevice": "amdsmi"}.get(n, f"unknown:{n}") for n in names]
            source["gpu"] = "+".join(labels) if labels else None
        elif kind == "AppleSiliconChip":
            source[str(getattr(hw, "chip_part", "cpu")).lower()] = "powermetrics"
        elif kind == "Raspberry":
            source[str(getattr(hw, "chip_part", "cpu")).lower()] = "raspberry_pmic"
    return source


def all_measured(source: Mapping[str, str | None]) -> bool:
    """True when every component's energy came from a hardware counter (none was estimated)."""
    present = [label for label in source.values() if label is not None]
    return bool(present) and all(
        all(part in MEASURED_SOURCES for part in label.split("+")) for label in present
    )


# How each energy_source label reads in a report: where a measured number came from, or how it was estimated.
_SOURCE_WORDS = {
    "rapl": "RAPL counters",
    "windows_emi": "Windows energy counters",
    "intel_power_gadget": "Intel Power Gadget",
    "powermetrics": "powermetrics",
    "raspberry_pmic": "the Raspberry Pi's PMIC",
    "nvml": "NVML",
    "amdsmi": "AMD SMI",
    "tdp_estimate": "CodeCarbon's estimate from the processor's TDP and load",
    "constant_estimate": "CodeCarbon's estimate, a fixed share of the processor's TDP",
    "estimate": "CodeCarbon's estimate",
}
_COMPONENT_NAMES = {"cpu": "CPU", "gpu": "GPU", "ram": "RAM"}


def describe_energy_sources(sources: Mapping[str, Iterable[str | None] | str | None]) -> str:
    """One sentence saying which components' energy was measured and which estimated, and how.

    ``sources`` maps a component ("cpu", "gpu", "ram") to its ``energy_source`` label, or to the labels of
    several runs (a component read from a counter in some runs and estimated in others counts as estimated).
    E.g. ``{"cpu": "tdp_estimate", "gpu": "nvml", "ram": "estimate"}`` gives "Energy measured: GPU (NVML);
    estimated: CPU (CodeCarbon's estimate from the processor's TDP and load), RAM (CodeCarbon's estimate
    from the memory size)." Empty when no component was tracked.
    """
    measured, estimated = [], []
    for component, labels in sources.items():
        found = sorted({labels} if isinstance(labels, str) else {label for label in labels or () if label})
        if not found:
            continue
        words = " / ".join(_label_words(component, label) for label in found)
        part = f"{_COMPONENT_NAMES.get(component, component)} ({words})"
        (measured if all(all_measured({component: label}) for label in found) else estimated).append(part)
    clauses = ([f"measured: {', '.join(measured)}"] if measured else []) + (
        [f"estimated: {', '.join(estimated)}"] if estimated else []
    )
    return f"Energy {'; '.join(clauses)}." if clauses else ""


def _label_words(component: str, label: str) -> str:
    if "+" in label:  # several GPUs of different kinds
        return " + ".join(_label_words(component, part) for part in label.split("+"))
    if label == "estimate" and component == "ram":
        return "CodeCarbon's estimate from the memory size"
    if label.startswith("unknown:"):
        return f"an unrecognised source {label.split(':', 1)[1]}"
    return _SOURCE_WORDS.get(label, label)


def _sync_cuda() -> None:
    """Wait for queued CUDA work so it is counted in the segment it was launched from."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class _Segment:
    energy: float
    cpu: float
    gpu: float
    ram: float
    duration: float


class EnergyMeter:
    """Measure energy and CO2 of code blocks with CodeCarbon, offline.

    Use as ``with EnergyMeter() as meter: ...`` (report in ``meter.last_report``), as
    ``start()`` / ``stop()``, or with ``segment()`` / ``pause()`` / ``resume()`` to measure only some
    stretches (see the module docstring). ``grid_intensity_g_per_kwh`` overrides CodeCarbon's
    country/region mix (``country_iso_code`` is then only a label, and need not be in CodeCarbon's
    table). ``output_dir`` makes CodeCarbon append one ``emissions.csv`` row per segment there; without
    it nothing is written. With ``enabled=False`` nothing is measured and reports are ``None``.
    """

    def __init__(
        self,
        country_iso_code: str = "USA",
        region: str | None = None,
        grid_intensity_g_per_kwh: float | None = None,
        measure_power_secs: float = 5,
        output_dir: Path | None = None,
        enabled: bool = True,
        tracking_mode: str = "machine",
    ) -> None:
        self.country_iso_code = _validate_country(country_iso_code)
        self.region = region.strip().lower() if region else None
        if grid_intensity_g_per_kwh is not None and not (
            math.isfinite(grid_intensity_g_per_kwh) and grid_intensity_g_per_kwh >= 0
        ):
            raise ConfigError(f"grid_intensity_g_per_kwh must be a finite number >= 0, got {grid_intensity_g_per_kwh!r}")
        if not measure_power_secs > 0:
            raise ConfigError(f"measure_power_secs must be > 0, got {measure_power_secs!r}")
        if tracking_mode not in ("machine", "process"):
            raise ConfigError(f"tracking_mode must be 'machine' or 'process', got {tracking_mode!r}")
        if output_dir is not None and not Path(output_dir).is_dir():
            # CodeCarbon would raise inside a constructor that swallows exceptions; say it here instead.
            raise ConfigError(f"output_dir {str(output_dir)!r} does not exist or is not a directory; create it first")
        self.measure_power_secs = float(measure_power_secs)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.enabled = bool(enabled)
        self.tracking_mode = tracking_mode
        self.last_report: EnergyReport | None = None
        self._segments: list[_Segment] = []
        self._tracker: Any = None
        self._meta: dict[str, Any] = {}
        self.grid_intensity_g_per_kwh: float | None = None
        self.intensity_source = "user" if grid_intensity_g_per_kwh is not None else "codecarbon_country_mix"
        self.energy_source: dict[str, str | None] = {}
        self.tool: str | None = None  # "codecarbon x.y.z" when enabled
        if not self.enabled:
            return

        import codecarbon

        self.tool = self._tool = f"codecarbon {codecarbon.__version__}"
        if grid_intensity_g_per_kwh is not None:
            self.grid_intensity_g_per_kwh = float(grid_intensity_g_per_kwh)
        else:
            self.grid_intensity_g_per_kwh = grid_intensity(self.country_iso_code, self.region)
            if self.region is not None:
                self.intensity_source = "codecarbon_region"
        # Detect hardware now (about a second, cached per process) so it is not billed to the first
        # segment and a broken setup fails here rather than mid-training.
        probe = self._new_tracker()
        try:
            probe.get_detected_hardware()
        except Exception as exc:
            raise ConfigError(f"CodeCarbon could not detect this machine's hardware: {_one_line(exc)}") from exc
        self.energy_source = _describe_hardware(list(getattr(probe, "_hardware", [])))

    # -- CodeCarbon plumbing -------------------------------------------------------------------------

    def _tracker_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "country_iso_code": self.country_iso_code,
            "region": self.region,
            "cloud_provider": None,
            "cloud_region": None,
            "project_name": "layerlottery",
            "measure_power_secs": self.measure_power_secs,
            "log_level": "error",
            "allow_multiple_runs": True,  # else a second tracker is refused through CodeCarbon's lock file
            "tracking_mode": self.tracking_mode,
            "emissions_endpoint": None,
            "electricitymaps_api_token": None,
            "force_carbon_intensity_g_co2e_kwh": self.grid_intensity_g_per_kwh,
            "pue": 1.0,
            "force_cpu_power": None,
            "force_ram_power": None,
            "output_dir": str(self.output_dir) if self.output_dir is not None else ".",
        }
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.emissions_tracker import BaseEmissionsTracker

        accepted = set(inspect.signature(BaseEmissionsTracker.__init__).parameters) | set(
            inspect.signature(OfflineEmissionsTracker.__init__).parameters
        )
        if "output_methods" in accepted:
            from codecarbon.output_methods.base_output import OutputMethod

            kwargs["output_methods"] = [OutputMethod.CSV] if self.output_dir is not None else []
        else:  # CodeCarbon before output_methods existed
            kwargs["save_to_file"] = self.output_dir is not None
        # Older CodeCarbon releases lack some options; dropping them keeps the defaults we rely on.
        return {k: v for k, v in kwargs.items() if k in accepted}

    def _new_tracker(self) -> Any:
        from codecarbon import OfflineEmissionsTracker

        # CodeCarbon logs a warning from its constructor before applying log_level; quiet it first.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        return OfflineEmissionsTracker(**self._tracker_kwargs())

    # -- measurement --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a segment is being measured now."""
        return self._tracker is not None

    def start(self) -> None:
        """Forget earlier segments and start measuring."""
        if self.running:
            raise RuntimeError("EnergyMeter.start() called while already measuring; call stop() first")
        self._segments.clear()
        self.resume()

    def resume(self) -> None:
        """Start a new segment; its energy is added to the earlier ones since the last start()/stop()."""
        if not self.enabled:
            return
        if self.running:
            raise RuntimeError("EnergyMeter.resume() called while already measuring")
        _sync_cuda()
        tracker = self._new_tracker()
        tracker.start()  # CodeCarbon swallows its own errors here; pause() notices the missing result
        self._tracker = tracker

    def pause(self) -> None:
        """End the current segment and keep its energy for the next report."""
        if not self.enabled:
            return
        if not self.running:
            raise RuntimeError("EnergyMeter.pause() called while not measuring")
        _sync_cuda()
        tracker, self._tracker = self._tracker, None
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            raise ConfigError(
                "CodeCarbon failed to measure energy (see its log with CODECARBON_LOG_LEVEL=debug); "
                "pass enabled=False to run without energy measurement"
            )
        self._segments.append(
            _Segment(
                energy=float(data.energy_consumed),
                cpu=float(data.cpu_energy),
                gpu=float(data.gpu_energy),
                ram=float(data.ram_energy),
                duration=float(data.duration),
            )
        )
        self._meta = {"cpu_model": data.cpu_model or None, "gpu_model": data.gpu_model or None}

    def stop(self) -> EnergyReport | None:
        """End the current segment (if any) and return the report over all segments since start()."""
        if not self.enabled:
            return None
        if self.running:
            self.pause()
        if not self._segments:
            raise RuntimeError("EnergyMeter.stop() called before anything was measured")
        report = self.report()
        self._segments.clear()
        self.last_report = report
        return report

    def report(self) -> EnergyReport | None:
        """The report over the segments finished so far, without stopping (None when disabled)."""
        if not self.enabled or not self._segments:
            return None
        seg = self._segments
        energy = sum(s.energy for s in seg)
        assert self.grid_intensity_g_per_kwh is not None
        return EnergyReport(
            energy_kwh=energy,
            emissions_kg=energy * self.grid_intensity_g_per_kwh / 1000.0,
            duration_s=sum(s.duration for s in seg),
            cpu_energy_kwh=sum(s.cpu for s in seg),
            gpu_energy_kwh=sum(s.gpu for s in seg),
            ram_energy_kwh=sum(s.ram for s in seg),
            country_iso_code=self.country_iso_code,
            grid_intensity_g_per_kwh=self.grid_intensity_g_per_kwh,
            energy_source=dict(self.energy_source),
            measured=all_measured(self.energy_source),
            tool=self._tool,
            segments=len(seg),
            cpu_model=self._meta.get("cpu_model"),
            gpu_model=self._meta.get("gpu_model"),
            region=self.region,
            intensity_source=self.intensity_source,
        )

    @contextlib.contextmanager
    def segment(self) -> Iterator[EnergyMeter]:
        """Measure the enclosed block as one more segment (resume on entry, pause on exit)."""
        self.resume()
        try:
            yield self
        finally:
            if self.running:
                self.pause()

    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Stop even on error so CodeCarbon's background threads end; the report covers the partial run.
        if self.enabled and (self.running or self._segments):
            self.stop()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _reduction(dense: float, ticket: float, what: str) -> float:
    if not (math.isfinite(dense) and dense > 0):
        raise ConfigError(f"dense {what} must be > 0 to compute a reduction, got {dense!r}")
    return 1.0 - ticket / dense


def energy_reduction(dense: EnergyReport, ticket: EnergyReport) -> float:
    """Fraction of the dense run's energy the ticket saves: ``1 - ticket / dense`` (negative if it used more)."""
    return _reduction(dense.energy_kwh, ticket.energy_kwh, "energy_kwh")


def co2_reduction(dense: EnergyReport, ticket: EnergyReport) -> float:
    """Fraction of the dense run's CO2 the ticket saves: ``1 - ticket / dense``.

    Both reports must use the same grid intensity; otherwise the ratio would mix the grid with the
    network's cost, so that is refused.
    """
    if not math.isclose(dense.grid_intensity_g_per_kwh, ticket.grid_intensity_g_per_kwh, rel_tol=1e-9):
        raise ConfigError(
            f"dense and ticket were measured with different grid intensities ({dense.grid_intensity_g_per_kwh:g} vs "
            f"{ticket.grid_intensity_g_per_kwh:g} g/kWh); compare energy_reduction or measure both with the same setting"
        )
    return _reduction(dense.emissions_kg, ticket.emissions_kg, "emissions_kg")
