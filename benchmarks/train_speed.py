"""Training throughput of tickets vs the dense network, against the MAC ratio, and of the step's implementations.

``python benchmarks/train_speed.py [--device cuda] [--batch-size 64] [--steps 4] [--repeats 9]
[--networks cifar_resnet32 cifar_resnet56] [--orders first last] [--modes eager fused graphed compile]
[--compile-models dense] [--threads 1] [--out FILE]``

What is timed is a full SGD step as :func:`layerlottery.training.train` takes it: a batch from a
:class:`~layerlottery.data.DeviceLoader` (on-device pad + crop + flip and normalization), forward,
cross-entropy, backward, the optimizer step (SGD + Nesterov + weight decay from ``TrainSettings``; on CUDA
also its bfloat16 autocast and channels-last layout) and the on-device loss/accuracy totals. The library's own
step objects run it (``layerlottery.training.step``), so only the network and the implementation differ.

Implementations (``--modes``; default ``eager`` on the CPU, all four on CUDA):

- ``eager``: the loop's step as it was before CUDA graphs: torch's default SGD (foreach on CUDA);
- ``fused``: the same with ``SGD(fused=True)``, the loop's eager step on CUDA now;
- ``graphed``: the whole step replayed from one CUDA graph (``GraphedStep``, fused SGD), the loop's default on CUDA;
- ``compile``: ``torch.compile(model)`` (``--compile-mode``) with fused SGD; only the dense networks by default
  (``--compile-models all`` for the tickets too), since each compilation takes tens of seconds.

Per network, every model (dense and tickets) in every mode is a contender with its own copy of the weights,
optimizer and batch stream, timed in chunks of ``--steps`` steps, interleaved: every repeat runs one chunk of each
contender, in an order shuffled from repeat to repeat, so that drifting load hits them all alike. Chunks start
after warm-up (which holds a compilation or a graph capture: its one-time cost is reported as the warm-up time
minus its steps at the median step time) and the device is synchronized before every clock read. Reported: the
median over repeats with its IQR; per ticket and mode, the measured speedup (median dense time / median ticket
time) against the MAC ratio and the per-repeat paired ratios (dense / ticket chunk of the same repeat); per model
and mode, the paired ratio to ``eager`` (eager / mode chunk of the same repeat).

Results go to ``benchmarks/results/train_speed.md`` (``train_speed_cuda.md`` for CUDA) or ``--out``, rewritten
after each network, so a run cut short keeps the networks it finished.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

import layerlottery as ll
from common import RESULTS, add_machine_arguments, apply_threads, load_average, machine_line, quartiles, repeat_order, sync, write_result
from layerlottery.config import TrainSettings
from layerlottery.data import DeviceLoader, get_dataset
from layerlottery.training import build_optimizer
from layerlottery.training.graphed import GraphedStep
from layerlottery.training.step import EagerStep

# The paper's settings (Table 4): ResNet-32 p = 1, 3, 5 and ResNet-56 p = 5, 12, option B.
# Which end of the network a ticket's blocks are taken from: the score of block i is sign * i, lowest removed first.
ORDERS = {"first": 1, "last": -1}
P_VALUES = {"cifar_resnet32": (1, 3, 5), "cifar_resnet56": (5, 12), "cifar_resnet20": (1, 2), "cifar_resnet44": (3, 7)}


MODES = ("eager", "fused", "graphed", "compile")


def numbered_batches(loader: DeviceLoader, stepper: EagerStep) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Endless (inputs, labels, step) epoch after epoch, the totals reset at each epoch as the loop does; each
    contender gets its own stream, so each does the same loader work."""
    epoch = 0
    while True:
        epoch += 1
        stepper.start_epoch()
        for step, (inputs, labels) in enumerate(loader.epoch(epoch), start=1):
            yield inputs, labels, step


