"""TensorBoard streaming (``train.tensorboard``): the event file holds each epoch's history values."""

from __future__ import annotations

import importlib.util

import pytest
from _training_helpers import digits_loaders, settings, tiny_resnet

from layerlottery.config import load_settings, settings_hash
from layerlottery.errors import ConfigError
from layerlottery.training import train
from layerlottery.training.tensorboard import SCALARS, TensorBoardLogger

pytest.importorskip("tensorboard", reason="the optional extra: pip install 'layerlottery[tensorboard]'")


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_epoch_s_metrics_are_streamed_at_step_epoch(tmp_path):
    train_loader, test_loader = digits_loaders(train_samples=64)
    result = train(tiny_resnet(), train_loader, settings(epochs=2, eval_every=2), eval_loader=test_loader,
                   callbacks=[TensorBoardLogger(tmp_path / "tb")], progress=False)
    scalars = _scalars(tmp_path / "tb")
    assert set(scalars) == set(SCALARS.values())
    for field, tag in SCALARS.items():
        expected = [(row["epoch"], row[field]) for row in result.history if row[field] is not None]
        assert [step for step, _ in scalars[tag]] == [step for step, _ in expected]
        assert [value for _, value in scalars[tag]] == pytest.approx([value for _, value in expected], rel=1e-6)
    assert [step for step, _ in scalars["test/accuracy"]] == [2]  # evaluated at epoch 2 only


def test_the_setting_is_not_hashed_and_a_missing_tensorboard_is_one_line(monkeypatch):
    plain = load_settings("defaults", ["train.device=cpu"])
    streamed = load_settings("defaults", ["train.device=cpu", "train.tensorboard=true"])
    assert streamed.train.tensorboard and settings_hash(plain.train) == settings_hash(streamed.train)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^train.tensorboard needs TensorBoard, which is not installed: pip install 'layerlottery\[tensorboard\]'$"):
        load_settings("defaults", ["train.tensorboard=true"])


def test_an_experiment_run_writes_its_events_into_the_run_folder(tmp_path):
    from experiments._experiment_helpers import tiny_overrides  # noqa: I001 (tests/ is on the path)

    from layerlottery.experiments.tickets import run_experiment

    experiment = load_settings("defaults", tiny_overrides(1, "train.tensorboard=true", "pruning.criteria=[random]",
                                                          "pruning.p=[1]", "seeds=[0]", f"runs_dir={tmp_path}"))
    run_experiment(experiment, progress=False, log=lambda _: None)
    folders = sorted(p.parent.parent.name for p in tmp_path.glob("*/tensorboard/events.out.tfevents.*"))
    assert len(folders) == 2 and folders[0].startswith("dense-")
    assert [step for step, _ in _scalars(tmp_path / folders[0] / "tensorboard")["train/loss"]] == [1]
