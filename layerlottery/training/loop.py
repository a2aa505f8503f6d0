"""The training loop: SGD over a batch loader, with evaluation, resumption, timing and callbacks.

:func:`train` reads top to bottom: set up, resume if a checkpoint exists, then per epoch train, evaluate
when due, step the schedule, and hand the state to the callbacks (rewind snapshots, then the resume
checkpoint, always last). :func:`evaluate` measures a model on a loader.

Honest timing: ``train_seconds`` is the wall-clock of the training steps alone (batch preparation by the
loader included, evaluation and checkpoint writing excluded), with the device synchronized before each
clock read. With ``compile``, every step that meets a new input shape (the first step of the run, and the
first short last batch) triggers a compilation: those steps are timed apart as ``compile_seconds`` and
their images are left out of images/s. The update itself still happens, so compiling changes no result.
On CUDA the step is captured once in a CUDA graph and replayed (``train.cuda_graphs``, see
:mod:`layerlottery.training.graphed`); the capturing step is timed apart the same way.
Each epoch's time is kept (``epoch_train_seconds``), and :attr:`TrainResult.timing` gives the typical epoch,
which another process stalling a few epochs cannot swing, and marks a run that such a stall visibly hit.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layerlottery import distributed
from layerlottery.config import TrainSettings
from layerlottery.devices import resolve_device as _resolve_device
from layerlottery.errors import ConfigError, DataError, LayerLotteryError
from layerlottery.metrics.timing import RunTiming, peak_memory, reset_peak_memory, run_timing
from layerlottery.threads import training_threads
from layerlottery.training.callbacks import Callback, Checkpointer, SnapshotSaver, TrainState
from layerlottery.training.ddp import data_parallel, rank_batches, rank_device, read_checkpoint
from layerlottery.training.graphed import build_train_step
from layerlottery.training.optim import build_optimizer, build_scheduler, use_fused
from layerlottery.training.progress import TrainProgress
from layerlottery.training.step import EagerStep, autocast, layout


class TrainingDivergedError(LayerLotteryError):
    """The training loss became NaN or infinite."""


class BatchLoader(Protocol):
    """What :func:`train` and :func:`evaluate` need from a loader (e.g. ``layerlottery.data.DeviceLoader``).

    A loader may also have ``epoch_shard(epoch, rank, world_size)``, the same batches cut to one rank's rows
    (see :func:`~layerlottery.training.ddp.rank_batches`), for distributed runs whose batches are costly to build.
    """

    num_samples: int

    def __len__(self) -> int:
        """Batches per epoch."""

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (float32 inputs, int64 labels, on the device); a pure function of it."""


