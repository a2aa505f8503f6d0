"""Our training loop vs a plain PyTorch loop: one epoch of the same model on the same data, side by side.

``python benchmarks/loop_vs_plain.py [--device cuda] [--model cifar_resnet20] [--samples 1024]
[--batch-size 128] [--repeats 7] [--workers 0 2] [--threads 1] [--fp32]``

Contenders, each training its own copy of the same initial model for one epoch per repeat:

- **ours**: :func:`layerlottery.training.train` (``epochs=1``, ``progress=False``, no checkpoint directory) on a
  :class:`~layerlottery.data.DeviceLoader`: the uint8 dataset lives on the device and every batch is gathered,
  padded, cropped, flipped and normalized there in a few vectorized ops. On CUDA ``train`` also uses its
  defaults, bfloat16 autocast and channels-last (``--fp32`` turns both off, so that only the loop and the data
  pipeline differ), and replays its whole step from a CUDA graph with fused SGD (``train.cuda_graphs``; see
  ``train_speed.py --modes`` for eager vs graphed side by side).
- **plain, W workers**: the textbook loop. A ``Dataset`` returns one uint8 image tensor passed through
  ``torchvision.transforms.v2`` (RandomCrop(32, padding=4), RandomHorizontalFlip, ToDtype(float32, scale=True),
  Normalize) per sample, a ``DataLoader(batch_size, shuffle=True, num_workers=W)`` collates (pinned memory on
  CUDA), each batch is copied to the device, and every step reads ``loss.item()`` as tutorials do. float32,
  the same SGD (lr, momentum, Nesterov, weight decay from ``TrainSettings``).

Each contender's time is the wall clock of one whole epoch call, device synchronized at both ends (so ours
includes ``train``'s own set-up, the plain loop its worker start-up, as a new epoch pays them). The contenders
run interleaved, the order shuffled every repeat, after one warm-up epoch each; reported are images/s (median
and IQR over repeats), the ratio ours/plain (median epoch time of plain / median of ours), and the median and
IQR of the per-repeat paired ratios (plain / ours time of the same repeat). A second, quick table times the data
pipelines alone (the same batches delivered on the device, no model), since on a CPU the network's compute
dwarfs them and the epoch ratio alone would hide what the pipeline costs.

Results go to ``benchmarks/results/loop_vs_plain.md`` (``loop_vs_plain_cuda.md``
for CUDA).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import layerlottery as ll
from common import add_machine_arguments, apply_threads, load_average, machine_line, quartiles, repeat_order, sync, write_result
from layerlottery.config import TrainSettings
from layerlottery.data import DeviceLoader, ImageDataset, get_dataset
from layerlottery.training import train


class PlainImages(Dataset):
    """The tutorial-style dataset: one uint8 (C, H, W) tensor per item, transformed on the fly (no PIL)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def plain_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device) -> float:
    """One epoch of the textbook loop; returns the mean loss (from the per-step ``.item()`` reads)."""
    model.train()
    running_loss, steps = 0.0, 0
    for inputs, labels in loader:
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # a host sync every step on CUDA, as in most tutorials
        steps += 1
    return running_loss / steps


def drain_plain(loader: DataLoader, device: torch.device) -> None:
    """Produce one epoch of plain batches on the device, without training."""
    for inputs, labels in loader:
        inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)


