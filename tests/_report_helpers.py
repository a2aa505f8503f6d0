"""Hand-written finished runs for the report tests: result.json, settings.json, metrics.csv, robustness.json.

Two experiments in one runs folder, with accuracies chosen so every table cell is known in advance:

- ``test_resnet`` (tickets at initialization): dense and grasp/snip tickets with p = 1, 2, seeds 0 and 1,
  emissions, per-epoch metrics (but for p = 2), and a robustness.json for the dense runs and the grasp p=1
  tickets;
- ``test_resnet_b`` (Algorithm 1): dense seed 0, kl and random tickets rewound to epoch 0 and 2, and the
  kl control, over 4 epochs; per-epoch metrics for dense and the tickets rewound to epoch 2 only; no
  emissions, no robustness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EPOCHS = 4
AT_INIT_ACC = {  # (criterion, p) -> accuracy per seed; dense first
    ("dense", 0): (0.90, 0.92),
    ("grasp", 1): (0.91, 0.92),
    ("grasp", 2): (0.89, 0.915),
    ("snip", 1): (0.90, 0.93),
    ("snip", 2): (0.88, 0.90),
}
LOTTERY_ACC = {  # (criterion, rewind epoch or "reinit") -> accuracy of seed 0 (p = 1); dense 0.95
    ("kl", 0): 0.955,
    ("kl", 2): 0.94,
    ("kl", "reinit"): 0.93,
    ("random", 0): 0.945,
    ("random", 2): 0.95,
}
LOTTERY_DENSE_ACC = 0.95


def _record(model: str, seed: int, ticket: dict[str, Any] | None, lottery: dict[str, Any] | None) -> dict[str, Any]:
    settings = {
        "model": {"name": model}, "data": {"name": "synthetic"}, "train": {"epochs": EPOCHS},
        "seed": seed, "ticket": ticket, "lottery": lottery,
    }
    hashed = {"model": {"name": model}, "seed": seed, "ticket": ticket, "lottery": lottery}
    return {"hashed": hashed, "settings": settings}


def _history(acc: float, start_epoch: int = 0) -> list[dict[str, float]]:
    """Test accuracy climbing to ``acc`` at the last epoch, the loss falling; epochs after ``start_epoch``."""
    rows = []
    for epoch in range(start_epoch + 1, EPOCHS + 1):
        rows.append({"epoch": epoch, "lr": 0.1, "train_loss": 2.0 / epoch, "train_acc": acc - 0.1 / epoch,
                     "test_loss": 1.0 / epoch, "test_acc": acc - 0.05 * (EPOCHS - epoch), "images_per_second": 1000.0})
    return rows


def write_run(
    runs: Path, name: str, model: str, kind: str, seed: int, acc: float, *, criterion: str | None = None, p: int = 0,
    macs: int = 1000, params: int = 500, seconds: float = 10.0, kg: float | None = 2e-3, start_epoch: int = 0,
    lottery: dict[str, Any] | None = None, robustness: dict[str, Any] | None = None, metrics: bool = True,
) -> Path:
    """A finished run folder as ``RunDir`` writes it (settings.json, metrics.csv, result.json)."""
    folder = runs / name
    folder.mkdir(parents=True)
    ticket = None if kind == "dense" else {"criterion": criterion, "p": p}
    (folder / "settings.json").write_text(json.dumps(_record(model, seed, ticket, lottery if kind == "lottery" else None)))
    epochs = EPOCHS - start_epoch
    result = {
        "name": name, "kind": kind, "seed": seed, "criterion": criterion, "p": p,
        "removed": [f"layer1.{i}" for i in range(p)], "test_acc": acc, "train_seconds": seconds,
        "epoch_train_seconds": [seconds / epochs] * epochs, "macs": macs, "params": params, "epochs": EPOCHS,
        "emissions_kg": kg, "epoch_emissions_kg": None if kg is None else [kg / epochs] * epochs, "energy_measured": False,
    }
    if kind == "lottery":
        result.update(rewind_epoch=lottery.get("rewind_epoch", 0), control=lottery.get("control", False), round=1)  # type: ignore[union-attr]
    lines = ["run,epoch,metric,value"]
    for row in _history(acc, start_epoch):
        lines += [f"{name},{row['epoch']},{metric},{value}" for metric, value in row.items() if metric != "epoch"]
    lines.append(f"{name},final,test_acc,{acc}")
    if metrics:
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / "result.json").write_text(json.dumps(result))
    if robustness is not None:
        (folder / "robustness.json").write_text(json.dumps(robustness))
    return folder


def robustness_record(name: str, clean: float, noise: float, blur: float, attack: float) -> dict[str, Any]:
    """A robustness.json (format 1): noise at ``noise`` - 0.01 x severity, blur flat, one PGD attack."""
    return {
        "format": 1, "run": name, "clean": {"accuracy": clean, "samples": 100},
        "corruptions": {
            "gaussian_noise": {"family": "noise", "source": "generated", "samples": 100,
                               "accuracy": {str(s): round(noise - 0.01 * s, 4) for s in range(1, 6)}},
            "defocus_blur": {"family": "blur", "source": "generated", "samples": 100,
                             "accuracy": {str(s): blur for s in range(1, 6)}},
        },
        "mean_corruption_accuracy": None,
        "shift": {},
        "attacks": {"pgd-linf-eps0.1-a0.025-s10-r1": {"attack": "pgd", "norm": "linf", "eps": 0.1, "alpha": 0.025,
                                                      "steps": 10, "restarts": 1, "samples": 100, "accuracy": attack}},
        "evaluation": {"seed": 0},
    }


def write_runs(runs: Path, robustness: bool = True) -> Path:
    """Both experiments into ``runs``; return it."""
    for (criterion, p), accuracies in AT_INIT_ACC.items():
        for seed, acc in enumerate(accuracies):
            kind = "dense" if criterion == "dense" else "ticket"
            name = f"{kind}-{criterion}{p}-s{seed}"
            record = None
            if robustness and (criterion, p) in (("dense", 0), ("grasp", 1)):
                # dense: noise 0.80 - 0.01 s, blur 0.70; grasp p=1: 0.85 - 0.01 s, blur 0.70 (+2.5 pts mean)
                record = robustness_record(name, acc, 0.80 if kind == "dense" else 0.85, 0.70, 0.10 + 0.05 * seed)
            write_run(runs, name, "test_resnet", kind, seed, acc, criterion=None if kind == "dense" else criterion,
                      p=p, macs=1000 - 200 * p, params=500 - 50 * p, seconds=10.0 - 2 * p, kg=(10.0 - 2 * p) * 1e-4,
                      robustness=record, metrics=p < 2)  # fewer curves to draw: p = 2 has no metrics.csv
    write_run(runs, "dense-b", "test_resnet_b", "dense", 0, LOTTERY_DENSE_ACC, kg=None)
    for (criterion, rewind), acc in LOTTERY_ACC.items():
        control = rewind == "reinit"
        lottery = {"rewind_epoch": 0 if control else rewind, "control": control}
        write_run(runs, f"lottery-{criterion}-{rewind}", "test_resnet_b", "lottery", 0, acc, criterion=criterion, p=1,
                  macs=800, kg=None, start_epoch=0 if control else rewind, lottery=lottery, seconds=8.0,
                  metrics=rewind == 2)  # curves of the tickets rewound to epoch 2 only (from epoch 3 on)
    return runs


_built: dict[str, Any] = {}


def _refuse_training(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a report trained a network")


def finished_report(tmp_path_factory: Any) -> tuple[Path, Any]:
    """Both experiments and ``layerlottery report`` run on them once per test session, with every training
    entry point patched to raise (reports never train): ``(runs folder, the CLI's result)``."""
    if "runs" not in _built:
        import pytest
        from typer.testing import CliRunner

        import layerlottery.experiments.tickets as tickets
        import layerlottery.training as training
        import layerlottery.training.loop as loop
        from layerlottery.cli import app

        runs = write_runs(tmp_path_factory.mktemp("report") / "runs")
        with pytest.MonkeyPatch.context() as patch:
            for module in (training, loop, tickets):
                patch.setattr(module, "train", _refuse_training)
            _built["result"] = CliRunner().invoke(app, ["report", str(runs)])
        _built["runs"] = runs
    return _built["runs"], _built["result"]


def cheap_figures(monkeypatch: Any) -> None:
    """Skip drawing (about a second a figure on a busy CPU) where a test checks only which files appear."""
    from layerlottery.reports import figures

    monkeypatch.setattr(figures, "render", lambda figure: {"png": b"png", "svg": b"svg"})