class Contender:
    """A model in one mode, with its own optimizer and batch stream, stepped by the library's step objects."""

    def __init__(
        self, label: str, mode: str, model: nn.Module, loader: DeviceLoader, settings: TrainSettings,
        device: torch.device, compile_mode: str,
    ) -> None:
        on_cuda = device.type == "cuda"
        # Same choices as layerlottery.training.loop: bf16 autocast and channels-last on CUDA only.
        amp, channels_last = settings.amp and on_cuda, settings.channels_last and on_cuda
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.label, self.mode = label, mode
        self.model = model.to(device=device, memory_format=memory_format).train()
        optimizer = build_optimizer(self.model, settings, fused=mode != "eager")
        net = torch.compile(self.model, mode=compile_mode) if mode == "compile" else self.model
        make = GraphedStep if mode == "graphed" else EagerStep
        self.stepper = make(net, optimizer, device, amp=amp, channels_last=channels_last)
        self.stream = numbered_batches(loader, self.stepper)
        self.device = device
        self.seconds: list[float] = []
        self.warmup_seconds = 0.0

    def step(self) -> None:
        """One SGD step, the loop's own: batch, forward, loss, zero_grad, backward, step, totals (or a replay)."""
        inputs, labels, step = next(self.stream)
        self.stepper(inputs, labels, step)

    def chunk(self, steps: int) -> float:
        """Seconds for ``steps`` consecutive steps, synchronized at both ends."""
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return time.perf_counter() - start

    def one_time_seconds(self, warmup: int) -> float:
        """Warm-up time beyond its steps at the median step time: the compilation or the graph capture."""
        return max(0.0, self.warmup_seconds - warmup * quartiles(self.seconds)[1])


def measure(contenders: list[Contender], steps: int, repeats: int, warmup: int) -> None:
    """Fill every contender's ``seconds`` with ``repeats`` chunk times, interleaved in shuffled order."""
    for contender in contenders:  # warm-up: allocator, cuDNN algorithm choice, optimizer state, compile, capture
        for _ in range(warmup):
            contender.warmup_seconds += contender.chunk(steps)
    for r in range(repeats):
        for i in repeat_order(len(contenders), r):
            contenders[i].seconds.append(contenders[i].chunk(steps))


def ticket_rows(name: str, plans: list, models: dict[tuple[str, str], Contender], modes: list[str], steps: int, batch: int) -> list[str]:
    """Per ticket and mode: throughput, step time, measured speedup over the dense model against the MAC ratio."""
    rows = []
    for mode in modes:
        dense = models[("dense", mode)]
        dq = quartiles(dense.seconds)
        for order, p, plan in plans:
            ticket = models[(f"{order} p={p}", mode)]
            tq = quartiles(ticket.seconds)
            mac_ratio = plan.dense_macs / plan.pruned_macs
            speedup = dq[1] / tq[1]
            paired = quartiles([d / t for d, t in zip(dense.seconds, ticket.seconds)])
            per_step = lambda q: f"{1000 * q[1] / steps:.1f} [{1000 * q[0] / steps:.1f}, {1000 * q[2] / steps:.1f}]"  # noqa: E731
            images = batch * steps
            mode_cell = f" {mode} |" if len(modes) > 1 else ""
            rows.append(
                f"| {name} |{mode_cell} {p} | {order}: {', '.join(plan.removed)} | {mac_ratio:.3f} | {images / dq[1]:.0f} | {images / tq[1]:.0f} | "
                f"{per_step(dq)} | {per_step(tq)} | {speedup:.3f} | {paired[1]:.3f} [{paired[0]:.3f}, {paired[2]:.3f}] | "
                f"{speedup / mac_ratio:.1%} |"
            )
    return rows


