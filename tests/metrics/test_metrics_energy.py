"""EnergyMeter on the real CodeCarbon, offline, on short busy loops (CPU only, a few seconds)."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from layerlottery.errors import ConfigError
from layerlottery.metrics.energy import (
    MEASURED_SOURCES,
    EnergyMeter,
    EnergyReport,
    all_measured,
    co2_reduction,
    describe_energy_sources,
    energy_reduction,
)
from layerlottery.training.emissions import EmissionsRecorder


def _busy(seconds: float) -> int:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or DNS lookup fails loudly, and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline measurement")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_measures_a_busy_loop_offline_with_overridden_intensity(no_network, tmp_path, monkeypatch):
    from codecarbon.core import hardware_cache

    monkeypatch.chdir(tmp_path)  # so a stray emissions.csv would be seen
    hardware_cache.clear_cache()  # make hardware detection itself run under the no-network patch
    meter = EnergyMeter(country_iso_code="deu", grid_intensity_g_per_kwh=400.0, measure_power_secs=0.5)
    wall0 = time.perf_counter()
    with meter:
        busy = time.perf_counter()
        _busy(1.2)
        busy = time.perf_counter() - busy
    wall = time.perf_counter() - wall0
    report = meter.last_report

    assert isinstance(report, EnergyReport)
    assert report.energy_kwh > 0 and report.emissions_kg > 0
    assert report.emissions_kg == report.energy_kwh * 400.0 / 1000  # exactly the override, not Germany's mix
    assert report.grid_intensity_g_per_kwh == 400.0 and report.intensity_source == "user"
    assert report.country_iso_code == "DEU"
    assert busy * 0.98 <= report.duration_s <= wall + 0.01
    assert report.energy_kwh == pytest.approx(report.cpu_energy_kwh + report.gpu_energy_kwh + report.ram_energy_kwh)
    assert set(report.energy_source) == {"cpu", "gpu", "ram"}
    assert report.energy_source["cpu"] is not None and report.energy_source["ram"] == "estimate"
    assert report.measured is False  # RAM power is always modelled by CodeCarbon
    assert report.tool.startswith("codecarbon ") and report.tool == meter.tool
    assert report.segments == 1
    assert report.to_dict()["energy_source"] == dict(report.energy_source)
    assert no_network == []
    assert list(tmp_path.iterdir()) == []  # no emissions.csv without output_dir


def test_country_mix_is_used_and_segments_exclude_the_gaps(no_network):
    meter = EnergyMeter(country_iso_code="USA", measure_power_secs=0.5)
    fra = EnergyMeter(country_iso_code="FRA", enabled=True)
    # France's nuclear-heavy mix is far cleaner than the US average in CodeCarbon's tables.
    assert 0 < fra.grid_intensity_g_per_kwh < meter.grid_intensity_g_per_kwh / 2
    for _ in range(2):
        with meter.segment():
            _busy(0.4)
        time.sleep(0.5)  # "evaluation": not measured
    report = meter.stop()
    assert report.segments == 2
    assert 0.8 <= report.duration_s < 1.3  # two 0.4 s segments, not the 1.8 s wall time
    assert report.emissions_kg == pytest.approx(report.energy_kwh * meter.grid_intensity_g_per_kwh / 1000, rel=1e-12)
    assert report.intensity_source == "codecarbon_country_mix"
    assert no_network == []
    # stop() starts afresh: the next measurement does not include the earlier segments
    with meter.segment():
        _busy(0.1)
    assert meter.stop().segments == 1


def test_output_dir_gets_the_csv(tmp_path):
    meter = EnergyMeter(grid_intensity_g_per_kwh=100.0, output_dir=tmp_path, measure_power_secs=1)
    with meter:
        _busy(0.1)
    assert (tmp_path / "emissions.csv").is_file()


def test_energy_source_matches_codecarbon_and_measured_flag_is_consistent():
    meter = EnergyMeter(grid_intensity_g_per_kwh=1.0)
    src = meter.energy_source
    assert src["cpu"] in {"rapl", "windows_emi", "intel_power_gadget", "powermetrics", "raspberry_pmic",
                          "tdp_estimate", "constant_estimate"}
    with meter:
        _busy(0.05)
    report = meter.last_report
    present = [v for v in report.energy_source.values() if v is not None]
    assert report.measured == all(v in MEASURED_SOURCES for v in present)


def test_disabled_meter_measures_nothing():
    meter = EnergyMeter(enabled=False)
    assert meter.tool is None and meter.energy_source == {}
    with meter:
        _busy(0.01)
    assert meter.last_report is None
    meter.start()
    with meter.segment():
        pass
    assert meter.stop() is None and meter.report() is None


@pytest.mark.parametrize("code", ["US", "U5A", "", "FRANCE"])
def test_malformed_country_code_is_a_config_error_even_when_disabled(code):
    with pytest.raises(ConfigError, match="3-letter"):
        EnergyMeter(country_iso_code=code, enabled=False)


def test_unknown_country_and_region_are_config_errors():
    with pytest.raises(ConfigError, match="energy-mix table"):
        EnergyMeter(country_iso_code="XYZ")
    with pytest.raises(ConfigError, match="region"):
        EnergyMeter(country_iso_code="USA", region="atlantis")
    # with an explicit intensity the country is only a label
    assert EnergyMeter(country_iso_code="XYZ", grid_intensity_g_per_kwh=50.0).grid_intensity_g_per_kwh == 50.0


def test_known_region_changes_the_intensity():
    usa = EnergyMeter(country_iso_code="USA").grid_intensity_g_per_kwh
    california = EnergyMeter(country_iso_code="USA", region="California").grid_intensity_g_per_kwh
    assert california > 0 and california != usa


@pytest.mark.parametrize(
    "kwargs",
    [{"grid_intensity_g_per_kwh": -1.0}, {"measure_power_secs": 0}, {"tracking_mode": "gpu"}, {"output_dir": "/nonexistent/dir"}],
)
def test_bad_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        EnergyMeter(**kwargs)


def test_codecarbon_failure_becomes_one_line_config_error(monkeypatch):
    from codecarbon import OfflineEmissionsTracker

    meter = EnergyMeter(grid_intensity_g_per_kwh=1.0)
    # CodeCarbon swallows its own exceptions and just leaves no result behind; simulate that.
    monkeypatch.setattr(OfflineEmissionsTracker, "stop", lambda self: None)
    meter.start()
    with pytest.raises(ConfigError) as info:
        meter.stop()
    assert "\n" not in str(info.value)
    assert not meter.running


def test_misuse_is_reported():
    meter = EnergyMeter(grid_intensity_g_per_kwh=1.0)
    with pytest.raises(RuntimeError):
        meter.stop()
    meter.start()
    with pytest.raises(RuntimeError):
        meter.resume()
    meter.stop()


def _report(energy, emissions, intensity=400.0):
    return EnergyReport(
        energy_kwh=energy, emissions_kg=emissions, duration_s=1.0, cpu_energy_kwh=energy, gpu_energy_kwh=0.0,
        ram_energy_kwh=0.0, country_iso_code="USA", grid_intensity_g_per_kwh=intensity,
        energy_source={"cpu": "rapl", "gpu": None, "ram": "estimate"}, measured=False, tool="codecarbon test",
    )


def test_reductions():
    dense, ticket = _report(2.0, 0.8), _report(1.5, 0.6)
    assert energy_reduction(dense, ticket) == pytest.approx(0.25)
    assert co2_reduction(dense, ticket) == pytest.approx(0.25)
    assert energy_reduction(dense, _report(3.0, 1.2)) == pytest.approx(-0.5)
    with pytest.raises(ConfigError):
        co2_reduction(dense, dataclasses.replace(ticket, grid_intensity_g_per_kwh=50.0))
    with pytest.raises(ConfigError):
        energy_reduction(_report(0.0, 0.0), ticket)


def _fake(class_name, **attrs):
    """An object whose class is called ``class_name`` (CodeCarbon's hardware is told apart by class name)."""
    return type(class_name, (), attrs)()


def test_hardware_classification_without_the_hardware():
    """The RAPL / NVML branches cannot run on a CI container; check the labelling on stand-in objects."""
    from layerlottery.metrics.energy import all_measured, _describe_hardware

    nvml = _fake("GPU", devices=_fake("AllGPUDevices", devices=[_fake("NvidiaGPUDevice"), _fake("NvidiaGPUDevice")]))
    rapl = _fake("CPU", _mode="intel_rapl")
    source = _describe_hardware([_fake("RAM"), rapl, nvml])
    assert source == {"cpu": "rapl", "gpu": "nvml", "ram": "estimate"}
    assert all_measured(source) is False  # the RAM estimate keeps it an estimate
    assert all_measured({"cpu": "rapl", "gpu": "nvml", "ram": None}) is True
    estimated = _describe_hardware([_fake("RAM"), _fake("CPU", _mode="cpu_load")])
    assert estimated == {"cpu": "tdp_estimate", "gpu": None, "ram": "estimate"}
    assert _describe_hardware([_fake("CPU", _mode="constant")])["cpu"] == "constant_estimate"
    assert _describe_hardware([_fake("CPU", _mode="new_mode")])["cpu"] == "unknown:new_mode"
    assert all_measured({"cpu": "unknown:new_mode", "gpu": None, "ram": None}) is False
    empty_gpu = _fake("GPU", devices=_fake("AllGPUDevices", devices=[]))
    assert _describe_hardware([empty_gpu])["gpu"] is None


# -- saying which parts were measured and which estimated ------------------------------------------------------


@pytest.mark.parametrize(
    "sources, expected",
    [
        ({"cpu": "tdp_estimate", "gpu": "nvml", "ram": "estimate"},
         "Energy measured: GPU (NVML); estimated: CPU (CodeCarbon's estimate from the processor's TDP and load), "
         "RAM (CodeCarbon's estimate from the memory size)."),
        ({"cpu": "rapl", "gpu": None, "ram": None}, "Energy measured: CPU (RAPL counters)."),
        ({"cpu": "constant_estimate", "gpu": "nvml+amdsmi", "ram": "estimate"},
         "Energy measured: GPU (NVML + AMD SMI); estimated: CPU (CodeCarbon's estimate, a fixed share of the "
         "processor's TDP), RAM (CodeCarbon's estimate from the memory size)."),
        ({"cpu": "unknown:quantum"}, "Energy estimated: CPU (an unrecognised source quantum)."),
        # Several runs: one machine had RAPL, another did not, so the CPU figure is partly an estimate.
        ({"cpu": ["rapl", "tdp_estimate", None], "ram": ["estimate"]},
         "Energy estimated: CPU (RAPL counters / CodeCarbon's estimate from the processor's TDP and load), "
         "RAM (CodeCarbon's estimate from the memory size)."),
        ({"cpu": None, "gpu": []}, ""),
    ],
)
def test_describe_energy_sources(sources, expected):
    assert describe_energy_sources(sources) == expected


def test_describe_agrees_with_the_measured_flag():
    for label in sorted(MEASURED_SOURCES):
        assert describe_energy_sources({"cpu": label}).startswith("Energy measured: CPU") == all_measured({"cpu": label})


def test_the_recorder_keeps_each_epochs_emissions_and_where_the_energy_came_from():
    recorder = EmissionsRecorder(grid_intensity_g_per_kwh=400.0)
    history = [{"energy_kwh": 1e-6, "emissions_kg": 4e-7}, {"energy_kwh": 3e-6, "emissions_kg": 1.2e-6}]
    totals = recorder.totals(history)
    assert totals["epoch_emissions_kg"] == [4e-7, 1.2e-6] and totals["emissions_kg"] == pytest.approx(1.6e-6)
    assert totals["energy_source"] == recorder.meter.energy_source and totals["energy_source"]["ram"] == "estimate"
    assert totals["energy_measured"] == all_measured(recorder.meter.energy_source)