class Contender:
    """A named epoch function and its timings (whole-call seconds per repeat)."""

    def __init__(self, label: str, run: Callable[[], None], device: torch.device) -> None:
        self.label, self.run, self.device = label, run, device
        self.seconds: list[float] = []

    def epoch(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        self.run()
        sync(self.device)
        return time.perf_counter() - start


def interleave(contenders: list[Contender], repeats: int) -> None:
    """One untimed warm-up epoch each, then ``repeats`` timed epochs each, interleaved in shuffled order."""
    for contender in contenders:
        contender.epoch()
    for r in range(repeats):
        for i in repeat_order(len(contenders), r):
            contenders[i].seconds.append(contenders[i].epoch())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--samples", type=int, default=1024, help="synthetic CIFAR-shaped training images (one epoch)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per contender")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader num_workers of the plain loop(s)")
    parser.add_argument("--fp32", action="store_true", help="train ours without bf16 autocast and channels-last (CUDA)")
    args = parser.parse_args()
    device = apply_threads(args)
    torch.manual_seed(0)

    data: ImageDataset = get_dataset("synthetic", num_samples=args.samples, image_size=32, channels=3)
    settings = dataclasses.replace(
        TrainSettings(), epochs=1, batch_size=args.batch_size, device=str(device),
        **({"amp": False, "channels_last": False} if args.fp32 else {}),
    )
    initial = ll.create_model(args.model, shortcut="B")

    # ours: the dataset is put on the device once (as a run does before its first epoch), outside the timing.
    ours_model = copy.deepcopy(initial)
    device_loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=4, flip=True, seed=0, device=device)
    ours_steps_ips: list[float] = []

    def run_ours() -> None:
        result = train(ours_model, device_loader, settings, progress=False)
        ours_steps_ips.append(result.images_per_second or 0.0)

    def drain_ours() -> None:
        for _ in device_loader.epoch(1):
            pass

    contenders = [Contender("ours (train + DeviceLoader)", run_ours, device)]
    # The data pipelines alone (batches produced and on the device, no model): what the loop has to hide.
    pipelines = [Contender("ours: DeviceLoader", drain_ours, device)]

    transform = v2.Compose([
        v2.RandomCrop(32, padding=4),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(data.mean, data.std),
    ])
    plain_data = PlainImages(data.images, data.labels, transform)
    for workers in args.workers:
        model = copy.deepcopy(initial).to(device)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=settings.momentum,
            nesterov=settings.nesterov, weight_decay=settings.weight_decay,
        )
        # A fresh iterator per epoch, not persistent workers: the tutorial default, so workers start every epoch.
        loader = DataLoader(
            plain_data, batch_size=args.batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda"
        )
        run = lambda m=model, l=loader, o=optimizer: plain_epoch(m, l, o, device)  # noqa: E731 (bind this loop's objects)
        contenders.append(Contender(f"plain, {workers} workers", run, device))
        pipelines.append(Contender(f"plain: DataLoader, {workers} workers", lambda l=loader: drain_plain(l, device), device))

    load_before = load_average()
    print(f"{args.model}: one warm-up epoch each, then {args.repeats} interleaved repeats ...", flush=True)
    interleave(contenders, args.repeats)
    del ours_steps_ips[: -args.repeats]  # drop the warm-up epoch's reading
    print("data pipelines alone ...", flush=True)
    interleave(pipelines, args.repeats)

    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/loop_vs_plain.py", *sys.argv[1:]])
    ours_precision = "bfloat16 autocast + channels-last" if device.type == "cuda" and settings.amp else "float32"
    lines = [
        "# Our training loop vs a plain PyTorch loop",
        "",
        f"Measured with `{command}` on {machine_line(str(device))}.",
        f"{args.model} option B, {args.samples} synthetic CIFAR-shaped uint8 images, batch {args.batch_size}, one epoch per",
        f"repeat, {args.repeats} repeats interleaved (order shuffled per repeat) after one warm-up epoch each. ours = `train` on a",
        f"`DeviceLoader` (on-device batched pad + crop + flip, {ours_precision}); plain = per-sample `transforms.v2`",
        "(RandomCrop 32 pad 4, RandomHorizontalFlip, ToDtype scale, Normalize) in a `DataLoader`, float32, `loss.item()`",
        "every step. Same model init, SGD (lr, momentum, Nesterov, weight decay). Time = wall clock of the whole epoch",
        "call. Medians with [Q1, Q3]; ours/plain speedup = median plain time / median ours time; paired ratios = plain / ours",
        "time of the same repeat.",
        f"Absolute img/s move with the machine's load (1-minute load average {load_before}, at the end {load_average()});",
        "the interleaved ratios much less.",
        *([args.note] if args.note else []),
        "",
        "| contender | epoch s [IQR] | img/s [IQR] | ours/plain speedup | paired ratios: median [IQR] |",
        "|---|---|---|---|---|",
    ]
    ours = contenders[0]
    for contender in contenders:
        q = quartiles(contender.seconds)
        if contender is ours:
            ratio = "- | -"
        else:
            paired = quartiles([p / o for p, o in zip(contender.seconds, ours.seconds)])
            ratio = f"{q[1] / quartiles(ours.seconds)[1]:.3f} | {paired[1]:.3f} [{paired[0]:.3f}, {paired[2]:.3f}]"
        rate = lambda s: args.samples / s  # noqa: E731
        lines.append(
            f"| {contender.label} | {q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}] | {rate(q[1]):.0f} [{rate(q[2]):.0f}, {rate(q[0]):.0f}] | {ratio} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "The data pipelines alone, same batches, no model (ours: `DeviceLoader.epoch`; plain: iterating the `DataLoader`",
        "and copying each batch to the device), interleaved the same way:",
        "",
        "| pipeline | epoch ms [IQR] | share of ours' training epoch |",
        "|---|---|---|",
    ]
    for pipeline in pipelines:
        q = quartiles(pipeline.seconds)
        share = q[1] / quartiles(ours.seconds)[1]
        lines.append(f"| {pipeline.label} | {1000 * q[1]:.1f} [{1000 * q[0]:.1f}, {1000 * q[2]:.1f}] | {share:.1%} |")
        print(lines[-1], flush=True)
    lines += [
        "",
        f"ours, training steps only (`TrainResult.images_per_second`, batch preparation included, set-up excluded): "
        f"median {statistics.median(ours_steps_ips):.0f} img/s.",
        "",
    ]
    write_result("loop_vs_plain.md" if device.type == "cpu" else "loop_vs_plain_cuda.md", "\n".join(lines))


if __name__ == "__main__":
    main()
