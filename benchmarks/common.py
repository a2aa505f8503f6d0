"""Shared by the benchmarks: where results go and what machine produced them."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine_line(device: str = "cpu") -> str:
    """One line naming the device, the software and the date, for the top of every results file."""
    if device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(torch.device(device))
    else:
        hardware = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    today = datetime.date.today().isoformat()
    return f"{hardware}; torch {torch.__version__}; Python {platform.python_version()}; {today}"


def write_result(name: str, text: str) -> Path:
    """Write ``results/<name>`` and say where."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    print(f"wrote {path}")
    return path
