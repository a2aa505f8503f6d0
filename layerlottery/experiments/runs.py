"""Runs: one training job each (a dense network, or one ticket), in a directory named by its settings' hash.

A run directory holds::

    settings.json      the run's resolved settings (and the hash that names the directory)
    environment.json   versions, device, machine
    plan.json          the removal plan (tickets only), written before training
    filter_plan.json   the filter plan (filter-pruning baselines only), written before training
    similarity.json    linear CKA with the dense run of the same seed (tickets), written after training
    checkpoints/       last.pt (resume point) and rewind snapshots
    metrics.csv        rows (run, epoch, metric, value)
    result.json        the summary, written last: its presence means the run is finished

Every step looks for its output first, so rerunning a finished run does nothing and an interrupted one
resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from layerlottery import distributed
from layerlottery.config import DataSettings, ModelSettings, TrainSettings, hashed_dict, settings_hash, to_dict
from layerlottery.errors import DataError, LayerLotteryError
from layerlottery.atomic import atomic_write_text
from layerlottery.reports.results import RETRAIN_HINT, SIMILARITY_FILE, read_result_file
from layerlottery.surgery.plan import RemovalPlan

if TYPE_CHECKING:
    from layerlottery.surgery.filters import FilterPlan


@dataclass(frozen=True)
class TicketSpec:
    """How a ticket at initialization is found: criterion, p and the selection rules."""

    criterion: str
    p: int
    criterion_options: Mapping[str, Any] = field(default_factory=dict)
    samples_per_class: int = 10
    protect: str = "first"
    min_per_stage: int = 2
    selection: str = "greedy"
    """greedy or contiguous (``pruning.selection``); the default is left out of the hash, so runs keep their names."""
    structure: str = "layers"
    """``layers`` (p blocks removed) or ``filters``: the filter-pruning baseline of the layer ticket with the
    same fields, as many filters removed from the blocks' first convs as that ticket has fewer. The default
    is left out of the hash, so layer tickets keep their names."""


FILTERS = "filters"
"""``TicketSpec.structure`` and run kind of the filter-pruning baseline."""


@dataclass(frozen=True)
class LotterySpec:
    """How a lottery ticket after training (Algorithm 1) is made, beside its :class:`TicketSpec` (criterion,
    total p, selection rules): which trained run is scored, and where the kept weights come from."""

    dense: str
    """Name of the dense run of the same seed: its snapshots are what the kept weights are rewound to."""
    rewind_epoch: int
    """The kept weights are the dense run's after this many epochs (0 = theta_0), and training resumes there."""
    reinit: bool = False
    """The control: the pruned architecture re-initialized at random (rewind_epoch 0, the full schedule)."""
    source: str | None = None
    """The run whose final weights are scored: None = the dense run; the previous round's ticket when iterative."""
    round: int = 1
    """Round of the iterative variant (1 = one-shot: the same run as the one-shot ticket of that p)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result. Its hash (defaults left out) names the directory."""

    model: ModelSettings
    data: DataSettings
    train: TrainSettings
    seed: int = 0
    ticket: TicketSpec | None = None
    lottery: LotterySpec | None = None
    """Set for a ticket after training (Algorithm 1); None for dense runs and tickets at initialization."""

    @property
    def kind(self) -> str:
        if self.lottery is not None:
            return "lottery"
        if self.ticket is not None and self.ticket.structure == FILTERS:
            return FILTERS
        return "dense" if self.ticket is None else "ticket"

    @property
    def layer_ticket(self) -> RunSpec:
        """For a filter-pruning baseline: the layer ticket whose filter count it matches (same fields)."""
        assert self.ticket is not None
        return dataclasses.replace(self, ticket=dataclasses.replace(self.ticket, structure="layers"))

    @property
    def start_epoch(self) -> int:
        """The epoch training begins after: a rewound ticket replays the schedule from its rewind point."""
        return self.lottery.rewind_epoch if self.lottery is not None else 0

    @property
    def name(self) -> str:
        """Directory name: kind plus the settings hash, e.g. ``ticket-3fa2c1d09b7e``."""
        return f"{self.kind}-{settings_hash(self)}"

    @property
    def label(self) -> str:
        """A human-readable description, e.g. ``grasp p=3 seed 1``."""
        if self.ticket is None:
            return f"dense seed {self.seed}"
        if self.lottery is not None:
            rounds = f" ({self.lottery.round} rounds)" if self.lottery.round > 1 else ""
            start = "reinit" if self.lottery.reinit else f"rewind {self.lottery.rewind_epoch}"
            return f"{self.ticket.criterion} p={self.ticket.p}{rounds} {start} seed {self.seed}"
        if self.ticket.structure == FILTERS:
            return f"{self.ticket.criterion} filters as p={self.ticket.p} seed {self.seed}"
        return f"{self.ticket.criterion} p={self.ticket.p} seed {self.seed}"


