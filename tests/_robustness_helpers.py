"""A tiny finished experiment for the robustness tests (two seeds: dense and one SNIP ticket each), trained
once per test session; tests evaluate private copies (:func:`fresh_runs`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from layerlottery.config import RobustnessSettings

TINY_RUN = [
    "model.name=test_resnet",
    "data.name=synthetic",
    "data.options={num_samples: 96, image_size: 8, num_classes: 4}",
    "data.padding=1",
    "train.epochs=2",
    "train.batch_size=16",
    "train.lr=0.05",
    "train.device=cpu",
    "pruning.criteria=[snip]",
    "pruning.p=[1]",
    "pruning.samples_per_class=4",
    "seeds=[0, 1]",
    "carbon.enabled=false",
]

# Small but every kind of part: two corruptions (noise: random; contrast: deterministic) at two severities,
# FGSM and a 2-step PGD with a random start, on a 40-image attack subset; 48 of the 96 test images.
SMALL = RobustnessSettings(
    corruptions=("gaussian_noise", "contrast"),
    severities=(1, 3),
    attacks=("fgsm:linf:eps=0.03", "pgd:linf:eps=0.03:steps=2"),
    max_samples=None,
    attack_samples=40,
    batch_size=32,
    device="cpu",
)
PARTS = 1 + 2 * 2 + 2
"""clean + corruptions x severities + attacks."""

_template: dict[str, Path] = {}


def tiny_settings(runs_dir: Path, *extra: str):
    from layerlottery.config import load_settings

    return load_settings("defaults", [*TINY_RUN, f"runs_dir={runs_dir}", *extra])


def _finished_template(tmp_path_factory) -> Path:
    if "runs" not in _template:
        from layerlottery.experiments.tickets import run_experiment

        runs = tmp_path_factory.mktemp("robustness") / "runs"
        result = run_experiment(tiny_settings(runs), progress=False, log=lambda _: None)
        assert result.trained == 4
        _template["runs"] = runs
    return _template["runs"]


def fresh_runs(tmp_path_factory, destination: Path) -> Path:
    """A private copy of the finished experiment's runs folder at ``destination``."""
    shutil.copytree(_finished_template(tmp_path_factory), destination)
    return destination


def run_folders(runs: Path, kind: str) -> list[Path]:
    """The run folders of ``kind`` (``dense`` or ``ticket``), sorted by name."""
    return sorted(runs.glob(f"{kind}-*"))
