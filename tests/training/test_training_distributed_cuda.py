"""The CUDA path of DistributedDataParallel (SyncBatchNorm, device batches, rank 0's checkpoint) on one GPU.

NCCL refuses two processes on one GPU, so the two ranks here talk over Gloo (``LAYERLOTTERY_DIST_BACKEND=gloo``,
which also carries CUDA tensors) and both train on ``cuda:0``: everything but the NCCL transport itself is the
multi-GPU code. With SyncBatchNorm the two ranks see the statistics of the whole global batch, so they must
equal one process training on that batch, BatchNorm included (the CPU tests can only check BN-free networks).
Ranks are spawned (a CUDA parent cannot fork).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from _distributed_helpers import free_port
from _training_helpers import write_image_folder

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():  # pragma: no cover - CI has no GPU
    pytest.skip("needs a CUDA device", allow_module_level=True)

from layerlottery.config import TrainSettings  # noqa: E402
from layerlottery.data import DeviceLoader, FolderLoader, get_dataset  # noqa: E402
from layerlottery.models import create_model  # noqa: E402
from layerlottery.training import train  # noqa: E402

SAMPLES = 149  # batches of 64, 64, 21: the last one splits 11 / 10 over the two ranks


def _settings(channels_last: bool) -> TrainSettings:
    # float32 and eager steps on both sides: the comparison is about DDP, not autocast or graphs.
    return TrainSettings(
        epochs=2, batch_size=64, lr=0.05, schedule="cosine", device="cuda", amp=False, cuda_graphs=False,
        channels_last=channels_last,
    )


def _model(name: str, channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "bn_free":
        return torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(512, 10))
    return create_model("test_resnet", num_classes=10, in_channels=channels, image_size=8)


def _loaders(images: str | None) -> tuple:
    """Synthetic images held on the GPU, or an image folder decoded on the CPU (each rank its own rows)."""
    if images:
        kwargs = dict(image_size=8, workers=0, seed=3, device="cuda")
        return FolderLoader(images, "train", 64, train=True, **kwargs), FolderLoader(images, "val", 256, train=False, **kwargs)
    data = dict(image_size=8, channels=1, noise=0.5)
    train_set = get_dataset("synthetic", "train", num_samples=SAMPLES, **data)
    test_set = get_dataset("synthetic", "test", num_samples=300, **data)
    return DeviceLoader(train_set, 64, shuffle=True, augment=True, device="cuda"), DeviceLoader(test_set, 256, shuffle=False, device="cuda")


def _train_once(
    checkpoints: Path, name: str, channels_last: bool, images: str | None = None
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    # Full float32 and fixed algorithms: TF32 convolutions round inputs to 10 bits, and a slice of a batch may
    # get another algorithm than the whole batch, which would make 2 ranks differ from 1 by more than DDP does.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model = _model(name, channels=3 if images else 1)
    loader, test_loader = _loaders(images)
    result = train(model, loader, _settings(channels_last), eval_loader=test_loader, checkpoint_dir=checkpoints, progress=False)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, result.history


def _rank(rank: int, out: str, port: int, name: str, channels_last: bool, images: str | None = None) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2", LAYERLOTTERY_DIST_BACKEND="gloo",
    )
    weights, history = _train_once(Path(out) / f"rank{rank}", name, channels_last, images)
    torch.save((weights, history), Path(out) / f"outcome{rank}.pt")


def _two_ranks_and_one_process(tmp_path: Path, name: str, channels_last: bool, images: str | None = None) -> tuple:
    """Train on two spawned ranks sharing cuda:0, then in this process: (ranks' outcomes, weights, history)."""
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(str(tmp_path), free_port(), name, channels_last, images), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"outcome{r}.pt", weights_only=False) for r in range(2)]
    single_weights, single_history = _train_once(tmp_path / "single", name, channels_last, images)
    return ranks, single_weights, single_history


def _assert_ranks_equal_one_process(ranks: list, single_weights: dict, single_history: list, test_images: int) -> None:
    for key, value in ranks[0][0].items():
        assert torch.equal(value, ranks[1][0][key]), f"ranks disagree on {key}"
        assert torch.allclose(value.float(), single_weights[key].float(), rtol=1e-4, atol=1e-5), key
    for row, single in zip(ranks[0][1], single_history):
        assert row["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
        assert row["test_acc"] == pytest.approx(single["test_acc"], abs=1 / test_images)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("name", ["bn_free", "test_resnet"])
def test_two_ranks_on_one_gpu_equal_one_process(tmp_path: Path, name: str, channels_last: bool) -> None:
    ranks, single_weights, single_history = _two_ranks_and_one_process(tmp_path, name, channels_last)
    worst = max((ranks[0][0][k].float() - single_weights[k].float()).abs().max().item() for k in single_weights)
    print(f"{name} channels_last={channels_last}: largest weight difference {worst:.3g}; losses",
          [(r["train_loss"], s["train_loss"]) for r, s in zip(ranks[0][1], single_history)])
    _assert_ranks_equal_one_process(ranks, single_weights, single_history, test_images=300)
    assert (tmp_path / "rank0" / "last.pt").is_file() and not (tmp_path / "rank1" / "last.pt").exists()


def test_two_ranks_on_an_image_folder_equal_one_process(tmp_path: Path) -> None:
    """Each rank decodes its own rows of every batch (pinned, copied to the GPU), SyncBatchNorm joins them."""
    write_image_folder(tmp_path / "images", train=SAMPLES, val=41)  # a last evaluation batch of 41 splits 21 / 20
    outcome = _two_ranks_and_one_process(tmp_path, "test_resnet", False, images=str(tmp_path / "images"))
    _assert_ranks_equal_one_process(*outcome, test_images=41)
