"""Trained weights to score: from a finished run directory, a checkpoint or snapshot file, or a state dict.

Post-training criteria (and the at-initialization ones, which score whatever weights a model has) need the
dense network's *final* weights. They come from

* a run directory of this project (``runs/dense-<hash>``): its ``checkpoints/last.pt``, once the run has
  finished (``result.json`` present; an unfinished run's ``last.pt`` holds some intermediate epoch);
* a training checkpoint (``last.pt``) or rewind snapshot (``epoch_XXX.pt``) written by the training loop;
* a plain PyTorch state dict saved with ``torch.save(model.state_dict(), path)`` (also wrapped as
  ``{"state_dict": ...}`` or ``{"model": ...}``, with a ``module.`` or ``_orig_mod.`` prefix left by
  DataParallel or torch.compile).

Files are read with ``weights_only=True``. Weights of another architecture are refused with one line naming
the first difference (and, for a run directory, how that run's network was built).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from layerlottery.models import create_model
from layerlottery.training.checkpoint import (
    CHECKPOINT_FORMAT,
    SNAPSHOT_FORMAT,
    CheckpointError,
    read_checkpoint_file,
    checkpoint_path,
    load_checkpoint,
    load_snapshot,
)

_PRUNED_FORMAT = "layerlottery-pruned"  # layerlottery.surgery.export writes pruned networks with this stamp
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class TrainedState:
    """Weights read from disk and where they came from."""

    state: dict[str, torch.Tensor]
    source: str
    """E.g. ``run runs/dense-3fa2c1d09b7e`` or ``state dict weights.pt``."""
    run_model: str | None = None
    """For a run directory: the model name its settings.json records."""
    run_description: str | None = None
    """For a run directory: how its network was built, e.g. ``dense cifar_resnet32, shortcut B, data mnist``."""


def read_trained_state(path: str | os.PathLike[str]) -> TrainedState:
    """The weights stored at ``path`` (a run directory or a file), on the CPU, with their origin.

    Raises :class:`CheckpointError` (one line) for anything unusable.
    """
    path = Path(path)
    if path.is_dir():
        return _read_run_dir(path)
    data = read_checkpoint_file(path, "cpu", what="weights file")
    found = data.get("format")
    if found == CHECKPOINT_FORMAT:
        return TrainedState(dict(load_checkpoint(path, "cpu")["model"]), f"training checkpoint {path}")
    if found == SNAPSHOT_FORMAT:
        return TrainedState(dict(load_snapshot(path)), f"rewind snapshot {path}")
    if found == _PRUNED_FORMAT:
        raise CheckpointError(f"{path} is a pruned network (blocks already removed); pass the dense network's weights")
    for key in ("state_dict", "model"):
        if isinstance(data.get(key), Mapping):
            data = dict(data[key])
            break
    if not data or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise CheckpointError(
            f"{path} holds no state dict (expected names -> tensors, as torch.save(model.state_dict(), path) writes)"
        )
    return TrainedState(_strip_wrapper_prefix(data), f"state dict {path}")


def load_trained_weights(model: nn.Module, path: str | os.PathLike[str], model_name: str | None = None) -> nn.Module:
    """Copy the weights stored at ``path`` into ``model`` (in place) after checking they fit it exactly.

    Returns ``model``. Raises :class:`CheckpointError` when a run directory trained another model than
    ``model_name``, or naming the first missing, unexpected and differently shaped tensor when the weights
    belong to another architecture.
    """
    found = read_trained_state(path)
    name = model_name or type(model).__name__
    if model_name is not None and found.run_model is not None and found.run_model != model_name:
        raise CheckpointError(f"{found.source} trained {found.run_model}, not {model_name}; pass {found.run_model} as the model")
    expected, state = model.state_dict(), found.state
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    if missing or unexpected or reshaped:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            key = reshaped[0]
            problems.append(f"{key} is {tuple(state[key].shape)} there, {tuple(expected[key].shape)} here")
        built = f" (that run is: {found.run_description})" if found.run_description else ""
        raise CheckpointError(
            f"{found.source}{built} does not fit {name}: {'; '.join(problems)}; "
            "pass the model, --shortcut and --data the weights were trained with"
        )
    with torch.no_grad():
        model.load_state_dict(state)
    return model


def load_trained_model(
    path: str | os.PathLike[str],
    model_name: str,
    options: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The registered network ``model_name`` (built with ``options``) holding the trained weights at ``path``.

    ``path`` is a finished run directory, a training checkpoint, a rewind snapshot or a state dict file.
    """
    model = create_model(model_name, **dict(options or {}))
    return load_trained_weights(model, path, model_name).to(device)


# ------------------------------------------------------------------------------------------- helpers


def _read_run_dir(directory: Path) -> TrainedState:
    last = checkpoint_path(directory / "checkpoints")
    if not last.is_file():
        if checkpoint_path(directory).is_file():  # the checkpoints/ folder itself
            return read_trained_state(checkpoint_path(directory))
        raise CheckpointError(
            f"{directory} is not a run directory (no checkpoints/last.pt); pass a finished run or a weights file"
        )
    if not (directory / "result.json").is_file():
        raise CheckpointError(
            f"run {directory} has not finished, so checkpoints/last.pt is not its final network; finish the run "
            f"(rerun its experiment) or pass {last} itself to score those weights"
        )
    state = dict(load_checkpoint(last, "cpu")["model"])
    model, description = _run_settings(directory)
    return TrainedState(state, f"run {directory}", model, description)


def _run_settings(directory: Path) -> tuple[str | None, str | None]:
    """The model name and a description of the run's network, from its settings.json (None if unreadable)."""
    try:
        settings = json.loads((directory / "settings.json").read_text())["settings"]
        model, data = settings["model"], settings["data"]
        kind = "ticket" if settings.get("ticket") else "dense"
        return str(model["name"]), f"{kind} {model['name']}, shortcut {model.get('shortcut')}, data {data.get('name')}"
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state