@dataclass
class TrainResult:
    """What a training run produced. Accuracies are fractions in [0, 1]; test values are None without
    an evaluation loader.

    ``history`` has one row per epoch: ``{epoch, lr, train_loss, train_acc, test_loss, test_acc,
    epoch_train_seconds, images_per_second}`` (test values None when that epoch was not evaluated).
    ``peak_memory_kind`` says what ``peak_memory_bytes`` measures: ``"cuda_allocated"``
    (``torch.cuda.max_memory_allocated`` during training) or ``"cpu_max_rss"`` (the process's peak
    resident set size during training on Linux, over its lifetime elsewhere; the data and libraries it holds
    included: see :func:`layerlottery.metrics.timing.peak_memory`).
    """

    history: list[dict[str, Any]]
    final_test_loss: float | None
    final_test_acc: float | None
    best_test_acc: float | None
    train_seconds: float
    images_per_second: float | None
    peak_memory_bytes: int | None
    peak_memory_kind: str
    epochs: int
    compile_seconds: float
    resumed_from: int | None
    """The completed epoch this call resumed from (``epochs`` when it found the run finished), or None."""
    timing: RunTiming | None = None
    """The typical epoch time and whether a competing load visibly disturbed an epoch (see
    :func:`~layerlottery.metrics.timing.run_timing`); None when no epoch had a timed step."""
    cpu_threads: int | None = None
    """torch's CPU threads during this call (``LAYERLOTTERY_THREADS`` or the caller's count); the last bits
    of CPU results depend on it, and so does the time."""

    @classmethod
    def from_state(cls, state: TrainState) -> TrainResult:
        """Summarize a (finished) :class:`TrainState`."""
        last = state.history[-1] if state.history else {}
        tested = [row["test_acc"] for row in state.history if row.get("test_acc") is not None]
        return cls(
            history=[dict(row) for row in state.history],
            final_test_loss=last.get("test_loss"),
            final_test_acc=last.get("test_acc"),
            best_test_acc=max(tested) if tested else None,
            train_seconds=state.train_seconds,
            images_per_second=_rate(state.timed_samples, state.train_seconds),
            peak_memory_bytes=state.peak_memory_bytes,
            peak_memory_kind=state.peak_memory_kind,
            epochs=state.epoch,
            compile_seconds=state.compile_seconds,
            resumed_from=state.resumed_from,
            timing=_run_timing(state.history),
            cpu_threads=torch.get_num_threads(),
        )

    def timing_record(self) -> dict[str, Any]:
        """What a run's result keeps of its timing: per-epoch seconds, the typical epoch and the disturbance mark."""
        record: dict[str, Any] = {
            "epoch_train_seconds": [row["epoch_train_seconds"] for row in self.history],
            "cpu_threads": self.cpu_threads,
        }
        if self.timing is not None:
            record.update(self.timing.to_record())
        return record


def resolve_device(name: str) -> torch.device:
    """The device of ``train.device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    return _resolve_device(name, "train.device")


def eval_batch_size(device: torch.device | str) -> int:
    """Test-set batch size for :func:`evaluate`: 2048 on CUDA, where inference in batches of 512 leaves the GPU
    waiting on Python's kernel launches (a CIFAR test set is then 5 forward passes), 512 on the CPU as always."""
    return 2048 if torch.device(device).type == "cuda" else 512


