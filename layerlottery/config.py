"""Typed settings: the single source of truth for every setting of an experiment.

Settings are frozen dataclasses. YAML presets and command-line overrides (``train.epochs=30``) are
checked against them, and every value is validated before any work starts (one clear line on error).
A run is named by :func:`settings_hash`, a hash of its settings *with defaults left out*, so adding a
new setting whose default keeps the old behaviour keeps every existing run's name.

Fields whose metadata says ``hash=False`` (where files live, which device, how often to print) do not
change a run's result and are left out of the hash too.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from layerlottery.errors import ConfigError

T = TypeVar("T")


def _not_hashed(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A setting that does not change results (paths, device, logging): kept out of the run hash."""
    return field(default=default, metadata={"hash": False}, **kwargs)


@dataclass(frozen=True)
class ModelSettings:
    """Which network: a registered model name and its options."""

    name: str = "cifar_resnet32"
    """A registered model (``layerlottery models``) or ``PREFIX:IDENTIFIER`` of another library's network:
    ``torchvision:resnet50``, ``timm:vit_tiny_patch16_224``, ``hf:gpt2`` (see ``layerlottery.models.registry``)."""
    shortcut: str = "B"
    """A (zero-padded identity) or B (1x1 projection, the paper's framework); the CIFAR ResNets only."""
    zero_init_residual: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    """Further options of the model's factory, e.g. ``{"pretrained": true}`` for ``hf:...``."""

    def validate(self) -> None:
        from layerlottery.models.registry import check_model_name

        check_model_name(self.name)
        if self.shortcut not in ("A", "B"):
            raise ConfigError(f"model.shortcut must be 'A' or 'B', not {self.shortcut!r}")

    def factory_options(self) -> dict[str, Any]:
        """The options every build of this model passes to its factory (the data's shape is added by the caller)."""
        return {"shortcut": self.shortcut, "zero_init_residual": self.zero_init_residual, **self.options}

    def structure_options(self) -> dict[str, Any]:
        """:meth:`factory_options` without those that load downloaded weights (``weights``, ``pretrained``): the
        same blocks, for checks that read the network's structure and must download nothing (``run --dry-run``)."""
        return {key: value for key, value in self.factory_options().items() if key not in PRETRAINED_WEIGHT_OPTIONS}


PRETRAINED_WEIGHT_OPTIONS = ("weights", "pretrained")
"""``model.options`` of the torchvision/timm/Hugging Face sources that load pretrained (downloaded) weights."""


@dataclass(frozen=True)
class DataSettings:
    """Which data, and how training batches are augmented."""

    name: str = "cifar10"
    """A registered dataset (synthetic, digits, mnist, cifar10, cifar100); ``folder``: images in
    ``data_dir/train/<class>/`` and ``data_dir/val/<class>/`` (ImageNet layout), read by DataLoader workers;
    or ``text``: a UTF-8 text file or a folder with train.txt and test.txt, for language models
    (``options``: ``seq_len``, ``tokenizer``, ``test_fraction``; see ``layerlottery.data.text``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Options of the dataset loader, e.g. ``{"train_fraction": 0.8}`` for the MNIST test set."""
    augment: bool = True
    """Pad + random crop + horizontal flip on training batches (the paper's augmentation)."""
    padding: int = 4
    flip: bool = True
    image_size: int = 224
    """Side of the crops taken from an image folder (``folder`` only)."""
    data_dir: str | None = _not_hashed(None)
    workers: int = _not_hashed(4)
    """DataLoader workers, for image folders only (in-memory datasets need none)."""

    def validate(self) -> None:
        from layerlottery.data import list_datasets

        if self.name not in ("folder", "text") and self.name not in list_datasets():
            known = ", ".join([*list_datasets(), "folder", "text"])
            raise ConfigError(f"data.name: unknown dataset {self.name!r}; choose one of: {known}")
        if self.name == "folder" and not self.data_dir:
            raise ConfigError("data.name=folder needs data.data_dir, the folder holding train/ and val/")
        if self.padding < 0:
            raise ConfigError(f"data.padding must be >= 0, not {self.padding}")
        if self.image_size < 1:
            raise ConfigError(f"data.image_size must be >= 1, not {self.image_size}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, not {self.workers}")


