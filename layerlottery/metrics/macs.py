"""MACs, FLOPs and parameter counts, from PyTorch's own FLOP counter.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-accumulate for convolutions and
matrix products (and nothing for BN, ReLU, pooling or additions). The paper's framework counts
multiply-accumulates of conv and linear layers, so ``MACs = FLOPs / 2``; both are labelled where shown.

Attention: torch's counter has formulas for the CUDA attention kernels only. On the CPU,
``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu`` and
``nn.MultiheadAttention``'s inference fast path runs ``_native_multi_head_attention`` (projections
included), which it would count as 0. :func:`flop_counter` adds formulas for them, per counter (not in
torch's global registry), so a transformer's MACs are the same on every device and every SDPA backend:
``2 * B * H * T_q * T_k * d`` FLOPs each for ``Q K^T`` and for ``A V`` (causal masks not discounted, as
torch counts the CUDA kernels), the same products the math backend runs as visible matrix multiplies.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from layerlottery.errors import ConfigError


def resolve_input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample input shape to count with: ``input_shape`` or the model's ``default_input_shape``."""
    shape = input_shape if input_shape is not None else getattr(model, "default_input_shape", None)
    if shape is None:
        example = "(128,), the sequence length," if takes_token_ids(model) else "(3, 32, 32)"
        raise ConfigError(
            f"{type(model).__name__} has no default_input_shape; pass input_shape, e.g. {example} without the batch size"
        )
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"input_shape {shape} must be positive sizes per sample, without the batch dimension")
    return shape


@contextlib.contextmanager
def inference_mode_of(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode without gradients, then restore every module's own training flag.

    Restoring the flags (instead of deep-copying the model) leaves the model exactly as it was - eval mode
    changes no weight or BN statistic - without doubling memory for a large network.
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags.items():
            module.training = flag


def takes_token_ids(model: nn.Module) -> bool:
    """Whether ``model`` reads integer token ids (a Hugging Face text model: ``main_input_name == "input_ids"``)."""
    return getattr(model, "main_input_name", None) == "input_ids"


def example_input(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    """A zero batch on the model's device and in its floating dtype (token id 0 for a text model)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if takes_token_ids(model):
        return torch.zeros((batch_size, *input_shape), device=device, dtype=torch.long)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.zeros((batch_size, *input_shape), device=device, dtype=dtype)


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """``_scaled_dot_product_flash_attention_for_cpu``: torch's own count for its CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """``_scaled_dot_product_flash_attention_for_cpu_backward`` (criteria's gradients)."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _native_mha_flop(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """``_native_multi_head_attention`` (``nn.MultiheadAttention`` in eval mode, batch first): the Q, K, V and
    output projections plus attention, as the slow path counts them through its linears and SDPA."""
    *batch, q_len, _ = query_shape
    k_len = key_shape[-2]
    b = math.prod(batch)
    head_dim = embed_dim // num_heads
    projections = 2 * b * embed_dim * embed_dim * (q_len + 2 * k_len + q_len)  # Q, K, V in; out
    heads = (b, num_heads, q_len, head_dim), (b, num_heads, k_len, head_dim), (b, num_heads, k_len, head_dim)
    return projections + sdpa_flop_count(*heads)


_aten = torch.ops.aten
ATTENTION_FLOP_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
    _aten._native_multi_head_attention: _native_mha_flop,
}
"""Formulas torch's FlopCounterMode lacks (CPU attention kernels), given to each counter as ``custom_mapping``."""


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU attention kernels (see the module docstring).

    Every MAC count of layerlottery goes through it, so blocks and whole models are counted alike.
    """
    return FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS)


def flops_by_module(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, int]:
    """FLOPs of one sample's forward pass, per module qualified name (``""`` is the whole model)."""
    shape = resolve_input_shape(model, input_shape)
    counter = flop_counter()
    with inference_mode_of(model), counter:
        model(example_input(model, shape))
    return flops_per_qualified_name(counter, type(model).__name__)


def flops_per_qualified_name(counter: FlopCounterMode, root: str) -> dict[str, int]:
    """Read a finished counter as ``{qualified module name: FLOPs}``, ``""`` for the whole model."""
    counts: dict[str, int] = {"": 0}
    for key, ops in counter.get_flop_counts().items():
        # Keys are "Global" and "<RootClass>" for the whole model, "<RootClass>.<qualified.name>" below it.
        if key in ("Global", root):
            counts[""] = int(sum(ops.values()))
        elif key.startswith(root + "."):
            counts[key[len(root) + 1 :]] = int(sum(ops.values()))
    return counts


def count_flops(model: nn.Module, input_shape: Sequence[int] | None = None) -> int:
    """FLOPs (2 per multiply-accumulate) of one sample's forward pass."""
    return flops_by_module(model, input_shape)[""]


def count_macs(model: nn.Module, input_shape: Sequence[int] | None = None) -> int:
    """Multiply-accumulates (conv + linear) of one sample's forward pass; the paper's counting.

    ``input_shape`` is per sample, without the batch dimension, e.g. ``(3, 32, 32)``; it defaults to the
    model's ``default_input_shape``.
    """
    return count_flops(model, input_shape) // 2


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
