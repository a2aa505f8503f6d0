"""Robustness of finished runs: what is stored (the contract's robustness.json), that it is the accuracy of the
run's own network on its own test images, that every run sees the same corrupted images, idempotence, resuming,
recomputing only what changed, bad input, the summary against dense, and the hook after an experiment."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest
import torch

from layerlottery.config import RobustnessSettings
from layerlottery.data import get_dataset
from layerlottery.errors import ConfigError, DataError
from layerlottery.experiments.at_init import initial_model
from layerlottery.robustness import evaluate
from layerlottery.robustness.attacks import Normalized, parse_attack
from layerlottery.robustness.evaluate import ROBUSTNESS_FILE, evaluate_run, evaluate_runs, subset_indices
from layerlottery.robustness.settings import AUTO_ATTACK_COLOUR, AUTO_ATTACK_GRAYSCALE, resolve_attacks
from layerlottery.robustness.summary import paired_changes, robustness_table, summarize_record
from layerlottery.surgery import RemovalPlan, remove_blocks

from _robustness_helpers import PARTS, SMALL, fresh_runs, run_folders, tiny_settings

QUIET = dict(progress=False, log=lambda _: None)
OPTIONS = {"image_size": 8, "num_classes": 4, "in_channels": 3, "shortcut": "B"}


@pytest.fixture
def runs(tmp_path_factory, tmp_path):
    return fresh_runs(tmp_path_factory, tmp_path / "runs")


def _record(run: Path) -> dict:
    return json.loads((run / ROBUSTNESS_FILE).read_text())


def _network(run: Path) -> torch.nn.Module:
    """The run's final network, rebuilt here by hand (not through the evaluation's loader)."""
    settings = json.loads((run / "settings.json").read_text())["settings"]
    model = initial_model("test_resnet", OPTIONS, settings["seed"])
    if settings["ticket"] is not None:
        model = remove_blocks(model, RemovalPlan.load(run / "plan.json"))
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"])
    return model.eval()


def _count(monkeypatch, name: str, fail_after: int | None = None) -> list:
    """Wrap evaluate.<name> (corrupt or perturb), recording each call's arguments and output."""
    real, calls = getattr(evaluate, name), []

    def counted(images, *args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt  # as a user's Ctrl-C in the middle of the evaluation
        out = real(images, *args, **kwargs)
        calls.append((args, out.clone()))
        return out

    monkeypatch.setattr(evaluate, name, counted)
    return calls


def test_the_record_holds_every_part_in_the_contract_format(runs):
    [dense, _] = run_folders(runs, "dense")
    result = evaluate_run(dense, SMALL, **QUIET)
    record = _record(dense)
    assert record == result.record and result.computed == PARTS
    assert record["format"] == 1 and record["run"] == dense.name
    assert record["clean"]["samples"] == 96
    assert set(record["corruptions"]) == {"gaussian_noise", "contrast"}
    noise = record["corruptions"]["gaussian_noise"]
    assert (noise["family"], noise["source"], noise["samples"]) == ("noise", "generated", 96)
    assert list(noise["accuracy"]) == ["1", "3"]
    assert record["corruptions"]["contrast"]["family"] == "digital"
    every = [a for entry in record["corruptions"].values() for a in entry["accuracy"].values()]
    assert record["mean_corruption_accuracy"] == pytest.approx(statistics.fmean(every), abs=1e-15)
    assert record["shift"] == {}
    fgsm, pgd = parse_attack("fgsm:linf:eps=0.03"), parse_attack("pgd:linf:eps=0.03:steps=2")
    assert set(record["attacks"]) == {fgsm.key, pgd.key}
    assert record["attacks"][pgd.key] | {"accuracy": None} == {
        "attack": "pgd", "norm": "linf", "eps": 0.03, "alpha": pgd.alpha, "steps": 2, "restarts": 1,
        "samples": 40, "max_samples": 40, "subset_seed": 0, "seed": 0, "accuracy": None,
    }  # fmt: skip
    assert record["evaluation"]["seed"] == 0 and record["evaluation"]["attack_samples"] == 40
    for value in [record["clean"]["accuracy"], *every]:  # fractions of the 96 test images
        assert 0 <= value <= 1 and round(value * 96, 9).is_integer()
    for entry in record["attacks"].values():  # of the 40 attacked ones
        assert 0 <= entry["accuracy"] <= 1 and round(entry["accuracy"] * 40, 9).is_integer()


def test_clean_accuracy_is_the_runs_own_final_test_accuracy(runs):
    """The same test split, the same normalization (inside Normalized): bitwise the training loop's number."""
    for run in run_folders(runs, "dense") + run_folders(runs, "ticket"):
        evaluate_run(run, dataclasses.replace(SMALL, corruptions=(), attacks=()), **QUIET)
        assert _record(run)["clean"]["accuracy"] == json.loads((run / "result.json").read_text())["test_acc"]


def test_every_run_sees_the_same_corrupted_images_and_the_accuracy_is_its_networks_on_them(runs, monkeypatch):
    calls = _count(monkeypatch, "corrupt")
    dense, ticket = run_folders(runs, "dense")[0], run_folders(runs, "ticket")[0]
    settings = dataclasses.replace(SMALL, corruptions=("gaussian_noise",), severities=(3,), attacks=())
    evaluate_runs([dense, ticket], settings, **QUIET)
    [(args_dense, images_dense), (args_ticket, images_ticket)] = calls
    assert args_dense == args_ticket == ("gaussian_noise", 3)
    assert torch.equal(images_dense, images_ticket)  # paired: the very same noise
    test = get_dataset("synthetic", "test", num_samples=96, image_size=8, num_classes=4)
    assert not torch.equal(images_dense, test.images.float() / 255)  # and it was corrupted
    for run in (dense, ticket):
        model = Normalized(_network(run), test.mean, test.std)
        with torch.no_grad():
            expected = int((model(images_dense).argmax(1) == test.labels).sum()) / len(test)
        assert _record(run)["corruptions"]["gaussian_noise"]["accuracy"]["3"] == pytest.approx(expected, abs=1e-12)


def test_a_second_call_computes_nothing(runs, monkeypatch):
    evaluate_runs([runs], SMALL, **QUIET)
    files = sorted(runs.glob(f"*/{ROBUSTNESS_FILE}"))
    assert len(files) == 4
    stamps = [f.stat().st_mtime_ns for f in files]
    corrupts, perturbs = _count(monkeypatch, "corrupt"), _count(monkeypatch, "perturb")
    monkeypatch.setattr(evaluate._Evaluator, "model", property(lambda self: pytest.fail("no network needed")))
    again = evaluate_runs([runs], SMALL, **QUIET)
    assert (corrupts, perturbs) == ([], [])
    assert [r.computed for r in again] == [0, 0, 0, 0]
    assert [f.stat().st_mtime_ns for f in files] == stamps  # not even rewritten


def test_an_interrupted_evaluation_resumes_without_redoing_finished_parts(runs, tmp_path, tmp_path_factory, monkeypatch):
    [dense, _] = run_folders(runs, "dense")
    reference = fresh_runs(tmp_path_factory, tmp_path / "reference")
    expected = evaluate_run(reference / dense.name, SMALL, **QUIET).record

    with monkeypatch.context() as patch:
        _count(patch, "corrupt", fail_after=3)  # clean and 3 corruption parts done, the 4th interrupted
        with pytest.raises(KeyboardInterrupt):
            evaluate_run(dense, SMALL, **QUIET)
    partial = _record(dense)
    assert sum(len(e["accuracy"]) for e in partial["corruptions"].values()) == 3
    assert partial["clean"] is not None and partial["attacks"] == {}

    corrupts, perturbs = _count(monkeypatch, "corrupt"), _count(monkeypatch, "perturb")
    resumed = evaluate_run(dense, SMALL, **QUIET)
    assert resumed.computed == PARTS - 4
    assert [args for args, _ in corrupts] == [("contrast", 3)]  # only the corruption part left
    assert len(perturbs) == 2  # the two attacks (40 images: one chunk each)
    assert resumed.record == expected


def test_changed_settings_recompute_only_what_they_change(runs, monkeypatch):
    [dense, _] = run_folders(runs, "dense")
    first = evaluate_run(dense, SMALL, **QUIET).record

    corrupts, perturbs = _count(monkeypatch, "corrupt"), _count(monkeypatch, "perturb")
    more = evaluate_run(dense, dataclasses.replace(SMALL, severities=(1, 3, 5)), **QUIET)
    assert sorted(args for args, _ in corrupts) == [("contrast", 5), ("gaussian_noise", 5)]
    assert perturbs == [] and more.computed == 2
    assert list(more.record["corruptions"]["contrast"]["accuracy"]) == ["1", "3", "5"]

    corrupts.clear()
    fewer = evaluate_run(dense, dataclasses.replace(SMALL, attack_samples=20), **QUIET)
    assert corrupts == [] and len(perturbs) == 2 and fewer.computed == 2
    assert {e["samples"] for e in fewer.record["attacks"].values()} == {20}

    perturbs.clear()
    reseeded = evaluate_run(dense, dataclasses.replace(SMALL, seed=1, attacks=()), **QUIET)
    # The clean accuracy (all images, in order) does not depend on the seed; generated corruptions store the
    # noise seed, so both are redone at the severities asked (the severity-5 results of seed 0 are dropped).
    assert reseeded.computed == 4 and len(corrupts) == 4 and perturbs == []
    assert reseeded.record["clean"] == first["clean"]
    assert {e["seed"] for e in reseeded.record["corruptions"].values()} == {1}
    assert list(reseeded.record["corruptions"]["gaussian_noise"]["accuracy"]) == ["1", "3"]


def test_sample_limits_draw_one_seeded_subset_shared_by_every_run(runs):
    first = subset_indices(96, 30, seed=0)
    assert torch.equal(first, subset_indices(96, 30, seed=0))
    assert len(first) == 30 and len(set(first.tolist())) == 30 and first.tolist() == sorted(first.tolist())
    assert not torch.equal(first, subset_indices(96, 30, seed=1))
    assert subset_indices(96, None, 0) is None and subset_indices(96, 96, 0) is None
    settings = dataclasses.replace(SMALL, max_samples=30, attack_samples=10, corruptions=("contrast",), severities=(2,))
    records = [r.record for r in evaluate_runs([runs], settings, **QUIET)]
    for record in records:
        assert record["clean"] | {"accuracy": None} == {"accuracy": None, "samples": 30, "max_samples": 30, "subset_seed": 0}
        assert round(record["clean"]["accuracy"] * 30, 9).is_integer()
        assert record["corruptions"]["contrast"]["samples"] == 30
        assert {e["samples"] for e in record["attacks"].values()} == {10}


def test_the_auto_attack_is_sized_for_grayscale_and_colour_data():
    [gray] = resolve_attacks(["auto"], channels=1)
    [colour] = resolve_attacks(["auto"], channels=3)
    assert (gray.name, gray.norm, gray.eps, gray.steps) == ("pgd", "linf", 0.07, 10)
    assert (colour.name, colour.norm, colour.eps, colour.steps) == ("pgd", "linf", 1 / 255, 10)
    assert gray == parse_attack(AUTO_ATTACK_GRAYSCALE) and colour == parse_attack(AUTO_ATTACK_COLOUR)
    assert len(resolve_attacks(["auto", AUTO_ATTACK_COLOUR], channels=3)) == 1  # the same attack once


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"corruptions": ("fog",)}, ConfigError, "unknown corruption 'fog'"),
        ({"severities": (0, 3)}, ConfigError, "must lie in 1..5"),
        ({"attacks": ("pgd:linf:eps=-0.1",)}, ConfigError, "eps must be a finite number >= 0"),
        ({"attacks": ("pgd:eps=0.1",)}, ConfigError, "bad attack"),
        ({"source": "cifar10c"}, ConfigError, "CIFAR-10 test images, but this run trained on synthetic"),
        ({"shift": ("cifar102",)}, ConfigError, "CIFAR-10 test images, but this run trained on synthetic"),
        ({"max_samples": 0}, ConfigError, "max_samples"),
    ],
)
def test_bad_settings_are_one_line_before_anything_is_written(runs, change, error, message):
    with pytest.raises(error, match=message) as caught:
        evaluate_runs([runs], dataclasses.replace(SMALL, **change), **QUIET)
    assert "\n" not in str(caught.value)
    assert not list(runs.glob(f"*/{ROBUSTNESS_FILE}"))