def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device | str,
    amp: bool = False,
    *,
    channels_last: bool = False,
    context: distributed.DistributedContext | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction in [0, 1]) of ``model`` over ``loader.epoch(0)``.

    The model runs in eval mode (BatchNorm uses its running statistics) and goes back to its previous
    mode afterwards. ``amp`` (bfloat16 autocast) and ``channels_last`` apply on CUDA only. On CUDA the
    forward runs under ``torch.inference_mode`` (no autograd bookkeeping at all); on the CPU under
    ``torch.no_grad``, as it always did.

    With ``context`` of a distributed run, every rank must call this together: each evaluates its slice of
    every batch (:func:`~layerlottery.training.ddp.rank_batches`) and the sums are added over the ranks, so
    every rank returns the same numbers (one process's up to float rounding).
    """
    device = torch.device(device)
    with torch.inference_mode() if device.type == "cuda" else torch.no_grad():
        return _evaluate(model, loader, device, amp, channels_last, context or distributed.SINGLE)


def _evaluate(
    model: nn.Module, loader: BatchLoader, device: torch.device, amp: bool, channels_last: bool,
    context: distributed.DistributedContext,
) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    samples = 0
    try:
        for inputs, labels in rank_batches(loader, 0, context):
            inputs = layout(inputs, channels_last and device.type == "cuda")
            with autocast(device, amp):
                logits = model(inputs)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            samples += labels.shape[0]
    finally:
        model.train(was_training)
    if context.distributed:  # not for rank 0 evaluating alone (robustness) while a process group is up
        distributed.all_reduce_([loss_sum, correct], "sum")
        (samples,) = distributed.sum_counts(samples, device=device, ctx=context)
    if samples == 0:
        raise DataError("the evaluation loader yields no batches; check the test split is not empty")
    return loss_sum.item() / samples, correct.item() / samples


def train(
    model: nn.Module,
    train_loader: BatchLoader,
    settings: TrainSettings,
    *,
    eval_loader: BatchLoader | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    seed: int = 0,
    start_epoch: int = 0,
) -> TrainResult:
    """Train ``model`` in place with SGD for ``settings.epochs`` epochs of ``train_loader``.

    With ``checkpoint_dir``, ``last.pt`` there is written after every epoch and, if it exists when this
    is called, training resumes after its last epoch (bitwise the same weights as an uninterrupted run
    on the CPU); a checkpoint of a finished run is returned as is, without training. Rewind snapshots
    (``settings.snapshot_epochs``) go to ``checkpoint_dir`` as ``epoch_{i:03d}.pt``.

    ``seed`` seeds torch's generators for anything random inside the model (e.g. dropout); they are
    forked, so the caller's random stream is left as it was. Batches come from ``train_loader.epoch(e)``
    for the 1-based epoch ``e``, and from ``eval_loader.epoch(0)`` for evaluation, done every
    ``settings.eval_every`` epochs and after the last.

    ``start_epoch`` begins the run as if that many epochs had already run (a lottery ticket rewound to
    epoch i): the epoch counter starts there, the learning-rate schedule is stepped that many times (so
    epoch ``start_epoch + 1`` uses the rate the full run used in it) and the optimizer's momentum starts
    fresh. Only the remaining epochs are trained and appear in the history.

    Under torchrun (``WORLD_SIZE`` > 1; see :mod:`layerlottery.distributed`) every rank calls this with the
    same model, loaders and settings: the model trains wrapped in DistributedDataParallel, each rank on its
    slice of every global batch of ``settings.batch_size`` rows (:class:`~layerlottery.training.step.ShardedStep`),
    so N ranks equal one process up to float rounding (and, on the CPU, BatchNorm's per-rank statistics).
    Rank 0 alone reads and writes checkpoints and snapshots; the state it resumes from is sent to every rank.
    On CUDA each rank trains on ``cuda:LOCAL_RANK`` (``train.device`` must be ``cuda`` or ``auto``).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
        CheckpointError: ``last.pt`` is unreadable, or of another model, settings or seed.
    """
    settings.validate()
    device = resolve_device(settings.device)
    context = distributed.init_distributed(device.type)
    device = rank_device(device, settings.device, context)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError("the training loader yields no batches; check the training split is not empty")
    if not 0 <= start_epoch < settings.epochs:
        raise ConfigError(f"start_epoch must lie in 0..{settings.epochs - 1} (train.epochs = {settings.epochs}), not {start_epoch}")
    if settings.snapshot_epochs and checkpoint_dir is None:
        raise ConfigError("train.snapshot_epochs needs somewhere to write the snapshots; pass a checkpoint_dir")
    on_cuda = device.type == "cuda"
    amp, channels_last = settings.amp and on_cuda, settings.channels_last and on_cuda

    model.to(device=device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, settings, fused=on_cuda)  # fused on CUDA, graphs or not: see use_fused
    state = TrainState(
        model, optimizer, build_scheduler(optimizer, settings), settings, device, seed=seed, start_epoch=start_epoch
    )
    hooks = _hooks(settings, checkpoint_dir, callbacks, writes_files=context.is_main)

    # Fork torch's generators so the caller's stream is untouched, then seed them (or restore them from
    # the checkpoint): the run is a function of its seed and resumes onto the same random stream.
    # CPU threads as LAYERLOTTERY_THREADS asks (the caller's count is restored after): see layerlottery.threads.
    # Every rank of a distributed run seeds alike (and restores rank 0's checkpoint), so they stay in step.
    with torch.random.fork_rng(devices=[device] if on_cuda else []), training_threads(), contextlib.ExitStack() as scope:
        torch.default_generator.manual_seed(seed)
        if on_cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        checkpoint, path = read_checkpoint(checkpoint_dir, model, device, context) if checkpoint_dir is not None else (None, None)
        if checkpoint is not None:
            state.restore(checkpoint, path)
            state.resumed_from = state.epoch
        elif start_epoch:
            _start_after(state, start_epoch)
        if state.finished:
            return TrainResult.from_state(state)
        use_fused(optimizer, on_cuda)  # a restored checkpoint brings the flag of the device that wrote it

        # Several ranks: DistributedDataParallel (after the restore, so that DDP spreads the restored weights).
        wrapped = scope.enter_context(data_parallel(model, device, context))
        net = torch.compile(wrapped) if settings.compile else wrapped
        # Evaluation needs no gradient all-reduce: ranks evaluate their batches with the plain model.
        eval_net = model if context.distributed else net
        # After the restore: a captured graph holds the parameters, buffers and optimizer state it was made with.
        sharding = {"context": context} if context.distributed else {}  # a distributed run's step: ShardedStep
        stepper = build_train_step(net, optimizer, settings, device, amp=amp, channels_last=channels_last, **sharding)
        seen_shapes: set[tuple[int, ...]] | None = set() if settings.compile else None
        reset_peak_memory(device)  # this run's peak (on the CPU where the OS allows: see reset_peak_memory)
        for hook in hooks:
            hook.on_train_start(state)
        with TrainProgress(progress, settings.epochs, steps_per_epoch, state.epoch) as bar:
            while not state.finished:
                for hook in hooks:
                    hook.on_epoch_start(state)
                bar.start_epoch(state.epoch + 1)
                row = _train_epoch(stepper, state, train_loader, context, seen_shapes, bar)
                # Per-rank BatchNorm (the CPU) leaves each rank its own running statistics: take rank 0's, so
                # that every rank evaluates, and ends with, the weights rank 0 checkpoints.
                distributed.broadcast_tensors_(list(model.buffers()))
                for hook in hooks:
                    hook.on_epoch_trained(state, row)
                due = row["epoch"] % settings.eval_every == 0 or row["epoch"] == settings.epochs
                if eval_loader is not None and due:
                    row["test_loss"], row["test_acc"] = evaluate(
                        eval_net, eval_loader, device, amp, channels_last=channels_last, context=context
                    )
                bar.show(row["train_loss"], row["train_acc"], row["images_per_second"], row["test_acc"])
                state.scheduler.step()  # the schedule is per epoch
                state.epoch += 1
                state.history.append(row)
                _update_peak_memory(state)
                for hook in hooks:
                    hook.on_epoch_end(state)
        for hook in hooks:
            hook.on_train_end(state)
        return TrainResult.from_state(state)


def _hooks(
    settings: TrainSettings,
    checkpoint_dir: str | os.PathLike[str] | None,
    callbacks: Sequence[Callback],
    *,
    writes_files: bool = True,
) -> list[Callback]:
    """Snapshots first, the user's callbacks, and the checkpoint last: once ``last.pt`` says an epoch is
    done, everything that epoch should have left on disk is there (a resume never re-runs it).

    Without ``writes_files`` (ranks other than 0 of a distributed run) there are no snapshots or checkpoints."""
    hooks: list[Callback] = []
    if writes_files and checkpoint_dir is not None and settings.snapshot_epochs:
        hooks.append(SnapshotSaver(checkpoint_dir, settings.snapshot_epochs))
    hooks.extend(callbacks)
    if writes_files and checkpoint_dir is not None:
        hooks.append(Checkpointer(Path(checkpoint_dir)))
    return hooks


def _start_after(state: TrainState, epoch: int) -> None:
    """Put a fresh run where the full run stood after ``epoch`` epochs: counter and learning-rate schedule.

    The schedule is stepped rather than computed in closed form, so its rates are bitwise the full run's.
    """
    with warnings.catch_warnings():
        # No optimizer step has run yet, which torch warns about; here that order is the point.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
        for _ in range(epoch):
            state.scheduler.step()
    state.epoch = epoch


def _train_epoch(
    stepper: EagerStep,
    state: TrainState,
    loader: BatchLoader,
    context: distributed.DistributedContext,
    seen_shapes: set[tuple[int, ...]] | None,
    bar: TrainProgress,
) -> dict[str, Any]:
    """One pass over ``loader.epoch(epoch)``; returns the epoch's history row (test values None).

    Loss, accuracy and the first non-finite step are accumulated on the device (``stepper.totals``): reading
    them every step would synchronize with the GPU each step and stall it. They are read once, at the end
    (and when the progress bar refreshes); a divergence is therefore reported after the epoch, naming its
    first step. One-time steps (a compilation, a CUDA graph capture) are timed apart as ``compile_seconds``.
    """
    device, optimizer, totals = state.device, state.optimizer, stepper.totals
    epoch = state.epoch + 1
    lr = float(optimizer.param_groups[0]["lr"])
    stepper.start_epoch()
    samples = timed_samples = 0
    train_seconds = compile_seconds = 0.0
    stepper.net.train()

    _synchronize(device)
    start = time.perf_counter()
    for step, (inputs, labels) in enumerate(rank_batches(loader, epoch, context), start=1):
        compiles = seen_shapes is not None and tuple(inputs.shape) not in seen_shapes
        warm_up = compiles or stepper.one_off(inputs)
        if warm_up:  # close the timed segment: this step compiles or captures
            _synchronize(device)
            now = time.perf_counter()
            train_seconds, start = train_seconds + (now - start), now

        stepper(inputs, labels, step)

        batch = labels.shape[0]
        samples += batch
        if warm_up:
            _synchronize(device)
            now = time.perf_counter()
            compile_seconds, start = compile_seconds + (now - start), now
            if compiles:
                seen_shapes.add(tuple(inputs.shape))  # type: ignore[union-attr]
        else:
            timed_samples += batch
        bar.advance()
        if bar.due():
            elapsed = train_seconds + time.perf_counter() - start
            # Several ranks: this rank's running numbers, until the epoch's sums over the ranks below.
            seen = max(1, samples)
            bar.show(totals.loss_sum.item() / seen, totals.correct.item() / seen, _rate(timed_samples, elapsed))
    _synchronize(device)
    train_seconds += time.perf_counter() - start
    totals.reduce_across_ranks()  # a distributed run's loss and accuracy over the global batches
    samples, timed_samples = distributed.sum_counts(samples, timed_samples, device=device, ctx=context)
    if samples == 0:
        raise DataError(f"the training loader yielded no batches in epoch {epoch}; check the training split")
    bad_step = int(totals.first_bad_step.item())
    if bad_step >= 0:
        raise TrainingDivergedError(
            f"training diverged: the loss became NaN or infinite at epoch {epoch}, step {bad_step} of "
            f"{len(loader)}; lower train.lr (it is {state.settings.lr:g})"
        )
    state.train_seconds += train_seconds
    state.compile_seconds += compile_seconds
    state.timed_samples += timed_samples
    state.samples_seen += samples
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": totals.loss_sum.item() / samples,
        "train_acc": totals.correct.item() / samples,
        "test_loss": None,
        "test_acc": None,
        "epoch_train_seconds": train_seconds,
        "images_per_second": _rate(timed_samples, train_seconds),
    }


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock read next measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(samples: int, seconds: float) -> float | None:
    return samples / seconds if samples and seconds > 0 else None


def _run_timing(history: Sequence[dict[str, Any]]) -> RunTiming | None:
    """Per-epoch statistics over the epochs that timed a step (with ``compile`` an epoch may time none)."""
    seconds = [row["epoch_train_seconds"] for row in history if row.get("epoch_train_seconds", 0) > 0]
    return run_timing(seconds) if seconds else None


def _update_peak_memory(state: TrainState) -> None:
    """Peak memory so far, kept across resumptions as the larger of the stored and the current peak."""
    try:
        peak, kind = peak_memory(state.device)
    except ImportError:  # Windows without psutil: no peak to read
        return
    if state.peak_memory_kind == kind and state.peak_memory_bytes is not None:
        peak = max(peak, state.peak_memory_bytes)
    state.peak_memory_bytes, state.peak_memory_kind = peak, kind
