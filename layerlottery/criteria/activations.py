"""What the activation-based (post-training) criteria share: their samples, and streaming block outputs.

``hrank``, ``expectabs``, ``kl`` and ``pls`` look at what a (trained) network computes on data. They take
the same class-balanced samples as GraSP (the first ``samples_per_class`` of each class), push them through
the model ``batch_size`` samples at a time, and reduce each block's output to a few numbers per batch in a
forward hook (per-filter sums, per-map ranks, pooled features), so memory stays that of one forward pass of
one batch however many samples are scored.

BatchNorm defaults to ``eval`` (running statistics) for these criteria: they describe the trained network
as it runs at inference, and in eval mode every sample is processed on its own, so neither the batch size
nor the split of the data into batches can change a score.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from layerlottery.criteria.base import (
    Batch,
    Option,
    ScoringContext,
    bn_mode_option,
    integer,
    one_of,
)
from layerlottery.models.blocks import block_kind_of

ACTIVATIONS = ("output", "branch")


def sample_options() -> dict[str, Option]:
    """Options of every activation-based criterion: BN mode, how many samples, how many per forward pass."""
    return {
        "bn_mode": bn_mode_option("eval"),
        "samples_per_class": Option(
            10, integer(minimum=1, allow_none=True), "first N samples of each class; None: all the data as given"
        ),
        "batch_size": Option(
            128, integer(minimum=1), "most samples per forward pass; larger batches are split (exact with bn_mode eval)"
        ),
    }


def activation_option() -> Option:
    """Which tensor of a block the criterion reads."""
    return Option(
        "output",
        one_of(*ACTIVATIONS),
        "output: the block's output after its final ReLU; branch: the residual branch before the addition",
    )


def chunks(batches: Sequence[Batch], size: int) -> Iterator[Batch]:
    """Every batch cut into pieces of at most ``size`` samples, in order."""
    for inputs, labels in batches:
        for start in range(0, len(labels), size):
            yield inputs[start : start + size], labels[start : start + size]


def block_activation_modules(model: nn.Module, context: ScoringContext, activation: str) -> dict[str, nn.Module]:
    """Block name -> the module whose output is read: the block itself, or the end of its residual branch."""
    modules = dict(model.named_modules())
    targets = {}
    for block in context.blocks:
        module = modules[block.name]
        if activation == "branch":
            kind = block_kind_of(module)
            assert kind is not None  # score_blocks checked every block's kind
            module = kind.branch_end(module)
        targets[block.name] = module
    return targets


def stream_block_activations(
    context: ScoringContext,
    batches: Sequence[Batch],
    reduce: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> None:
    """Run ``batches`` through the model in pieces of ``batch_size``; call ``reduce(block, activation, labels)``.

    ``activation`` is the block's output (or branch output, per the ``activation`` option), detached; the
    hook reduces it at once, so no activation outlives its forward pass.
    """
    activation = str(context.options.get("activation", "output"))
    targets = block_activation_modules(context.model, context, activation)
    current: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            reduce(name, output.detach(), current["labels"])

        return record

    with contextlib.ExitStack() as stack, torch.no_grad():
        for name, module in targets.items():
            stack.callback(module.register_forward_hook(hook(name)).remove)
        for inputs, labels in chunks(batches, int(context.options["batch_size"])):  # type: ignore[arg-type]
            current["labels"] = labels
            context.model(inputs)