def test_runs_that_cannot_be_evaluated_are_one_line_and_nothing_is_written(runs, tmp_path):
    dense, ticket = run_folders(runs, "dense")[0], run_folders(runs, "ticket")[0]
    (ticket / "result.json").unlink()
    with pytest.raises(DataError, match="has not finished"):
        evaluate_runs([dense, ticket], SMALL, **QUIET)  # the finished one is not evaluated either
    with pytest.raises(DataError, match="is not a run directory"):
        evaluate_runs([tmp_path], SMALL, **QUIET)
    with pytest.raises(DataError, match="is not a run directory"):
        evaluate_runs([tmp_path / "missing"], SMALL, **QUIET)
    assert not list(runs.glob(f"*/{ROBUSTNESS_FILE}"))
    # A runs directory: its finished runs, the unfinished one skipped with a note.
    notes = []
    evaluated = evaluate_runs([runs], dataclasses.replace(SMALL, corruptions=(), attacks=()), progress=False, log=notes.append)
    assert len(evaluated) == 3 and notes == [f"note: 1 unfinished run(s) in {runs} skipped"]


def test_a_broken_record_is_one_line_naming_it(runs):
    [dense, _] = run_folders(runs, "dense")
    (dense / ROBUSTNESS_FILE).write_text('{"format": 1, "corruptions": {"contrast": {"accuracy": {"1": 7}}}}')
    with pytest.raises(DataError, match=f"{ROBUSTNESS_FILE} is not a robustness record .*delete it"):
        evaluate_run(dense, SMALL, **QUIET)


