"""Training throughput of tickets vs the dense network, against the MAC ratio, measured side by side.

``python benchmarks/train_speed.py [--device cuda] [--batch-size 64] [--steps 4] [--repeats 9]
[--networks cifar_resnet32 cifar_resnet56] [--orders first last] [--threads 1]``

What is timed is a full SGD step as :func:`layerlottery.training.train` takes it: a batch from a
:class:`~layerlottery.data.DeviceLoader` (on-device pad + crop + flip and normalization), forward,
cross-entropy, backward and the optimizer step (SGD + Nesterov + weight decay from ``TrainSettings``;
on CUDA also its bfloat16 autocast and channels-last layout). The very same step function runs the dense
network and every ticket, so only the network differs.

Per network, the dense model and its tickets are timed in chunks of ``--steps`` steps, interleaved: every
repeat runs one chunk of each contender, in an order shuffled from repeat to repeat, so that drifting load on a
shared machine hits them all alike. Chunks start after warm-up and the device is synchronized before every
clock read. Reported: the median over repeats with its IQR, the measured training speedup (median dense time /
median ticket time) against the theoretical one (dense MACs / ticket MACs), efficiency = measured / theoretical,
and the median and IQR of the per-repeat paired ratios (dense / ticket chunk of the same repeat), which the
interleaving makes robust to load.

Results go to ``benchmarks/results/train_speed.md`` (``train_speed_cuda.md`` for CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import layerlottery as ll
from common import add_machine_arguments, apply_threads, load_average, machine_line, quartiles, repeat_order, sync, write_result
from layerlottery.config import TrainSettings
from layerlottery.data import DeviceLoader, get_dataset
from layerlottery.training import build_optimizer

# The paper's settings (Table 4): ResNet-32 p = 1, 3, 5 and ResNet-56 p = 5, 12, option B.
# Which end of the network a ticket's blocks are taken from: the score of block i is sign * i, lowest removed first.
ORDERS = {"first": 1, "last": -1}
P_VALUES = {"cifar_resnet32": (1, 3, 5), "cifar_resnet56": (5, 12), "cifar_resnet20": (1, 2), "cifar_resnet44": (3, 7)}


def batches(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches, epoch after epoch; each contender gets its own stream, so each does the same loader work."""
    epoch = 0
    while True:
        epoch += 1
        yield from loader.epoch(epoch)


class Contender:
    """A model with its own optimizer and batch stream, stepped exactly like the library's training loop."""

    def __init__(self, label: str, model: nn.Module, loader: DeviceLoader, settings: TrainSettings, device: torch.device) -> None:
        on_cuda = device.type == "cuda"
        # Same choices as layerlottery.training.loop: bf16 autocast and channels-last on CUDA only.
        self.amp = settings.amp and on_cuda
        self.channels_last = settings.channels_last and on_cuda
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.label = label
        self.model = model.to(device=device, memory_format=memory_format).train()
        self.optimizer = build_optimizer(self.model, settings)
        self.stream = batches(loader)
        self.device = device
        self.seconds: list[float] = []

    def step(self) -> None:
        """One SGD step, the loop's own sequence: batch, forward, loss, zero_grad, backward, step."""
        inputs, labels = next(self.stream)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = F.cross_entropy(self.model(inputs), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def chunk(self, steps: int) -> float:
        """Seconds for ``steps`` consecutive steps, synchronized at both ends."""
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return time.perf_counter() - start


def measure(contenders: list[Contender], steps: int, repeats: int, warmup: int) -> None:
    """Fill every contender's ``seconds`` with ``repeats`` chunk times, interleaved in shuffled order."""
    for contender in contenders:  # warm-up: allocator, oneDNN/cuDNN algorithm choice, optimizer state
        for _ in range(warmup):
            contender.chunk(steps)
    for r in range(repeats):
        for i in repeat_order(len(contenders), r):
            contenders[i].seconds.append(contenders[i].chunk(steps))


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
    args = parser.parse_args()
    device = apply_threads(args)
    torch.manual_seed(0)

    settings = dataclasses.replace(TrainSettings(), epochs=1, batch_size=args.batch_size, device=str(device))
    data = get_dataset("synthetic", num_samples=args.samples, image_size=32, channels=3)
    loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=4, flip=True, seed=0, device=device)
    load_before = load_average()
    rows: list[str] = []
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
        ]
        # Tickets are copies cut from the untrained dense model, made before any contender trains.
        tickets = [ll.remove_blocks(dense_model, plan) for _, _, plan in plans]
        dense = Contender("dense", dense_model, loader, settings, device)
        contenders = [dense] + [
            Contender(f"{order} p={p}", ticket, loader, settings, device) for (order, p, _), ticket in zip(plans, tickets)
        ]
        print(f"{name}: timing {', '.join(c.label for c in contenders)} ...", flush=True)
        measure(contenders, args.steps, args.repeats, args.warmup)
        dq = quartiles(dense.seconds)
        for (order, p, plan), ticket in zip(plans, contenders[1:]):
            tq = quartiles(ticket.seconds)
            mac_ratio = plan.dense_macs / plan.pruned_macs
            speedup = dq[1] / tq[1]
            paired = quartiles([d / t for d, t in zip(dense.seconds, ticket.seconds)])
            per_step = lambda q: f"{1000 * q[1] / args.steps:.1f} [{1000 * q[0] / args.steps:.1f}, {1000 * q[2] / args.steps:.1f}]"  # noqa: E731
            images = args.batch_size * args.steps
            rows.append(
                f"| {name} | {p} | {order}: {', '.join(plan.removed)} | {mac_ratio:.3f} | {images / dq[1]:.0f} | {images / tq[1]:.0f} | "
                f"{per_step(dq)} | {per_step(tq)} | {speedup:.3f} | {paired[1]:.3f} [{paired[0]:.3f}, {paired[2]:.3f}] | "
                f"{speedup / mac_ratio:.1%} |"
            )
            print(rows[-1], flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/train_speed.py", *sys.argv[1:]])
    precision = "bfloat16 autocast, channels-last" if device.type == "cuda" and settings.amp else "float32"
    lines = [
        "# Training throughput: tickets vs dense",
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
        "",
        "| network | p | removed blocks | MAC ratio (dense/ticket) | dense img/s | ticket img/s | dense ms/step [IQR] | ticket ms/step [IQR] "
        "| measured speedup | paired ratios: median [IQR] | efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    write_result("train_speed.md" if device.type == "cpu" else "train_speed_cuda.md", "\n".join(lines))


if __name__ == "__main__":
    main()
