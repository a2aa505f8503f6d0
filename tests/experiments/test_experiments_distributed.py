"""``layerlottery run`` under torchrun: two CPU ranks (Gloo) train each run together; rank 0 alone scores and writes.

The ranks run the command line in-process, as ``torchrun -m layerlottery run ...`` would; rank 1 is given another
runs folder, which must stay untouched: it proves rank 1 writes nothing and reads nothing there (several
machines need no shared file system).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _distributed_helpers import run_ranks, save_outcome

from layerlottery.cli import app
from layerlottery.experiments.parallel import Parallelism
from layerlottery.errors import ConfigError

ARGS = [
    "run", "quickstart", "model.name=test_resnet", "data.name=synthetic", "data.augment=false",
    "data.options={num_samples: 150, image_size: 8, channels: 1}", "train.epochs=1", "seeds=[0]",
    "pruning.criteria=[grasp]", "pruning.p=[1]", "pruning.samples_per_class=2", "carbon.enabled=false",
]


def _experiment_worker(rank: int, out: Path) -> None:
    from layerlottery.experiments import at_init, tickets

    scored: list[str] = []
    trained: dict[str, str] = {}
    score_blocks, train = at_init.score_blocks, tickets.train

    def counting_score(model, criterion, *args, **kwargs):
        scored.append(criterion)
        return score_blocks(model, criterion, *args, **kwargs)

    def recording_train(model, *args, **kwargs):
        result = train(model, *args, **kwargs)
        state = model.state_dict()
        trained[type(model).__name__ + str(len(trained))] = hashlib.sha256(
            b"".join(state[key].cpu().numpy().tobytes() for key in sorted(state))
        ).hexdigest()
        return result

    at_init.score_blocks, tickets.train = counting_score, recording_train
    runs_dir = out / ("runs" if rank == 0 else "runs_rank1")
    runner = CliRunner()
    first = runner.invoke(app, [*ARGS, "--runs-dir", str(runs_dir)])
    again = runner.invoke(app, [*ARGS, "--runs-dir", str(runs_dir)])
    save_outcome(out, rank, {
        "first": (first.exit_code, first.output, repr(first.exception)),
        "again": (again.exit_code, again.output),
        "scored": scored,
        "trained": trained,
    })


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp_experiment")
    return run_ranks(_experiment_worker, out), out


def test_each_run_trains_on_both_ranks_and_only_rank_0_scores_and_writes(two_ranks) -> None:
    (rank0, rank1), out = two_ranks
    assert rank0["first"][0] == 0, rank0["first"]
    assert rank1["first"][0] == 0, rank1["first"]
    assert rank0["scored"] == ["grasp"] and rank1["scored"] == []  # scoring ran once, on rank 0
    assert len(rank0["trained"]) == 2 and rank0["trained"] == rank1["trained"]  # dense and ticket, same weights
    assert not (out / "runs_rank1").exists()  # rank 1 wrote nothing
    run_dirs = sorted(path.name for path in (out / "runs").iterdir() if path.is_dir())
    assert [name.split("-")[0] for name in run_dirs] == ["dense", "ticket"]
    ticket = out / "runs" / run_dirs[1]
    result = json.loads((ticket / "result.json").read_text())
    plan = json.loads((ticket / "plan.json").read_text())
    assert result["world_size"] == 2 and len(result["removed"]) == 1 and result["removed"] == plan["removed"]
    assert (ticket / "similarity.json").is_file() and not list((out / "runs").rglob("lock.json"))
    assert "grasp" in rank0["first"][1] and rank1["first"][1] == ""  # the table on rank 0, silence elsewhere


def test_a_rerun_on_both_ranks_trains_nothing(two_ranks) -> None:
    (rank0, rank1), _out = two_ranks
    assert rank0["again"][0] == 0 and "already finished" in rank0["again"][1]
    assert rank1["again"] == (0, "")
    assert len(rank0["trained"]) == 2  # nothing more after the first call


def test_parallel_runs_are_refused_under_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for parallel in (Parallelism(jobs=2), Parallelism(executor="ray")):
        with pytest.raises(ConfigError, match=r"cannot be combined with torchrun \(WORLD_SIZE=2\)"):
            parallel.validate()
    Parallelism().validate()
    result = CliRunner().invoke(app, ["run", "quickstart", "--jobs", "2", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "--jobs 2 cannot be combined with torchrun" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_python_dash_m_layerlottery_is_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "layerlottery", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "run" in done.stdout and "Usage" in done.stdout


@pytest.mark.slow  # about 20 s: two fresh Python processes import torch and layerlottery
def test_the_ordinary_torchrun_launch_trains_every_run_on_two_processes(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m layerlottery run ...`` itself, as a user types it (two CPU processes)."""
    import os

    env = {**os.environ, "LAYERLOTTERY_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "layerlottery", *ARGS, "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(path.read_text()) for path in sorted((tmp_path / "runs").glob("*/result.json"))]
    assert sorted(r["kind"] for r in results) == ["dense", "ticket"] and {r["world_size"] for r in results} == {2}
    assert done.stdout.count("quickstart: tickets at initialization") == 1  # the table, printed by rank 0 alone
