"""Robustness of finished runs: clean, corrupted, shifted and adversarial accuracy, stored in each run directory.

A run is evaluated on the test split it was trained against, rebuilt from its ``settings.json`` (the same
dataset, options and files), as uint8 images turned into floats in [0, 1]; the network sees them through
``Normalized(model, mean, std)`` with the training set's statistics, so corruptions and attacks work in pixels.

* **clean** accuracy on the evaluated images;
* **corruptions**: ``generated`` ones (:func:`~layerlottery.robustness.corruptions.corrupt`, any dataset) or the
  published CIFAR-10-C images (``cifar10c``, CIFAR-10 runs), at each severity;
* **shift**: published shifted test sets (CIFAR-10.2, CIFAR-10 runs);
* **attacks**: FGSM / PGD (:func:`~layerlottery.robustness.attacks.perturb`) on the first ``attack_samples``
  evaluated images.

Paired comparison: the evaluated images (a subset drawn from ``seed`` when ``max_samples`` is set), the noise of
every generated corruption and the random starts of every attack depend only on the seed, the part and the image
chunk (:data:`CHUNK` images, whatever the batch size), so every run of an experiment sees the very same images
(on the same kind of device: CPU and CUDA generators draw differently).

Results go to ``robustness.json`` in the run directory::

    {"format": 1, "run": "<run dir name>",
     "clean": {"accuracy": 0.991, "samples": 2000, ...},
     "corruptions": {"gaussian_noise": {"family": "noise", "source": "generated", "samples": 2000, ...,
                                        "accuracy": {"1": 0.98, ..., "5": 0.85}}, ...},
     "mean_corruption_accuracy": 0.93,       # over the corruptions and severities present
     "shift": {"cifar102": {"accuracy": 0.85, "samples": 2000, ...}},
     "attacks": {"<Attack.key>": {"attack": "pgd", "norm": "linf", "eps": 0.1, ..., "accuracy": 0.12}},
     "evaluation": {...}}                    # the settings of the call that last wrote the file

accuracies as fractions, one part (the clean accuracy, one corruption at one severity, one shifted set, one
attack) at a time, written atomically as soon as it is computed. Each part stores the settings that decide its result (sample limit, subset seed, noise
seed, source); a part already stored with the same settings is never recomputed, so a second call computes
nothing, an interrupted one resumes, and changed settings recompute only the parts they change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from layerlottery.atomic import atomic_write_text
from layerlottery.config import DataSettings, RobustnessSettings, from_dict, to_dict
from layerlottery.data import ImageDataset, get_dataset
from layerlottery.data.loader import epoch_seed
from layerlottery.devices import resolve_device
from layerlottery.errors import ConfigError, DataError, LayerLotteryError
from layerlottery.experiments.runs import RunDir, RunSpec
from layerlottery.robustness.attacks import Attack, Normalized, perturb
from layerlottery.robustness.corruptions import corrupt, family_of
from layerlottery.robustness.progress import EvaluationProgress
from layerlottery.robustness.settings import (
    CIFAR10,
    CIFAR10C,
    CIFAR102,
    GENERATED,
    check_robustness_settings,
    resolve_attacks,
    resolve_corruptions,
    resolve_severities,
)
from layerlottery.robustness.summary import ROBUSTNESS_FILE, empty_record, read_record, summarize_record
from layerlottery.threads import training_threads

CHUNK = 256
"""Images per draw of corruption noise and attack starts: results do not depend on the batch size."""
Log = Callable[[str], None]

# Families of the CIFAR-10-C corruptions the generated set lacks (Hendrycks & Dietterich 2019, Figure 1).
PUBLISHED_FAMILIES = {
    "speckle_noise": "noise", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "spatter": "weather",
    "elastic_transform": "digital", "saturate": "digital",
}  # fmt: skip


@dataclass(frozen=True)
class RunEvaluation:
    """One evaluated run: its directory, its ``robustness.json`` contents, and how many parts this call computed."""

    path: Path
    label: str
    kind: str
    seed: int
    record: dict[str, Any]
    computed: int


# ------------------------------------------------------------------------------------------ runs


def find_runs(paths: Iterable[str | os.PathLike[str]], log: Log = print) -> list[RunDir]:
    """The finished runs at ``paths``: run directories, or runs directories (every finished run inside).

    A named run directory that is not finished, or a path that is no run, is a :class:`DataError`; inside a
    runs directory unfinished runs are skipped with a note.
    """
    found: list[RunDir] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not (path / "settings.json").exists() and any(path.glob("*/settings.json")):
            runs = [open_run(child) for child in sorted(path.glob("*/result.json"))]
            skipped = len(list(path.glob("*/settings.json"))) - len(runs)
            if skipped:
                log(f"note: {skipped} unfinished run(s) in {path} skipped")
            if not runs:
                raise DataError(f"{path} holds no finished run (no */result.json); finish its experiment first")
            found += runs
        else:
            found.append(open_run(path))
    unique = {run_dir.path.resolve(): run_dir for run_dir in found}
    return list(unique.values())


def open_run(path: str | os.PathLike[str]) -> RunDir:
    """The finished run in directory ``path`` (or ``path``'s directory when it names a file in it)."""
    from layerlottery.reports.collect import read_settings_record

    path = Path(path)
    if path.is_file() and path.name in ("result.json", "settings.json"):
        path = path.parent
    if not path.is_dir():
        raise DataError(f"{path} is not a run directory (no such folder); pass a folder such as runs/dense-1a2b3c4d5e6f")
    settings_file = path / "settings.json"
    if not settings_file.is_file():
        raise DataError(f"{path} is not a run directory (no settings.json); pass a folder such as runs/dense-1a2b3c4d5e6f")
    record = read_settings_record(settings_file)
    try:
        spec = from_dict(RunSpec, record["settings"])
    except (LayerLotteryError, TypeError) as exc:
        raise DataError(f"{settings_file} does not describe a run ({exc})") from None
    run_dir = RunDir(path.parent, spec)
    if run_dir.path.name != path.name:
        raise DataError(f"{path} holds the settings of run {spec.name}; rename the folder back to {spec.name}")
    if not run_dir.is_finished():
        raise DataError(
            f"run {path} has not finished (no result.json), so it has no final network; finish it (rerun its "
            "experiment) before evaluating it"
        )
    run_dir.read_result()  # a broken result.json: one line naming it
    return run_dir


# ---------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """One stored result: the clean accuracy, a corruption at a severity, a shifted set, or an attack."""

    section: str
    """``clean``, ``corruptions``, ``shift`` or ``attacks``: where it lives in robustness.json."""
    name: str = ""
    severity: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    """The settings that decide the result, stored beside it: a part is done when they match."""
    indices: torch.Tensor | None = None
    """Which test images (None = all, in order)."""
    attack: Attack | None = None

    @property
    def samples(self) -> int:
        return int(self.fields["samples"])

    @property
    def label(self) -> str:
        if self.section == "clean":
            return "clean"
        if self.section == "corruptions":
            return f"{self.name} severity {self.severity}"
        if self.section == "shift":
            return self.name
        return f"attack {self.name}"

    @property
    def cost(self) -> float:
        """Work units for the progress bar: images, times the forward-backward passes of an attack."""
        passes = self.attack.steps * self.attack.restarts if self.attack is not None else 1
        return float(self.samples * passes)


def subset_indices(size: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """The evaluated images of a ``size``-image test set: all (None) or ``limit`` drawn from ``seed``, sorted."""
    if limit is None or limit >= size:
        return None
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def _subset_fields(size: int, limit: int | None, seed: int) -> dict[str, Any]:
    everything = limit is None or limit >= size
    return {"samples": size if everything else limit, "max_samples": None if everything else limit, "subset_seed": None if everything else seed}


def plan_parts(
    settings: RobustnessSettings, test: ImageDataset, data_name: str, published_sizes: Mapping[str, int] | None = None
) -> list[Part]:
    """Every part ``settings`` ask of a run whose test split is ``test`` (of dataset ``data_name``), in order.

    ``published_sizes`` gives the number of images of each published set used (``cifar10c``, ``cifar102``).
    """
    seed, sizes = settings.seed, dict(published_sizes or {})
    parts = [Part("clean", fields=_subset_fields(len(test), settings.max_samples, seed),
                  indices=subset_indices(len(test), settings.max_samples, seed))]  # fmt: skip
    names = resolve_corruptions(settings.corruptions, settings.source) if settings.corruptions else ()
    if (names and settings.source == CIFAR10C or settings.shift) and data_name != CIFAR10:
        raise ConfigError(
            f"the published sets (source cifar10c, shift cifar102) hold CIFAR-10 test images, but this run trained "
            f"on {data_name}; use --source generated and no --shift"
        )
    severities = resolve_severities(settings.severities)
    for name in names:
        generated = settings.source == GENERATED
        size = len(test) if generated else sizes[CIFAR10C]
        fields = {
            "family": corruption_family(name), "source": settings.source,
            **_subset_fields(size, settings.max_samples, seed),
            "seed": seed if generated else None,  # the noise seed; published images have none
        }
        indices = subset_indices(size, settings.max_samples, seed)
        parts += [Part("corruptions", name, severity, fields, indices) for severity in severities]
    for name in settings.shift:
        size = sizes[name]
        parts.append(Part("shift", name, fields=_subset_fields(size, settings.max_samples, seed),
                          indices=subset_indices(size, settings.max_samples, seed)))  # fmt: skip
    for attack in resolve_attacks(settings.attacks, test.in_channels):
        fields = {
            "attack": attack.name, "norm": attack.norm, "eps": attack.eps, "alpha": attack.alpha, "steps": attack.steps,
            "restarts": attack.restarts, **_subset_fields(len(test), settings.attack_samples, seed), "seed": seed,
        }
        # The attacked images are the first of the same seeded order as the clean subset.
        indices = subset_indices(len(test), settings.attack_samples, seed)
        parts.append(Part("attacks", attack.key, fields=fields, indices=indices, attack=attack))
    return parts


def corruption_family(name: str) -> str:
    """The family of a corruption: the corruption module's, else CIFAR-10-C's grouping."""
    try:
        return family_of(name)
    except ConfigError:
        return PUBLISHED_FAMILIES.get(name, "other")


# --------------------------------------------------------------------------------------- record


def _entry(record: Mapping[str, Any], part: Part) -> Mapping[str, Any] | None:
    if part.section == "clean":
        return record.get("clean")
    return record.get(part.section, {}).get(part.name)


def _matches(entry: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    return entry is not None and all(entry.get(key) == value for key, value in fields.items())


def is_done(record: Mapping[str, Any], part: Part) -> bool:
    """Whether ``record`` holds ``part`` computed with the same settings."""
    entry = _entry(record, part)
    if not _matches(entry, part.fields):
        return False
    assert entry is not None
    if part.section == "corruptions":
        return str(part.severity) in entry.get("accuracy", {})
    return "accuracy" in entry


def store(record: dict[str, Any], part: Part, accuracy: float) -> None:
    """Put ``part``'s accuracy into ``record`` (replacing an entry computed with other settings)."""
    if part.section == "clean":
        record["clean"] = {"accuracy": accuracy, **part.fields}
        return
    entries = record.setdefault(part.section, {})
    if part.section == "corruptions":
        entry = entries.get(part.name)
        if not _matches(entry, part.fields):
            entry = {**part.fields, "accuracy": {}}
        levels = {**entry["accuracy"], str(part.severity): accuracy}
        entries[part.name] = {**entry, "accuracy": dict(sorted(levels.items(), key=lambda item: int(item[0])))}
    else:
        entries[part.name] = {**part.fields, "accuracy": accuracy}
    record["mean_corruption_accuracy"] = summarize_record(record).mean_corruption


def _accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    advance: Callable[[float], None] = lambda units: None,
) -> float:
    """Accuracy of ``model`` on uint8 ``images`` as [0, 1] floats, each chunk of :data:`CHUNK` images passed
    through ``transform(x, chunk_index)`` first (a corruption, an attack)."""
    correct = 0
    for index, start in enumerate(range(0, len(images), CHUNK)):
        x = images[start : start + CHUNK].to(device).float().div_(255.0)
        y = labels[start : start + CHUNK].to(device)
        if transform is not None:
            x = transform(x, index)
        with torch.inference_mode():
            for first in range(0, len(x), batch_size):
                logits = model(x[first : first + batch_size])
                correct += int((logits.argmax(1) == y[first : first + batch_size]).sum())
        advance(len(x))
    return correct / len(images)


def _chunk_generator(device: torch.device, seed: int, chunk: int, stream: str) -> torch.Generator:
    """The generator of one chunk of one part: a pure function of (seed, chunk, part), like the data loader's."""
    return torch.Generator(device=device).manual_seed(epoch_seed(seed, chunk, stream))


class _Evaluator:
    """Computes the parts of one run with its trained network (loaded on first need)."""

    def __init__(self, run_dir: RunDir, test: ImageDataset, settings: RobustnessSettings, device: torch.device,
                 published_root: str | None) -> None:  # fmt: skip
        self.run_dir, self.test, self.settings, self.device = run_dir, test, settings, device
        self.published_root = published_root
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from layerlottery.experiments.similarity import trained_run_network

            network = trained_run_network(self.run_dir, self.test, self.device)  # type: ignore[arg-type]
            self._model = Normalized(network, self.test.mean, self.test.std).to(self.device).eval()
        return self._model

    def compute(self, part: Part, advance: Callable[[float], None]) -> float:
        """``part``'s accuracy; ``advance(units)`` is called as the work goes (see :attr:`Part.cost`)."""
        images, labels = self._images(part)
        transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None
        if part.section == "corruptions" and part.fields["source"] == GENERATED:
            transform = self._corruption(part)
        elif part.section == "attacks":
            transform = self._attack(part, labels)
            passes = part.cost / part.samples
            counted = advance
            advance = lambda units: counted(units * passes)  # noqa: E731
        return _accuracy(self.model, images, labels, self.settings.batch_size, self.device, transform, advance)

    def _corruption(self, part: Part) -> Callable[[torch.Tensor, int], torch.Tensor]:
        name, severity, seed = part.name, int(part.severity or 0), self.settings.seed

        def corrupted(x: torch.Tensor, chunk: int) -> torch.Tensor:
            return corrupt(x, name, severity, generator=_chunk_generator(self.device, seed, chunk, f"{name}:{severity}"))

        return corrupted

    def _attack(self, part: Part, labels: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
        attack, seed = part.attack, self.settings.seed
        assert attack is not None

        def attacked(x: torch.Tensor, chunk: int) -> torch.Tensor:
            y = labels[chunk * CHUNK : (chunk + 1) * CHUNK].to(self.device)
            return perturb(self.model, x, y, attack, generator=_chunk_generator(self.device, seed, chunk, attack.key))

        return attacked

    def _images(self, part: Part) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.test
        if part.section == "corruptions" and part.fields["source"] == CIFAR10C:
            from layerlottery.data.cifar10c import load_cifar10c

            dataset = load_cifar10c(part.name, int(part.severity or 0), root=self.published_root)
        elif part.section == "shift":
            from layerlottery.data.cifar102 import load_cifar102

            dataset = load_cifar102("test", root=self.published_root)
        if part.indices is None:
            return dataset.images, dataset.labels
        return dataset.images[part.indices], dataset.labels[part.indices]


# ------------------------------------------------------------------------------------ the entry point


@dataclass
class _Job:
    run_dir: RunDir
    test: ImageDataset
    record: dict[str, Any]
    pending: list[Part]
    published_root: str | None


class _TestSets:
    """Test splits loaded once per dataset, shared by the runs that trained on it."""

    def __init__(self, data_dir: str | os.PathLike[str] | None) -> None:
        self.data_dir = None if data_dir is None else str(data_dir)
        self._loaded: dict[str, ImageDataset] = {}

    def root(self, data: DataSettings) -> str | None:
        return self.data_dir if self.data_dir is not None else data.data_dir

    def get(self, data: DataSettings) -> ImageDataset:
        if data.name == "folder":
            raise DataError("robustness evaluation needs a dataset held in memory, not an image folder (data.name=folder)")
        key = json.dumps([data.name, to_dict(data)["options"], self.root(data)], sort_keys=True, default=str)
        if key not in self._loaded:
            # As the run's data source loads it (no seed: a split never moves with the seed).
            self._loaded[key] = get_dataset(data.name, split="test", data_dir=self.root(data), **dict(data.options))
        return self._loaded[key]


def _published_sizes(settings: RobustnessSettings, data_name: str, root: str | None) -> dict[str, int]:
    """How many images the published sets a CIFAR-10 run is evaluated on hold (each opened once here, so a
    missing or corrupt archive stops the evaluation before any work)."""
    if data_name != CIFAR10:
        return {}
    sizes = {}
    if settings.corruptions and settings.source == CIFAR10C:
        from layerlottery.data.cifar10c import load_cifar10c

        severity = resolve_severities(settings.severities)[0]  # one file per corruption holds every severity
        lengths = {len(load_cifar10c(name, severity, root=root)) for name in resolve_corruptions(settings.corruptions, CIFAR10C)}
        if len(lengths) > 1:
            raise DataError(f"the CIFAR-10-C files under {root} hold different numbers of images ({sorted(lengths)}); extract the archive again")
        sizes[CIFAR10C] = lengths.pop()
    if settings.shift:
        from layerlottery.data.cifar102 import load_cifar102

        sizes[CIFAR102] = len(load_cifar102("test", root=root))
    return sizes


def evaluate_runs(
    paths: Sequence[str | os.PathLike[str]],
    settings: RobustnessSettings | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Log = print,
) -> list[RunEvaluation]:
    """Evaluate the finished runs at ``paths`` (run directories, or runs directories) and store the results.

    Everything is checked before any computation (settings, every run finished, its data): a mistake is one
    :class:`~layerlottery.errors.LayerLotteryError` and nothing is written. Then each run's missing parts are
    computed and written to its ``robustness.json`` one at a time. ``data_dir`` overrides where the runs'
    dataset files (and the published CIFAR-10-C / CIFAR-10.2 sets) are looked for.
    """
    settings = settings or RobustnessSettings()
    check_robustness_settings(settings)
    device = resolve_device(settings.device, "robustness.device / --device")
    runs = find_runs(paths, log)
    tests = _TestSets(data_dir)
    jobs = []
    for run_dir in runs:
        data = run_dir.spec.data
        test = tests.get(data)
        parts = plan_parts(settings, test, data.name, _published_sizes(settings, data.name, tests.root(data)))
        record = read_record(run_dir.path / ROBUSTNESS_FILE) or empty_record(run_dir.spec.name)
        jobs.append(_Job(run_dir, test, record, [p for p in parts if not is_done(record, p)], tests.root(data)))
    evaluation = _evaluation_record(settings, device)
    results = []
    total = sum(part.cost for job in jobs for part in job.pending)
    with training_threads(), EvaluationProgress(progress, total) as bar:  # LAYERLOTTERY_THREADS, as training
        for job in jobs:
            evaluator = _Evaluator(job.run_dir, job.test, settings, device, job.published_root)
            for part in job.pending:
                description = f"{job.run_dir.spec.label}: {part.label}"
                bar.start_part(description)
                accuracy = evaluator.compute(part, bar.advance)
                store(job.record, part, accuracy)
                job.record["evaluation"] = evaluation
                atomic_write_text(job.run_dir.path / ROBUSTNESS_FILE, json.dumps(job.record, indent=2) + "\n")
                bar.finish_part(description, accuracy)
            spec = job.run_dir.spec
            results.append(RunEvaluation(job.run_dir.path, spec.label, spec.kind, spec.seed, job.record, len(job.pending)))
    return results


def evaluate_run(path: str | os.PathLike[str], settings: RobustnessSettings | None = None, **options: Any) -> RunEvaluation:
    """:func:`evaluate_runs` for one run directory."""
    (result,) = evaluate_runs([path], settings, **options)
    return result


def _evaluation_record(settings: RobustnessSettings, device: torch.device) -> dict[str, Any]:
    """The settings of the call that last wrote the file (each part also stores its own)."""
    recorded = {k: v for k, v in to_dict(settings).items() if k != "after_training"}
    return {**recorded, "chunk": CHUNK, "device": device.type}
