"""Algorithm 2 of the paper, end to end: dense runs and tickets at initialization, per seed.

For each seed the dense network is built from that seed (theta_0) and trained. For each criterion and each
p, the same theta_0 is scored, the p weakest blocks are removed, and the shallower network is trained from
its theta_0 weights. Every run is idempotent and resumable (see :mod:`layerlottery.experiments.runs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from layerlottery import distributed
from layerlottery.config import DataSettings, ExperimentSettings
from layerlottery.criteria import get_criterion
from layerlottery.errors import ConfigError, DataError, PruningError
from layerlottery.experiments import filter_baseline, lottery, ranks, similarity
from layerlottery.experiments.parallel import Parallelism, train_runs
from layerlottery.experiments.at_init import initial_model, model_options_for, ticket_for_spec
from layerlottery.experiments.runs import FILTERS, RunDir, RunSpec, TicketSpec
from layerlottery.experiments.sources import TEXT, DataSource, data_source, text_result_fields
from layerlottery.metrics import count_macs, count_params
from layerlottery.models import create_model
from layerlottery.models.blocks import find_blocks
from layerlottery.surgery import RemovalPlan, max_removable, parse_protect, remove_blocks
from layerlottery.surgery.filters import FilterPlan, apply_filter_plan
from layerlottery.reports.results import with_similarity
from layerlottery.threads import threads_setting
from layerlottery.training import Callback, resolve_device, train
from layerlottery.training.emissions import EmissionsRecorder
from layerlottery.training.tensorboard import TensorBoardLogger
from layerlottery.atomic import check_writable_folder

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExperimentResult:
    """The finished runs of one experiment, as their ``result.json`` contents, in run order."""

    settings: ExperimentSettings
    runs: list[dict[str, Any]]
    trained: int
    """How many runs were trained (or resumed) by this call; 0 when everything was already done."""


def plan_runs(settings: ExperimentSettings) -> list[RunSpec]:
    """Every run of the experiment: per seed the dense network, then each (criterion, p) ticket, each followed
    by its filter-pruning baseline when ``pruning.filter_baseline`` is on (or, with the lottery section on,
    each ticket after training: :func:`layerlottery.experiments.lottery.plan_runs`)."""
    if settings.lottery.enabled:
        return lottery.plan_runs(settings)
    specs = []
    pruning = settings.pruning
    for seed in settings.seeds:
        base = dict(model=settings.model, data=settings.data, train=settings.train, seed=seed)
        specs.append(RunSpec(**base))
        for criterion in pruning.criteria:
            for p in pruning.p:
                ticket = TicketSpec(
                    criterion=criterion,
                    p=p,
                    criterion_options=dict(pruning.criterion_options.get(criterion, {})),
                    samples_per_class=pruning.samples_per_class,
                    protect=pruning.protect,
                    min_per_stage=pruning.min_per_stage,
                    selection=pruning.selection,
                )
                specs.append(RunSpec(**base, ticket=ticket))
                if pruning.filter_baseline:  # after its layer ticket, whose plan sets its filter count
                    specs.append(RunSpec(**base, ticket=dataclasses.replace(ticket, structure=FILTERS)))
    return specs


def check_feasible(settings: ExperimentSettings) -> None:
    """Refuse, before any training, data the network cannot read, and a p that the network's blocks and the
    selection rules cannot give."""
    model = create_model(settings.model.name, **settings.model.structure_options())
    check_data_fits_model(model, settings)
    if settings.lottery.enabled:
        return lottery.check_feasible(settings, model)  # also: the snapshots its rewind points need
    pruning = settings.pruning
    for criterion in pruning.criteria:  # e.g. synflow cannot score a language model
        get_criterion(criterion).check_model(model)
    # Removability is structural, so the model's default input size tells it for any input size.
    limit = max_removable(find_blocks(model), parse_protect(pruning.protect), pruning.min_per_stage, pruning.selection)
    if max(pruning.p) > limit:
        raise PruningError(
            f"pruning.p asks for {max(pruning.p)} blocks but {settings.model.name} allows at most {limit} "
            f"(protect={pruning.protect}, min_per_stage={pruning.min_per_stage}, selection={pruning.selection})"
        )


def check_data_fits_model(model: nn.Module, settings: ExperimentSettings) -> None:
    """Refuse text for a network that reads images, and images for a language model, in one line."""
    reads_tokens = getattr(model, "main_input_name", None) == "input_ids"
    text = settings.data.name == TEXT
    if text and not reads_tokens:
        raise ConfigError(
            f"data.name=text is for language models (model.name=hf:ID_OR_PATH), and {settings.model.name} reads images; "
            f"choose an image dataset or a language model"
        )
    if reads_tokens and not text:
        raise ConfigError(
            f"{settings.model.name} is a language model and reads text, not {settings.data.name} images; "
            f"set data.name=text and data.data_dir=FILE (a UTF-8 text file)"
        )


SMALL_TEST_SPLIT = 100
"""Below this many test images an accuracy moves in steps of more than one point: said, not refused, since
tiny test splits are fine for smoke tests but not for comparing tickets."""


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found: the runs, which still need training, and what they need."""

    specs: list[RunSpec]
    pending: list[RunSpec]
    """The runs not finished yet, in run order."""
    device: torch.device
    source: DataSource | None
    """The data, loaded once here when some run is pending (a finished experiment reads no data)."""
    warnings: list[str]
    """Things that do not stop the experiment but change how its numbers read, one line each."""