def mode_rows(name: str, labels: list[str], models: dict[tuple[str, str], Contender], modes: list[str], args: argparse.Namespace) -> list[str]:
    """Per model and mode: throughput, step time, paired ratio to eager, one-time cost (compile or capture)."""
    rows = []
    for label in labels:
        eager = models.get((label, "eager"))
        for mode in modes:
            contender = models.get((label, mode))
            if contender is None:
                continue
            q = quartiles(contender.seconds)
            ms = lambda v: 1000 * v / args.steps  # noqa: E731
            if eager is not None:
                paired = quartiles([e / c for e, c in zip(eager.seconds, contender.seconds)])
                ratio = f"{paired[1]:.2f} [{paired[0]:.2f}, {paired[2]:.2f}]"
            else:
                ratio = "-"
            rows.append(
                f"| {name} | {label} | {mode} | {args.batch_size * args.steps / q[1]:.0f} | {ms(q[1]):.2f} [{ms(q[0]):.2f}, {ms(q[2]):.2f}] "
                f"| {ratio} | {contender.one_time_seconds(args.warmup):.1f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="SGD steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=9, help="timed chunks per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed chunks per contender first")
    parser.add_argument("--networks", nargs="+", default=["cifar_resnet32", "cifar_resnet56"], choices=sorted(P_VALUES))
    parser.add_argument("--orders", nargs="+", default=["first", "last"], choices=sorted(ORDERS), help="which blocks go")
    parser.add_argument("--samples", type=int, default=1024, help="synthetic CIFAR-shaped training images")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="step implementations (default: eager on the CPU, all on CUDA)")
    parser.add_argument("--compile-models", choices=("dense", "all"), default="dense", help="which models the compile mode runs")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--dense-only", action="store_true", help="no tickets: compare the modes on the dense networks")
    parser.add_argument("--out", type=Path, help="results file (default: results/train_speed.md, _cuda.md on CUDA)")
    args = parser.parse_args()
    device = apply_threads(args)
    modes = args.modes or (list(MODES) if device.type == "cuda" else ["eager"])
    if "graphed" in modes and device.type != "cuda":
        parser.error("--modes graphed needs --device cuda (CUDA graphs)")
    if "graphed" in modes and args.warmup * args.steps < 4:
        parser.error("graphed needs --warmup x --steps >= 4 (3 eager warm-up steps, then the capture)")
    out = args.out or RESULTS / ("train_speed.md" if device.type == "cpu" else "train_speed_cuda.md")
    torch.manual_seed(0)

    settings = dataclasses.replace(TrainSettings(), epochs=1, batch_size=args.batch_size, device=str(device))
    data = get_dataset("synthetic", num_samples=args.samples, image_size=32, channels=3)
    loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=4, flip=True, seed=0, device=device)
    load_before = load_average()
    rows: list[str] = []
    speed_rows: list[str] = []
    for name in args.networks:
        dense_model = ll.create_model(name, shortcut="B")
        blocks = ll.find_blocks(dense_model)
        # (order, p, plan): blocks taken from the input end or from the output end. Every removable block costs
        # the same MACs, so both give the same MAC ratio, but not the same time: a stage-1 block works on 4x the
        # activations of a stage-3 block (32x32x16 vs 8x8x64), so memory-bound work (BatchNorm, ReLU, the
        # residual add, their backward) goes with it. The two orders bracket what a criterion's choice can do.
        plans = [
            (order, p, ll.select_blocks(blocks, {b.name: ORDERS[order] * float(i) for i, b in enumerate(blocks)}, p=p))
            for order in args.orders
            for p in P_VALUES[name]
            if not args.dense_only
        ]
        # Every contender starts from the same untrained weights: tickets are cut from the dense model, and each
        # mode gets its own deep copy, all made before any contender trains.
        labelled = [("dense", dense_model)] + [(f"{order} p={p}", ll.remove_blocks(dense_model, plan)) for order, p, plan in plans]
        models: dict[tuple[str, str], Contender] = {}
        for label, model in labelled:
            for mode in modes:
                if mode == "compile" and label != "dense" and args.compile_models == "dense":
                    continue
                models[(label, mode)] = Contender(label, mode, copy.deepcopy(model), loader, settings, device, args.compile_mode)
        contenders = list(models.values())
        print(f"{name}: timing {len(contenders)} contenders ({', '.join(modes)}) ...", flush=True)
        measure(contenders, args.steps, args.repeats, args.warmup)
        new_rows = ticket_rows(name, plans, models, [m for m in modes if m != "compile" or args.compile_models == "all"], args.steps, args.batch_size)
        new_speed_rows = mode_rows(name, [label for label, _ in labelled], models, modes, args)
        print("\n".join(new_speed_rows + new_rows), flush=True)
        rows += new_rows
        speed_rows += new_speed_rows
        write_table(out, args, device, settings, modes, load_before, rows, speed_rows)
        del models, contenders, labelled
        if device.type == "cuda":
            torch.cuda.empty_cache()


