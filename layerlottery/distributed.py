"""One training run on several processes (torchrun): who this process is, and the few collectives layerlottery uses.

``torchrun --nproc_per_node N -m layerlottery run PRESET`` starts N processes and tells each its place through
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). :func:`init_distributed` reads it and joins the
process group once (NCCL for CUDA tensors, Gloo for CPU tensors and on CPU-only machines), pinning the
process to ``cuda:LOCAL_RANK``. Without ``WORLD_SIZE`` (or with 1) nothing here starts a process group and
every helper is a no-op that returns its input, so single-process code paths are untouched.

The helpers:

- :func:`main_only` runs a function on rank 0 alone (scoring, reading a checkpoint, writing files) and hands its
  result, or its exception, to every rank, so a mistake found on rank 0 stops every rank with the same line
  instead of leaving the others waiting;
- :func:`broadcast_object`, :func:`barrier`, :func:`all_reduce_`, :func:`sum_counts`, :func:`shard_rows`,
  :func:`shard_batch`;
- :func:`all_equal` compares a digest of a value across ranks and names the ranks that disagree
  (:class:`DistributedMismatchError`): a removal plan, a model architecture.

This module is a foundation: it imports only torch and :mod:`layerlottery.errors`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pickle
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from layerlottery.errors import ConfigError, LayerLotteryError

T = TypeVar("T")

TIMEOUT = timedelta(hours=1)
"""How long a collective waits for the other ranks (rank 0 may score a network, or write a checkpoint, while
the others wait); torch's default for NCCL is 10 minutes."""


class DistributedMismatchError(LayerLotteryError):
    """Ranks of one distributed run disagree on something that must be the same on all (a plan, a model)."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """The process group's backend, or None when the run is a single process."""

    @property
    def distributed(self) -> bool:
        """Whether several processes train this run (a process group is up)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


SINGLE = DistributedContext()
_context: DistributedContext | None = None


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when unset), read without starting anything."""
    return _env_int("WORLD_SIZE", 1)


def launched_rank() -> int:
    """``RANK`` as torchrun set it (0 when unset): lets a command stay quiet on other ranks before any setup."""
    return _env_int("RANK", 0)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; it is set by torchrun, so unset it or launch with torchrun") from None


def init_distributed(device_type: str = "cpu") -> DistributedContext:
    """Join the process group torchrun describes (once per process) and return this process's context.

    ``device_type`` is the training device's type: on ``cuda`` the process uses ``cuda:LOCAL_RANK`` and CUDA
    tensors go through NCCL (CPU tensors through Gloo); otherwise everything goes through Gloo. Without
    ``WORLD_SIZE`` > 1 this starts nothing and returns the single-process context.
    """
    global _context
    if _context is not None:
        return _context
    world_size = launched_world_size()
    if world_size <= 1:
        return SINGLE
    local_rank = _env_int("LOCAL_RANK", 0)  # the global rank comes from the process group
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"start at most that many processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    backend = _backend_override() or backend
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
        atexit.register(shutdown)
    _context = DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend)
    return _context


BACKEND_ENV = "LAYERLOTTERY_DIST_BACKEND"
"""Environment variable: ``gloo`` or ``nccl`` instead of the default (NCCL for CUDA tensors, Gloo for CPU ones).
Gloo also carries CUDA tensors (through host memory, slower): for a machine whose NCCL does not work, or to
run two processes on one GPU, which NCCL refuses (how the DDP path is checked on a single-GPU machine)."""


def _backend_override() -> str | None:
    raw = os.environ.get(BACKEND_ENV, "").strip().lower()
    if not raw:
        return None
    if raw not in ("gloo", "nccl"):
        raise ConfigError(f"{BACKEND_ENV} must be gloo or nccl, not {raw!r}; unset it for the default")
    return raw


def current() -> DistributedContext:
    """The context :func:`init_distributed` set up, or the single-process one."""
    return _context if _context is not None else SINGLE