def preflight(settings: ExperimentSettings, *, download: bool = True) -> Preflight:
    """Every check that can fail before training, so a mistake costs seconds, not a half-made run directory.

    Settings and feasibility of p; the device; that ``runs_dir`` takes files; the country of the carbon
    mix; and, when some run still needs training, the data (loaded here, the run reuses it) and that every
    class holds ``samples_per_class`` training images. ``run_experiment`` and ``run --dry-run`` both call it.
    With ``download=False`` (a dry run) data that is not on disk yet is not fetched: that is said in
    ``warnings`` and its checks wait for the run.
    """
    settings.validate()
    check_feasible(settings)
    device = resolve_device(settings.train.device)
    threads_setting()  # a bad LAYERLOTTERY_THREADS is refused here, not once the first run has begun
    check_writable_folder(settings.runs_dir, "runs_dir")
    _check_carbon(settings)
    specs = plan_runs(settings)
    for spec in specs:  # a broken result.json or plan.json stops the experiment before any training
        RunDir(settings.runs_dir, spec).check_files()
    pending = [spec for spec in specs if not RunDir(settings.runs_dir, spec).is_finished()]
    source, warnings = None, []
    if pending:
        offline = not download and _downloads(settings.data)
        try:
            source = data_source(_without_download(settings.data) if offline else settings.data)
        except DataError as exc:
            if not offline:
                raise
            warnings.append(f"note: {settings.data.name} is not on disk yet, so it was not checked; the run downloads it first ({exc})")
        if source is not None:
            _check_scoring_samples(settings, source, pending)
            warnings += _test_split_warnings(source)
    return Preflight(specs, pending, device, source, warnings)


def _downloads(data: DataSettings) -> bool:
    """Whether loading ``data`` may fetch files: its loader takes ``download`` and the user did not set it."""
    from layerlottery.data.registry import list_datasets, loader_options

    return data.name in list_datasets() and "download" in loader_options(data.name) and "download" not in data.options


def _without_download(data: DataSettings) -> DataSettings:
    return dataclasses.replace(data, options={**data.options, "download": False})


def _check_carbon(settings: ExperimentSettings) -> None:
    carbon = settings.carbon
    if carbon.enabled and carbon.grid_intensity_g_per_kwh is None:
        from layerlottery.metrics.energy import grid_intensity

        try:  # CodeCarbon's offline energy-mix table (~1 s to load): refuses a country it does not hold
            grid_intensity(carbon.country_iso_code.upper(), None)
        except ConfigError:
            raise ConfigError(
                f"carbon.country_iso_code {carbon.country_iso_code!r} is not in CodeCarbon's energy-mix table; "
                "use an ISO 3166 alpha-3 code such as USA, FRA or DEU, or set carbon.grid_intensity_g_per_kwh"
            ) from None


def _check_scoring_samples(settings: ExperimentSettings, source: DataSource, pending: list[RunSpec]) -> None:
    """A data criterion draws samples_per_class training images of every class: refuse a class with fewer."""
    wanted = max(
        (spec.ticket.samples_per_class for spec in pending if spec.ticket and get_criterion(spec.ticket.criterion).needs_data),
        default=0,
    )
    counts = source.train_class_counts() if wanted else None
    if not counts:  # nothing to draw, or text (no classes: its windows are checked when it is read)
        return
    fewest = min(counts)
    if fewest < wanted:
        setting = "lottery.samples_per_class" if settings.lottery.enabled else "pruning.samples_per_class"
        raise DataError(
            f"{setting} is {wanted} but class {counts.index(fewest)} of {settings.data.name} holds "
            f"only {fewest} training images; set {setting}={fewest} or less"
        )