SCHEDULES = ("multistep", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainSettings:
    """How a network is trained. Defaults: the authors' scripts (PAPER.md), 200 epochs of SGD + Nesterov."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    """sgd (with momentum and Nesterov, the paper's) or adamw (decoupled weight decay, torch's default betas; what
    transformers are trained with: SGD barely moves a language model in a few epochs). AdamW ignores momentum and
    nesterov, and on CUDA runs its fused kernel eagerly (the CUDA-graph step captures SGD only)."""
    schedule: str = "multistep"
    """multistep (lr x gamma at each milestone), cosine (to 0 at the last epoch) or constant."""
    milestones: tuple[float, ...] = (0.5, 0.75)
    """Fractions of the epochs at which multistep multiplies the lr by gamma (100 and 150 of 200)."""
    gamma: float = 0.1
    snapshot_epochs: tuple[int, ...] = _not_hashed(())
    """Epochs after which the weights are kept for rewinding (0 = the initialization). Not hashed: keeping a
    copy of the weights changes no result, so a dense run keeps its name (and is trained once) whichever
    rewind points an experiment asks of it; a missing snapshot is reported before any ticket trains."""
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on CUDA; ignored on the CPU."""
    channels_last: bool = True
    """Channels-last memory format on CUDA; ignored on the CPU."""
    compile: bool = False
    """torch.compile the model (time spent compiling is not counted as training time)."""
    cuda_graphs: bool = _not_hashed(True)
    """On CUDA, capture the whole training step in one CUDA graph and replay it (see
    ``layerlottery.training.graphed``); where graphs cannot apply (CPU, ``compile`` on, a failed capture) the
    step runs eagerly and the reason is logged once. Not hashed: a replay runs the very kernels of the eager
    step, with the same fused SGD (which CUDA training uses with or without graphs), so the result differs
    from eager only in rounding, as between two GPUs; the device is not hashed either."""
    eval_every: int = _not_hashed(1)
    device: str = _not_hashed("auto")
    """cpu, cuda, cuda:N or auto."""
    tensorboard: bool = _not_hashed(False)
    """Stream per-epoch loss, accuracy, lr and images/s to TensorBoard (``<run dir>/tensorboard/``); needs
    ``pip install 'layerlottery[tensorboard]'``. Not hashed: logging changes no result."""

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"train.epochs must be >= 1, not {self.epochs}"),
            (self.batch_size >= 1, f"train.batch_size must be >= 1, not {self.batch_size}"),
            (self.lr > 0, f"train.lr must be > 0, not {self.lr}"),
            (0 <= self.momentum < 1, f"train.momentum must be in [0, 1), not {self.momentum}"),
            (not self.nesterov or self.momentum > 0, "train.nesterov needs train.momentum > 0"),
            (self.weight_decay >= 0, f"train.weight_decay must be >= 0, not {self.weight_decay}"),
            (self.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}"),
            (all(0 < m < 1 for m in self.milestones), f"train.milestones are fractions of the epochs in (0, 1), not {list(self.milestones)}"),
            (list(self.milestones) == sorted(self.milestones), f"train.milestones must increase, not {list(self.milestones)}"),
            (0 < self.gamma <= 1, f"train.gamma must be in (0, 1], not {self.gamma}"),
            (all(0 <= e <= self.epochs for e in self.snapshot_epochs), f"train.snapshot_epochs must lie in 0..{self.epochs}, not {list(self.snapshot_epochs)}"),
            (self.eval_every >= 1, f"train.eval_every must be >= 1, not {self.eval_every}"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), f"train.device must be auto, cpu, cuda or cuda:N, not {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.tensorboard:
            from layerlottery.training.tensorboard import require_tensorboard

            require_tensorboard()  # before any run starts, not after the first one trained

    def milestone_epochs(self) -> list[int]:
        """The milestones as epoch numbers, e.g. [100, 150] for 200 epochs."""
        return [round(m * self.epochs) for m in self.milestones]


