"""The training loop: it learns, resumes bitwise, skips finished work, snapshots, times and fails loudly."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from _training_helpers import (
    assert_same_weights,
    digits_loaders,
   
    settings,
    tiny_resnet,
    without_timing,
)
from torch import nn

import layerlottery as ll
from layerlottery.errors import ConfigError
from layerlottery.training import (
    Callback,
    TrainingDivergedError,
    checkpoint_path,
    evaluate,
    load_snapshot,
    snapshot_path,
    train,
)


class Killed(Exception):
    """Stands in for the process dying."""


class KillAt(Callback):
    """Raise at the given hook once ``state.epoch`` reaches ``epoch``."""

    def __init__(self, hook: str, epoch: int) -> None:
        self.hook, self.epoch = hook, epoch

    def on_epoch_start(self, state) -> None:
        if self.hook == "on_epoch_start" and state.epoch == self.epoch:
            raise Killed

    def on_epoch_end(self, state) -> None:
        if self.hook == "on_epoch_end" and state.epoch == self.epoch:
            raise Killed


class Recorder(Callback):
    """Counts hook calls and keeps a copy of the weights and timing counters after each epoch."""

    def __init__(self) -> None:
        hooks = ["on_train_start", "on_epoch_start", "on_epoch_trained", "on_epoch_end", "on_train_end"]
        self.calls = dict.fromkeys(hooks, 0)
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.timed_samples: list[int] = []

    def on_train_start(self, state) -> None:
        self.calls["on_train_start"] += 1

    def on_epoch_start(self, state) -> None:
        self.calls["on_epoch_start"] += 1

    def on_epoch_trained(self, state, row) -> None:
        self.calls["on_epoch_trained"] += 1

    def on_epoch_end(self, state) -> None:
        self.calls["on_epoch_end"] += 1
        self.weights[state.epoch] = copy.deepcopy(state.model.state_dict())
        self.timed_samples.append(state.timed_samples)

    def on_train_end(self, state) -> None:
        self.calls["on_train_end"] += 1


class DropoutMLP(nn.Module):
    """Draws from torch's global RNG every step, so a resume that lost the RNG state would diverge."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def dropout_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DropoutMLP()


def test_test_resnet_learns_digits_well_above_chance():
    train_loader, test_loader = digits_loaders()
    result = train(tiny_resnet(), train_loader, settings(epochs=3), eval_loader=test_loader, progress=False)
    assert result.final_test_acc > 0.5  # chance is 0.1
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_test_acc == max(row["test_acc"] for row in result.history) >= result.final_test_acc
    assert result.final_test_loss == result.history[-1]["test_loss"]
    assert result.epochs == 3 and result.resumed_from is None and result.compile_seconds == 0.0
    assert result.train_seconds == pytest.approx(sum(row["epoch_train_seconds"] for row in result.history))
    assert result.images_per_second == pytest.approx(3 * train_loader.num_samples / result.train_seconds)
    assert result.peak_memory_kind == "cpu_max_rss" and result.peak_memory_bytes > 10_000_000


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("make_model", [tiny_resnet, dropout_mlp], ids=["test_resnet", "dropout_mlp"])
@pytest.mark.parametrize("hook", ["on_epoch_start", "on_epoch_end"])
def test_resume_after_a_kill_equals_uninterrupted_training(tmp_path, make_model, hook, optimizer):
    train_loader, test_loader = digits_loaders(train_samples=320)
    lr = 0.1 if optimizer == "sgd" else 0.003
    run = settings(epochs=3, schedule="multistep", milestones=(0.5,), optimizer=optimizer, lr=lr)
    kwargs = dict(eval_loader=test_loader, progress=False, seed=3)

    uninterrupted_model = make_model(0)
    uninterrupted = train(uninterrupted_model, train_loader, run, **kwargs)

    # Killed during epoch 2: before its first step, or after it but before its checkpoint was written.
    kill_epoch = 1 if hook == "on_epoch_start" else 2
    with pytest.raises(Killed):
        train(make_model(0), train_loader, run, checkpoint_dir=tmp_path, callbacks=[KillAt(hook, kill_epoch)], **kwargs)
    assert torch.load(checkpoint_path(tmp_path), weights_only=True)["epoch"] == 1

    recorder = Recorder()
    resumed_model = make_model(12345)  # a fresh, differently initialized instance: weights must come from disk
    resumed = train(resumed_model, train_loader, run, checkpoint_dir=tmp_path, callbacks=[recorder], **kwargs)

    assert recorder.calls["on_epoch_start"] == 2 and resumed.resumed_from == 1
    assert_same_weights(resumed_model, uninterrupted_model)
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)
    assert resumed.final_test_acc == uninterrupted.final_test_acc