def _test_split_warnings(source: DataSource) -> list[str]:
    size = source.test_size()
    if size is None:
        return []
    if size == 0:
        raise DataError("the test split holds no images, so no accuracy can be measured; check data.options")
    if size >= SMALL_TEST_SPLIT:
        return []
    return [
        f"warning: the test split holds only {size} image(s), so accuracies move in steps of {100 / size:.2f} "
        f"points; compare tickets on {SMALL_TEST_SPLIT} or more test images"
    ]


def run_experiment(
    settings: ExperimentSettings, *, progress: bool = True, log: Log = print, parallel: Parallelism | None = None
) -> ExperimentResult:
    """Run (or resume, or just read) every run of the experiment and return their results.

    Everything that can be checked before training is checked first (see :func:`preflight`). The runs train
    one after the other in this process, or as ``parallel`` says (worker processes, Ray: see
    :mod:`layerlottery.experiments.parallel`); either way each run is claimed with a lock, so two calls on
    the same ``runs_dir`` never train one run twice. After the runs, each finished ticket's linear CKA with
    its dense run is computed once (``similarity.json``, see :mod:`layerlottery.experiments.similarity`)
    and added to its result as ``cka``; with ``robustness.after_training``, every run's robustness is evaluated
    once (``robustness.json``, see :mod:`layerlottery.robustness.evaluate`).

    Raises :class:`~layerlottery.experiments.parallel.RunsFailedError` naming the runs that failed when
    training in parallel (the others finish first).

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this: each run trains on all of them together
    (:mod:`layerlottery.experiments.ranks`), rank 0 alone writes files, logs, and computes similarities and
    robustness afterwards; the other ranks return once the runs are trained, with no ``runs`` in their result.
    """
    parallel = parallel or Parallelism()
    parallel.validate()  # also refuses --jobs > 1 and Ray under torchrun
    context = distributed.init_distributed(resolve_device(settings.train.device).type)
    if not context.is_main:
        progress, log = False, _quiet
    checked = ranks.preflight_on_ranks(settings) if context.distributed else preflight(settings)
    for warning in checked.warnings:
        log(warning)
    specs = checked.specs
    if context.distributed:
        trained = ranks.train_runs_on_ranks(settings, specs, checked.source, progress=progress, log=log) if checked.pending else 0
        if not context.is_main:
            return ExperimentResult(settings, [], trained)
    else:
        trained = train_runs(settings, specs, parallel, source=checked.source, progress=progress, log=log) if checked.pending else 0
    pairs = similarity.pending_similarities(settings.runs_dir, specs)
    if pairs:  # once per ticket: a rerun finds every similarity.json and loads no data
        source = checked.source if checked.source is not None else data_source(settings.data)
        similarity.compute_similarities(pairs, source, checked.device, log)
    if settings.robustness.after_training:  # every part once per run: a rerun finds them stored, computes nothing
        from layerlottery.robustness.evaluate import evaluate_runs

        run_paths = [RunDir(settings.runs_dir, spec).path for spec in specs]
        evaluate_runs(run_paths, settings.robustness, progress=progress, log=log)
    results = [RunDir(settings.runs_dir, spec).read_result() for spec in specs]
    results = [with_similarity(result, RunDir(settings.runs_dir, spec).path) for spec, result in zip(specs, results)]
    return ExperimentResult(settings, results, trained)