def check_criteria(
    section: str, criteria: tuple[str, ...], criterion_options: Mapping[str, Mapping[str, Any]]
) -> None:
    """Every name in ``criteria`` is a registered criterion, and ``criterion_options`` names only those, with
    valid options; a mistake is one ConfigError prefixed with ``section`` (``pruning``, ``lottery``)."""
    from layerlottery.criteria import get_criterion

    try:
        for name in criteria:
            get_criterion(name)  # unknown names raise a ConfigError listing the criteria
        for name, options in criterion_options.items():
            if name not in criteria:
                raise ConfigError(f"{name!r} is not in {section}.criteria")
            get_criterion(name).resolve_options(dict(options))
    except ConfigError as exc:
        raise ConfigError(f"{section}: {exc}") from None


@dataclass(frozen=True)
class PruningSettings:
    """Tickets at initialization: which criteria, how many blocks, how they are chosen."""

    criteria: tuple[str, ...] = ("snip", "grasp")
    p: tuple[int, ...] = (1, 2, 3, 4, 5)
    """Numbers of blocks to remove (the paper's p), one ticket each."""
    samples_per_class: int = 10
    """Class-balanced scoring samples per class (GraSP reference: 10)."""
    protect: str = "first"
    """first (of each stage, the paper's), none, or comma-separated block names."""
    min_per_stage: int = 2
    selection: str = "greedy"
    """greedy (the p lowest-scoring blocks, the paper's) or contiguous (the run of p adjacent blocks of one stage
    with the lowest summed score, as ShortGPT drops consecutive layers); see ``layerlottery.surgery.select``."""
    criterion_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options per criterion, e.g. ``{"grasp": {"variant": "abs"}}``; recorded in every plan."""
    filter_baseline: bool = False
    """Beside each (criterion, p) layer ticket, also train the filter-pruning baseline (the paper's Table 3):
    the same criterion's scores summed per filter, as many filters removed from the blocks' first convs as
    the layer ticket has fewer. SNIP and GraSP only (they have per-weight scores)."""

    def validate(self) -> None:
        if not self.criteria:
            raise ConfigError("pruning.criteria is empty; name at least one criterion, e.g. [grasp]")
        check_criteria("pruning", self.criteria, self.criterion_options)
        if not self.p or min(self.p) < 1:
            raise ConfigError(f"pruning.p must list block counts >= 1, not {list(self.p)}")
        if self.samples_per_class < 1:
            raise ConfigError(f"pruning.samples_per_class must be >= 1, not {self.samples_per_class}")
        if self.min_per_stage < 0:
            raise ConfigError(f"pruning.min_per_stage must be >= 0, not {self.min_per_stage}")
        _check_selection_rule("pruning", self.selection)
        if self.filter_baseline:
            from layerlottery.criteria.filters import FILTER_CRITERIA

            unsupported = [name for name in self.criteria if name not in FILTER_CRITERIA]
            if unsupported:
                raise ConfigError(
                    f"pruning.filter_baseline scores filters with {' or '.join(FILTER_CRITERIA)} only, not "
                    f"{', '.join(unsupported)}; remove {', '.join(unsupported)} from pruning.criteria or set "
                    "pruning.filter_baseline=false"
                )


@dataclass(frozen=True)
class LotterySettings:
    """The paper's Algorithm 1: lottery tickets after training, with rewinding. Off while ``criteria`` is empty.

    Per seed the dense network is trained once (the same run Algorithm 2 compares with); its final weights
    are scored with each criterion, the p weakest blocks go, the kept weights are rewound to a snapshot of
    the dense training, and the ticket trains the remaining epochs on the same schedule.
    """

    criteria: tuple[str, ...] = ()
    """Criteria that score the trained network (any registered one); empty = Algorithm 1 off."""
    p: tuple[int, ...] = (1,)
    """Numbers of blocks to remove, one ticket each (per criterion and rewind point)."""
    rewind_fractions: tuple[float, ...] = ()
    """Rewind points as fractions of ``train.epochs`` in [0, 1), rounded to the nearest epoch (the paper:
    0, 0.25, 0.5, 0.75)."""
    rewind_epochs: tuple[int, ...] = ()
    """Rewind points as epoch numbers in 0 .. train.epochs - 1 (0 = the initialization theta_0)."""
    control: bool = False
    """Also train the paper's control: each pruned architecture re-initialized at random, full schedule."""
    rounds: int = 1
    """Iterative variant (beyond the paper): with rounds R >= 2, also prune k blocks per round for R rounds,
    each round scoring the previous round's trained ticket and rewinding to the same dense snapshot."""
    k: int = 1
    """Blocks removed per round of the iterative variant."""
    samples_per_class: int = 10
    """Class-balanced scoring samples per class for data criteria."""
    protect: str = "first"
    """first (of each stage, the paper's), none, or comma-separated block names."""
    min_per_stage: int = 2
    selection: str = "greedy"
    """greedy (the p lowest-scoring blocks) or contiguous (the lowest-scoring run of p adjacent blocks of one
    stage); each round of the iterative variant picks a run among the blocks still present."""
    criterion_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options per criterion, e.g. ``{"pls": {"components": 2}}``; recorded in every plan."""

    @property
    def enabled(self) -> bool:
        return bool(self.criteria)

    def rewind_points(self, epochs: int) -> tuple[int, ...]:
        """Every rewind point as an epoch number, sorted, duplicates merged (``0.25`` of 200 epochs is 50)."""
        return tuple(sorted({round(f * epochs) for f in self.rewind_fractions} | set(self.rewind_epochs)))

    def validate(self, train: TrainSettings) -> None:
        """Check the section against the training it rewinds into (``train.epochs``); no-op when off."""
        if not self.enabled:
            return
        check_criteria("lottery", self.criteria, self.criterion_options)
        bad_fractions = [f for f in self.rewind_fractions if not 0 <= f < 1]
        bad_epochs = [e for e in self.rewind_epochs if not 0 <= e < train.epochs]
        late = [f for f in self.rewind_fractions if 0 <= f < 1 and round(f * train.epochs) >= train.epochs]
        checks = [
            (not self.p or min(self.p) >= 1, f"lottery.p must list block counts >= 1, not {list(self.p)}"),
            (bool(self.p) or self.rounds > 1, "lottery.p is empty and lottery.rounds is 1: there is no ticket to train"),
            (bool(self.rewind_fractions or self.rewind_epochs), "lottery needs a rewind point: set lottery.rewind_fractions (e.g. [0, 0.25, 0.5, 0.75]) or lottery.rewind_epochs"),
            (not bad_fractions, f"lottery.rewind_fractions must lie in [0, 1), not {bad_fractions} (1 is the end of training: nothing left to retrain)"),
            (not late, f"lottery.rewind_fractions {late} of {train.epochs} epochs round to the last epoch: nothing left to retrain"),
            (not bad_epochs, f"lottery.rewind_epochs {bad_epochs} lie past the training: rewind to an epoch in 0..{train.epochs - 1} (train.epochs = {train.epochs})"),
            (self.rounds >= 1, f"lottery.rounds must be >= 1 (1 = one-shot only), not {self.rounds}"),
            (self.k >= 1, f"lottery.k must be >= 1, not {self.k}"),
            (self.samples_per_class >= 1, f"lottery.samples_per_class must be >= 1, not {self.samples_per_class}"),
            (self.min_per_stage >= 0, f"lottery.min_per_stage must be >= 0, not {self.min_per_stage}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        _check_selection_rule("lottery", self.selection)


def _check_selection_rule(section: str, selection: str) -> None:
    from layerlottery.surgery.select import check_selection

    check_selection(selection, f"{section}.selection")


@dataclass(frozen=True)
class CarbonSettings:
    """Energy and CO2 measurement with CodeCarbon (offline). Measurement never changes results: not hashed."""

    enabled: bool = True
    country_iso_code: str = "USA"
    """Three-letter country code whose grid mix converts energy into CO2."""
    grid_intensity_g_per_kwh: float | None = None
    """A fixed carbon intensity instead of the country's mix."""

    def validate(self) -> None:
        code = self.country_iso_code
        if not (isinstance(code, str) and len(code) == 3 and code.isalpha()):
            raise ConfigError(f"carbon.country_iso_code must be a three-letter code such as USA or FRA, not {code!r}")
        if self.grid_intensity_g_per_kwh is not None and self.grid_intensity_g_per_kwh < 0:
            raise ConfigError(f"carbon.grid_intensity_g_per_kwh must be >= 0, not {self.grid_intensity_g_per_kwh}")


@dataclass(frozen=True)
class RobustnessSettings:
    """How finished runs are evaluated for robustness (``layerlottery robustness``, or after an experiment's runs
    when ``after_training`` is on). Evaluation never changes a run's result: not hashed. See
    :mod:`layerlottery.robustness.evaluate`."""

    after_training: bool = False
    """Evaluate every finished run of the experiment after its runs (and CKA); a rerun computes nothing."""
    corruptions: tuple[str, ...] = ("all",)
    """Corruption names (gaussian_noise, ...), families (noise, blur, digital) or ``all``; ``[]`` = none."""
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    source: str = "generated"
    """``generated`` (corruptions applied on the fly, any dataset) or ``cifar10c`` (the published CIFAR-10-C
    images; CIFAR-10 runs only)."""
    shift: tuple[str, ...] = ()
    """Published shifted test sets: ``[cifar102]`` (CIFAR-10.2; CIFAR-10 runs only)."""
    attacks: tuple[str, ...] = ("auto",)
    """Attack specs such as ``pgd:linf:eps=8/255:steps=10``; ``auto`` = PGD L-inf, 10 steps, eps 0.07 on
    grayscale data and 1/255 on colour data (see :mod:`layerlottery.robustness.settings`); ``[]`` = none."""
    max_samples: int | None = None
    """Test images for clean and corruption accuracy (a fixed seeded subset); None = the whole test split."""
    attack_samples: int | None = 500
    """Test images attacked (the first of the same subset); attacks are expensive on a CPU. None = all."""
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    """Seeds the subset, the corruption noise and random attack starts: every run sees the same images."""

    def validate(self, data_name: str | None = None) -> None:
        """Check the section (``data_name``: the experiment's dataset, for the CIFAR-10-only sources)."""
        from layerlottery.robustness.settings import check_robustness_settings

        check_robustness_settings(self, data_name)


@dataclass(frozen=True)
class ExperimentSettings:
    """One experiment, per seed: the dense network and every ticket, at initialization (Algorithm 2, the
    ``pruning`` section) or after training with rewinding (Algorithm 1, when the ``lottery`` section is on)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    pruning: PruningSettings = field(default_factory=PruningSettings)
    lottery: LotterySettings = field(default_factory=LotterySettings)
    """Algorithm 1 (tickets after training, with rewinding). When on, an experiment runs the dense networks and
    these tickets; the ``pruning`` section (Algorithm 2) is then not used."""
    seeds: tuple[int, ...] = (0,)
    name: str = _not_hashed("experiment")
    xi: float = _not_hashed(0.0)
    """A ticket wins when its accuracy + xi >= the dense accuracy (the paper: xi = 0)."""
    carbon: CarbonSettings = _not_hashed(default_factory=CarbonSettings)
    robustness: RobustnessSettings = _not_hashed(default_factory=RobustnessSettings)
    """Robustness of the finished runs (corruptions, shifted test sets, attacks); off unless ``after_training``."""
    runs_dir: str = _not_hashed("runs")
    """Where run directories live; each is named by the hash of its settings."""

    def validate(self) -> None:
        # Settings built in Python skip from_dict; its type checks (finite floats, whole numbers) apply here.
        from_dict(ExperimentSettings, to_dict(self))
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds repeat: {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "seeds")
        check_margin(self.xi)
        # The name becomes a file name in runs_dir (NAME-table.md): a path would write elsewhere.
        if not NAME_PATTERN.fullmatch(self.name) or self.name in (".", ".."):
            raise ConfigError(
                f"name must be a plain file name of letters, digits, '-', '_' and '.', not {self.name!r}"
            )
        if not self.runs_dir:
            raise ConfigError("runs_dir is empty; name the folder for run directories, e.g. runs")
        for part in (self.model, self.data, self.train, self.pruning, self.carbon):
            part.validate()
        self.robustness.validate(self.data.name)
        self.lottery.validate(self.train)


# ------------------------------------------------------------------------------------ dict conversion


def to_dict(settings: Any) -> dict[str, Any]:
    """Every field, nested, as plain JSON/YAML data (tuples become lists)."""
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def hashed_dict(settings: Any) -> dict[str, Any]:
    """The fields that name a run: those that differ from their default and affect results, nested."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        if not f.metadata.get("hash", True):
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested = hashed_dict(value)
            if nested:
                result[f.name] = nested
        elif _plain(value) != _plain(_default_of(f)):
            result[f.name] = _plain(value)
    return result


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def settings_hash(settings: Any, length: int = 12) -> str:
    """A short, stable name for ``settings``: SHA-256 of the canonical JSON of :func:`hashed_dict`."""
    canonical = json.dumps(hashed_dict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build settings of type ``cls`` from nested plain data, checking names and types; defaults fill gaps."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'settings'} must be a mapping of names to values, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown setting {path}{_suggest(str(key), fields)}")
        values[key] = _coerce(hints[key], raw, path)
    return cls(**values)


def _suggest(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


def _coerce(hint: Any, raw: Any, path: str) -> Any:
    """Check ``raw`` against the type ``hint`` (and convert lists to tuples, ints to floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, raw, path)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], raw, path)
    if origin is tuple:
        items = raw if isinstance(raw, (list, tuple)) else [raw]  # "p: 3" means (3,)
        return tuple(_coerce(args[0], item, f"{path}[{i}]") for i, item in enumerate(items))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path} must be a mapping, not {raw!r}")
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(value_hint, v, f"{path}.{k}") for k, v in raw.items()}
    if hint is Any:
        return raw
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{path} must be true or false, not {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{path} must be a whole number, not {raw!r}")
        return raw
    if hint is float:
        return _finite_float(raw, path)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{path} must be text, not {raw!r}")
        return raw
    raise TypeError(f"settings type {hint} of {path} is not supported")  # a bug in a settings class


def _finite_float(raw: Any, path: str) -> float:
    """A float setting: a number, or text holding one (YAML 1.1 reads ``1e-3`` as text); never NaN or inf.

    Every float setting passes here, so a NaN learning rate or an infinite weight decay is refused in one
    place instead of by each setting's own range check (NaN slips through every ``<``/``>`` comparison).
    """
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:  # an int too large for a float
            value = math.inf
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None:
        raise ConfigError(f"{path} must be a number, not {raw!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, not {raw!r}")
    return value


NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
SEED_LIMIT = 2**32
"""Seeds go to numpy and torch generators; numpy takes 0 <= seed < 2**32."""


def check_seed(seed: int, setting: str = "seed") -> int:
    """Refuse a seed numpy's and torch's generators cannot take, naming ``setting`` (e.g. ``--seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{setting} must be a whole number from 0 to {SEED_LIMIT - 1}, not {seed!r}")
    return seed


def check_margin(xi: float, setting: str = "xi") -> float:
    """The winning margin xi in accuracy points: finite and >= 0 (shared by ``run`` and ``report``)."""
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not math.isfinite(xi) or xi < 0:
        raise ConfigError(f"{setting} must be a finite number >= 0 (accuracy points), not {xi!r}")
    return float(xi)


# -------------------------------------------------------------------------------- presets, overrides


PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    """Names of the presets shipped with layerlottery."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_settings(preset: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentSettings:
    """Read a YAML preset (a shipped name such as ``quickstart`` or a path), apply ``key.path=value`` overrides,
    and validate the result. Every mistake is a :class:`ConfigError` naming the setting."""
    import yaml

    path = Path(preset)
    if not path.suffix and not path.exists():
        path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {preset} not found; give a YAML file or one of: {', '.join(list_presets())}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save the preset as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read preset {path} ({exc.strerror or exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold settings as 'section: value' lines (a mapping), not "
            f"{'a list' if isinstance(data, list) else repr(data)}"
        )
    for override in overrides:
        _apply_override(data, override)
    settings = from_dict(ExperimentSettings, data)
    settings.validate()
    return settings


def _apply_override(data: dict[str, Any], override: str) -> None:
    """``train.epochs=30`` or ``pruning.criteria=[snip,grasp]`` (values read as YAML) into nested ``data``."""
    import yaml

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.name=value, e.g. train.epochs=30")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def dump_settings(settings: Any) -> str:
    """Settings as YAML text (every field, resolved)."""
    import yaml

    return yaml.safe_dump(to_dict(settings), sort_keys=False)
