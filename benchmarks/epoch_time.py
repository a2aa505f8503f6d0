"""Seconds per training epoch of ``paper_resnet32`` through :func:`layerlottery.training.train`, with and without CUDA graphs.

``python benchmarks/epoch_time.py [--device cuda] [--samples 50000] [--test-samples 10000] [--epochs 2]
[--modes graphed eager] [--out FILE]``

The run is the preset's own (ResNet-32 option B, batch 128, SGD + Nesterov, weight decay, multistep schedule,
pad-4 crop + flip on the device; on CUDA bfloat16 autocast and channels-last) on synthetic CIFAR-shaped images,
as many as CIFAR-10 has (50,000 training, 10,000 test), so the epoch has CIFAR-10's 391 steps (the last of 80
images). Each mode trains its own copy of the same initial weights for ``--epochs`` epochs with evaluation after
every epoch, one mode after the other (after an untimed short epoch that sets up CUDA, cuDNN and cuBLAS):
``graphed`` is ``train.cuda_graphs=true`` (the default), ``eager`` is ``train.cuda_graphs=false``.

Reported per epoch: the loop's own training seconds (``epoch_train_seconds``: the training steps alone; the
step that captures the CUDA graph is timed apart, as ``compile_seconds``), its images/s, and per mode the
capture time, the test-set evaluation time and the wall clock of the whole ``train`` call. The issue's target:
an epoch under 3 s on an H100/H200, so that 200 epochs take about 10 minutes.

Results go to ``benchmarks/results/epoch_time_cuda.md`` (``epoch_time.md`` on the CPU) or ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

import layerlottery as ll
from common import RESULTS, Fallbacks, add_machine_arguments, apply_threads, load_average, machine_line, sync, write_result
from layerlottery.config import load_settings
from layerlottery.data import DeviceLoader, get_dataset
from layerlottery.training import evaluate, train
from layerlottery.training.loop import eval_batch_size

MODES = {"graphed": True, "eager": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--samples", type=int, default=50_000, help="synthetic training images (CIFAR-10: 50,000)")
    parser.add_argument("--test-samples", type=int, default=10_000, help="synthetic test images (CIFAR-10: 10,000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["graphed", "eager"])
    parser.add_argument("--out", type=Path, help="results file (default: results/epoch_time.md, _cuda.md on CUDA)")
    args = parser.parse_args()
    device = apply_threads(args)
    fallbacks = Fallbacks()
    out = args.out or RESULTS / ("epoch_time.md" if device.type == "cpu" else "epoch_time_cuda.md")

    preset = load_settings("paper_resnet32")
    data = preset.data
    train_set = get_dataset("synthetic", "train", num_samples=args.samples, image_size=32, channels=3)
    test_set = get_dataset("synthetic", "test", num_samples=args.test_samples, image_size=32, channels=3)
    channels_last = preset.train.channels_last and device.type == "cuda"
    train_loader = DeviceLoader(
        train_set, preset.train.batch_size, shuffle=True, augment=data.augment, padding=data.padding, flip=data.flip,
        seed=0, device=device, channels_last=channels_last,
    )
    test_loader = DeviceLoader(test_set, eval_batch_size(device), shuffle=False, device=device, channels_last=channels_last)
    torch.manual_seed(0)
    initial = ll.create_model(preset.model.name, shortcut=preset.model.shortcut)

    # Untimed: one short epoch first, so that no mode's first epoch pays the process's CUDA, cuDNN and cuBLAS set-up.
    warm_set = get_dataset("synthetic", "train", num_samples=4 * preset.train.batch_size, image_size=32, channels=3)
    warm_loader = DeviceLoader(warm_set, preset.train.batch_size, shuffle=True, device=device, channels_last=channels_last)
    train(copy.deepcopy(initial), warm_loader, dataclasses.replace(preset.train, epochs=1, device=str(device)), progress=False)

    load_before = load_average()
    epoch_rows: list[str] = []
    mode_rows: list[str] = []
    for mode in args.modes:
        settings = dataclasses.replace(preset.train, epochs=args.epochs, device=str(device), cuda_graphs=MODES[mode])
        model = copy.deepcopy(initial)
        sync(device)
        start = time.perf_counter()
        result = train(model, train_loader, settings, eval_loader=test_loader, progress=False)
        sync(device)
        wall = time.perf_counter() - start
        amp = settings.amp and device.type == "cuda"
        sync(device)
        start = time.perf_counter()
        evaluate(model, test_loader, device, amp, channels_last=channels_last)
        sync(device)
        eval_seconds = time.perf_counter() - start
        for row in result.history:
            epoch_rows.append(
                f"| {mode} | {row['epoch']} | {row['epoch_train_seconds']:.2f} | {row['images_per_second'] or 0:,.0f} "
                f"| {row['train_loss']:.3f} | {row['test_acc']:.3f} |"
            )
        steady = result.history[-1]["epoch_train_seconds"]
        mode_rows.append(
            f"| {mode} | {result.compile_seconds:.2f} | {eval_seconds:.2f} | {wall:.1f} | {steady:.2f} "
            f"| {200 * (steady + eval_seconds) / 60:.1f} |"
        )
        print(epoch_rows[-len(result.history):], mode_rows[-1], flush=True)

    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/epoch_time.py", *sys.argv[1:]])
    lines = [
        "# An epoch of paper_resnet32: training seconds with and without CUDA graphs",
        "",
        f"Measured with `{command}` on {machine_line(str(device))}.",
        f"`train()` with the `paper_resnet32` preset's training settings (batch {preset.train.batch_size}) on synthetic "
        f"CIFAR-shaped images ({args.samples:,} training, {args.test_samples:,} test, batch {eval_batch_size(device)} for",
        f"the test set), {args.epochs} epoch(s) per mode, evaluated after every epoch; `graphed` = `train.cuda_graphs=true`",
        "(the default), `eager` = `train.cuda_graphs=false` (on CUDA fused SGD in both). Training seconds are the loop's own: the",
        "training steps alone, the graph-capturing step timed apart (capture s). Load average before: "
        f"{load_before}, after: {load_average()}.",
        *([args.note] if args.note else []),
        "",
        "| mode | epoch | training s | images/s | train loss | test acc |",
        "|---|---|---|---|---|---|",
        *epoch_rows,
        "",
        "| mode | capture s (once a run) | test-set evaluation s | wall s of the train() call | last epoch training s "
        "| 200 epochs (training + evaluation), minutes |",
        "|---|---|---|---|---|---|",
        *mode_rows,
        "",
        f"CUDA graphs fallbacks logged: {'; '.join(fallbacks.messages) or 'none'}.",
        "",
    ]
    write_result(out, "\n".join(lines))


if __name__ == "__main__":
    main()
