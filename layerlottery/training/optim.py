"""The optimizer and the learning-rate schedule of a training run, built from :class:`TrainSettings`."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, MultiStepLR

from layerlottery.config import TrainSettings
from layerlottery.errors import ConfigError


def build_optimizer(model: nn.Module, settings: TrainSettings, *, fused: bool = False) -> torch.optim.Optimizer:
    """SGD with ``settings``' learning rate, momentum, Nesterov flag and weight decay, or with
    ``train.optimizer=adamw`` AdamW with its learning rate and (decoupled) weight decay and torch's default betas.

    ``fused``: torch's fused implementation, one kernel for all parameters (what training on CUDA uses: see
    :func:`use_fused`); otherwise torch's default implementation for the device.

    Weight decay applies to every parameter, BatchNorm scales and biases included: the authors'
    reference scripts (and the CIFAR ResNet recipes they follow) pass ``model.parameters()`` to SGD
    with one ``weight_decay``, and reproducing the paper's numbers means doing the same.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False); nothing to train")
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True if fused else None)
    return torch.optim.SGD(
        params,
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
        fused=True if fused else None,  # None, not False: the CPU optimizer (and its state dict) as it always was
    )


def use_fused(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """Make every parameter group fused (or torch's default implementation again), in place.

    Training on CUDA always uses the fused optimizer. For SGD: its step is one kernel instead of a Python loop of launches, it
    is the only SGD a CUDA graph can capture with a device learning rate, and using it with and without
    graphs makes ``train.cuda_graphs`` change launch overhead only. Fused and foreach SGD compute the same
    update and differ in float32 rounding, like two GPUs; runs keep their names (the device is not hashed).
    Called after a checkpoint is restored, since ``load_state_dict`` brings back the flags of the device that
    wrote it.
    """
    for group in optimizer.param_groups:
        group["fused"] = True if fused else None
        if fused:
            group["foreach"] = None  # torch's SGD and AdamW take foreach over fused when both are set


def build_scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings) -> LRScheduler:
    """The learning-rate schedule, to be stepped once per *epoch* (after the epoch's last step).

    With ``lr`` the base rate, the rate used during 0-based epoch ``e`` is:

    - ``multistep``: ``lr * gamma ** k`` where ``k`` counts the milestones (``settings.milestone_epochs()``,
      e.g. 100 and 150 of 200) that are ``<= e``;
    - ``cosine``: ``lr * (1 + cos(pi * e / epochs)) / 2``, so it starts at ``lr`` and reaches 0 when the
      last epoch ends;
    - ``constant``: ``lr``.

    Only torch's own schedulers are used, so their ``state_dict`` is plain data a ``weights_only``
    checkpoint can hold.
    """
    if settings.schedule == "multistep":
        return MultiStepLR(optimizer, milestones=settings.milestone_epochs(), gamma=settings.gamma)
    if settings.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=0.0)
    if settings.schedule == "constant":
        # factor 1 for 0 iterations: a no-op schedule with the usual scheduler interface and state.
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ConfigError(f"train.schedule must be multistep, cosine or constant, not {settings.schedule!r}")
