"""Saving pruned models: for layerlottery (plan + weights) and for plain PyTorch (``torch.export``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from layerlottery.errors import ConfigError, DataError
from layerlottery.atomic import atomic_write
from layerlottery.metrics.macs import example_input, inference_mode_of, resolve_input_shape
from layerlottery.surgery.apply import remove_blocks
from layerlottery.surgery.plan import RemovalPlan

CHECKPOINT_FORMAT = "layerlottery-pruned"


def save_pruned(model: nn.Module, plan: RemovalPlan, path: str | os.PathLike) -> Path:
    """Save a pruned model as its removal plan plus its weights; :func:`load_pruned` rebuilds it.

    The file holds only tensors and plain data, so it loads with ``torch.load(weights_only=True)``.
    """
    payload = {"format": CHECKPOINT_FORMAT, "plan": plan.to_dict(), "state_dict": model.state_dict()}
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_pruned(
    path: str | os.PathLike, model: nn.Module | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, RemovalPlan]:
    """Load what :func:`save_pruned` wrote: ``(pruned model, plan)``.

    The dense architecture comes from the plan's registered model name, or from ``model`` (a fresh dense
    instance of your own network) when the plan names none.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pruned model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise DataError(f"{path} is not a readable layerlottery pruned model ({type(exc).__name__}: {exc})"[:300]) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path} was not written by layerlottery.save_pruned")
    plan = RemovalPlan.from_dict(payload["plan"])
    pruned = remove_blocks(model, plan) if model is not None else plan.build_model()
    pruned.load_state_dict(payload["state_dict"])
    return pruned, plan


def export_program(
    model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int] | None = None
) -> Path:
    """Export the model for inference with ``torch.export`` (batch size dynamic) to a ``.pt2`` file.

    It loads with plain PyTorch, no layerlottery needed:
    ``torch.export.load(path).module()(images)``. BatchNorm is exported in eval mode.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"exported programs use the .pt2 suffix; got {path.name}")
    shape = resolve_input_shape(model, input_shape)
    # A batch of 2 keeps the exporter from specialising the batch dimension to 1.
    example = example_input(model, shape, batch_size=2)
    with inference_mode_of(model):
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    return atomic_write(path, lambda tmp: torch.export.save(program, tmp))
