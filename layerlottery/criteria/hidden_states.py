"""Block Influence and angular distance: how much a block turns the hidden states it is given.

Both compare what goes into a block with what comes out, token by token, on calibration data, in a
trained network (or any other). A block that barely changes its input can be skipped at little cost.

* ``block_influence`` (ShortGPT, Men et al. 2024): ``BI = 1 - mean cos(h, h')``, the mean over every
  token of every calibration sample of the cosine similarity between a block's input ``h`` and output
  ``h'``. 0 for a block that returns its input, 2 for one that negates it.
* ``angular_distance`` (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"):
  ``mean arccos(cos(h, h'')) / pi`` in [0, 1], where ``h''`` is the output of the run of ``n``
  consecutive blocks starting at this one (``n=1``: the block itself). The paper reads the last token of
  each sequence (``tokens="last"``, the default); ``"all"`` averages over every token. With ``n > 1`` the
  lowest score marks where the best run of ``n`` blocks to remove starts; a block too close to the end
  of its stage to start a full run of removable blocks scores 1, the largest possible distance.

"Tokens" are the vectors along the last dimension of a ``(batch, tokens, features)`` hidden state; for a
CNN feature map ``(batch, channels, height, width)`` they are the channel vectors of each position, and
for ``(batch, features)`` each sample is one. Angles are computed as ``2 atan2(|u - v|, |u + v|)`` of the
unit vectors, which is exact near 0 (``arccos`` of a cosine rounded to 1 is not). Dropout is off.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import nn

from layerlottery.criteria.activations import chunks
from layerlottery.criteria.base import Option, ScoringContext, integer, one_of, register_criterion
from layerlottery.errors import ConfigError
from layerlottery.models.blocks import block_input, first_tensor

TOKENS = ("all", "last")


def token_vectors(hidden: torch.Tensor, tokens: str) -> torch.Tensor:
    """``hidden`` as ``(vectors, features)`` in float64: every token, or the last token of each sequence."""
    if tokens == "last":
        if hidden.dim() != 3:
            raise ConfigError(
                f"tokens='last' needs (batch, tokens, features) hidden states, not shape {tuple(hidden.shape)}; "
                "use tokens='all'"
            )
        hidden = hidden[:, -1]
    elif hidden.dim() == 4:  # (batch, channels, height, width): one vector per position
        hidden = hidden.flatten(2).transpose(1, 2)
    return hidden.reshape(-1, hidden.shape[-1]).double()


def cosine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows (0 where a row is zero)."""
    return torch.nn.functional.cosine_similarity(first, second, dim=-1, eps=1e-300)


def angle(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Angle in radians between matching rows, ``2 atan2(|u - v|, |u + v|)`` of the unit vectors."""
    u = first / first.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    v = second / second.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return 2 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1))


def _runs(context: ScoringContext, n: int) -> dict[str, str | None]:
    """Block -> last block of the run of ``n`` consecutive removable blocks of its stage it starts (or None)."""
    blocks = context.blocks
    ends: dict[str, str | None] = {}
    for start, block in enumerate(blocks):
        run = blocks[start : start + n]
        consecutive = len(run) == n and all(
            b.stage == block.stage and b.index == block.index + offset for offset, b in enumerate(run)
        )
        ends[block.name] = run[-1].name if consecutive else None
    return ends


def _hidden_state_scores(
    context: ScoringContext,
    n: int,
    tokens: str,
    per_vector: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """Mean of ``per_vector(input token, output token)`` per block run, over all calibration tokens."""
    model = context.model
    model.eval()  # dropout off: a score is a function of (model, data, options)
    modules = dict(model.named_modules())
    ends = _runs(context, n)
    watched = {block.name for block in context.blocks} | {end for end in ends.values() if end is not None}
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            inputs[name] = block_input(args, kwargs).detach()
            outputs[name] = first_tensor(output).detach()

        return hook

    totals = {name: 0.0 for name in ends}
    counts = {name: 0 for name in ends}  # per block: a CNN's stages have different numbers of positions
    assert context.batches is not None
    with contextlib.ExitStack() as stack, torch.no_grad():
        for name in watched:
            stack.callback(modules[name].register_forward_hook(recorder(name), with_kwargs=True).remove)
        for batch_inputs, _labels in chunks(context.batches, int(context.options["batch_size"])):  # type: ignore[arg-type]
            model(batch_inputs)
            for start, end in ends.items():
                if end is None:
                    continue
                values = per_vector(token_vectors(inputs[start], tokens), token_vectors(outputs[end], tokens))
                totals[start] += float(values.sum())
                counts[start] += len(values)
            inputs.clear()
            outputs.clear()
    return {name: totals[name] / counts[name] if counts[name] else math.nan for name in ends}


def _options(tokens_default: str, with_n: bool) -> dict[str, Option]:
    options = {
        "tokens": Option(
            tokens_default, one_of(*TOKENS), "average over every token ('all') or the last token of each sequence"
        ),
        "batch_size": Option(32, integer(minimum=1), "most samples per forward pass (hidden states of one pass are held)"),
    }
    if with_n:
        options["n"] = Option(1, integer(minimum=1), "compare the input of a block with the output n blocks later")
    return options


@register_criterion("block_influence", options=_options("all", with_n=False), needs_data=True)
def block_influence(context: ScoringContext) -> dict[str, float]:
    """Block Influence (ShortGPT): 1 - mean cosine similarity of a block's input and output hidden states."""
    mean_cos = _hidden_state_scores(context, 1, str(context.options["tokens"]), cosine)
    return {name: 1.0 - value for name, value in mean_cos.items()}


@register_criterion("angular_distance", options=_options("last", with_n=True), needs_data=True)
def angular_distance(context: ScoringContext) -> dict[str, float]:
    """Angular distance (Gromov et al.): mean arccos(cos) / pi between the hidden states around n blocks."""
    n = int(context.options["n"])
    if all(end is None for end in _runs(context, n).values()):
        raise ConfigError(f"angular_distance n={n}: no stage has {n} consecutive removable blocks; choose a smaller n")
    angles = _hidden_state_scores(context, n, str(context.options["tokens"]), angle)
    # A block that cannot start a full run of n: the largest distance, so it is chosen last.
    return {name: 1.0 if math.isnan(value) else value / math.pi for name, value in angles.items()}
