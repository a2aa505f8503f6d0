"""Whole-step CUDA graphs: when they apply, what they log, and that a replayed step is the eager step.

On the CPU, :class:`GraphedStep` runs with a stand-in capture whose "replay" runs the captured body again:
everything but the CUDA graph itself is exercised (warm-up count, static buffers, the step counter, the
learning-rate tensors, the eager short batch, the fallback after a failed capture, resume), and must give
bitwise the eager run. The tests marked ``gpu`` check the real graphs on a CUDA device.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from _training_helpers import TensorLoader, _digits, assert_same_weights, settings, tiny_resnet, without_timing
from torch import nn

import layerlottery.training.graphed as graphed
import layerlottery.training.loop as loop
from layerlottery.training import build_optimizer, build_scheduler, checkpoint_path, train
from layerlottery.training.graphed import GraphedStep, build_train_step, graph_fallback_reason
from layerlottery.training.optim import use_fused
from layerlottery.training.step import EagerStep

# Rates a float32 tensor holds exactly, so a replay (float32 rate) and an eager step (float rate) agree bitwise.
EXACT = dict(lr=0.25, schedule="multistep", milestones=(0.34, 0.67), gamma=0.5)  # 0.25, 0.125, 0.0625


class Killed(Exception):
    """Stands in for the process dying."""


class KillAfter(loop.Callback):
    """Raise at the end of `epoch`, before its checkpoint is written (the checkpoint runs last)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            raise Killed


@pytest.fixture(autouse=True)
def fresh_log_memory(monkeypatch):
    """Each test sees fallback reasons as new (they are logged once per process)."""
    monkeypatch.setattr(graphed, "_reported", set())


def loaders(device: str = "cpu", samples: int = 300, batch: int = 64) -> tuple[TensorLoader, TensorLoader]:
    """Digits: 300 training images in batches of 64, so every epoch ends with a short batch of 44."""
    x, y = _digits("train")
    tx, ty = _digits("test")
    return (
        TensorLoader(x[:samples].to(device), y[:samples].to(device), batch),
        TensorLoader(tx.to(device), ty.to(device), 512, shuffle=False),
    )