def test_rerunning_a_finished_training_does_no_work(tmp_path):
    train_loader, test_loader = digits_loaders(train_samples=256)
    model = tiny_resnet()
    first = train(model, train_loader, settings(epochs=2), eval_loader=test_loader, checkpoint_dir=tmp_path, progress=False)
    written = checkpoint_path(tmp_path).stat().st_mtime_ns

    recorder = Recorder()
    fresh = tiny_resnet(seed=7)
    again = train(fresh, train_loader, settings(epochs=2), eval_loader=test_loader, checkpoint_dir=tmp_path,
                  callbacks=[recorder], progress=False)

    assert recorder.calls == dict.fromkeys(recorder.calls, 0)
    assert again.resumed_from == 2
    assert again == dataclasses.replace(first, resumed_from=2)
    assert_same_weights(fresh, model)  # the finished weights are loaded into the model passed in
    assert checkpoint_path(tmp_path).stat().st_mtime_ns == written


def test_snapshots_are_written_exactly_at_the_requested_epochs(tmp_path):
    train_loader, _ = digits_loaders(train_samples=256)
    model = tiny_resnet()
    initial = copy.deepcopy(model.state_dict())
    recorder = Recorder()
    train(model, train_loader, settings(epochs=3, snapshot_epochs=(0, 2)), checkpoint_dir=tmp_path,
          callbacks=[recorder], progress=False)

    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_000.pt", "epoch_002.pt"]
    at_init, at_two = load_snapshot(snapshot_path(tmp_path, 0)), load_snapshot(snapshot_path(tmp_path, 2))
    assert all(torch.equal(at_init[k], initial[k]) for k in initial)
    assert all(torch.equal(at_two[k], recorder.weights[2][k]) for k in initial)
    assert not torch.equal(at_two["fc.weight"], recorder.weights[3]["fc.weight"])


