"""Training on several processes (DistributedDataParallel over Gloo, on the CPU): 2 ranks equal 1 rank.

The equivalence uses a network without BatchNorm: on the CPU each rank normalizes its own slice of the batch
(torch's SyncBatchNorm runs on GPUs only), which is the one documented difference from a single process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from _distributed_helpers import caught, run_ranks, save_outcome
from _training_helpers import TensorLoader, settings, without_timing, write_image_folder

from layerlottery import distributed
from layerlottery.data import get_dataset
from layerlottery.errors import ConfigError
from layerlottery.training import Callback, train
from layerlottery.training.ddp import rank_device, restore_modules, use_sync_batchnorm
from layerlottery.training.step import ShardedStep

TRAIN_SAMPLES = 149  # batches of 64, 64 and 21: the last one splits 11 / 10 over two ranks


def bn_free_net(hidden: int = 32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def loaders() -> tuple[TensorLoader, TensorLoader]:
    """Synthetic 1 x 8 x 8 images (no scikit-learn import: each rank is a fresh process)."""
    shape = dict(image_size=8, channels=1)
    train_set = get_dataset("synthetic", "train", num_samples=TRAIN_SAMPLES, noise=0.5, **shape)
    test_set = get_dataset("synthetic", "test", num_samples=300, noise=0.5, **shape)  # two evaluation batches, one per rank
    return (
        TensorLoader(train_set.normalized(), train_set.labels, 64),
        TensorLoader(test_set.normalized(), test_set.labels, 256, shuffle=False),
    )


def run_settings():
    return settings(epochs=2, batch_size=64, lr=0.1)


class Stop(Exception):
    pass


class StopBeforeEpoch2(Callback):
    def on_epoch_start(self, state) -> None:
        if state.epoch == 1:
            raise Stop


def _train_worker(rank: int, out: Path) -> None:
    train_loader, test_loader = loaders()
    outcome: dict = {}

    model = bn_free_net()
    result = train(model, train_loader, run_settings(), eval_loader=test_loader, checkpoint_dir=out / f"full{rank}", progress=False)
    outcome["full"] = ({k: v.clone() for k, v in model.state_dict().items()}, result.history)

    # Interrupted before epoch 2, then resumed: rank 0 reads its last.pt and sends it to rank 1, whose folder stays empty.
    interrupted = bn_free_net()
    outcome["stopped"] = caught(lambda: train(
        interrupted, train_loader, run_settings(), eval_loader=test_loader, checkpoint_dir=out / f"resume{rank}",
        callbacks=[StopBeforeEpoch2()], progress=False,
    ))
    resumed = bn_free_net(seed=123)  # other starting weights: the checkpoint must replace them on every rank
    result = train(resumed, train_loader, run_settings(), eval_loader=test_loader, checkpoint_dir=out / f"resume{rank}", progress=False)
    outcome["resumed"] = ({k: v.clone() for k, v in resumed.state_dict().items()}, result.history, result.resumed_from)

    # Mistakes: a plan that differs between ranks, another architecture on one rank, an error found by rank 0 alone.
    plan = ("layer1.1",) if rank == 0 else ("layer1.2",)
    outcome["plan_mismatch"] = caught(lambda: distributed.all_equal(plan, "the removal plan"))
    outcome["model_mismatch"] = caught(lambda: train(bn_free_net(hidden=32 + rank), train_loader, run_settings(), progress=False))

    def fails_on_rank0() -> None:
        raise ConfigError("train.lr must be positive")

    outcome["main_only"] = caught(lambda: distributed.main_only(fails_on_rank0))
    outcome["context"] = distributed.current()
    save_outcome(out, rank, outcome)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp")
    return run_ranks(_train_worker, out), out


def test_two_ranks_train_like_one_rank_with_the_same_global_batch(two_ranks) -> None:
    ranks, _out = two_ranks
    train_loader, test_loader = loaders()
    single = bn_free_net()
    reference = train(single, train_loader, run_settings(), eval_loader=test_loader, progress=False)

    (weights0, history0), (weights1, history1) = ranks[0]["full"], ranks[1]["full"]
    for key, value in weights0.items():
        assert torch.equal(value, weights1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(value, single.state_dict()[key], rtol=1e-5, atol=1e-6)
    assert without_timing(history0) == without_timing(history1)
    for row, expected in zip(history0, reference.history):
        assert row["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
        assert row["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
        assert (row["train_acc"], row["test_acc"]) == (expected["train_acc"], expected["test_acc"])
    assert [ctx.rank for ctx in (ranks[0]["context"], ranks[1]["context"])] == [0, 1]
    assert ranks[0]["context"].world_size == 2 and ranks[0]["context"].backend == "gloo"


def test_only_rank_0_writes_checkpoints_and_a_resumed_run_equals_an_uninterrupted_one(two_ranks) -> None:
    ranks, out = two_ranks
    assert (out / "full0" / "last.pt").is_file() and (out / "resume0" / "last.pt").is_file()
    for folder in (out / "full1", out / "resume1"):  # rank 1 wrote nothing, and resumed from rank 0's file
        assert not folder.exists() or not any(folder.iterdir())
    for outcome in ranks:
        assert outcome["stopped"][0] == "Stop"
        weights, history, resumed_from = outcome["resumed"]
        full_weights, full_history = ranks[0]["full"]
        assert resumed_from == 1
        assert all(torch.equal(weights[k], full_weights[k]) for k in full_weights)
        assert without_timing(history) == without_timing(full_history)


# ----------------------------------------------------------- an image folder: each rank decodes its own rows


def folder_loaders(root: Path) -> tuple:
    from layerlottery.data import FolderLoader

    kwargs = dict(image_size=8, workers=0, seed=3)
    return FolderLoader(root, "train", 5, train=True, **kwargs), FolderLoader(root, "val", 4, train=False, **kwargs)


def folder_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3))


def _folder_worker(rank: int, out: Path) -> None:
    train_loader, test_loader = folder_loaders(out / "images")
    opened: list[str] = []
    for loader in (train_loader, test_loader):
        folder = loader._loader.dataset.folder
        folder.loader = lambda path, open_image=folder.loader: opened.append(path) or open_image(path)
    model = folder_net()
    result = train(model, train_loader, settings(epochs=2, batch_size=5, lr=0.1), eval_loader=test_loader, progress=False)
    save_outcome(out, rank, {"weights": model.state_dict(), "history": result.history, "opened": len(opened)})


def test_two_ranks_on_an_image_folder_decode_half_the_images_each_and_train_like_one(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images", train=13, val=5)  # a last training batch of 3 splits 2 / 1
    ranks = run_ranks(_folder_worker, tmp_path)
    train_loader, test_loader = folder_loaders(tmp_path / "images")
    single = folder_net()
    reference = train(single, train_loader, settings(epochs=2, batch_size=5, lr=0.1), eval_loader=test_loader, progress=False)
    for outcome in ranks:
        for key, value in outcome["weights"].items():
            torch.testing.assert_close(value, single.state_dict()[key], rtol=1e-5, atol=1e-6)
        for row, expected in zip(outcome["history"], reference.history):
            assert row["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
            assert row["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-6)
            assert (row["train_acc"], row["test_acc"]) == (expected["train_acc"], expected["test_acc"])
    # Two training epochs of 13 images and two evaluations of 5, split 5 + 5 + 3 -> 3/2 + 3/2 + 2/1 and 2/2 + 1/0 by rows.
    assert [outcome["opened"] for outcome in ranks] == [2 * 8 + 2 * 3, 2 * 5 + 2 * 2]


def test_mistakes_stop_every_rank_with_one_line(two_ranks) -> None:
    ranks, _out = two_ranks
    for outcome in ranks:
        kind, message = outcome["plan_mismatch"]
        assert kind == "DistributedMismatchError" and "\n" not in message
        assert message.startswith("the removal plan differs between ranks: rank(s) 1 disagree with rank 0")
        kind, message = outcome["model_mismatch"]
        assert kind == "DistributedMismatchError" and message.startswith("the model architecture differs between ranks: rank(s) 1")
        assert outcome["main_only"] == ("ConfigError", "train.lr must be positive")


# ------------------------------------------------------------------------- one process: no process group


@pytest.mark.parametrize("world, rows", [(2, 5), (3, 5), (6, 5)])  # uneven splits; 6 ranks leave one empty
def test_sharded_gradients_averaged_over_ranks_equal_the_full_batch_gradient(
    world: int, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the step's all-reduce of the label counts gives with `world` ranks: the global batch's count.
    monkeypatch.setattr(distributed, "all_reduce_", lambda tensors, op="sum": [t.fill_(rows) for t in tensors])
    torch.manual_seed(0)
    inputs, labels = torch.randn(rows, 64), torch.randint(0, 10, (rows,))
    net = bn_free_net()
    full = nn.functional.cross_entropy(net(inputs), labels)
    expected = torch.autograd.grad(full, list(net.parameters()))

    averaged = [torch.zeros_like(p) for p in net.parameters()]
    loss_sum = 0.0
    for rank in range(world):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # the step changes nothing: grads only
        step = ShardedStep(net, optimizer, torch.device("cpu"), amp=False, channels_last=False,
                           context=distributed.DistributedContext(rank=rank, world_size=world))
        step.start_epoch()
        step(*distributed.shard_batch(inputs, labels, step.context), 1)
        for total, param in zip(averaged, net.parameters()):
            total += param.grad / world  # what DDP's all-reduce does
        loss_sum += float(step.totals.loss_sum)
    for got, want in zip(averaged, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert loss_sum == pytest.approx(full.item() * rows, rel=1e-6)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_labels_with_several_entries_per_input_are_cut_at_the_same_rows(world: int) -> None:
    inputs = torch.arange(3 * 4).view(3, 4)  # 3 sequences of 4 tokens; a language model's labels are flattened
    labels = inputs.reshape(-1) + 100
    pieces = [distributed.shard_batch(inputs, labels, distributed.DistributedContext(rank=r, world_size=world)) for r in range(world)]
    assert [len(x) for x, _ in pieces] == [len(part) for part in torch.arange(3).tensor_split(world)]
    assert all(torch.equal(y, x.reshape(-1) + 100) for x, y in pieces)
    assert torch.equal(torch.cat([x for x, _ in pieces]), inputs)


def test_sync_batchnorm_shares_the_tensors_and_gives_the_modules_back() -> None:
    from layerlottery.models import create_model

    model = create_model("test_resnet", in_channels=1, num_classes=10, image_size=8)
    before = dict(model.named_modules())
    weights = {name: p for name, p in model.named_parameters()}
    originals = use_sync_batchnorm(model)
    assert originals and all(isinstance(m, nn.SyncBatchNorm) for n, m in model.named_modules() if n in originals)
    assert all(p is weights[name] for name, p in model.named_parameters())  # the optimizer keeps its tensors
    restore_modules(model, originals)
    assert all(module is before[name] for name, module in model.named_modules())


def test_a_single_process_starts_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed.init_distributed("cpu")
    assert context == distributed.SINGLE and not torch.distributed.is_initialized()
    assert distributed.main_only(lambda: 7) == 7 and distributed.broadcast_object("x") == "x"
    distributed.all_equal("anything", "a value")  # nothing to compare with


def test_each_rank_trains_on_its_own_gpu_and_a_fixed_gpu_is_refused() -> None:
    rank1 = distributed.DistributedContext(rank=1, world_size=2, local_rank=1)
    assert rank_device(torch.device("cuda", 0), "cuda", rank1) == torch.device("cuda", 1)
    assert rank_device(torch.device("cpu"), "cpu", rank1) == torch.device("cpu")
    assert rank_device(torch.device("cuda", 0), "cuda:0", distributed.SINGLE) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="under torchrun each process trains on its own GPU"):
        rank_device(torch.device("cuda", 0), "cuda:0", rank1)
