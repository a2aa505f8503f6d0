"""Checkpoints: atomic, weights-only, and every unusable file is refused with one line, never ignored."""

from __future__ import annotations

import pytest
import torch
from _training_helpers import digits_loaders, settings, tiny_resnet

import layerlottery as ll
from layerlottery.errors import DataError
from layerlottery.training import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_snapshot,
    model_fingerprint,
    save_snapshot,
    train,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A checkpoint directory with a finished 1-epoch run of test_resnet on a slice of digits."""
    directory = tmp_path_factory.mktemp("run")
    train_loader, _ = digits_loaders(train_samples=256)
    train(tiny_resnet(), train_loader, settings(epochs=1), checkpoint_dir=directory, progress=False)
    return directory


def one_epoch(directory, model=None, **changes):
    train_loader, _ = digits_loaders(train_samples=256)
    run = settings(epochs=1, **changes)
    return train(model or tiny_resnet(), train_loader, run, checkpoint_dir=directory, progress=False)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_checkpoint_error_is_a_data_error():
    assert issubclass(CheckpointError, DataError)


def test_checkpoint_holds_the_documented_state(finished_run):
    data = load_checkpoint(checkpoint_path(finished_run), fingerprint=model_fingerprint(tiny_resnet()))
    assert data["epoch"] == 1 and len(data["history"]) == 1
    assert isinstance(data["rng"]["torch"], torch.Tensor)
    assert {"state", "param_groups"} <= data["optimizer"].keys()
    assert data["scheduler"]["last_epoch"] == 1
    assert not [p for p in finished_run.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_checkpoint_raises_instead_of_restarting(tmp_path, finished_run, damage):
    good = checkpoint_path(finished_run).read_bytes()
    path = checkpoint_path(tmp_path)
    damaged = {"garbage": b"\x00not a checkpoint\xff" * 50, "truncated": good[: len(good) // 2], "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(CheckpointError, match="corrupt.*delete it") as error:
        one_epoch(tmp_path)
    assert str(path) in one_line(error)
    assert path.read_bytes() != good  # left for the user to inspect, not overwritten


def test_checkpoint_of_another_architecture_is_refused(tmp_path, finished_run):
    checkpoint_path(tmp_path).write_bytes(checkpoint_path(finished_run).read_bytes())
    other = ll.create_model("test_resnet", in_channels=1, num_classes=10, image_size=8, widths=(4, 8, 16))
    with pytest.raises(CheckpointError, match="different model architecture") as error:
        one_epoch(tmp_path, model=other)
    one_line(error)


def test_checkpoint_of_other_settings_is_refused(tmp_path, finished_run):
    checkpoint_path(tmp_path).write_bytes(checkpoint_path(finished_run).read_bytes())
    with pytest.raises(CheckpointError, match=r"other settings \(.*lr 0.1 -> 0.05") as error:
        one_epoch(tmp_path, lr=0.05)
    one_line(error)


def test_a_plain_state_dict_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save(tiny_resnet().state_dict(), checkpoint_path(tmp_path))
    with pytest.raises(CheckpointError, match="not a layerlottery training checkpoint"):
        one_epoch(tmp_path)


class Payload:
    """Unpickling this would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    torch.save({"format": "layerlottery.train_checkpoint/1", "payload": Payload()}, checkpoint_path(tmp_path))
    with pytest.raises(CheckpointError, match=r"pickled Python objects \(.*print\)"):
        load_checkpoint(checkpoint_path(tmp_path))
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_every_load_passes_weights_only(monkeypatch, tmp_path, finished_run):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(checkpoint_path(finished_run))
    save_snapshot(tmp_path / "snap.pt", tiny_resnet(), 0)
    load_snapshot(tmp_path / "snap.pt")
    assert calls == [True, True]


def test_snapshot_round_trip_and_refusal_of_another_model(tmp_path):
    source, target = tiny_resnet(seed=1), tiny_resnet(seed=2)
    save_snapshot(tmp_path / "epoch_000.pt", source, 0)
    load_snapshot(tmp_path / "epoch_000.pt", target)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    wider = ll.create_model("test_resnet", in_channels=1, num_classes=10, image_size=8, widths=(4, 8, 16))
    with pytest.raises(CheckpointError, match="different model architecture"):
        load_snapshot(tmp_path / "epoch_000.pt", wider)


def test_missing_checkpoint_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")