def test_the_table_compares_each_ticket_with_the_dense_run_of_its_seed(runs):
    evaluate_runs([runs], SMALL, **QUIET)
    [(group, rows)] = robustness_table(runs).items()
    assert [(row.label, row.kind, row.seeds) for row in rows] == [("dense", "dense", [0, 1]), ("snip p=1", "ticket", [0, 1])]
    dense_runs, ticket_runs = run_folders(runs, "dense"), run_folders(runs, "ticket")
    by_seed = {}
    for run in dense_runs + ticket_runs:
        seed = json.loads((run / "settings.json").read_text())["settings"]["seed"]
        by_seed.setdefault(seed, {})[run.name.split("-")[0]] = _record(run)
    changes = [paired_changes(pair["ticket"], pair["dense"]) for pair in by_seed.values()]
    mca = [pair["ticket"]["mean_corruption_accuracy"] - pair["dense"]["mean_corruption_accuracy"] for pair in by_seed.values()]
    assert [c["mean_corruption"] for c in changes] == pytest.approx(mca, abs=1e-12)  # every part paired here
    ticket_row = rows[1]
    assert ticket_row.changes["mean_corruption"].mean == pytest.approx(statistics.fmean(mca), abs=1e-12)
    assert ticket_row.changes["mean_corruption"].std == pytest.approx(statistics.stdev(mca), abs=1e-12)
    attack = parse_attack("fgsm:linf:eps=0.03").key
    fgsm = [p["ticket"]["attacks"][attack]["accuracy"] - p["dense"]["attacks"][attack]["accuracy"] for p in by_seed.values()]
    assert ticket_row.changes[f"attack:{attack}"].mean == pytest.approx(statistics.fmean(fgsm), abs=1e-12)
    assert rows[0].changes == {}
    summary = summarize_record(by_seed[0]["dense"])
    assert summary.severities.keys() == {1, 3} and summary.families.keys() == {"noise", "digital"}


