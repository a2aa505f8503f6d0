"""Device names from settings and flags (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as ``torch.device``."""

from __future__ import annotations

import torch

from layerlottery.errors import ConfigError


def resolve_device(name: str | torch.device, setting: str = "device") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch.device.

    CUDA asked for on a machine without it (or a GPU index that does not exist) is one clear line naming
    ``setting`` (e.g. ``train.device`` or ``--device``), not a traceback from deep inside a run.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type != "cuda":
        raise ConfigError(f"{setting} must be auto, cpu, cuda or cuda:N, not {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting} is {name} but no CUDA device is available; use cpu or auto")
    index = torch.cuda.current_device() if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{setting} is {name} but only {count} CUDA device(s) exist; pick cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)
