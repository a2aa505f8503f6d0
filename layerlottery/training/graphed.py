"""The training step captured once in a CUDA graph and replayed: one launch per step instead of ~1,000.

On a GPU, a CIFAR ResNet's step is bound by Python launching kernels, not by arithmetic (issue 9: 25 ms per
step whether the batch is 128 or 1024). :class:`GraphedStep` follows PyTorch's whole-network capture recipe
(the "CUDA Graphs" section of the CUDA semantics notes):

1. warm-up: the first :data:`WARMUP_STEPS` full batches train eagerly on a side stream, so lazy work
   (cuBLAS/cuDNN handles and workspaces, the optimizer's momentum buffers) happens outside the capture;
2. capture: the next full batch is copied into static input and label buffers, the gradients are set to
   None (so backward allocates them from the graph's private pool), and forward, loss, backward, the fused
   SGD step and the epoch totals are captured into one ``torch.cuda.CUDAGraph``. Capturing runs nothing,
   so the graph is then replayed once for that batch;
3. replay: every later full batch is copied into the static buffers and the graph replayed.

A batch of another shape (the short last batch of an epoch) takes an eager step with the same optimizer
and the same rate tensors: no sample is dropped. BatchNorm's running statistics and batch counter are
in-place kernels, so replays update them as eager steps do.

The learning rate. The captured fused SGD reads its rate from a float32 device tensor (its CUDA kernel reads
a tensor rate as float32), which the host refreshes when the schedule moves. The schedule itself stays on
Python floats in ``param_group["lr"]``, stepped exactly as without graphs, and only the optimizer step sees
the tensors. Letting torch's scheduler fill the tensor instead would compute the schedule in float32 (its
chainable formulas multiply the previous rate: cosine drifts by ~5e-7 relative over 200 epochs) and would
leave checkpoints holding tensor rates; the float schedule is bitwise the eager one and checkpoints keep
plain floats, so a run can resume with or without graphs, on any device.

Where graphs cannot apply (not CUDA, ``train.compile`` on, an optimizer that is not fused, a capture that
fails, e.g. on a model that reads a value back to the CPU), training runs eagerly and the reason is logged
once per process: :func:`build_train_step`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from layerlottery.config import TrainSettings
from layerlottery.distributed import DistributedContext
from layerlottery.training.step import EagerStep, ShardedStep

WARMUP_STEPS = 3
"""Eager steps before the capture, as in PyTorch's recipe (at least one: it creates the momentum buffers)."""

Capture = Callable[[Callable[[], None], "torch.cuda.Stream | None"], Callable[[], None]]
"""Records ``body`` (on ``stream``) and returns what replays it: :func:`cuda_capture`, or a stand-in in tests."""

logger = logging.getLogger(__name__)
_reported: set[str] = set()


def graph_fallback_reason(settings: TrainSettings, device: torch.device, optimizer: torch.optim.Optimizer) -> str | None:
    """Why this run's step cannot be a CUDA graph, or None when it can (a capture may still fail)."""
    if not settings.cuda_graphs:
        return "train.cuda_graphs is off"
    if device.type != "cuda":
        return f"they need a CUDA device and this run trains on {device.type}"
    if settings.compile:
        return "train.compile is on and torch.compile runs the step (set train.compile=false to use CUDA graphs)"
    if not isinstance(optimizer, torch.optim.SGD):
        return f"train.optimizer={settings.optimizer}: the captured step holds fused SGD only (its fused kernel runs eagerly)"
    if not all(group.get("fused") for group in optimizer.param_groups):
        return "the optimizer is not a fused SGD, whose step reads the learning rate from the device"
    return None


