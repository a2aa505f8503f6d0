"""One SGD step of the training loop, taken eagerly, and the epoch totals every step adds to.

A step is: forward (bfloat16 autocast and channels-last on CUDA when asked), cross-entropy, zero_grad,
backward, optimizer step, then the step's loss, correct count and finiteness added to :class:`StepTotals`.
The totals stay on the device, so a step never waits for the GPU; the loop reads them once an epoch.
:class:`~layerlottery.training.graphed.GraphedStep` replays the same sequence from a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerlottery import distributed


@dataclass(eq=False)
class StepTotals:
    """An epoch's running sums on the device: summed loss (float64), correct predictions, first bad step.

    The tensors are updated in place and never replaced, so a captured CUDA graph can add to them.
    """

    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_step: torch.Tensor
    """The 1-based step of the epoch whose loss was first NaN or infinite, -1 while none was."""

    @classmethod
    def on(cls, device: torch.device) -> StepTotals:
        """Fresh totals on ``device`` (zero loss, zero correct, no bad step)."""
        return cls(
            loss_sum=torch.zeros((), dtype=torch.float64, device=device),
            correct=torch.zeros((), dtype=torch.int64, device=device),
            first_bad_step=torch.full((), -1, dtype=torch.int64, device=device),
        )

    def reset(self) -> None:
        """Back to fresh values, in place (the start of an epoch)."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.first_bad_step.fill_(-1)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, step: int | torch.Tensor) -> None:
        """Add one step: ``loss`` is the batch's mean loss, ``step`` its 1-based number (an int or a 0-d tensor)."""
        loss, logits = loss.detach(), logits.detach()
        self.loss_sum += loss.double() * labels.shape[0]
        self._count(loss, logits, labels, step)

    def add_summed(self, loss_sum: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, step: int | torch.Tensor) -> None:
        """Add one step whose loss is given as the sum over its rows (a rank's shard of a batch, maybe empty)."""
        loss_sum = loss_sum.detach()
        self.loss_sum += loss_sum.double()
        self._count(loss_sum, logits.detach(), labels, step)

    def _count(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, step: int | torch.Tensor) -> None:
        self.correct += (logits.argmax(1) == labels).sum()
        first_bad = (self.first_bad_step < 0) & ~torch.isfinite(loss)
        self.first_bad_step.copy_(torch.where(first_bad, step, self.first_bad_step))

    def reduce_across_ranks(self) -> None:
        """Sum the loss and correct count over the ranks of a distributed run and keep the earliest bad step
        (in place; a no-op for a single process)."""
        if not distributed.current().distributed:
            return
        distributed.all_reduce_([self.loss_sum, self.correct], "sum")
        # -1 means "none": make it larger than any step so that MIN finds the earliest real one.
        none = torch.iinfo(torch.int64).max
        bad = torch.where(self.first_bad_step < 0, none, self.first_bad_step)
        distributed.all_reduce_([bad], "min")
        self.first_bad_step.copy_(torch.where(bad == none, -1, bad))


class EagerStep:
    """The training step run op by op from Python (any device).

    ``net`` is what runs the forward (the model or its ``torch.compile`` wrapper); ``optimizer`` updates
    the model's parameters. ``amp`` and ``channels_last`` take effect on CUDA only.
    """

    graphed = False
    """Whether steps are replayed from a CUDA graph (see :class:`~layerlottery.training.graphed.GraphedStep`)."""
    autocast_cache: bool | None = None
    """Autocast's cast cache (None: torch's default, on)."""

    def __init__(
        self, net: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *, amp: bool, channels_last: bool
    ) -> None:
        self.net, self.optimizer, self.device = net, optimizer, torch.device(device)
        self.amp = amp and self.device.type == "cuda"
        self.channels_last = channels_last and self.device.type == "cuda"
        self.totals = StepTotals.on(self.device)

    def start_epoch(self) -> None:
        """Reset the totals for a new epoch."""
        self.totals.reset()

    def one_off(self, inputs: torch.Tensor) -> bool:
        """Whether the step on ``inputs`` does one-time work (a graph capture) worth timing apart."""
        return False

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """Train on one batch; ``step`` is its 1-based number in the epoch."""
        self.run(inputs, labels, step)

    def run(self, inputs: torch.Tensor, labels: torch.Tensor, step: int | torch.Tensor) -> None:
        """Forward, loss, zero_grad, backward, optimizer step, totals: the whole step, op by op."""
        with autocast(self.device, self.amp, cache_enabled=self.autocast_cache):
            logits = self.net(layout(inputs, self.channels_last))
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.totals.add(loss, logits, labels, step)


class ShardedStep(EagerStep):
    """The eager step of one rank of a DistributedDataParallel run: its slice of every global batch.

    The loop hands each rank its contiguous slice of the global batch (:func:`~layerlottery.training.ddp.rank_batches`).
    The loss is the sum over the slice divided by the global batch's label count, times the world size: DDP
    averages gradients over ranks, so the update is the mean over the global batch, as on one process, even
    for a last batch that does not split evenly (or leaves a rank empty). The global count is this step's
    label counts summed over the ranks, a one-number all-reduce on the device (no wait for the host), beside
    DDP's all-reduce of the gradients. The totals add the slice's summed loss and are summed over ranks once
    an epoch (:meth:`StepTotals.reduce_across_ranks`). ``net`` is the DDP-wrapped model.
    """

    def __init__(
        self, net: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *, amp: bool, channels_last: bool,
        context: distributed.DistributedContext,
    ) -> None:
        super().__init__(net, optimizer, device, amp=amp, channels_last=channels_last)
        self.context = context

    def run(self, inputs: torch.Tensor, labels: torch.Tensor, step: int | torch.Tensor) -> None:
        # What one process's mean loss divides by (tokens, for a language model), in float64 as Python would
        # divide, so the scale rounds to float32 exactly as a Python float would.
        batch_labels = torch.full((), labels.shape[0], dtype=torch.float64, device=self.device)
        distributed.all_reduce_([batch_labels], "sum")
        scale = (self.context.world_size / batch_labels).float()
        with autocast(self.device, self.amp, cache_enabled=self.autocast_cache):
            logits = self.net(layout(inputs, self.channels_last))
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum * scale).backward()
        self.optimizer.step()
        self.totals.add_summed(loss_sum, logits, labels, step)


def autocast(device: torch.device, amp: bool, *, cache_enabled: bool | None = None) -> torch.autocast:
    """bfloat16 autocast on CUDA when ``amp``; bfloat16 keeps float32's range, so no loss scaling is needed."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda", cache_enabled=cache_enabled
    )


def layout(inputs: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``inputs`` in channels-last memory format when asked (4-d inputs only); a no-op when already so."""
    return inputs.contiguous(memory_format=torch.channels_last) if channels_last and inputs.dim() == 4 else inputs
