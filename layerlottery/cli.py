"""The ``layerlottery`` command line: a thin shell over the library.

Each command parses its flags, calls one library function, and prints a table (or JSON with ``--json``).
Mistakes the user can fix print one line and exit with status 2; nothing is left half-written on disk.
"""

from __future__ import annotations

import inspect
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from layerlottery.errors import ConfigError, LayerLotteryError

app = typer.Typer(
    name="layerlottery",
    help=(
        "Find layer-pruned lottery tickets: score every residual block of a network, delete the weakest "
        "blocks, and get a genuinely shallower network.\n\n"
        "Start with:  layerlottery run quickstart   (the whole pipeline on a 2-core CPU in about four minutes)\n\n"
        "Then:  layerlottery blocks cifar_resnet32   |   layerlottery presets"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Pipes and files have no width; rich would assume 80 columns and squeeze the wider tables.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

# ------------------------------------------------------------------------------------------- options

ModelArg = typer.Argument(..., help="A registered model or another library's network, see `layerlottery models` (e.g. cifar_resnet32, torchvision:resnet18, timm:resnet18, hf:gpt2 or hf:layerlottery/tiny-gpt2 for a language model).")
# Flags take no value: metavar="" stops typer's rich help from showing them as `--json <bool>`.
JsonOpt = typer.Option(False, "--json", metavar="", help="Print machine-readable JSON instead of a table.")
ShortcutOpt = typer.Option(None, "--shortcut", help="CIFAR ResNet shortcut: B (1x1 projection, the paper's; the default) or A (zero-padded identity).")
ZeroInitOpt = typer.Option(False, "--zero-init-residual", metavar="", help="Zero-initialize the last BN of each residual branch.")
DataOpt = typer.Option(None, "--data", help="Scoring data, which also sets the model's input channels, size and classes: synthetic, digits, mnist, cifar10 or cifar100 (downloaded on first use); text for a language model (hf:ID_OR_PATH), with --data-path FILE (its tokens set the vocabulary and sequence length). Default: cifar10, or none for data-free criteria.")
ScoringDataDirOpt = typer.Option(None, "--data-dir", "--data-path", help="Where the data is (data.data_dir in settings). For --data text: a UTF-8 text file (its last 10% is the test split) or a folder with train.txt and test.txt (or valid.txt). For an image dataset: the folder holding its files (default: $LAYERLOTTERY_DATA or ~/.cache/layerlottery).")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder holding the dataset files (default: $LAYERLOTTERY_DATA or ~/.cache/layerlottery).")
ModelOptionOpt = typer.Option(None, "--model-option", help="Option of the model's factory KEY=VALUE, repeatable (e.g. depth=4 and patch_size=4 for timm:vit_tiny_patch16_224, weights=DEFAULT for torchvision:NAME); as model.options in settings.")
DataOptionOpt = typer.Option(None, "--data-option", help="Dataset option KEY=VALUE, repeatable, as data.options in settings (e.g. train_fraction=0.8 to split MNIST's test set, num_samples=512 for synthetic; for text seq_len=128, tokenizer=bytes or a Hugging Face tokenizer such as gpt2, test_fraction=0.1).")
SplitOpt = typer.Option("train", "--split", help="Dataset split to draw scoring samples from: train or test.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the initialization (theta_0), of the scoring samples and of the random criterion.")
CriterionOpt = typer.Option("grasp", "--criterion", "-c", help="Scoring criterion, see `layerlottery score --help` (grasp is the paper's default).")
SamplesOpt = typer.Option(10, "--samples-per-class", help="Class-balanced scoring samples per class (GraSP reference: 10); for text, the number of seq_len-token windows drawn from the split.")
OptionOpt = typer.Option(None, "--option", "-o", help="Criterion option KEY=VALUE, repeatable (e.g. -o aggregation=mean -o temperature=100).")
DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, cuda:1, ... or auto (cuda when available).")
CheckpointOpt = typer.Option(None, "--checkpoint", help="Score trained weights instead of theta_0: a finished run directory (runs/dense-...), its checkpoints/last.pt, a rewind snapshot, or a state dict file. Pass the --data and --shortcut it was trained with.")


def _fail(message: str) -> None:
    # escape: the message quotes user text, whose brackets rich would read as markup and drop ('out[new]').
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _run(action: Callable[[], Any]) -> Any:
    """Run ``action``; turn a user error into one line and exit status 2."""
    try:
        return action()
    except LayerLotteryError as exc:
        _fail(str(exc))


def _parse_options(pairs: Optional[list[str]]) -> dict[str, Any]:
    """``["temperature=100", "iterative=true"]`` -> ``{"temperature": 100, "iterative": True}``.

    Values are read as JSON (numbers, true/false, null) and otherwise kept as strings.
    """
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"options are given as KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = {"none": None, "null": None}.get(raw.lower(), raw)
        parsed[key.strip()] = value
    return parsed


def _model_options(**options: Any) -> dict[str, Any]:
    """The model options the user set; unset ones (None) keep the model's defaults."""
    return {key: value for key, value in options.items() if value is not None}


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


# ------------------------------------------------------------------------------------------ commands


@app.command()
def models(
    show_all: bool = typer.Option(False, "--all", metavar="", help="Also list the tiny test fixtures (test_resnet, ...)."),
    as_json: bool = JsonOpt,
) -> None:
    """List the registered models, and the sources of other libraries' networks (PREFIX:NAME).

    Example:  layerlottery models
    """
    from layerlottery.models import list_models
    from layerlottery.models.registry import describe_model, list_model_sources

    rows = [{"name": name, "description": describe_model(name)} for name in list_models(include_hidden=show_all)]
    rows += [{"name": f"{prefix}:NAME", "description": text} for prefix, text in list_model_sources().items()]
    if as_json:
        return _emit_json(rows)
    table = Table(title="Models")
    table.add_column("name", style="bold")
    table.add_column("description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    out.print(table)
    out.print("Options of a PREFIX:NAME network go in model.options, e.g. 'model.options={weights: DEFAULT}'.", highlight=False)


@app.command()
def blocks(
    model: str = ModelArg,
    shortcut: Optional[str] = ShortcutOpt,
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="Input channels (default: the model's own; 3 for the CIFAR ResNets)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input height and width (default: the model's own: 32 for the CIFAR ResNets, 224 for torchvision)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Output classes (default: the model's own; a language model's vocabulary)."),
    model_option: Optional[list[str]] = ModelOptionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show every residual block: stage, shapes, stride, MACs, params, and whether it can be removed.

    Examples:
      layerlottery blocks cifar_resnet32 --shortcut B
      layerlottery blocks cifar_resnet56 --in-channels 1 --image-size 28 --json
      layerlottery blocks torchvision:resnet50
      layerlottery blocks timm:vit_tiny_patch16_224 --model-option depth=4 --model-option patch_size=4
    """
    from layerlottery.models import create_model
    from layerlottery.models.blocks import find_blocks
    from layerlottery.surgery import max_removable, protected_names

    options = {
        **_run(lambda: _parse_options(model_option)),
        **_model_options(shortcut=shortcut, in_channels=in_channels, image_size=image_size, num_classes=num_classes),
    }
    network = _run(lambda: find_blocks(create_model(model, **options)))
    protected = protected_names(network)
    rows = []
    for block in network:
        status = "protected" if block.removable and block.name in protected else "candidate" if block.removable else "fixed"
        rows.append({**_block_row(block), "status": status, "reason": block.reason})
    limit = max_removable(network)
    if as_json:
        return _emit_json({"model": model, "options": options, "total_macs": network.total_macs, "total_params": network.total_params, "max_removable": limit, "blocks": rows})
    table = Table(title=f"{model}: {len(network)} residual blocks, up to {limit} removable")
    for column in ("block", "input -> output", "stride", "MACs", "params", "status"):
        table.add_column(column, justify="right" if column in ("stride", "MACs", "params") else "left", no_wrap=True)
    for row in rows:
        shapes = f"{_shape(row['input_shape'])} -> {_shape(row['output_shape'])}"
        table.add_row(row["name"], shapes, str(row["stride"]), f"{row['macs']:,}", f"{row['params']:,}", row["status"])
    out.print(table)
    reasons = sorted({f"{row['name']}: {row['reason']}" for row in rows if row["reason"]})
    if reasons:
        out.print("fixed = cannot be removed (" + "; ".join(reasons) + ")", highlight=False)
    out.print("protected = removable, but kept by default (first block of its stage, as in the paper)")
    out.print(f"Network: {network.total_macs:,} MACs ({2 * network.total_macs:,} FLOPs), {network.total_params:,} parameters")


def _block_row(block: Any) -> dict[str, Any]:
    return {
        "name": block.name,
        "stage": block.stage,
        "index": block.index,
        "input_shape": list(block.input_shape),
        "output_shape": list(block.output_shape),
        "stride": block.stride,
        "macs": block.macs,
        "params": block.params,
    }


def _find_ticket(
    model: str,
    criterion: str,
    option: Optional[list[str]],
    data: Optional[str],
    data_dir: Optional[Path],
    data_option: Optional[list[str]],
    split: str,
    samples_per_class: int,
    seed: int,
    shortcut: Optional[str],
    zero_init_residual: bool,
    device: str,
    *,
    model_option: Optional[list[str]] = None,
    **target: Any,
) -> Any:
    """Shared by score and prune: check every flag, load the data if needed, then find the ticket."""
    from layerlottery.criteria import get_criterion
    from layerlottery.experiments import ticket_at_init
    from layerlottery.experiments.scoring_input import load_scoring_data

    from layerlottery.config import check_seed

    check_seed(seed, "--seed")
    criterion_options = _parse_options(option)
    spec = get_criterion(criterion)
    spec.resolve_options(criterion_options)  # a typo in -o fails before any data is loaded
    from layerlottery.devices import resolve_device

    resolved_device = resolve_device(device, "--device")
    data_options = _parse_options(data_option)
    with err.status(f"Loading {data or 'the scoring data'} ({split})..."):
        dataset = load_scoring_data(model, criterion, data, data_dir=data_dir, options=data_options, split=split, seed=seed)
    with err.status(f"Scoring the blocks of {model} with {criterion}..."):
        return ticket_at_init(
            model,
            criterion,
            dataset=dataset,
            seed=seed,
            samples_per_class=samples_per_class,
            model_options={
                **_parse_options(model_option),
                **_model_options(shortcut=shortcut, zero_init_residual=zero_init_residual or None),
            },
            criterion_options=criterion_options,
            device=resolved_device,
            **target,
        )


@app.command()
def score(
    model: str = ModelArg,
    criterion: str = CriterionOpt,
    option: Optional[list[str]] = OptionOpt,
    data: Optional[str] = DataOpt,
    data_dir: Optional[Path] = ScoringDataDirOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    split: str = SplitOpt,
    samples_per_class: int = SamplesOpt,
    seed: int = SeedOpt,
    shortcut: Optional[str] = ShortcutOpt,
    zero_init_residual: bool = ZeroInitOpt,
    model_option: Optional[list[str]] = ModelOptionOpt,
    device: str = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Score every removable block at initialization, or of trained weights (--checkpoint); lower = less important.

    Criteria: random, magnitude, snip, grasp, synflow, gradnorm; for trained networks also hrank,
    expectabs, kl, pls. Criterion options go through -o: aggregation (sum | mean | abs_sum), bn_mode
    (train | eval), temperature and variant (grasp), norm (magnitude), iterative (synflow), seed (random),
    activation (output | branch), batch_size, rtol (hrank), components and fit (pls).

    Language models (hf:ID_OR_PATH) score on text: --data text --data-path FILE (a UTF-8 file or a folder
    with train.txt and test.txt), windows of --data-option seq_len=N tokens (UTF-8 bytes unless
    --data-option tokenizer=NAME); snip, grasp and gradnorm use the next-token loss, block_influence and
    angular_distance (ShortGPT) the hidden states; synflow, hrank and pls need images.

    Examples:
      layerlottery score cifar_resnet32 --data synthetic -c snip
      layerlottery score cifar_resnet56 --data cifar10 -c grasp -o variant=abs
      layerlottery score cifar_resnet110 -c synflow -o iterative=true --json
      layerlottery score cifar_resnet20 --data mnist --data-option train_fraction=0.8 -c kl --checkpoint runs/dense-3fa2c1d09b7e
        (a run of mnist_cpu: the same data options as its training)
      layerlottery score hf:layerlottery/tiny-gpt2 --data text --data-path notes.txt -c block_influence
    """
    ticket = _run(lambda: _find_ticket(model, criterion, option, data, data_dir, data_option, split, samples_per_class, seed, shortcut, zero_init_residual, device, model_option=model_option, p=0, checkpoint=checkpoint))
    scores, network = ticket.scores, ticket.blocks
    order = {name: position for position, name in enumerate(network.names)}
    ranked = sorted(scores, key=lambda name: (scores[name], order[name]))
    if as_json:
        return _emit_json({"model": model, "seed": seed, "data": data, "checkpoint": checkpoint and str(checkpoint), **scores.to_dict(), "ranking": ranked})
    weights = f"weights of {checkpoint}" if checkpoint else f"seed {seed}"
    table = Table(title=f"{criterion} scores, {model}, {weights}")
    for column in ("rank", "block", "score", "MACs"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for rank, name in enumerate(ranked, start=1):
        table.add_row(str(rank), name, f"{scores[name]:.6g}", f"{network[name].macs:,}")
    out.print(table)
    out.print(f"Lower = less important. Criterion options: {json.dumps(scores.options)}", highlight=False)


@app.command()
def prune(
    model: str = ModelArg,
    p: Optional[int] = typer.Option(None, "-p", "--p", help="Number of blocks to remove (the paper's p)."),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="Or: fraction of the residual blocks to remove."),
    mac_reduction: Optional[float] = typer.Option(None, "--mac-reduction", help="Or: fraction of the MACs to remove at least."),
    out_dir: Path = typer.Option(..., "--out", help="New folder for plan.json, pruned.pt (layerlottery), pruned.pt2 (plain PyTorch), summary.json."),
    criterion: str = CriterionOpt,
    option: Optional[list[str]] = OptionOpt,
    protect: str = typer.Option("first", "--protect", help="Blocks never removed: first (of each stage, the paper's), none, or comma-separated names."),
    min_per_stage: int = typer.Option(2, "--min-per-stage", help="Blocks every stage keeps at least."),
    selection: str = typer.Option("greedy", "--selection", help="greedy (the p lowest scores, the paper's) or contiguous (the lowest-scoring run of p adjacent blocks of one stage)."),
    data: Optional[str] = DataOpt,
    data_dir: Optional[Path] = ScoringDataDirOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    split: str = SplitOpt,
    samples_per_class: int = SamplesOpt,
    seed: int = SeedOpt,
    shortcut: Optional[str] = ShortcutOpt,
    zero_init_residual: bool = ZeroInitOpt,
    model_option: Optional[list[str]] = ModelOptionOpt,
    device: str = DeviceOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace --out if it exists."),
    as_json: bool = JsonOpt,
) -> None:
    """Find a ticket at initialization: score the blocks, remove the weakest, save the shallower network.

    The pruned network keeps its initial weights (theta_0) and is ready to train; with --checkpoint it
    keeps the trained weights that were scored instead (no rewinding: see `layerlottery run` presets with
    a lottery section for Algorithm 1). It is saved as
    plan.json (replays on a fresh model), pruned.pt (load with layerlottery.load_pruned) and pruned.pt2
    (torch.export.load(...).module(), no layerlottery needed). A language model (hf:ID_OR_PATH) scores
    on --data text --data-path FILE, as in `layerlottery score`.

    Examples:
      layerlottery prune cifar_resnet32 --shortcut B --data synthetic -c grasp -p 3 --out ticket
      layerlottery prune cifar_resnet56 --shortcut B --data cifar10 -c snip --mac-reduction 0.3 --out t56
      layerlottery prune cifar_resnet20 -c synflow -p 2 --protect none --min-per-stage 1 --out t20 --json
      layerlottery prune torchvision:resnet50 --data synthetic -c snip -p 3 --selection contiguous --out r50
      layerlottery prune hf:layerlottery/tiny-gpt2 --data text --data-path notes.txt -c block_influence -p 2 --out lm-ticket
    """
    from layerlottery.surgery.select import parse_protect
    from layerlottery.surgery.ticket_folder import TICKET_FILES, check_ticket_destination, save_ticket_folder

    _run(lambda: check_ticket_destination(out_dir, overwrite))  # before any scoring: nothing to lose
    target = {"p": p, "fraction": fraction, "mac_reduction": mac_reduction}
    if all(value is None for value in target.values()):
        _fail("say how much to remove: -p N, --fraction F or --mac-reduction F")
    if p is not None and p < 1:  # as in run (pruning.p): a ticket removes at least one block
        _fail(f"-p must be >= 1 (blocks to remove), not {p}; `layerlottery score` ranks blocks without removing any")
    ticket = _run(
        lambda: _find_ticket(
            model, criterion, option, data, data_dir, data_option, split, samples_per_class, seed, shortcut,
            zero_init_residual, device, protect=parse_protect(protect), min_per_stage=min_per_stage,
            selection=selection, checkpoint=checkpoint, model_option=model_option, **target,
        )
    )
    summary = {
        "model": model,
        "seed": seed,
        "data": data,
        "split": split,
        "samples_per_class": samples_per_class,
        "checkpoint": checkpoint and str(checkpoint),
        "plan": ticket.plan.to_dict(),
    }
    with err.status(f"Saving to {out_dir}..."):
        _run(lambda: save_ticket_folder(ticket.pruned.to("cpu"), ticket.plan, summary, out_dir, overwrite))
    if as_json:
        return _emit_json({**summary, "out": str(out_dir), "files": list(TICKET_FILES)})
    _print_ticket(ticket, out_dir)


def _print_ticket(ticket: Any, out_dir: Path) -> None:
    plan, network = ticket.plan, ticket.blocks
    table = Table(title=f"{plan.model}, {plan.criterion}, p={plan.p}")
    for column in ("removed block", "score", "MACs", "params"):
        table.add_column(column, justify="left" if column == "removed block" else "right")
    for name in plan.removed:
        table.add_row(name, f"{plan.scores[name]:.6g}", f"{network[name].macs:,}", f"{network[name].params:,}")
    out.print(table)
    summary = Table(show_header=True, title="Cost")
    for column in ("", "dense", "ticket", "reduction"):
        summary.add_column(column, justify="right")
    summary.add_row("residual blocks", str(len(network)), str(len(network) - plan.p), f"{plan.p / len(network):.2%}")
    summary.add_row("MACs", f"{plan.dense_macs:,}", f"{plan.pruned_macs:,}", f"{plan.mac_reduction:.2%}")
    summary.add_row("FLOPs", f"{2 * plan.dense_macs:,}", f"{2 * plan.pruned_macs:,}", f"{plan.mac_reduction:.2%}")
    summary.add_row("parameters", f"{plan.dense_params:,}", f"{plan.pruned_params:,}", f"{plan.param_reduction:.2%}")
    out.print(summary)
    out.print(f"Saved plan.json, pruned.pt, pruned.pt2 and summary.json to {out_dir}", markup=False)


# ----------------------------------------------------------------------------------- experiments


@app.command()
def presets(as_json: bool = JsonOpt) -> None:
    """List the experiment presets shipped with layerlottery (use them with `layerlottery run NAME`).

    Example:  layerlottery presets
    """
    from layerlottery.config import PRESETS_DIR, list_presets

    rows = []
    for name in list_presets():
        lines = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()
        header = itertools.takewhile(lambda line: line.startswith("#"), lines)  # the leading comment
        rows.append({"name": name, "description": " ".join(line.lstrip("# ").strip() for line in header)})
    if as_json:
        return _emit_json(rows)
    table = Table(title="Presets")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    out.print(table)


OverridesArg = typer.Argument(None, help="Settings to change, as section.name=value, e.g. train.epochs=30 'pruning.p=[1,3]' seeds=[0,1].")
RunsDirOpt = typer.Option(None, "--runs-dir", help="Where run directories go (default: the preset's runs_dir, ./runs).")
DryRunOpt = typer.Option(False, "--dry-run", metavar="", help="Print the resolved settings and the runs, train nothing.")
QuietOpt = typer.Option(False, "--quiet", "-q", metavar="", help="No progress bars.")
JobsOpt = typer.Option(1, "--jobs", "-j", help="Runs trained at once, each in its own worker process (CPU: the cores shared out; CUDA: one GPU each). 1: one after the other in this process.")
ExecutorOpt = typer.Option("local", "--executor", help="local (worker processes on this machine) or ray (Ray tasks; needs pip install 'layerlottery\\[ray]').")
RunsPerGpuOpt = typer.Option(1, "--runs-per-gpu", help="Runs sharing one GPU when training in parallel.")
AddressOpt = typer.Option(None, "--address", help="With --executor ray: the Ray cluster (auto: the one this machine belongs to). Default: $RAY_ADDRESS, else a local Ray instance.")


@app.command()
def run(
    preset: str = typer.Argument(..., help="A preset name (see `layerlottery presets`) or a YAML file."),
    overrides: Optional[list[str]] = OverridesArg,
    runs_dir: Optional[Path] = RunsDirOpt,
    dry_run: bool = DryRunOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    jobs: int = JobsOpt,
    executor: str = ExecutorOpt,
    runs_per_gpu: int = RunsPerGpuOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Run an experiment: the dense network and every ticket, then print the table.

    Tickets at initialization (Algorithm 2, the pruning section: Tables 2 and 4), or, when the preset has
    a lottery section, tickets after training with rewinding (Algorithm 1, Table 1: criterion x rewind
    point x p, and the re-initialized control). Runs are resumable and idempotent: rerunning a finished experiment trains nothing and prints the
    table again; an interrupted one continues from its last checkpoint.

    Examples:
      layerlottery run quickstart
      layerlottery run paper_resnet32 train.device=cuda
      layerlottery run paper_resnet32 train.epochs=30 'pruning.criteria=[grasp]' 'seeds=[0]'
      layerlottery run my_experiment.yaml --dry-run
      layerlottery run lottery_quickstart
      layerlottery run paper_table1_resnet32 'lottery.criteria=[kl,random]' 'seeds=[0]'
      layerlottery run paper_resnet32 --jobs 8 --runs-per-gpu 2      (8 runs at once on 4 GPUs)
      layerlottery run paper_resnet32 --executor ray --address auto --jobs 32   (a Ray cluster)
      torchrun --nproc_per_node 4 -m layerlottery run paper_resnet56   (each run on 4 GPUs)
      layerlottery run quickstart model.name=torchvision:resnet50 data.name=folder data.data_dir=DIR
      layerlottery run lm_quickstart data.data_dir=notes.txt   (a language model, perplexity)
    """
    from layerlottery.config import load_settings
    from layerlottery.experiments.parallel import Parallelism

    all_overrides = list(overrides or []) + ([f"runs_dir={runs_dir}"] if runs_dir else [])
    settings = _run(lambda: load_settings(preset, all_overrides))
    _experiment(settings, dry_run, quiet, as_json, Parallelism(jobs, executor, runs_per_gpu, address))


@app.command()
def pai(
    model: str = typer.Option("cifar_resnet32", "--model", help="Registered model or PREFIX:NAME (torchvision:resnet18), see `layerlottery models`."),
    shortcut: str = typer.Option("B", "--shortcut", help="A or B (the paper's)."),
    data: str = typer.Option("cifar10", "--data", help="synthetic, digits, mnist, cifar10 or cifar100."),
    data_dir: Optional[Path] = DataDirOpt,
    criteria: str = typer.Option("snip,grasp", "--criteria", help="Comma-separated criteria."),
    p: str = typer.Option("1,2,3,4,5", "-p", "--p", help="Comma-separated numbers of blocks to remove."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    epochs: int = typer.Option(200, "--epochs", help="Training epochs of every run."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Start from this preset's settings (flags win)."),
    overrides: Optional[list[str]] = OverridesArg,
    runs_dir: Optional[Path] = RunsDirOpt,
    dry_run: bool = DryRunOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    jobs: int = JobsOpt,
    executor: str = ExecutorOpt,
    runs_per_gpu: int = RunsPerGpuOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Pruning at initialization from flags: train dense and tickets, print the paper's Table 2/4.

    Examples:
      layerlottery pai --model cifar_resnet32 --criteria snip,grasp -p 1,2,3,4,5 --seeds 0,1,2 --epochs 200
      layerlottery pai --preset quickstart --model cifar_resnet20 --data digits --criteria grasp -p 1,2 --epochs 5
    """
    from layerlottery.config import PRESETS_DIR, load_settings
    from layerlottery.experiments.parallel import Parallelism

    flags = [
        f"model.name={model}", f"model.shortcut={shortcut}", f"data.name={data}",
        f"pruning.criteria=[{criteria}]", f"pruning.p=[{p}]", f"seeds=[{seeds}]", f"train.epochs={epochs}",
        f"name=pai_{model.replace(':', '-').replace('/', '-')}_{data}",  # a source name (timm:x) makes a file name too
    ]
    if data_dir:
        flags.append(f"data.data_dir={data_dir}")
    if runs_dir:
        flags.append(f"runs_dir={runs_dir}")
    base = preset or str(PRESETS_DIR / "defaults.yaml")
    settings = _run(lambda: load_settings(base, flags + list(overrides or [])))
    _experiment(settings, dry_run, quiet, as_json, Parallelism(jobs, executor, runs_per_gpu, address))


def _experiment(settings: Any, dry_run: bool, quiet: bool, as_json: bool, parallel: Any) -> None:
    """Shared by run and pai: show the plan, or run everything and print the table."""
    from dataclasses import asdict

    from layerlottery.config import dump_settings, to_dict
    from layerlottery.experiments.locks import read_owner
    from layerlottery.experiments.runs import RunDir, run_progress
    from layerlottery.atomic import atomic_write_text
    from layerlottery.experiments.tickets import preflight, run_experiment
    from layerlottery.reports import summarize, to_markdown, to_rich
    from layerlottery.distributed import launched_rank

    _run(parallel.validate)
    main_rank = _run(launched_rank) == 0  # under torchrun only rank 0 prints (and writes the table)
    if dry_run and not main_rank:
        return
    if dry_run:
        checked = _run(lambda: preflight(settings, download=False))  # run_experiment's checks, nothing fetched
        for warning in checked.warnings:
            err.print(warning, markup=False, highlight=False, soft_wrap=True)
        specs = checked.specs
        run_dirs = [RunDir(settings.runs_dir, spec) for spec in specs]
        progress = [run_progress(run_dir) for run_dir in run_dirs]
        owners = [read_owner(run_dir.path) for run_dir in run_dirs]  # runs another process is training now
        if as_json:
            runs = [
                {"label": d.spec.label, "dir": str(d.path), "status": p.state, "epochs_done": p.epochs_done,
                 "trained_by": o.describe() if o else None}
                for d, p, o in zip(run_dirs, progress, owners)
            ]
            return _emit_json({"settings": to_dict(settings), "runs": runs})
        out.print(dump_settings(settings), markup=False, highlight=False)
        for run_dir, state, owner in zip(run_dirs, progress, owners):
            training = f"  (being trained by {owner.describe()})" if owner else ""
            out.print(f"{run_dir.spec.label:<28} {str(state):<28} {run_dir.path}{training}", markup=False, highlight=False)
        counts = {name: sum(p.state == name for p in progress) for name in ("finished", "partial", "new")}
        out.print(f"{len(progress)} runs: " + ", ".join(f"{n} {name}" for name, n in counts.items()), highlight=False)
        return
    quiet_log = as_json or not main_rank
    log = (lambda message: None) if quiet_log else (lambda message: err.print(message, markup=False, highlight=False, soft_wrap=True))
    result = _run(lambda: run_experiment(settings, progress=not (quiet or as_json) and main_rank, log=log, parallel=parallel))
    if not main_rank:
        return
    dense, rows = summarize(result.runs, settings.xi)
    if as_json:
        return _emit_json({"dense": asdict(dense), "tickets": [asdict(row) for row in rows], "runs": result.runs})
    if result.trained == 0:
        err.print(f"All {len(result.runs)} runs were already finished in {settings.runs_dir}; nothing trained.", markup=False, soft_wrap=True)
    kind = "lottery tickets after training, with rewinding" if settings.lottery.enabled else "tickets at initialization"
    if not settings.lottery.enabled and settings.pruning.filter_baseline:
        kind += ", layers vs filters"
    table, dense_line = to_rich(dense, rows, settings.xi, title=f"{settings.name}: {kind}")
    out.print(table)
    out.print(dense_line, highlight=False)
    report = Path(settings.runs_dir) / f"{settings.name}-table.md"
    atomic_write_text(report, to_markdown(dense, rows, settings.xi))
    out.print(f"Table saved to {report}", markup=False, highlight=False)


@app.command()
def report(
    runs_dir: Path = typer.Argument(Path("runs"), help="A runs directory (default: ./runs)."),
    xi: float = typer.Option(0.0, "--xi", help="Winning margin in accuracy points: a ticket wins when acc + xi >= dense."),
    report_out: Optional[Path] = typer.Option(None, "--out", help="Folder for the report's figures (PNG, SVG) and tables (Markdown, CSV, LaTeX); default RUNS_DIR/report. An earlier report there is replaced."),
    no_files: bool = typer.Option(False, "--no-files", metavar="", help="Only print the tables; write no files."),
    as_json: bool = JsonOpt,
) -> None:
    """Tables and figures from finished runs, without training: one set per experiment found in RUNS_DIR.

    Runs trained the same way (network, data, training) form one experiment; each ticket is compared
    with the dense run of its seed. Besides printing the tables (and a robustness table where runs have a
    robustness.json), writes them as Markdown, CSV and LaTeX (booktabs) and draws the figures (PNG and SVG)
    into RUNS_DIR/report (see index.md there).

    Examples:
      layerlottery report runs
      layerlottery report runs --out paper/figures --xi 0.2
      layerlottery report runs --no-files --json
    """
    from dataclasses import asdict

    from layerlottery.reports import collect_runs, summarize, to_rich
    from layerlottery.robustness.summary import robustness_table, rows_to_dict
    from layerlottery.robustness.summary import to_rich as robustness_to_rich

    from layerlottery.config import check_margin

    _run(lambda: check_margin(xi, "--xi"))  # the same rule as run's xi setting
    groups = _run(lambda: collect_runs(runs_dir))
    tables = {}
    for name, results in groups.items():
        if not any(r["kind"] == "dense" for r in results):
            err.print(f"{name}: no finished dense run yet, skipped", markup=False, highlight=False, soft_wrap=True)
            continue
        tables[name] = summarize(results, xi)
    robustness = {name: rows for name, rows in _run(lambda: robustness_table(runs_dir)).items() if name in tables}
    written = None
    if tables and not no_files:
        from layerlottery.reports.write import write_report

        written = _run(lambda: write_report(runs_dir, report_out, xi))
    if as_json:
        return _emit_json({
            name: {"dense": asdict(d), "tickets": [asdict(r) for r in rows]}
            | ({"robustness": rows_to_dict(robustness[name])} if name in robustness else {})
            for name, (d, rows) in tables.items()
        })  # fmt: skip
    if not tables:
        _fail(f"no finished experiment (dense run + tickets) in {runs_dir}")
    for name, (dense, rows) in tables.items():
        table, dense_line = to_rich(dense, rows, xi, title=name)
        out.print(table)
        out.print(dense_line, highlight=False)
        if name in robustness:
            out.print(robustness_to_rich(robustness[name], title=f"{name}: robustness"))
    if written is not None:
        for experiment in written.experiments:
            for note in experiment.notes:
                err.print(f"{experiment.name}: {note}", markup=False, highlight=False, soft_wrap=True)
        figures = sum(len(e.figures) for e in written.experiments)
        tables_written = sum(len(e.tables) for e in written.experiments)
        out.print(
            f"Report written to {written.out}: {tables_written} table(s) (.md .csv .tex), {figures} figure(s) (.png .svg); "
            f"start with {written.out / 'index.md'}", markup=False, highlight=False, soft_wrap=True,
        )


@app.command()
def robustness(
    run_dirs: list[Path] = typer.Argument(..., help="Finished run directories (runs/dense-...), or a runs directory: every finished run inside."),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", help="Comma-separated corruption names or families (noise, blur, digital); default all; none for none."),
    severities: Optional[str] = typer.Option(None, "--severities", help="Comma-separated severities 1..5 (default 1,2,3,4,5)."),
    source: str = typer.Option("generated", "--source", help="generated (corrupted on the fly; any dataset) or cifar10c (the published CIFAR-10-C images; CIFAR-10 runs)."),
    shift: Optional[str] = typer.Option(None, "--shift", help="Published shifted test sets: cifar102 (CIFAR-10.2; CIFAR-10 runs). Default none."),
    attacks: Optional[list[str]] = typer.Option(None, "--attack", help="Attack, repeatable: NAME:NORM:eps=E[:alpha=A][:steps=N][:restarts=R], e.g. pgd:linf:eps=8/255:steps=10 or fgsm:l2:eps=0.5. Default auto: PGD L-inf, 10 steps, eps 0.07 on grayscale data, 1/255 on colour data. none for none."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Test images for clean and corruption accuracy: a seeded subset (default: all)."),
    attack_samples: int = typer.Option(500, "--attack-samples", help="Test images attacked, the first of the same subset (default 500; 0 = all)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per forward pass."),
    device: str = DeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seeds the image subset, the corruption noise and the attack starts: every run sees the same images."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the runs' dataset files and the published sets are (default: each run's data.data_dir)."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Robustness of finished runs: accuracy under corruptions, on shifted test sets and under attack.

    Each run is evaluated on its own test split (rebuilt from its settings) and the results go to
    robustness.json in its directory, part by part: a second call computes nothing, an interrupted one
    resumes, and changed settings compute only what they change. Every run sees the same corrupted images.

    Examples:
      layerlottery robustness runs
      layerlottery robustness runs/dense-1dd146ba6c1b --corruptions noise,blur --severities 3,5
      layerlottery robustness runs --attack pgd:linf:eps=0.1:steps=20 --attack fgsm:linf:eps=0.1 --attack-samples 1000
      layerlottery robustness runs --source cifar10c --shift cifar102 --device cuda
    """
    from layerlottery.robustness.evaluate import evaluate_runs
    from layerlottery.robustness.settings import settings_from_flags
    from layerlottery.robustness.summary import runs_table

    settings = _run(lambda: settings_from_flags(
        corruptions=corruptions, severities=severities, source=source, shift=shift, attacks=attacks,
        max_samples=max_samples, attack_samples=attack_samples, batch_size=batch_size, device=device, seed=seed,
    ))  # fmt: skip
    log = lambda message: err.print(message, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    evaluations = _run(lambda: evaluate_runs(run_dirs, settings, data_dir=data_dir, progress=not (quiet or as_json), log=log))
    if as_json:
        return _emit_json([{"path": str(e.path), "label": e.label, "computed": e.computed, **e.record} for e in evaluations])
    out.print(runs_table(evaluations))
    computed = sum(e.computed for e in evaluations)
    if computed == 0:
        err.print(f"Every part was already stored in the {len(evaluations)} run(s); nothing computed.", markup=False, soft_wrap=True)
    out.print(f"Results in robustness.json of each run directory ({computed} part(s) computed now).", markup=False, highlight=False)


@app.command("export-hf")
def export_hf(
    run_dir: Path = typer.Argument(..., help="A finished run directory of an hf: language model (runs/ticket-...)."),
    out_dir: Path = typer.Argument(..., help="The Hugging Face model folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace an existing folder."),
    as_json: bool = JsonOpt,
) -> None:
    """Save a finished language-model run (dense or pruned) as a Hugging Face model folder.

    The trained network is written with save_pretrained (a ticket's config counts only the layers it kept), with the run's tokenizer when it used a Hugging Face one: transformers' from_pretrained loads it without layerlottery.

    Examples:
      layerlottery export-hf runs/ticket-1a2b3c4d5e6f pruned-gpt2
    """
    from layerlottery.experiments.hf_export import save_run_hf

    folder = _run(lambda: save_run_hf(run_dir, out_dir, overwrite=overwrite))
    if as_json:
        return _emit_json({"run": str(run_dir), "folder": str(folder)})
    out.print(f"Saved {run_dir} to {folder} (AutoModelForCausalLM.from_pretrained loads it)", markup=False, highlight=False)


def _literal_brackets_in_help(typer_app: typer.Typer) -> None:
    """Help shows docstrings through rich markup, which swallows ``[grasp]`` in an example such as
    ``'pruning.criteria=[grasp]'``; escaped, every example reads as typed and works when copied."""
    for command in typer_app.registered_commands:
        text = command.help if command.help is not None else inspect.getdoc(command.callback)
        if text:
            command.help = escape(text)


_literal_brackets_in_help(app)  # after the last command, so that every command's help is covered


def main() -> None:
    """Entry point of the ``layerlottery`` console script."""
    app()


if __name__ == "__main__":
    main()