def test_parts_computed_on_other_images_are_not_compared(runs):
    [dense, _] = run_folders(runs, "dense")
    [ticket, _] = run_folders(runs, "ticket")
    evaluate_run(dense, SMALL, **QUIET)
    evaluate_run(ticket, dataclasses.replace(SMALL, seed=1), **QUIET)  # other noise, other attack starts
    changes = paired_changes(_record(ticket), _record(dense))
    assert set(changes) == {"clean"}  # the clean images are the whole test split either way


def test_an_experiment_can_ask_for_robustness_after_training(runs, monkeypatch):
    from layerlottery.experiments.tickets import run_experiment

    extra = ["robustness.after_training=true", "robustness.corruptions=[contrast]", "robustness.severities=[2]",
             "robustness.attacks=['fgsm:linf:eps=0.03']", "robustness.device=cpu"]  # fmt: skip
    settings = tiny_settings(runs, *extra)
    result = run_experiment(settings, **QUIET)  # every run already trained: only the evaluation runs
    assert result.trained == 0
    for run in [path for path in runs.iterdir() if path.is_dir()]:
        record = _record(run)
        assert list(record["corruptions"]) == ["contrast"] and len(record["attacks"]) == 1
    monkeypatch.setattr(evaluate, "corrupt", lambda *a, **k: pytest.fail("a rerun computes nothing"))
    monkeypatch.setattr(evaluate, "perturb", lambda *a, **k: pytest.fail("a rerun computes nothing"))
    run_experiment(settings, **QUIET)


