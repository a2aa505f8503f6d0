"""Shared by the benchmarks: where results go and what machine produced them."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import random
import statistics
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


def write_result(name: str | Path, text: str) -> Path:
    """Write ``results/<name>`` (or the path ``name``, when it is a :class:`~pathlib.Path`) and say where."""
    path = name if isinstance(name, Path) else RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return path


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so that the next clock read includes it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3); the inclusive method, because repeats are few."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def load_average() -> str:
    """The 1-minute load average with the core count, e.g. ``4.2 on 2 cores``: how shared the machine was."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except (AttributeError, OSError):  # not on every platform
        return "unknown"


def repeat_order(n: int, repeat: int) -> list[int]:
    """The contenders' order in one repeat: a shuffle seeded by the repeat, the same in every run.

    Not a rotation: rotating keeps the cyclic order, so every contender would always run right after the
    same one, and a carry-over (a DataLoader's workers just torn down, caches just filled by a bigger model)
    would bias it. Shuffles spread both the position and the predecessor.
    """
    order = list(range(n))
    random.Random(repeat).shuffle(order)
    return order


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--threads`` and ``--note``, the same in every benchmark."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on the CPU, torch's default on CUDA). One thread because on a small "
        "shared machine two OpenMP threads stall whenever a core is taken by another job (steps 10x slower at times)",
    )
    parser.add_argument("--note", default="", help="a sentence for the results file, e.g. what else ran on the machine")


def apply_threads(args: argparse.Namespace) -> torch.device:
    """Set torch's CPU threads as ``--threads`` asks (1 on the CPU by default); returns the device."""
    device = torch.device(args.device)
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    return device


class Fallbacks(logging.Handler):
    """Collects what the training loop logs when CUDA graphs do not apply, for the results file."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        logging.getLogger("layerlottery.training.graphed").addHandler(self)
        logging.getLogger("layerlottery.training.graphed").setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
