"""The command line's contract, checked as a whole: every mistake is one line with exit status 2, found
before any work (``run --dry-run`` finds it too), and leaves nothing behind; accepted input passes.

A new command or a newly found mistake joins by adding a :class:`Case` to :data:`CASES`. Each case runs in
its own empty folder (the working directory, so default paths such as ``runs/`` land there too); ``{tmp}``
in an argument is that folder. ``setup`` may put files there first (a preset, a file in the way); the
folder must hold exactly the same files afterwards.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from layerlottery.cli import app

Setup = Callable[[Path, pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    status: int
    message: str
    """A fragment the output must contain (the error line for status 2)."""
    setup: Setup | None = None


def write(name: str, content: bytes | str) -> Setup:
    """Setup: a file ``name`` holding ``content`` in the case's folder."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        data = content.encode() if isinstance(content, str) else content
        (tmp / name).write_bytes(data)

    return setup


def env(name: str, value: str) -> Setup:
    """Setup: the environment variable ``name`` set to ``value`` for this case."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(name, value)

    return setup


def folder(name: str) -> Setup:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / name).mkdir()

    return setup


def read_only(name: str) -> Setup:
    """Setup: a folder ``name`` that takes no new files. Mode bits do not stop root, so there the file
    system's answer (EROFS, as on a read-only mount) is given for that folder by the probe's mkstemp."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / name
        path.mkdir()
        path.chmod(0o555)
        monkeypatch.setattr(tempfile, "mkstemp", _refusing_mkstemp(path, tempfile.mkstemp))

    return setup


def _refusing_mkstemp(path: Path, original: Callable) -> Callable:
    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == path.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return original(*args, dir=dir, **kwargs)

    return mkstemp


DRY = ("run", "quickstart", "--dry-run", "--runs-dir", "{tmp}/runs")
PRUNE = ("prune", "cifar_resnet20", "-c", "random", "-p", "1")
LM = ("run", "lm_quickstart", "--dry-run", "--runs-dir", "{tmp}/runs")
LM_TEXT = "A text long enough for windows of 128 bytes in both splits. " * 60