def environment() -> dict[str, Any]:
    """Versions and hardware of this process, recorded beside every run."""
    import layerlottery

    info: dict[str, Any] = {
        "layerlottery": layerlottery.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # PASSIVE unless the user chose (layerlottery.threads)
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "world_size": distributed.current().world_size,  # processes training each run (torchrun), 1 otherwise
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency, but keep the record best-effort
        info["torchvision"] = None
    return info


class RunDir:
    """The files of one run. Creating it never overwrites another run's settings."""

    def __init__(self, root: str | os.PathLike, spec: RunSpec) -> None:
        self.spec = spec
        self.path = Path(root) / spec.name
        self.checkpoints = self.path / "checkpoints"

    @property
    def settings_file(self) -> Path:
        return self.path / "settings.json"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def filter_plan_file(self) -> Path:
        """The filter-pruning baseline's :class:`~layerlottery.surgery.filters.FilterPlan`, written before training."""
        return self.path / "filter_plan.json"

    @property
    def similarity_file(self) -> Path:
        """Linear CKA with the dense run of the same seed (see :mod:`layerlottery.experiments.similarity`)."""
        return self.path / SIMILARITY_FILE

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    def is_finished(self) -> bool:
        return self.result_file.is_file()

    def prepare(self) -> None:
        """Create the directory with settings and environment, or check that an existing one is this run's."""
        record = {"name": self.spec.name, "label": self.spec.label, "hashed": hashed_dict(self.spec), "settings": to_dict(self.spec)}
        if self.settings_file.is_file():
            try:
                existing = json.loads(self.settings_file.read_text())
            except json.JSONDecodeError:
                existing = None
            if not isinstance(existing, dict) or existing.get("hashed") != record["hashed"]:
                raise DataError(
                    f"{self.path} holds another run's settings (or a corrupt settings.json); move it away to rerun"
                )
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "environment.json", json.dumps(environment(), indent=2) + "\n")
        atomic_write_text(self.settings_file, json.dumps(record, indent=2) + "\n")

    def write_result(self, result: Mapping[str, Any], history: Iterable[Mapping[str, Any]]) -> None:
        """Write metrics rows, then the summary (last, atomically: it marks the run finished)."""
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["run", "epoch", "metric", "value"])
        for entry in history:
            for metric, value in entry.items():
                if metric != "epoch" and value is not None:
                    writer.writerow([self.spec.name, entry["epoch"], metric, value])
        for metric, value in result.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.writerow([self.spec.name, "final", metric, value])
        atomic_write_text(self.metrics_file, rows.getvalue())
        atomic_write_text(self.result_file, json.dumps(dict(result), indent=2) + "\n")

    def read_result(self) -> dict[str, Any]:
        """The finished run's summary, checked (see :func:`read_result_file`) against this run's settings."""
        return read_result_file(self.result_file, to_dict(self.spec))

    def read_plan(self) -> RemovalPlan:
        """The ticket's removal plan (written before training), refused if it disagrees with this run's settings."""
        try:
            plan = RemovalPlan.load(self.plan_file)
        except LayerLotteryError as exc:
            raise DataError(f"{exc}; {RETRAIN_HINT}") from None
        # A lottery ticket's plan comes from trained weights, over rounds: only tickets at init are replayed.
        problem = plan_disagreement(plan, self.spec) if self.spec.lottery is None else ""
        if problem:
            raise DataError(f"{self.plan_file} {problem}; was it edited or copied from another run? {RETRAIN_HINT}")
        return plan

    def read_filter_plan(self) -> FilterPlan:
        """The filter baseline's plan (written before training), refused if it is not this run's."""
        from layerlottery.surgery.filters import FilterPlan

        try:
            plan = FilterPlan.load(self.filter_plan_file)
        except LayerLotteryError as exc:
            raise DataError(f"{exc}; {RETRAIN_HINT}") from None
        ticket = self.spec.ticket
        assert ticket is not None
        found = (plan.model, plan.seed, plan.criterion)
        wanted = (self.spec.model.name, self.spec.seed, ticket.criterion)
        if found != wanted or plan.model_options.get("shortcut", self.spec.model.shortcut) != self.spec.model.shortcut:
            raise DataError(
                f"{self.filter_plan_file} is a plan for (model, seed, criterion) = {found}, but the run is {wanted}; "
                f"was it edited or copied from another run? {RETRAIN_HINT}"
            )
        return plan

    def check_files(self) -> None:
        """Read what an earlier call left here (a result, or an unfinished ticket's plan): DataError if broken.

        Called for every run before an experiment trains anything, so a broken file costs no training.
        """
        if self.is_finished():
            self.read_result()
        elif self.spec.kind == FILTERS:
            if self.filter_plan_file.exists():
                self.read_filter_plan()
        elif self.spec.ticket is not None and self.plan_file.exists():
            self.read_plan()