class Tagger(Callback):
    """Logs the hook order and adds a field to each row right after the training steps."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def on_train_start(self, state) -> None:
        self.log.append("train_start")

    def on_epoch_start(self, state) -> None:
        self.log.append(f"start {state.epoch + 1}")

    def on_epoch_trained(self, state, row) -> None:
        assert row["epoch"] == state.epoch + 1 and row["test_acc"] is None  # not evaluated yet
        self.log.append(f"trained {row['epoch']}")
        row["tag"] = 10.0 * row["epoch"]

    def on_epoch_end(self, state) -> None:
        assert state.history[-1]["test_acc"] is not None
        self.log.append(f"end {state.epoch}")

    def on_train_end(self, state) -> None:
        self.log.append("train_end")


def test_hooks_run_in_order_and_fields_added_after_the_steps_are_kept(tmp_path):
    train_loader, test_loader = digits_loaders(train_samples=128)
    tagger = Tagger()
    result = train(tiny_resnet(), train_loader, settings(epochs=2), eval_loader=test_loader, checkpoint_dir=tmp_path,
                   callbacks=[tagger], progress=False)
    assert tagger.log == ["train_start", "start 1", "trained 1", "end 1", "start 2", "trained 2", "end 2", "train_end"]
    assert [row["tag"] for row in result.history] == [10.0, 20.0]
    stored = torch.load(checkpoint_path(tmp_path), weights_only=True)["history"]
    assert [row["tag"] for row in stored] == [10.0, 20.0]


def test_snapshots_need_a_checkpoint_dir():
    train_loader, _ = digits_loaders(train_samples=64)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        train(tiny_resnet(), train_loader, settings(snapshot_epochs=(0,)), progress=False)


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


@pytest.mark.parametrize("case", ["nan_model", "huge_lr"])
def test_non_finite_loss_raises_training_diverged(tmp_path, case):
    train_loader, _ = digits_loaders(train_samples=256)
    model, lr = (NaNModel(), 0.1) if case == "nan_model" else (tiny_resnet(), 1e10)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step \d+ of 4; lower train.lr") as error:
        train(model, train_loader, settings(lr=lr), checkpoint_dir=tmp_path, progress=False)
    assert "\n" not in str(error.value)
    if case == "nan_model":
        assert "step 1 of 4" in str(error.value)
    assert not checkpoint_path(tmp_path).exists()  # the diverged epoch is never recorded as done


def test_evaluation_every_n_epochs_and_always_at_the_last():
    train_loader, test_loader = digits_loaders(train_samples=128)
    result = train(tiny_resnet(), train_loader, settings(epochs=5, eval_every=2), eval_loader=test_loader, progress=False)
    assert [row["test_acc"] is not None for row in result.history] == [False, True, False, True, True]
    assert [row["test_loss"] is not None for row in result.history] == [False, True, False, True, True]


def test_without_an_eval_loader_test_values_are_none():
    train_loader, _ = digits_loaders(train_samples=128)
    result = train(tiny_resnet(), train_loader, settings(epochs=1), progress=False)
    assert result.final_test_acc is result.best_test_acc is result.final_test_loss is None


def test_evaluate_matches_a_direct_computation_and_keeps_the_mode():
    _, test_loader = digits_loaders()
    model = tiny_resnet().train()
    loss, accuracy = evaluate(model, test_loader, "cpu")
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(test_loader.inputs)
    assert loss == pytest.approx(F.cross_entropy(logits, test_loader.labels).item(), rel=1e-5)
    assert accuracy == (logits.argmax(1) == test_loader.labels).sum().item() / len(test_loader.labels)


def test_seed_decides_the_run_and_the_callers_rng_is_left_alone():
    train_loader, _ = digits_loaders(train_samples=128)
    torch.manual_seed(2024)
    expected = torch.rand(3)
    models = [dropout_mlp(0), dropout_mlp(0), dropout_mlp(0)]
    torch.manual_seed(2024)
    for model, seed in zip(models, (5, 5, 6)):
        train(model, train_loader, settings(epochs=1), seed=seed, progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert_same_weights(models[0], models[1])
    assert not torch.equal(models[0].state_dict()["net.1.weight"], models[2].state_dict()["net.1.weight"])


def test_compile_warm_up_steps_are_timed_apart(monkeypatch):
    # torch.compile on the CPU takes too long for a unit test; an identity stand-in still exercises the
    # bookkeeping: every step meeting a new input shape is a warm-up step, left out of images/s.
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)
    train_loader, _ = digits_loaders(batch_size=64, train_samples=300)  # batches 64, 64, 64, 64, 44
    recorder = Recorder()
    result = train(tiny_resnet(), train_loader, settings(epochs=2, compile=True), callbacks=[recorder], progress=False)
    assert recorder.timed_samples == [300 - 64 - 44, 2 * 300 - 64 - 44]
    assert result.compile_seconds > 0
    assert result.images_per_second == pytest.approx((600 - 108) / result.train_seconds)
    assert result.history[0]["images_per_second"] == pytest.approx(192 / result.history[0]["epoch_train_seconds"])


def test_progress_bar_goes_to_stderr(capsys):
    train_loader, test_loader = digits_loaders(train_samples=128)
    train(tiny_resnet(), train_loader, settings(epochs=1), eval_loader=test_loader, progress=True)
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "loss" in captured.err and "img/s" in captured.err
    assert captured.out == ""


def test_trains_from_the_device_loader():
    loader_module = pytest.importorskip("layerlottery.data.loader")
    data = ll.get_dataset("digits")
    train_loader = loader_module.DeviceLoader(data, 64, shuffle=True, augment=True, padding=1, flip=False, seed=0)
    test_loader = loader_module.DeviceLoader(ll.get_dataset("digits", "test"), 256, shuffle=False)
    result = train(tiny_resnet(), train_loader, settings(epochs=1), eval_loader=test_loader, progress=False)
    assert math.isfinite(result.history[0]["train_loss"]) and result.final_test_acc > 0.1