def build_train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    device: torch.device,
    *,
    amp: bool,
    channels_last: bool,
    context: DistributedContext | None = None,
) -> EagerStep:
    """The training step of a run: a :class:`GraphedStep` where CUDA graphs apply, else an :class:`EagerStep`.

    Why graphs do not apply is logged once per process (``layerlottery.training.graphed``): as a warning on
    CUDA, at info level on the CPU, where eager is simply how training runs; not at all when the setting
    ``train.cuda_graphs`` is off. A distributed run (``context`` of several ranks, ``net`` the DDP-wrapped
    model) takes a :class:`~layerlottery.training.step.ShardedStep`, eagerly: DDP's gradient all-reduce
    runs from backward hooks that a whole-step capture does not cover here.
    """
    if context is not None and context.distributed:
        if settings.cuda_graphs and device.type == "cuda":
            report_fallback("the run is distributed (DistributedDataParallel), whose gradient all-reduce is not captured")
        return ShardedStep(net, optimizer, device, amp=amp, channels_last=channels_last, context=context)
    reason = graph_fallback_reason(settings, device, optimizer)
    if reason is None:
        return GraphedStep(net, optimizer, device, amp=amp, channels_last=channels_last)
    if settings.cuda_graphs:
        report_fallback(reason, level=logging.WARNING if device.type == "cuda" else logging.INFO)
    return EagerStep(net, optimizer, device, amp=amp, channels_last=channels_last)


def report_fallback(reason: str, *, level: int = logging.WARNING) -> None:
    """Log ``CUDA graphs off: <reason>; training eagerly`` the first time this process meets ``reason``."""
    if reason not in _reported:
        _reported.add(reason)
        logger.log(level, "CUDA graphs off: %s; training eagerly", reason)