def test_an_experiment_refuses_a_bad_robustness_section_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown corruption 'fog'"):
        tiny_settings(tmp_path / "runs", "robustness.corruptions=[fog]")
    with pytest.raises(ConfigError, match="cifar10c holds CIFAR-10 test images, but the data is synthetic"):
        tiny_settings(tmp_path / "runs", "robustness.source=cifar10c")
    with pytest.raises(ConfigError, match="bad attack"):
        tiny_settings(tmp_path / "runs", "robustness.after_training=true", "robustness.attacks=[pgd]")
    assert RobustnessSettings() == tiny_settings(tmp_path / "runs").robustness  # off by default
    assert not (tmp_path / "runs").exists()


def test_progress_in_a_log_file_is_one_line_per_part_and_quiet_is_silent(runs, capsys):
    [dense, _] = run_folders(runs, "dense")
    settings = dataclasses.replace(SMALL, corruptions=("contrast",), severities=(1,), attacks=("fgsm:linf:eps=0.03",))
    evaluate_run(dense, settings, progress=True, log=lambda _: None)  # stderr is captured: not a terminal
    lines = capsys.readouterr().err.splitlines()
    label = json.loads((dense / "settings.json").read_text())["label"]  # e.g. "dense seed 0"
    assert [line.split("  ")[0] for line in lines] == [
        f"{label}: clean", f"{label}: contrast severity 1", f"{label}: attack {parse_attack('fgsm:linf:eps=0.03').key}",
    ]
    record = _record(dense)
    assert lines[1].split("  ")[1] == f"accuracy {100 * record['corruptions']['contrast']['accuracy']['1']:.2f}%"
    evaluate_run(dense, dataclasses.replace(settings, severities=(2,)), **QUIET)
    assert capsys.readouterr().err == ""