def execute_run(
    spec: RunSpec,
    run_dir: RunDir,
    source: DataSource,
    settings: ExperimentSettings,
    *,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train one run to completion (resuming if it was interrupted) and write its result.

    ``callbacks`` join the training loop's (a parallel worker's progress reporter). Under torchrun every
    rank calls this together; rank 0 alone scores a ticket and writes files (energy and TensorBoard included),
    the other ranks build the ticket from the plan it sends."""
    context = distributed.current()
    if context.is_main:
        run_dir.prepare()
    device = resolve_device(spec.train.device)
    if context.distributed:
        model, plan = ranks.initial_model_on_ranks(
            lambda: _initial_model(spec, run_dir, source, device), lambda found: _architecture(spec, found, source, device)
        )
    else:
        model, plan = _initial_model(spec, run_dir, source, device)
    train_loader, test_loader = source.loaders(spec.train, spec.seed, device)
    carbon = settings.carbon
    emissions = EmissionsRecorder(
        enabled=carbon.enabled and context.is_main, country_iso_code=carbon.country_iso_code,
        grid_intensity_g_per_kwh=carbon.grid_intensity_g_per_kwh,
    )
    streams = [TensorBoardLogger(run_dir.path / "tensorboard")] if spec.train.tensorboard and context.is_main else []
    outcome = train(
        model, train_loader, spec.train, eval_loader=test_loader, checkpoint_dir=run_dir.checkpoints,
        callbacks=[emissions, *streams, *callbacks], progress=progress, seed=spec.seed, start_epoch=spec.start_epoch,
    )
    energy = emissions.totals(outcome.history)
    result = {
        "name": spec.name,
        "label": spec.label,
        "kind": spec.kind,
        "seed": spec.seed,
        "criterion": spec.ticket.criterion if spec.ticket else None,
        "p": spec.ticket.p if spec.ticket else 0,
        "removed": list(plan.removed) if isinstance(plan, RemovalPlan) else [],
        "test_acc": outcome.final_test_acc,
        "best_test_acc": outcome.best_test_acc,
        "test_loss": outcome.final_test_loss,
        "epochs": outcome.epochs,
        "train_seconds": outcome.train_seconds,
        **outcome.timing_record(),  # per-epoch seconds, the typical epoch, the disturbance mark, CPU threads
        "images_per_second": outcome.images_per_second,
        "compile_seconds": outcome.compile_seconds,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "peak_memory_kind": outcome.peak_memory_kind,
        "macs": count_macs(model, source.input_shape),
        "params": count_params(model),
        "device": str(device),
        # Several processes (torchrun): times are of the whole group, so say how many trained it.
        **({"world_size": context.world_size} if context.distributed else {}),
        **energy,
        **(lottery.result_fields(spec) if spec.lottery is not None else {}),
        **filter_baseline.result_fields(spec, plan, model),
        **text_result_fields(source, outcome.history, outcome.images_per_second),  # perplexity, tokens/s
    }
    if context.is_main:
        run_dir.write_result(result, outcome.history)
    return result


def _quiet(message: str) -> None:
    """The log of ranks other than 0: they say nothing."""


def _architecture(
    spec: RunSpec, plan: RemovalPlan | FilterPlan | None, source: DataSource, device: torch.device
) -> torch.nn.Module:
    """The run's network built from its plan with theta_0 weights (a rank other than 0 of a distributed run,
    whose weights training replaces by rank 0's)."""
    options = model_options_for(source, **spec.model.factory_options())
    network = initial_model(spec.model.name, options, spec.seed, device)
    if isinstance(plan, FilterPlan):
        return apply_filter_plan(network, plan)
    return remove_blocks(network, plan) if plan is not None else network


def _initial_model(
    spec: RunSpec, run_dir: RunDir, source: DataSource, device: torch.device
) -> tuple[torch.nn.Module, RemovalPlan | FilterPlan | None]:
    """theta_0 of the run's network: dense from the seed, or the ticket (plan found once, then replayed)."""
    options = model_options_for(source, **spec.model.factory_options())
    if spec.ticket is None:
        return initial_model(spec.model.name, options, spec.seed, device), None
    if spec.lottery is not None:  # after training: trained weights scored, kept weights rewound
        return lottery.lottery_ticket(spec, run_dir, source, device)
    if spec.kind == FILTERS:  # the filter-pruning baseline of the layer ticket with the same fields
        return filter_baseline.filter_ticket(spec, run_dir, source, device)
    if run_dir.plan_file.is_file():  # resuming: the same theta_0, the same blocks, no rescoring
        plan = run_dir.read_plan()  # refused if edited or another run's
        return remove_blocks(initial_model(spec.model.name, options, spec.seed, device), plan), plan
    ticket = spec.ticket
    needs_data = get_criterion(ticket.criterion).needs_data
    batch = source.scoring_batch(ticket.samples_per_class, spec.seed, device) if needs_data else None
    found = ticket_for_spec(ticket, spec.model.name, spec.seed, batch, options, device)
    found.plan.save(run_dir.plan_file)
    return found.pruned, found.plan
