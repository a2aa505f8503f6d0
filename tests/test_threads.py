"""CPU threads: OpenMP's wait policy set before torch loads, LAYERLOTTERY_THREADS for training, nothing leaked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from layerlottery.errors import ConfigError
from layerlottery.threads import THREADS_ENV, prefer_passive_waiting, threads_setting, training_threads

from training._training_helpers import assert_same_weights, digits_loaders, settings, tiny_resnet

_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _policy_after(script: str, **env: str) -> str:
    """OMP_WAIT_POLICY as a fresh interpreter sees it after ``script`` (which must print it)."""
    clean = {k: v for k, v in os.environ.items() if k not in _WAIT_VARIABLES}
    done = subprocess.run([sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


PRINT_POLICY = "import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"


def test_importing_layerlottery_before_torch_makes_openmp_threads_wait_passively():
    assert _policy_after("import layerlottery; " + PRINT_POLICY) == "PASSIVE"


@pytest.mark.parametrize(
    "script, env, expected",
    [
        ("import layerlottery; ", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),  # the user's choice stands
        ("import layerlottery; ", {"GOMP_SPINCOUNT": "1000"}, "unset"),
        ("import layerlottery; ", {"KMP_BLOCKTIME": "0"}, "unset"),
    ],
)
def test_the_wait_policy_chosen_by_the_user_stands(script, env, expected):
    assert _policy_after(script + PRINT_POLICY, **env) == expected


def test_the_wait_policy_is_left_alone_once_torch_is_loaded(monkeypatch):
    for name in _WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "torch" in sys.modules  # too late: OpenMP read its environment when torch loaded it
    assert prefer_passive_waiting() is False and "OMP_WAIT_POLICY" not in os.environ


@pytest.mark.parametrize("raw, expected", [("3", 3), (" 1 ", 1), ("", None)])
def test_threads_setting_reads_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(THREADS_ENV, raw)
    assert threads_setting() == expected
    monkeypatch.delenv(THREADS_ENV)
    assert threads_setting() is None


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_is_one_clear_line(monkeypatch, raw):
    monkeypatch.setenv(THREADS_ENV, raw)
    with pytest.raises(ConfigError, match=f"{THREADS_ENV} must be a whole number of CPU threads >= 1, not '{raw}'"):
        threads_setting()


def test_training_threads_applies_the_setting_and_restores_the_callers_count(monkeypatch):
    before = torch.get_num_threads()  # 1, from conftest
    monkeypatch.setenv(THREADS_ENV, str(before + 1))
    with training_threads() as threads:
        assert threads == torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    monkeypatch.delenv(THREADS_ENV)
    with training_threads() as threads:
        assert threads == torch.get_num_threads() == before


def test_train_records_its_thread_count_and_reruns_with_it_are_bitwise_identical(monkeypatch):
    from layerlottery.training import train

    # The caller uses 2 threads, the setting asks for 1. (Not the other way round: this process loaded torch
    # before layerlottery, so its OpenMP threads spin, and 2 of them on a busy 2-core machine crawl.)
    monkeypatch.setenv(THREADS_ENV, "1")
    train_loader, _ = digits_loaders(train_samples=128)
    runs = []
    torch.set_num_threads(2)
    try:
        for _ in range(2):
            model = tiny_resnet(0)
            result = train(model, train_loader, settings(epochs=1), progress=False)
            runs.append(model)
            assert result.cpu_threads == 1 and result.timing_record()["cpu_threads"] == 1
        assert torch.get_num_threads() == 2  # the caller's count is back
    finally:
        torch.set_num_threads(1)
    assert_same_weights(*runs)
