"""Inference time of tickets vs the dense network, against the MAC ratio, measured side by side.

``python benchmarks/inference_speed.py [--device cuda] [--batch-size 128] [--repeats 15]``

Dense and pruned models are timed in alternation (the machines are shared and noisy), after warm-up, with
the device synchronized before each clock read; the speedup is the median over repeats of the paired ratio
dense time / ticket time, with its IQR. Efficiency = speedup / theoretical speedup (dense MACs / ticket MACs). Training throughput is measured by the
training benchmarks; this one isolates the forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import layerlottery as ll
from common import add_machine_arguments, apply_threads, load_average, machine_line, sync, write_result

SETTINGS = [("cifar_resnet32", 1), ("cifar_resnet32", 3), ("cifar_resnet32", 5), ("cifar_resnet56", 5), ("cifar_resnet56", 12)]


def time_forward(models: list[torch.nn.Module], x: torch.Tensor, repeats: int, device: str) -> list[list[float]]:
    """Seconds per forward pass of each model, the models interleaved within every repeat."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:  # warm-up
            for _ in range(3):
                model(x)
        for _ in range(repeats):
            for i, model in enumerate(models):
                sync(device)
                start = time.perf_counter()
                model(x)
                sync(device)
                times[i].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=args.device)
    lines = [
        "# Inference time: tickets vs dense",
        "",
        f"Measured with `python benchmarks/inference_speed.py --device {args.device} --batch-size {args.batch_size} "
        f"--repeats {args.repeats} --threads {torch.get_num_threads()}` on {machine_line(args.device)}.",
        f"1-minute load average at the start: {load_average()} (dense and tickets interleaved, so their ratio holds on a shared machine).",
        *([args.note] if args.note else []),
        "Option B networks, eval mode, float32, median of the repeats and of the paired ratios (dense and ticket interleaved); blocks chosen by",
        "their order (all removable blocks cost the same MACs, so which ones go does not change the MAC count).",
        "",
        "| network | p | MAC ratio (dense/ticket) | dense ms | ticket ms | speedup (paired median [IQR]) | efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in SETTINGS:
        dense = ll.create_model(name, shortcut="B").to(args.device).eval()
        blocks = ll.find_blocks(dense)
        plan = ll.select_blocks(blocks, {b.name: float(i) for i, b in enumerate(blocks)}, p=p)
        ticket = ll.remove_blocks(dense, plan).eval()
        dense_times, ticket_times = time_forward([dense, ticket], x, args.repeats, args.device)
        # Each repeat times dense and ticket back to back, so their ratio cancels most of the machine's drift.
        ratios = sorted(d / t for d, t in zip(dense_times, ticket_times))
        q1, speedup, q3 = statistics.quantiles(ratios, n=4)
        mac_ratio = plan.dense_macs / plan.pruned_macs
        lines.append(
            f"| {name} | {p} | {mac_ratio:.3f} | {1000 * statistics.median(dense_times):.1f} | "
            f"{1000 * statistics.median(ticket_times):.1f} | {speedup:.3f} [{q1:.3f}, {q3:.3f}] | {speedup / mac_ratio:.1%} |"
        )
        print(lines[-1])
    lines.append("")
    suffix = "cpu" if args.device == "cpu" else "cuda"
    write_result(f"inference_speed_{suffix}.md" if suffix != "cpu" else "inference_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
