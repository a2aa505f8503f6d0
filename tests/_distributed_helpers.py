"""Run a function on several CPU processes joined by Gloo, as torchrun would start them (RANK, WORLD_SIZE, ...)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(target: Callable[[int, Path], None], out: Path, world_size: int = 2) -> list[dict[str, Any]]:
    """Start ``world_size`` processes running ``target(rank, out)`` (a module-level function) with
    torchrun's environment; return what each saved with :func:`save_outcome`, by rank.

    A rank that raises fails the call (the others are stopped), with its traceback.
    """
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # fork: the ranks start in milliseconds with torch already imported (spawn re-imports it: ~8 s per rank on 2
    # busy cores). The test process runs torch on one thread and starts no process group, so forking it is safe.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    import torch._dynamo  # noqa: F401  (the first optimizer imports it lazily: once here, not once per rank)
    mp.start_processes(_rank_main, args=(target, out, world_size, port), nprocs=world_size, join=True, start_method=method)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


def _rank_main(rank: int, target: Callable[[int, Path], None], out: Path, world_size: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size), LAYERLOTTERY_THREADS="1",
    )
    torch.set_num_threads(1)  # two processes on a 2-core machine
    target(rank, out)


def save_outcome(out: Path, rank: int, outcome: dict[str, Any]) -> None:
    torch.save(outcome, out / f"rank{rank}.pt")


def caught(action: Callable[[], Any]) -> tuple[str, str] | None:
    """``(exception type name, message)`` of what ``action`` raised, or None."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return None