def shutdown() -> None:
    """Leave the process group (registered to run at exit; harmless to call twice)."""
    global _context
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _context = None


def barrier() -> None:
    """Wait until every rank gets here (a no-op for a single process)."""
    if current().distributed:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled; keep tensors on the CPU). Returns ``obj`` alone."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_only(action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 only and return its result on every rank.

    If it raises on rank 0, every rank raises: the same exception where it can be sent (a
    :class:`LayerLotteryError` keeps its one line), else a RuntimeError quoting it. Single process: ``action()``.
    """
    ctx = current()
    if not ctx.distributed:
        return action()
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, action())
        except BaseException as exc:  # noqa: BLE001 - every rank must learn that rank 0 stopped
            outcome = (False, _sendable(exc))
            broadcast_object(outcome)
            raise
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def _sendable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text still travels
        return RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")


def digest(value: Any) -> str:
    """A short digest of ``value``'s ``repr`` (plain data: strings, numbers, tuples, dicts with sorted keys)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def all_equal(value: Any, what: str) -> None:
    """Check ``value`` is the same on every rank; else raise :class:`DistributedMismatchError` naming the ranks.

    Every rank must call it (it is a collective). The message names ``what`` and the ranks whose value differs
    from rank 0's. A no-op for a single process.
    """
    ctx = current()
    if not ctx.distributed:
        return
    digests: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(digests, digest(value))
    differing = [rank for rank, found in enumerate(digests) if found != digests[0]]
    if differing:
        ranks = ", ".join(str(rank) for rank in differing)
        raise DistributedMismatchError(
            f"{what} differs between ranks: rank(s) {ranks} disagree with rank 0; every rank must run the same "
            f"layerlottery version, settings and data (and, without a shared file system, rank 0 must hold the runs folder)"
        )


def all_reduce_(tensors: Sequence[torch.Tensor], op: str = "sum") -> None:
    """Reduce each tensor over the ranks in place (``sum``, ``min`` or ``max``); a no-op for a single process."""
    if not current().distributed:
        return
    reduce_op = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
    for tensor in tensors:
        dist.all_reduce(tensor, op=reduce_op)


def broadcast_tensors_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s, in place (e.g. a model's buffers); a no-op for a single process."""
    if not current().distributed:
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=src)


def shard_rows(rows: int, rank: int, world_size: int) -> range:
    """The rows of a global batch of ``rows`` that rank ``rank`` of ``world_size`` takes: one contiguous run, cut
    as ``tensor_split`` cuts (the first ``rows % world_size`` ranks get one row more; a rank may get none)."""
    share, extra = divmod(rows, world_size)
    start = rank * share + min(rank, extra)
    return range(start, start + share + (rank < extra))


def shard_batch(
    inputs: torch.Tensor, labels: torch.Tensor, ctx: DistributedContext | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch, its input rows cut by :func:`shard_rows`.

    ``labels`` may hold several entries per input row (a language model's next tokens, flattened to B x T):
    they are cut at the same rows.
    """
    ctx = ctx or current()
    if not ctx.distributed:
        return inputs, labels
    rows = inputs.shape[0]
    per_row, rest = divmod(labels.shape[0], rows)
    if rest:
        raise ValueError(f"a batch of {rows} inputs with {labels.shape[0]} labels cannot be split by rows")
    mine = shard_rows(rows, ctx.rank, ctx.world_size)
    return inputs[mine.start : mine.stop], labels[mine.start * per_row : mine.stop * per_row]


def sum_counts(*counts: int, device: torch.device | str = "cpu", ctx: DistributedContext | None = None) -> tuple[int, ...]:
    """Integers summed over the ranks of ``ctx`` (default: this process's run) in one all-reduce on ``device``;
    the same integers for a single process."""
    if not (ctx or current()).distributed:
        return counts
    summed = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return tuple(int(c) for c in summed.tolist())
