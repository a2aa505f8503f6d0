"""Saving pruned models: for layerlottery (plan + weights) and for plain PyTorch (``torch.export``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from layerlottery.errors import ConfigError, DataError, LayerLotteryError
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
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DataError(f"{path} holds no weights (its state_dict is missing or not tensors); save it again")
    try:
        plan = RemovalPlan.from_dict(payload.get("plan"))
        pruned = remove_blocks(model, plan) if model is not None else plan.build_model()
    except LayerLotteryError as exc:  # the same mistake, said about this file
        raise type(exc)(f"{path}: {exc}") from None
    _check_weights_fit(pruned, state, path)
    pruned.load_state_dict(state)
    return pruned, plan


def _check_weights_fit(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, naming a few tensors, weights that ``load_state_dict`` would refuse with a long RuntimeError."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} the model needs are missing ({_first(missing)})"] if missing else []
        parts += [f"{len(unexpected)} have no place in it ({_first(unexpected)})"] if unexpected else []
        raise DataError(
            f"the weights in {path} do not fit the network its plan builds: {'; '.join(parts)}; "
            "was the plan edited, or a different dense model passed?"
        )
    wrong = [key for key, value in state.items() if value.shape != expected[key].shape]
    if wrong:
        key = wrong[0]
        raise DataError(
            f"the weights in {path} do not fit the network its plan builds: {key} is {tuple(state[key].shape)} "
            f"in the file but {tuple(expected[key].shape)} in the model ({len(wrong)} tensor(s) differ); "
            "build the dense model with the options it was saved with"
        )


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


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