def write_table(
    out: Path, args: argparse.Namespace, device: torch.device, settings: TrainSettings, modes: list[str],
    load_before: str, rows: list[str], speed_rows: list[str],
) -> None:
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/train_speed.py", *sys.argv[1:]])
    precision = "bfloat16 autocast, channels-last" if device.type == "cuda" and settings.amp else "float32"
    several = len(modes) > 1
    lines = [
        "# Training throughput: tickets vs dense" + (", and the step's implementations" if several else ""),
        "",
        f"Measured with `{command}` on {machine_line(str(device))}.",
        f"Option B networks, {precision}, batch {args.batch_size}, synthetic CIFAR-shaped data through `DeviceLoader`",
        "(on-device pad 4 + crop + flip). A step = batch + forward + backward + SGD step (Nesterov, weight decay), the",
        f"same function for every model. Per network the dense model and its tickets run interleaved: {args.repeats} repeats,",
        f"each one timed chunk of {args.steps} steps per model (order shuffled per repeat), after {args.warmup} warm-up chunk(s).",
        "Tickets remove the p blocks nearest the input (first) or the output (last) among the removable ones (the first",
        "block of each stage is kept, as in the paper): the same MACs either way, not the same time.",
        "Medians over repeats, [Q1, Q3] IQRs; measured speedup = median dense time / median ticket time; paired ratios =",
        "dense / ticket time of the same repeat; efficiency = measured speedup / MAC ratio.",
        f"Absolute img/s move with the machine's load (1-minute load average {load_before}, at the end {load_average()}); the",
        "interleaved ratios much less.",
        *([args.note] if args.note else []),
    ]
    if several:
        lines += [
            "",
            "Modes: `eager` = the loop's step before CUDA graphs (torch's default SGD, foreach on CUDA); `fused` = the same",
            "with `SGD(fused=True)`; `graphed` = the whole step replayed from one CUDA graph (`GraphedStep`, fused SGD);",
            f"`compile` = `torch.compile(model, mode={args.compile_mode!r})` with fused SGD"
            + (" (dense networks only)." if args.compile_models == "dense" else ".")
            + f" Here: {', '.join(modes)}, all models in all modes",
            "interleaved in one run. vs eager = eager / mode time of the same model in the same repeat (median [IQR]);",
            "one-time s = warm-up time beyond its steps (the compilation, or the 3 eager warm-up steps and the capture).",
            "",
            "| network | model | mode | img/s | ms/step [IQR] | vs eager (paired) | one-time s |",
            "|---|---|---|---|---|---|---|",
            *speed_rows,
        ]
    mode_header = " mode |" if several else ""
    lines += [] if not rows else [
        "",
        f"| network |{mode_header} p | removed blocks | MAC ratio (dense/ticket) | dense img/s | ticket img/s | dense ms/step [IQR] "
        "| ticket ms/step [IQR] | measured speedup | paired ratios: median [IQR] | efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
        *rows,
    ]
    lines.append("")
    write_result(out, "\n".join(lines))


if __name__ == "__main__":
    main()