def _fake_cifar10(root: Path) -> str:
    """A CIFAR-10 archive in the published layout (3 images per batch file); returns its MD5."""
    import hashlib
    import io
    import pickle
    import tarfile

    from layerlottery.data.cifar import CIFAR_SPECS

    spec, first = CIFAR_SPECS["cifar10"], 0
    generator = torch.Generator().manual_seed(0)
    root.mkdir(parents=True)
    with tarfile.open(root / spec.filename, "w:gz") as tar:
        for name in (*spec.train_files, *spec.test_files):
            data = torch.randint(0, 256, (3, 3072), generator=generator, dtype=torch.uint8).numpy()
            payload = pickle.dumps({b"data": data, spec.label_key: [(first + i) % 10 for i in range(3)]}, protocol=2)
            info = tarfile.TarInfo(f"{spec.folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            first += 3
    return hashlib.md5((root / spec.filename).read_bytes()).hexdigest()


def test_a_cifar10_run_is_evaluated_on_the_published_cifar10c_and_cifar102_images(tmp_path, monkeypatch):
    import numpy as np

    from layerlottery.data import cifar, cifar102
    from layerlottery.experiments.tickets import run_experiment

    data = tmp_path / "data"
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", _fake_cifar10(data))
    settings = tiny_settings(
        tmp_path / "runs", "data.name=cifar10", "data.options={}", f"data.data_dir={data}", "train.epochs=1",
        "pruning.samples_per_class=1", "seeds=[0]",
    )  # fmt: skip
    run_experiment(settings, **QUIET)
    [dense] = run_folders(tmp_path / "runs", "dense")
    # CIFAR-10-C as extracted from its archive: 5 severities x the 3 test images, and CIFAR-10.2's 4 test images.
    rng = np.random.default_rng(0)
    published = {name: rng.integers(0, 256, (15, 32, 32, 3), dtype=np.uint8) for name in ("gaussian_noise", "fog")}
    (data / "CIFAR-10-C").mkdir()
    for name, images in published.items():
        np.save(data / "CIFAR-10-C" / f"{name}.npy", images)
    np.save(data / "CIFAR-10-C" / "labels.npy", np.tile(np.array([5, 6, 7]), 5))
    shifted = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    (data / "cifar-10.2").mkdir()
    np.savez(data / "cifar-10.2" / "cifar102_test.npz", images=shifted, labels=np.array([0, 1, 2, 3]))
    monkeypatch.setitem(cifar102.CIFAR102_FILES, "test", cifar102.Cifar102File("cifar102_test.npz", 4))
    monkeypatch.setattr(evaluate, "corrupt", lambda *a, **k: pytest.fail("published images are not generated"))

    robust = RobustnessSettings(corruptions=("all",), severities=(2,), source="cifar10c", shift=("cifar102",), attacks=(), device="cpu")
    with pytest.raises(DataError, match="CIFAR-10-C file .* is missing"):  # all 19: the folder lacks most
        evaluate_run(dense, robust, **QUIET)
    assert not (dense / ROBUSTNESS_FILE).exists()
    record = evaluate_run(dense, dataclasses.replace(robust, corruptions=("gaussian_noise", "fog")), **QUIET).record

    network = _network_32(dense)
    cifar10 = cifar.CIFAR_SPECS["cifar10"]
    model = Normalized(network, cifar10.mean, cifar10.std)

    def accuracy(images, labels):
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255
        with torch.no_grad():
            return int((model(x).argmax(1) == torch.as_tensor(labels)).sum()) / len(labels)

    for name, family in (("gaussian_noise", "noise"), ("fog", "weather")):
        entry = record["corruptions"][name]
        assert (entry["source"], entry["family"], entry["samples"], entry["seed"]) == ("cifar10c", family, 3, None)
        assert entry["accuracy"] == {"2": accuracy(published[name][3:6], [5, 6, 7])}  # severity 2: rows 3..5
    assert record["shift"]["cifar102"] | {"accuracy": None} == {"accuracy": None, "samples": 4, "max_samples": None, "subset_seed": None}
    assert record["shift"]["cifar102"]["accuracy"] == accuracy(shifted, [0, 1, 2, 3])


def _network_32(run: Path) -> torch.nn.Module:
    settings = json.loads((run / "settings.json").read_text())["settings"]
    model = initial_model("test_resnet", {**OPTIONS, "image_size": 32, "num_classes": 10}, settings["seed"])
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"])
    return model.eval()


def test_attacks_at_eps_zero_give_the_clean_accuracy_chunk_by_chunk(runs, monkeypatch):
    """Labels follow their images through the chunks (3 of them here): a zero budget changes no prediction."""
    monkeypatch.setattr(evaluate, "CHUNK", 40)
    [ticket, _] = run_folders(runs, "ticket")
    settings = dataclasses.replace(SMALL, corruptions=(), attacks=("pgd:linf:eps=0:alpha=0.01:steps=2", "fgsm:l2:eps=0"), attack_samples=None)
    perturbs = _count(monkeypatch, "perturb")
    record = evaluate_run(ticket, settings, **QUIET).record
    assert len(perturbs) == 2 * 3  # each attack, each chunk
    assert [e["accuracy"] for e in record["attacks"].values()] == [record["clean"]["accuracy"]] * 2
    assert {e["samples"] for e in record["attacks"].values()} == {96}