class Recording:
    """A stand-in for ``cuda_capture``: counts captures and replays by running the captured body again."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.captures, self.replays = fail, 0, 0
        self.steppers: list[GraphedStep] = []

    def __call__(self, body, stream):
        self.captures += 1
        if self.fail is not None:
            raise self.fail

        def replay() -> None:
            self.replays += 1
            body()

        return replay

    def factory(self, net, optimizer, train_settings, device, *, amp, channels_last):
        stepper = GraphedStep(net, optimizer, device, amp=amp, channels_last=channels_last, capture=self)
        self.steppers.append(stepper)
        return stepper


# --- when graphs apply, and the one line that says why not ---------------------------------------------------


def test_graphs_apply_only_on_cuda_without_compile_and_with_fused_sgd():
    model = tiny_resnet()
    fused, plain = build_optimizer(model, settings()), build_optimizer(model, settings())
    use_fused(fused, True)  # as train() does on CUDA (building SGD(fused=True) imports torch._dynamo: seconds)
    cuda = torch.device("cuda")
    assert graph_fallback_reason(settings(), cuda, fused) is None
    assert "CUDA device" in graph_fallback_reason(settings(), torch.device("cpu"), fused)
    assert "train.compile" in graph_fallback_reason(settings(compile=True), cuda, fused)
    assert "not a fused SGD" in graph_fallback_reason(settings(), cuda, plain)
    assert graph_fallback_reason(settings(cuda_graphs=False), cuda, fused) == "train.cuda_graphs is off"


def test_cpu_fallback_is_logged_once_at_info_and_not_at_all_when_switched_off(caplog):
    model = tiny_resnet()
    optimizer = build_optimizer(model, settings())
    make = lambda s: build_train_step(model, optimizer, s, torch.device("cpu"), amp=False, channels_last=False)  # noqa: E731
    with caplog.at_level(logging.INFO, logger="layerlottery.training.graphed"):
        first, second = make(settings()), make(settings())
        make(settings(cuda_graphs=False))
    assert type(first) is EagerStep and type(second) is EagerStep
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "CUDA graphs off: they need a CUDA device and this run trains on cpu; training eagerly")
    ]


def test_cuda_graphs_is_not_part_of_the_run_hash():
    from layerlottery.config import hashed_dict

    assert hashed_dict(settings(cuda_graphs=False)) == hashed_dict(settings(cuda_graphs=True))


# --- the learning rate ---------------------------------------------------------------------------------------


def test_torch_schedulers_fill_a_tensor_rate_in_place_and_float64_keeps_the_float_schedule():
    """What torch does with a tensor rate (why GraphedStep keeps the schedule on floats: see its module notes)."""
    run = settings(epochs=12, lr=0.1, schedule="cosine")

    def rates(lr):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9, nesterov=True)
        scheduler = build_scheduler(optimizer, run)
        tensor = optimizer.param_groups[0]["lr"]
        seen = []
        for _ in range(run.epochs):
            seen.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
        return seen, optimizer.param_groups[0]["lr"] is tensor

    floats, _ = rates(0.1)
    doubles, in_place = rates(torch.tensor(0.1, dtype=torch.float64))
    assert in_place and doubles == floats


def test_replayed_steps_read_the_schedule_and_checkpoints_keep_float_rates(monkeypatch, tmp_path):
    recording = Recording()
    monkeypatch.setattr(loop, "build_train_step", recording.factory)
    train_loader, _ = loaders()
    seen: list[tuple[float, float]] = []

    class Rates(loop.Callback):
        def on_epoch_trained(self, state, row):
            (stepper,) = recording.steppers
            seen.append((row["lr"], stepper._rates[0].item()))
            assert isinstance(state.optimizer.param_groups[0]["lr"], float)

    train(tiny_resnet(), train_loader, settings(epochs=3, **EXACT), checkpoint_dir=tmp_path, callbacks=[Rates()], progress=False)
    assert seen == [(0.25, 0.25), (0.125, 0.125), (0.0625, 0.0625)]
    checkpoint = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert type(checkpoint["optimizer"]["param_groups"][0]["lr"]) is float


def test_use_fused_undoes_the_flag_a_checkpoint_brings_back():
    model = tiny_resnet()
    on_cuda = build_optimizer(model, settings())
    use_fused(on_cuda, True)
    written = on_cuda.state_dict()
    optimizer = build_optimizer(model, settings())
    optimizer.load_state_dict(written)
    assert optimizer.param_groups[0]["fused"] is True
    use_fused(optimizer, False)
    assert optimizer.param_groups[0]["fused"] is None
    use_fused(optimizer, True)
    assert optimizer.param_groups[0]["fused"] is True and optimizer.param_groups[0]["foreach"] is None


# --- a replayed step is the eager step (CPU stand-in for the graph) --------------------------------------------


def test_graphed_training_equals_eager_training_bitwise_short_batches_and_batchnorm_included(monkeypatch):
    train_loader, test_loader = loaders()
    run = settings(epochs=3, **EXACT)
    eager_model = tiny_resnet()
    eager = train(eager_model, train_loader, run, eval_loader=test_loader, progress=False)

    recording = Recording()
    monkeypatch.setattr(loop, "build_train_step", recording.factory)
    graphed_model = tiny_resnet()
    result = train(graphed_model, train_loader, run, eval_loader=test_loader, progress=False)

    assert_same_weights(graphed_model, eager_model)  # BatchNorm running statistics and batch counters included
    assert without_timing(result.history) == without_timing(eager.history)
    # 5 batches an epoch (4 of 64, 1 of 44): 3 eager warm-ups, one capture, then every full batch replayed.
    assert recording.captures == 1 and recording.replays == 3 * 4 - 3
    assert recording.steppers[0].captured and recording.steppers[0].failure is None
    # The capturing step is timed apart, like a compilation; its images are left out of images/s.
    assert result.compile_seconds > 0
    assert result.images_per_second == pytest.approx((3 * 300 - 64) / result.train_seconds)


def test_a_failed_capture_trains_eagerly_with_one_warning(monkeypatch, caplog):
    train_loader, _ = loaders()
    run = settings(epochs=2, **EXACT)
    eager_model = tiny_resnet()
    train(eager_model, train_loader, run, progress=False)

    recording = Recording(fail=RuntimeError("operation not permitted when stream is capturing\nmore detail"))
    monkeypatch.setattr(loop, "build_train_step", recording.factory)
    model = tiny_resnet()
    with caplog.at_level(logging.WARNING, logger="layerlottery.training.graphed"):
        train(model, train_loader, run, progress=False)

    assert_same_weights(model, eager_model)  # the batch whose capture failed still took its step, once
    assert recording.captures == 1 and recording.replays == 0
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA graphs off: capturing the training step failed (RuntimeError: operation not permitted when stream "
        "is capturing); training eagerly"
    ]


def test_graphed_training_resumes_to_the_uninterrupted_result(monkeypatch, tmp_path):
    recording = Recording()
    monkeypatch.setattr(loop, "build_train_step", recording.factory)
    train_loader, _ = loaders()
    run = settings(epochs=3, **EXACT)
    uninterrupted_model = tiny_resnet()
    uninterrupted = train(uninterrupted_model, train_loader, run, progress=False)

    with pytest.raises(Killed):
        train(tiny_resnet(), train_loader, run, checkpoint_dir=tmp_path, callbacks=[KillAfter(2)], progress=False)
    resumed_model = tiny_resnet(seed=5)
    resumed = train(resumed_model, train_loader, run, checkpoint_dir=tmp_path, progress=False)

    assert resumed.resumed_from == 1
    assert_same_weights(resumed_model, uninterrupted_model)
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)


def test_divergence_inside_replayed_steps_names_its_step(monkeypatch):
    recording = Recording()
    monkeypatch.setattr(loop, "build_train_step", recording.factory)
    train_loader, _ = loaders()
    with pytest.raises(loop.TrainingDivergedError, match=r"epoch 1, step \d of 5"):
        train(tiny_resnet(), train_loader, settings(epochs=1, lr=1e6, schedule="constant"), progress=False)


def test_graphed_step_needs_a_warm_up_step():
    model = tiny_resnet()
    with pytest.raises(ValueError, match="warm-up"):
        GraphedStep(model, build_optimizer(model, settings()), torch.device("cpu"), amp=False, channels_last=False, warmup_steps=0)


# --- CUDA: the real graphs --------------------------------------------------------------------------------------

def relative_difference(a: nn.Module, b: nn.Module) -> float:
    """The largest ||a - b|| / ||b|| over the float tensors of the two state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    worst = 0.0
    for key, tensor in sb.items():
        if tensor.is_floating_point():
            worst = max(worst, ((sa[key].double() - tensor.double()).norm() / tensor.double().norm().clamp_min(1e-30)).item())
        else:
            assert torch.equal(sa[key], tensor), key  # num_batches_tracked: every step counted
    return worst