def plan_disagreement(plan: RemovalPlan, spec: RunSpec) -> str:
    """Why ``plan`` cannot be the removal plan of the ticket run ``spec``, or ``""``.

    The plan's model, criterion and p must be the run's, and its removed blocks must be exactly those that
    the run's selection rules pick from the plan's own scores (so a hand-edited block list is caught).
    For tickets at initialization; a lottery ticket's plan (chosen from trained weights) is not replayed.
    """
    from layerlottery.models import create_model
    from layerlottery.models.blocks import find_blocks
    from layerlottery.surgery.select import parse_protect, select_blocks

    ticket = spec.ticket
    if ticket is None:
        return "belongs to a ticket, but this is a dense run"
    if plan.model != spec.model.name:
        return f"is a plan for {plan.model}, but the run trains {spec.model.name}"
    for option in ("shortcut", "zero_init_residual"):
        if option in plan.model_options and plan.model_options[option] != getattr(spec.model, option):
            return f"is for model.{option}={plan.model_options[option]}, but the run has {getattr(spec.model, option)}"
    if plan.seed is not None and plan.seed != spec.seed:  # plans before format 2 do not record it
        return f"was found for seed {plan.seed}, but the run's seed is {spec.seed}"
    if plan.criterion != ticket.criterion:
        return f"was chosen by criterion {plan.criterion}, but the run's criterion is {ticket.criterion}"
    if plan.p != ticket.p:
        return f"removes {plan.p} block(s) ({', '.join(plan.removed) or 'none'}), but the run's p is {ticket.p}"
    if plan.selection_rule != ticket.selection:
        return f"was chosen by {plan.selection_rule} selection, but the run's selection is {ticket.selection}"
    # Removability is structural, so the model at its default input size shows the stages (as check_feasible).
    dense = create_model(spec.model.name, **spec.model.structure_options())
    try:
        chosen = select_blocks(
            find_blocks(dense), plan.scores, p=ticket.p,
            protect=parse_protect(ticket.protect), min_per_stage=ticket.min_per_stage, selection=ticket.selection,
        ).removed
    except LayerLotteryError as exc:
        return f"cannot come from the run's selection rules ({exc})"
    if chosen != plan.removed:
        return (
            f"removes {', '.join(plan.removed)}, but its own scores under the run's selection rules pick "
            f"{', '.join(chosen)}"
        )
    return ""


@dataclass(frozen=True)
class RunProgress:
    """How far a run has come: ``finished``, ``partial`` (``epochs_done`` from its checkpoint) or ``new``."""

    state: str
    epochs_done: int | None = None
    epochs: int | None = None

    def __str__(self) -> str:
        if self.state != "partial":
            return self.state
        if self.epochs_done is None:
            return "partial (checkpoint unreadable)"
        return f"partial (epoch {self.epochs_done} of {self.epochs})"


def run_progress(run_dir: RunDir) -> RunProgress:
    """Whether ``run_dir`` is finished, started or new, reading only its last checkpoint's epoch counter.

    Meant for ``--dry-run``: it never raises; a checkpoint that cannot be read shows as partial without an
    epoch (the run itself says what is wrong with it).
    """
    from layerlottery.training.checkpoint import checkpoint_path

    epochs = run_dir.spec.train.epochs
    if run_dir.is_finished():
        return RunProgress("finished", epochs, epochs)
    if not run_dir.path.exists():
        return RunProgress("new", 0, epochs)
    last = checkpoint_path(run_dir.checkpoints)
    if not last.is_file():  # prepared (or scored) but no epoch finished yet
        return RunProgress("partial", run_dir.spec.start_epoch, epochs)
    try:
        # mmap: only the small header and the counter are read, not the weights and optimizer state.
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        done = int(state["epoch"])
    except Exception:  # any unreadable file: shown, not fixed, here
        return RunProgress("partial", None, epochs)
    return RunProgress("partial", done, epochs)
