"""Cost of scoring the blocks with each criterion, relative to one training epoch of the dense network.

``python benchmarks/criteria_cost.py [--network cifar_resnet56] [--batch-size 128] [--steps 2] [--repeats 3]
[--criteria hrank expectabs kl pls snip grasp] [--threads 1]``

The epoch is estimated, not run: ``--steps`` SGD steps at ``--batch-size`` (the loop's own step, from
``train_speed.Contender``: batch from ``DeviceLoader`` with pad + crop + flip, forward, backward, SGD) are
timed and scaled to an epoch of CIFAR-10 (50,000 images, 391 steps at batch 128). Each criterion scores the
same network with its default options and the sample count the commands use: ``samples_per_class=10``
class-balanced images (100 for 10 classes), through ``score_blocks`` with the blocks found beforehand, as
``ticket_at_init`` calls it (so the deep copy of the model is included). Training chunks and criteria are
timed interleaved, in an order shuffled per repeat, so that drifting load hits them alike; medians are
reported. Goal (issue 6): every criterion under 5% of an epoch.

Results go to ``benchmarks/results/criteria_cost.md`` (``criteria_cost_cuda.md`` for CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import statistics
import sys
import time
import warnings

import torch

import layerlottery as ll
from common import add_machine_arguments, apply_threads, load_average, machine_line, repeat_order, sync, write_result
from layerlottery.config import TrainSettings
from layerlottery.criteria import get_criterion, score_blocks
from layerlottery.data import DeviceLoader, get_dataset
from train_speed import Contender

CIFAR10_TRAIN_IMAGES = 50_000
SAMPLES_PER_CLASS = 10  # the default of `layerlottery score/prune --samples-per-class` and of the presets

WHAT = {
    "hrank": "1 forward pass + an SVD of every HxW map of every removable block",
    "expectabs": "1 forward pass, per-filter sums",
    "kl": "1 + (removable blocks) forward passes",
    "pls": "1 forward pass + scikit-learn PLS on pooled features",
    "snip": "1 forward + backward",
    "grasp": "2 forward + backward passes, one with a double backward",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--network", default="cifar_resnet56")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="SGD steps per timed training chunk")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--criteria", nargs="+", default=["hrank", "expectabs", "kl", "pls", "snip", "grasp"])
    args = parser.parse_args()
    device = apply_threads(args)
    torch.manual_seed(0)

    data = get_dataset("synthetic", num_samples=max(args.batch_size * 2, 400), image_size=32, channels=3)
    settings = dataclasses.replace(TrainSettings(), epochs=1, batch_size=args.batch_size, device=str(device))
    loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=4, flip=True, seed=0, device=device)
    trainer = Contender("train", ll.create_model(args.network, shortcut="B"), loader, settings, device)
    model = ll.create_model(args.network, shortcut="B").to(device)
    blocks = ll.find_blocks(model)
    scoring = data.class_balanced(SAMPLES_PER_CLASS, seed=0, device=device)
    steps_per_epoch = math.ceil(CIFAR10_TRAIN_IMAGES / args.batch_size)

    def score(name: str, network: torch.nn.Module = model, samples: tuple = scoring, found: object = blocks) -> float:
        options = {"samples_per_class": SAMPLES_PER_CLASS} if "samples_per_class" in get_criterion(name).options else {}
        sync(device)
        start = time.perf_counter()
        score_blocks(network, name, samples, blocks=found, **options)
        sync(device)
        return time.perf_counter() - start

    load_before = load_average()
    warnings.simplefilter("ignore")  # class-balance and degenerate-score warnings do not matter for timing
    trainer.chunk(1)  # warm-up: allocator, algorithm choice, optimizer state
    # Warm-up on a small network and batch: lazy imports (scikit-learn), first-call dispatch.
    small = ll.create_model("cifar_resnet20", shortcut="B").to(device)
    small_batch = data.class_balanced(2, seed=1, device=device)
    for name in args.criteria:
        score(name, small, small_batch, ll.find_blocks(small))
    seconds: dict[str, list[float]] = {name: [] for name in ["train", *args.criteria]}
    contenders = ["train", *args.criteria]
    for r in range(args.repeats):
        for i in repeat_order(len(contenders), r):
            name = contenders[i]
            seconds[name].append(trainer.chunk(args.steps) / args.steps if name == "train" else score(name))
            print(f"repeat {r}: {name} {seconds[name][-1]:.2f} s", flush=True)

    step = statistics.median(seconds["train"])
    epoch = step * steps_per_epoch
    rows = []
    for name in args.criteria:
        t = statistics.median(seconds[name])
        share = t / epoch
        # Worst case under the load's noise: the slowest scoring against the fastest training step seen.
        worst = max(seconds[name]) / (min(seconds["train"]) * steps_per_epoch)
        rows.append(
            f"| {name} | {t:.2f} | {min(seconds[name]):.2f}-{max(seconds[name]):.2f} | {share:.2%} | {worst:.2%} | "
            f"{'yes' if worst < 0.05 else '**no**'} | {WHAT.get(name, '')} |"
        )
    removable = len(blocks.removable)
    over = [name for name in args.criteria if max(seconds[name]) / (min(seconds["train"]) * steps_per_epoch) >= 0.05]
    reading = (
        f"**Over 5% of an epoch: {', '.join(over)}.**" if over else "**Every criterion is under 5% of an epoch.**"
    ) + (
        f" The dearest is KL: it runs the network once per removable block ({removable} + 1 forward passes of "
        f"{len(scoring[1])} images, about {(removable + 1) * len(scoring[1]):,} image-forwards against an epoch's "
        f"{CIFAR10_TRAIN_IMAGES:,} forward + backward passes, roughly 3 forwards each), then GraSP (double backward)."
        " All of them grow linearly with the number of scoring images: 10x the default samples would put KL"
        f" near {10 * statistics.median(seconds['kl']) / epoch:.0%} of an epoch."
        if "kl" in args.criteria
        else ""
    )
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/criteria_cost.py", *sys.argv[1:]])
    lines = [
        "# Cost of the block criteria relative to one training epoch",
        "",
        f"Measured with `{command}` on {machine_line(str(device))}.",
        f"{args.network} (option B, {removable} removable blocks), float32. The epoch is an estimate: the median of "
        f"{args.repeats} timed chunks of {args.steps} SGD steps at batch {args.batch_size}",
        f"(synthetic CIFAR-shaped data through `DeviceLoader`, pad + crop + flip; forward, backward, SGD) = "
        f"{step:.2f} s/step (range {min(seconds['train']):.2f}-{max(seconds['train']):.2f}), times {steps_per_epoch} steps",
        f"(CIFAR-10's 50,000 training images) = **{epoch:.0f} s per epoch**; no epoch was run.",
        f"Every criterion scores {SAMPLES_PER_CLASS} class-balanced images per class ({len(scoring[1])} images), the "
        "default of the commands and presets, with its default options, through `score_blocks` (deep copy included,",
        "blocks found beforehand, as `ticket_at_init` does). Criteria and training chunks ran interleaved in a shuffled "
        f"order per repeat (warm-up: one training chunk, each criterion once on ResNet-20); medians of {args.repeats} repeats.",
        f"The machine was shared with other agents during the run (1-minute load average {load_before} before, "
        f"{load_average()} after), so absolute times are inflated; the shares much less, as both sides slow alike.",
        *([args.note] if args.note else []),
        "",
        "| criterion | seconds (median) | range | share of an epoch (medians) | worst case (slowest scoring, fastest step) "
        "| under 5%? | work |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        reading,
        "",
    ]
    write_result("criteria_cost.md" if device.type == "cpu" else "criteria_cost_cuda.md", "\n".join(lines))


if __name__ == "__main__":
    main()
