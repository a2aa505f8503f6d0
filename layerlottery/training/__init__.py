"""The training engine: a short SGD loop with evaluation, resumable checkpoints, rewind snapshots,
honest timing and callbacks::

    from layerlottery.training import train

    result = train(model, train_loader, settings.train, eval_loader=test_loader, checkpoint_dir=run / "checkpoints")
    result.final_test_acc, result.train_seconds, result.images_per_second
"""

from layerlottery.training.callbacks import Callback, Checkpointer, SnapshotSaver, TrainState
from layerlottery.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_snapshot,
    model_fingerprint,
    save_checkpoint,
    save_snapshot,
    snapshot_path,
)
from layerlottery.training.loop import (
    BatchLoader,
    TrainingDivergedError,
    TrainResult,
    evaluate,
    resolve_device,
    train,
)
from layerlottery.training.optim import build_optimizer, build_scheduler

__all__ = [
    "BatchLoader",
    "Callback",
    "CheckpointError",
    "Checkpointer",
    "SnapshotSaver",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_path",
    "evaluate",
    "load_checkpoint",
    "load_snapshot",
    "model_fingerprint",
    "resolve_device",
    "save_checkpoint",
    "save_snapshot",
    "snapshot_path",
    "train",
]