CASES = [
    # -- accepted: scientific notation, small test splits (said, not refused), brackets shown as typed
    Case("lr-1e-3", (*DRY, "train.lr=1e-3"), 0, "lr: 0.001"),
    Case("weight-decay-5e-4", (*DRY, "train.weight_decay=5e-4"), 0, "weight_decay: 0.0005"),
    Case("yaml-lr-1e-3", ("run", "sci.yaml", "--dry-run"), 0, "lr: 0.001", write("sci.yaml", "train:\n  lr: 1e-3\n")),
    Case(
        "one-test-image-warns",
        (*DRY, "data.name=synthetic", "data.options={num_samples: 1}", "pruning.criteria=[magnitude]"),
        0,
        "steps of 100.00 points",
    ),
    Case("dry-run-fetches-nothing", (*DRY, "data.name=mnist", "data.data_dir={tmp}/no"), 0, "is not on disk yet, so it was not checked"),
    Case("help-shows-brackets", ("run", "--help"), 0, "'pruning.criteria=[grasp]'"),
    # -- numbers
    Case("lr-garbage", (*DRY, "train.lr=fast"), 2, "train.lr must be a number, not 'fast'"),
    Case("lr-nan", (*DRY, "train.lr=.nan"), 2, "train.lr must be a finite number"),
    Case("weight-decay-inf", (*DRY, "train.weight_decay=.inf"), 2, "train.weight_decay must be a finite number"),
    Case("xi-nan", (*DRY, "xi=.nan"), 2, "xi must be a finite number"),
    Case("grid-intensity-nan", (*DRY, "carbon.grid_intensity_g_per_kwh=.nan"), 2, "grid_intensity_g_per_kwh must be a finite"),
    Case("milestone-nan", (*DRY, "train.milestones=[.nan]"), 2, "train.milestones[0] must be a finite number, not nan"),
    Case("report-xi-negative", ("report", "{tmp}", "--xi", "-1"), 2, "--xi must be a finite number >= 0"),
    Case("report-xi-nan", ("report", "{tmp}", "--xi", "nan"), 2, "--xi must be a finite number >= 0"),
    # -- seeds
    Case("run-negative-seed", (*DRY, "seeds=[-5]"), 2, "seeds must be a whole number from 0"),
    Case("score-negative-seed", ("score", "cifar_resnet20", "-c", "snip", "--data", "synthetic", "--seed", "-5"), 2, "--seed must be a whole number from 0"),
    Case("prune-negative-seed", (*PRUNE, "--seed", "-5", "--out", "{tmp}/t"), 2, "--seed must be a whole number from 0"),
    Case("pai-negative-seed", ("pai", "--seeds=-1", "--dry-run", "--runs-dir", "{tmp}/runs"), 2, "seeds must be a whole number from 0"),
    # -- presets
    Case("preset-list", ("run", "list.yaml", "--dry-run", "train.epochs=1"), 2, "must hold settings as 'section: value' lines", write("list.yaml", "- a\n- b\n")),
    Case("preset-scalar", ("run", "scalar.yaml", "--dry-run", "train.epochs=1"), 2, "(a mapping), not 3", write("scalar.yaml", "3\n")),
    Case("preset-not-utf8", ("run", "latin.yaml", "--dry-run"), 2, "is not UTF-8 text", write("latin.yaml", b"name: caf\xe9\n")),
    Case("name-with-path", (*DRY, "name=../x"), 2, "name must be a plain file name"),
    # -- destinations
    Case("runs-dir-is-a-file", ("run", "quickstart", "--dry-run", "--runs-dir", "{tmp}/afile"), 2, "is a file, not a folder", write("afile", "mine\n")),
    Case("runs-dir-inside-a-file", ("run", "quickstart", "--dry-run", "--runs-dir", "{tmp}/afile/sub"), 2, "afile is a file", write("afile", "mine\n")),
    Case("runs-dir-read-only", ("run", "quickstart", "--dry-run", "--runs-dir", "{tmp}/ro"), 2, "cannot write in", read_only("ro")),
    Case("runs-dir-read-only-no-dry-run", ("run", "quickstart", "-q", "--runs-dir", "{tmp}/ro/runs"), 2, "cannot write in", read_only("ro")),
    Case("prune-out-file-overwrite", (*PRUNE, "--out", "{tmp}/afile", "--overwrite"), 2, "is a file", write("afile", "mine\n")),
    Case("prune-out-inside-a-file", (*PRUNE, "--out", "{tmp}/afile/sub"), 2, "is a file", write("afile", "mine\n")),
    # -- found before the first run began
    Case("device-missing-gpu", (*DRY, "train.device=cuda:99"), 2, "train.device is cuda:99"),
    Case("unknown-country", (*DRY, "carbon.country_iso_code=XYZ"), 2, "carbon.country_iso_code 'XYZ' is not in CodeCarbon's"),
    Case("mnist-missing", (*DRY, "data.name=mnist", "data.data_dir={tmp}/no", "data.options={download: false}"), 2, "data.data_dir=DIR"),
    Case("threads-not-a-number", DRY, 2, "LAYERLOTTERY_THREADS", env("LAYERLOTTERY_THREADS", "many")),
    Case("samples-per-class-too-many", (*DRY, "pruning.samples_per_class=500"), 2, "set pruning.samples_per_class=139 or less"),
    Case(
        "filter-baseline-unscorable-criterion",
        (*DRY, "pruning.filter_baseline=true", "pruning.criteria=[snip,magnitude]"),
        2,
        "pruning.filter_baseline scores filters with snip or grasp only, not magnitude",
    ),
    # -- language models on text (lm_quickstart: a shipped tiny GPT-2 config, nothing downloaded)
    Case("lm-needs-text", ("run", "lm_quickstart", "--dry-run", "--runs-dir", "{tmp}/runs"), 2, "data.name=text needs data.data_dir"),
    Case("lm-text-missing", (*LM, "data.data_dir={tmp}/no.txt"), 2, "no.txt does not exist"),
    Case("lm-text-too-short", (*LM, "data.data_dir={tmp}/short.txt"), 2, "fewer than one window", write("short.txt", "tiny\n")),
    Case("lm-p-too-large", (*LM, "data.data_dir={tmp}/t.txt", "pruning.p=[9]"), 2, "allows at most 4", write("t.txt", LM_TEXT)),
    Case("lm-synflow", (*LM, "data.data_dir={tmp}/t.txt", "pruning.criteria=[synflow]"), 2, "does not apply to a language model", write("t.txt", LM_TEXT)),
    Case("lm-accepted", (*LM, "data.data_dir={tmp}/t.txt"), 0, "5 runs", write("t.txt", LM_TEXT)),
    Case("export-hf-not-a-run", ("export-hf", "{tmp}", "{tmp}/out"), 2, "is not a run directory"),
    # -- brackets in user text reach the message intact
    Case("out-with-brackets", (*PRUNE, "--out", "out[new]"), 2, "out[new] already exists", folder("out[new]")),
    Case("protect-with-brackets", (*PRUNE, "--protect", "[x]", "--out", "{tmp}/t"), 2, "no residual block named '[x]'"),
    # -- the same rule everywhere
    Case("prune-p-0", (*PRUNE[:-2], "-p", "0", "--out", "{tmp}/t"), 2, "-p must be >= 1"),
    # -- --overwrite replaces only a ticket folder layerlottery wrote (never the user's files)
    Case("prune-overwrite-user-folder", (*PRUNE, "--out", "{tmp}/mine", "--overwrite"), 2, "only replaces a ticket folder", folder("mine")),
    Case("prune-overwrite-working-folder", (*PRUNE, "--out", ".", "--overwrite"), 2, "current folder"),
]


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_cli_contract(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(tmp_path, monkeypatch)
    before = _files(tmp_path)
    result = CliRunner().invoke(app, [arg.replace("{tmp}", str(tmp_path)) for arg in case.args])
    assert result.exit_code == case.status, result.output
    assert case.message in result.output, result.output
    assert "Traceback" not in result.output
    if case.status == 2:
        assert result.stdout == "", "a refused command prints nothing but its error line"
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _files(tmp_path) == before, "a refused command or a dry run leaves nothing behind"


# ------------------------------------------------------------------ a disk that fills mid-training


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/3: file write failed"),
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    ],
    ids=["torch-zip-writer", "enospc"],
)
def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_file(tmp_path, monkeypatch, failure):
    from layerlottery.training.checkpoint import CHECKPOINT_KEYS, CheckpointError, save_checkpoint, save_snapshot

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")  # torch has written part of the file when the disk fills
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {key: 0 for key in CHECKPOINT_KEYS if key != "format"})
    message = str(info.value)
    assert str(path) in message and "free space" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="free space"):
        save_snapshot(tmp_path / "epoch_000.pt", torch.nn.Linear(2, 2), 0)
    assert list(tmp_path.iterdir()) == [], "no partial or temporary file is left"