def cuda_capture(body: Callable[[], None], stream: torch.cuda.Stream | None) -> Callable[[], None]:
    """Capture ``body`` into a new CUDA graph on ``stream`` (the warm-up's); returns its ``replay``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    return graph.replay  # the bound method keeps the graph, and with it its memory pool, alive


class GraphedStep(EagerStep):
    """The training step replayed from one CUDA graph (see the module notes); same interface as :class:`EagerStep`.

    The optimizer must be fused SGD (``fused=True``). ``capture`` records and replays the step: the default,
    :func:`cuda_capture`, needs CUDA; tests pass a stand-in that replays by running the body again.
    """

    graphed = True
    # make_graphed_callables' rule for autocast: no cast cache, so no cached cast outlives the capture.
    autocast_cache = False

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        amp: bool,
        channels_last: bool,
        warmup_steps: int = WARMUP_STEPS,
        capture: Capture = cuda_capture,
    ) -> None:
        super().__init__(net, optimizer, device, amp=amp, channels_last=channels_last)
        if warmup_steps < 1:
            raise ValueError("GraphedStep needs at least one warm-up step (it creates the momentum buffers)")
        self.warmup_steps, self._capture = warmup_steps, capture
        self.failure: str | None = None
        """Why the capture failed (the run then trains eagerly), or None."""
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._rates = [torch.tensor(float(g["lr"]), dtype=torch.float32, device=self.device) for g in optimizer.param_groups]
        self._rate_values = [float(g["lr"]) for g in optimizer.param_groups]
        self._step = torch.zeros((), dtype=torch.int64, device=self.device)  # the captured step's number
        self._step_value: int | None = None  # what the host knows ``_step`` holds
        self._signature: tuple[object, ...] | None = None  # the batch the graph is for: shapes, dtypes, device
        self._warmed = 0
        self._inputs: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._replay: Callable[[], None] | None = None

    @property
    def captured(self) -> bool:
        """Whether the graph exists (full batches are now replayed)."""
        return self._replay is not None

    def one_off(self, inputs: torch.Tensor) -> bool:
        """True for the step that captures the graph (its time is one-time work, like a compilation)."""
        return (
            self._replay is None
            and self.failure is None
            and self._warmed >= self.warmup_steps
            and (self._signature is None or tuple(inputs.shape) == self._signature[0])
        )

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        signature = _signature(inputs, labels)
        if self._signature is None:
            self._signature = signature  # the run's first batch is a full one
        if self.failure is not None or signature != self._signature:
            with self._rate_tensors():
                self.run(inputs, labels, step)
        elif self._replay is not None:
            self._replay_step(inputs, labels, step)
        elif self._warmed < self.warmup_steps:
            with self._rate_tensors(), self._side_stream():
                self.run(inputs, labels, step)
            self._warmed += 1
        else:
            self._capture_step(inputs, labels, step)

    def _replay_step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        assert self._replay is not None
        self._mirror_rates()
        self._load(inputs, labels, step)
        with self._on_device():
            self._replay()
        self._step_value = step

    def _capture_step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        memory_format = torch.channels_last if self.channels_last and inputs.dim() == 4 else torch.contiguous_format
        self._inputs = torch.empty_like(inputs, memory_format=memory_format)
        self._labels = torch.empty_like(labels)
        self._mirror_rates()  # before the capture: a fill inside it would be replayed every step
        self._load(inputs, labels, step)
        try:
            with self._on_device(), self._side_stream():
                self.optimizer.zero_grad(set_to_none=True)  # backward allocates the grads from the graph's pool
                self._replay = self._capture(self._captured_body, self._stream)
        except Exception as exc:  # any failure to capture means the same thing: train eagerly
            self._give_up(exc)
            with self._rate_tensors():
                self.run(inputs, labels, step)  # nothing ran during the capture: this batch still needs its step
            return
        with self._on_device():
            self._replay()  # capturing ran nothing: this is the captured batch's step
        self._step_value = step

    def _captured_body(self) -> None:
        """What the graph holds: the step counter, then the eager step on the static buffers."""
        assert self._inputs is not None and self._labels is not None
        self._step.add_(1)
        with self._swapped_rates():
            self.run(self._inputs, self._labels, self._step)

    def _load(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """Copy the batch into the static buffers; set the step counter where it is not already ``step - 1``."""
        assert self._inputs is not None and self._labels is not None
        self._inputs.copy_(inputs)
        self._labels.copy_(labels)
        if self._step_value != step - 1:
            self._step.fill_(step - 1)
            self._step_value = step - 1

    def _give_up(self, exc: BaseException) -> None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        self.failure = f"capturing the training step failed ({type(exc).__name__}: {first_line})"
        report_fallback(self.failure)
        self._replay = self._inputs = self._labels = None
        self.optimizer.zero_grad(set_to_none=True)  # a partial capture may have left grads from its pool

    def _mirror_rates(self) -> None:
        """Copy each group's float rate into its device tensor where the schedule moved it."""
        for i, group in enumerate(self.optimizer.param_groups):
            rate = float(group["lr"])
            if rate != self._rate_values[i]:
                self._rates[i].fill_(rate)
                self._rate_values[i] = rate

    @contextmanager
    def _swapped_rates(self) -> Iterator[None]:
        """The optimizer sees the rate tensors for the duration; the groups get their floats back after."""
        groups = self.optimizer.param_groups
        rates = [group["lr"] for group in groups]
        for group, tensor in zip(groups, self._rates):
            group["lr"] = tensor
        try:
            yield
        finally:
            for group, rate in zip(groups, rates):
                group["lr"] = rate

    @contextmanager
    def _rate_tensors(self) -> Iterator[None]:
        """An eager step with the same rates as the replays: mirror the schedule, then swap the tensors in."""
        self._mirror_rates()
        with self._swapped_rates():
            yield

    def _on_device(self) -> torch.cuda.device | nullcontext[None]:
        """Graphs capture and replay on the current device's streams: make it the training device (cuda:N)."""
        return torch.cuda.device(self.device) if self._stream is not None else nullcontext()

    @contextmanager
    def _side_stream(self) -> Iterator[None]:
        """Run on the warm-up/capture stream, ordered after and before the current stream's work (CUDA only)."""
        if self._stream is None:
            yield
            return
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        try:
            with torch.cuda.stream(self._stream):
                yield
        finally:
            current.wait_stream(self._stream)


def _signature(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[object, ...]:
    return tuple(inputs.shape), tuple(labels.shape), inputs.dtype, labels.dtype, inputs.device, labels.device
