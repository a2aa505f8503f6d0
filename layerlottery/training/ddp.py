"""What a training run does differently on several processes (torchrun): the DDP wrapper and the shared resume.

- :func:`data_parallel` wraps the model in ``DistributedDataParallel`` for the duration of training (on CUDA
  after turning its BatchNorm layers into ``SyncBatchNorm``, so N GPUs normalize over the global batch as one
  GPU does; torch's SyncBatchNorm runs on GPUs only, so on the CPU each rank keeps its own batch statistics).
  The caller's model gets its own BatchNorm modules back afterwards; they share every parameter and buffer
  with the SyncBatchNorm stand-ins, so what training changed is in them.
- :func:`rank_batches` gives each rank its contiguous slice of every global batch; a loader that can cut its
  batches itself (``epoch_shard``: the image-folder loader) does, so that a rank decodes only its own images.
- :func:`read_checkpoint` reads ``last.pt`` on rank 0 and hands it to every rank, so a resumed run continues
  on every rank from the same weights, optimizer momentum, schedule and random state, and the other ranks
  need no access to the runs folder (several machines without a shared file system).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from layerlottery import distributed
from layerlottery.distributed import DistributedContext
from layerlottery.errors import ConfigError
from layerlottery.training.checkpoint import checkpoint_path, load_checkpoint, model_fingerprint


def rank_device(device: torch.device, setting: str, context: DistributedContext) -> torch.device:
    """The device this rank trains on: ``device`` itself, or under torchrun on CUDA ``cuda:LOCAL_RANK``.

    ``setting`` is the ``train.device`` value; a fixed ``cuda:N`` is refused under torchrun (one line), since
    every process would then train on the same GPU.
    """
    if not context.distributed or device.type != "cuda":
        return device
    if setting not in ("auto", "cuda"):
        raise ConfigError(
            f"train.device is {setting}, but under torchrun each process trains on its own GPU (cuda:LOCAL_RANK); "
            f"set train.device=cuda"
        )
    return torch.device("cuda", context.local_rank)


Batch = tuple[torch.Tensor, torch.Tensor]


def rank_batches(loader: Any, epoch: int, context: DistributedContext) -> Iterable[Batch]:
    """This rank's rows of every batch of ``loader.epoch(epoch)``, cut by :func:`layerlottery.distributed.shard_rows`.

    Every rank gets the same number of batches (a slice may be empty). A loader with an
    ``epoch_shard(epoch, rank, world_size)`` method builds only this rank's rows (an image folder: decoding is
    the cost worth splitting); any other loader's global batch is built on every rank and sliced (in-memory
    data, where building the batch is one gather). One process: ``loader.epoch(epoch)`` itself.
    """
    if not context.distributed:
        return loader.epoch(epoch)
    cut_by_loader = getattr(loader, "epoch_shard", None)
    if cut_by_loader is not None:
        return cut_by_loader(epoch, context.rank, context.world_size)
    return (distributed.shard_batch(inputs, labels, context) for inputs, labels in loader.epoch(epoch))


@contextlib.contextmanager
def data_parallel(model: nn.Module, device: torch.device, context: DistributedContext) -> Iterator[nn.Module]:
    """``model`` wrapped in DistributedDataParallel while the block runs; ``model`` itself for one process.

    Every rank must pass the same architecture (checked first, one line naming the ranks that differ); DDP
    then copies rank 0's parameters and buffers to every rank.
    """
    if not context.distributed:
        yield model
        return
    distributed.all_equal(model_fingerprint(model), "the model architecture")
    originals = use_sync_batchnorm(model) if device.type == "cuda" else {}
    try:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        yield wrapped
    finally:
        restore_modules(model, originals)


def use_sync_batchnorm(model: nn.Module) -> dict[str, nn.Module]:
    """Replace every BatchNorm layer inside ``model`` by a SyncBatchNorm sharing its parameters and buffers.

    Returns the replaced modules by name, for :func:`restore_modules`.
    """
    originals: dict[str, nn.Module] = {}
    for name, module in list(model.named_modules()):
        if name and isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
            originals[name] = module
            _set_module(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(module))
    return originals


def restore_modules(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put the modules :func:`use_sync_batchnorm` replaced back in place."""
    for name, module in originals.items():
        _set_module(model, name, module)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def read_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module, device: torch.device, context: DistributedContext
) -> tuple[dict[str, Any] | None, Path]:
    """The resume checkpoint ``directory/last.pt`` (None when there is none yet) and its path.

    One process reads it onto ``device``. Several ranks: rank 0 reads it onto the CPU and every rank gets
    that copy (a CheckpointError found by rank 0 stops every rank with its line).
    """
    path = checkpoint_path(directory)
    fingerprint = model_fingerprint(model)
    if not context.distributed:
        return (load_checkpoint(path, device, fingerprint=fingerprint) if path.exists() else None), path
    found = distributed.main_only(lambda: load_checkpoint(path, "cpu", fingerprint=fingerprint) if path.exists() else None)
    return found, path
