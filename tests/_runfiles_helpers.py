"""One tiny finished experiment (a dense run and one SNIP ticket), trained once per test session.

Tests that break run files copy it (:func:`fresh_runs`) and edit the copy, so every test starts from the
files the code itself wrote, and the training (about 2 s) happens once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# Settings of the experiment; the command line gets the same list, so `run` finds the same run folders.
TINY_RUN = [
    "model.name=test_resnet",
    "data.name=synthetic",
    "data.options={num_samples: 32, image_size: 8, num_classes: 4}",
    "train.epochs=1",
    "train.batch_size=16",
    "train.device=cpu",
    "pruning.criteria=[snip]",
    "pruning.p=[1]",
    "pruning.samples_per_class=2",
    "seeds=[0]",
    "carbon.enabled=false",
]

_template: dict[str, Path] = {}


def tiny_settings(runs_dir: Path):
    from layerlottery.config import load_settings

    return load_settings("defaults", [*TINY_RUN, f"runs_dir={runs_dir}"])


def _finished_template(tmp_path_factory) -> Path:
    if "runs" not in _template:
        from layerlottery.experiments.tickets import run_experiment

        runs = tmp_path_factory.mktemp("finished") / "runs"
        result = run_experiment(tiny_settings(runs), progress=False, log=lambda _: None)
        assert result.trained == 2
        _template["runs"] = runs
    return _template["runs"]


def fresh_runs(tmp_path_factory, destination: Path) -> Path:
    """A private copy of the finished experiment's runs folder at ``destination``."""
    shutil.copytree(_finished_template(tmp_path_factory), destination)
    return destination


def run_folder(runs: Path, kind: str) -> Path:
    """The one run folder of ``kind`` ("dense" or "ticket")."""
    [folder] = runs.glob(f"{kind}-*")
    return folder


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