@pytest.fixture
def deterministic_cuda(monkeypatch):
    """Deterministic CUDA kernels for the comparisons below. cuDNN's default convolution backward may sum with
    atomics, so even two eager runs differ in the last bits, and a dozen SGD steps at these rates amplify such
    bits far past 1e-5: only with deterministic algorithms does "graphed equals eager" test the graph itself."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    saved_algorithms = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
    torch.use_deterministic_algorithms(saved_algorithms[0], warn_only=saved_algorithms[1])


class SyncsInForward(nn.Module):
    """A model that reads a value back to the CPU every forward: it cannot be captured."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_resnet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out * 1.0 if out.abs().max().item() >= 0 else out


def cuda_run(**changes) -> object:
    return settings(device="cuda", amp=False, channels_last=False, **{**EXACT, **changes})


def steppers_of_train(monkeypatch) -> list:
    made: list = []
    real = loop.build_train_step

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "build_train_step", recording)
    return made


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphed_equals_eager_in_float32(monkeypatch, deterministic_cuda):
    train_loader, test_loader = loaders("cuda")
    eager_model = tiny_resnet()
    eager = train(eager_model, train_loader, cuda_run(epochs=3, cuda_graphs=False), eval_loader=test_loader, progress=False)
    made = steppers_of_train(monkeypatch)
    graphed_model = tiny_resnet()
    result = train(graphed_model, train_loader, cuda_run(epochs=3), eval_loader=test_loader, progress=False)

    (stepper,) = made
    assert isinstance(stepper, GraphedStep) and stepper.captured and stepper.failure is None
    assert relative_difference(graphed_model, eager_model) < 1e-5  # short batches and BatchNorm statistics included
    for ours, theirs in zip(result.history, eager.history):
        assert ours["lr"] == theirs["lr"]
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    assert stepper._rates[0].item() == 0.0625  # the schedule reached the graph's rate tensor


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphed_run_resumes(monkeypatch, tmp_path, deterministic_cuda):
    train_loader, _ = loaders("cuda")
    run = cuda_run(epochs=3)
    uninterrupted_model = tiny_resnet()
    train(uninterrupted_model, train_loader, run, progress=False)
    with pytest.raises(Killed):
        train(tiny_resnet(), train_loader, run, checkpoint_dir=tmp_path, callbacks=[KillAfter(2)], progress=False)
    made = steppers_of_train(monkeypatch)
    resumed_model = tiny_resnet(seed=5)
    resumed = train(resumed_model, train_loader, run, checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 1 and made[0].captured
    assert relative_difference(resumed_model, uninterrupted_model) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_that_syncs_falls_back_with_one_warning(monkeypatch, caplog):
    train_loader, _ = loaders("cuda")
    made = steppers_of_train(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="layerlottery.training.graphed"):
        result = train(SyncsInForward(), train_loader, cuda_run(epochs=2), progress=False)
        train(SyncsInForward(), train_loader, cuda_run(epochs=1), progress=False)  # the same reason: not logged again
    assert made[0].failure is not None and not made[0].captured and result.epochs == 2
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("CUDA graphs off: capturing the training step failed")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_graphed_run_learns(monkeypatch):
    train_loader, test_loader = loaders("cuda", samples=1000)
    made = steppers_of_train(monkeypatch)
    result = train(tiny_resnet(), train_loader, settings(device="cuda", epochs=4, lr=0.1, amp=True, channels_last=True), eval_loader=test_loader, progress=False)
    assert made[0].captured and made[0].amp and made[0].channels_last
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] and result.final_test_acc > 0.3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_in_large_batches_under_inference_mode_matches_the_cpu():
    from layerlottery.training import evaluate
    from layerlottery.training.loop import eval_batch_size

    _, test_loader = loaders("cpu")
    model = tiny_resnet()
    cpu_loss, cpu_acc = evaluate(model, test_loader, "cpu")
    assert eval_batch_size("cpu") == 512 and eval_batch_size("cuda") == 2048
    big = TensorLoader(test_loader.inputs.cuda(), test_loader.labels.cuda(), eval_batch_size("cuda"), shuffle=False)
    cuda_loss, cuda_acc = evaluate(model.cuda(), big, "cuda")
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-4)
    assert cuda_acc == pytest.approx(cpu_acc, abs=1.5 / len(test_loader.labels))  # a near-tie may flip one image
    assert model.training  # the mode is given back
