"""Inference time of tickets vs the dense network, against the MAC ratio, measured side by side.

``python benchmarks/inference_speed.py [--device cuda] [--batch-size 128] [--repeats 15]``

Dense and pruned models are timed in alternation (the machines are shared and noisy), after warm-up, with
the device synchronized before each clock read; the median of the repeats is reported. Speedup efficiency =
measured speedup / theoretical speedup (dense MACs / ticket MACs). Training throughput is measured by the
training benchmarks; this one isolates the forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import layerlottery as ll
from common import machine_line, write_result

SETTINGS = [("cifar_resnet32", 1), ("cifar_resnet32", 3), ("cifar_resnet32", 5), ("cifar_resnet56", 5), ("cifar_resnet56", 12)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(models: list[torch.nn.Module], x: torch.Tensor, repeats: int, device: str) -> list[list[float]]:
    """Seconds per forward pass of each model, the models interleaved within every repeat."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:  # warm-up
            for _ in range(3):
                model(x)
        for _ in range(repeats):
            for i, model in enumerate(models):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                times[i].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=args.device)
    lines = [
        "# Inference time: tickets vs dense",
        "",
        f"Measured with `python benchmarks/inference_speed.py --device {args.device} --batch-size {args.batch_size} "
        f"--repeats {args.repeats}` on {machine_line(args.device)}.",
        "Option B networks, eval mode, float32, median of the repeats (dense and ticket interleaved); blocks chosen by",
        "their order (all removable blocks cost the same MACs, so which ones go does not change the MAC count).",
        "",
        "| network | p | MAC ratio (dense/ticket) | dense ms | ticket ms | measured speedup | efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in SETTINGS:
        dense = ll.create_model(name, shortcut="B").to(args.device).eval()
        blocks = ll.find_blocks(dense)
        plan = ll.select_blocks(blocks, {b.name: float(i) for i, b in enumerate(blocks)}, p=p)
        ticket = ll.remove_blocks(dense, plan).eval()
        dense_t, ticket_t = (statistics.median(t) for t in time_forward([dense, ticket], x, args.repeats, args.device))
        mac_ratio = plan.dense_macs / plan.pruned_macs
        speedup = dense_t / ticket_t
        lines.append(
            f"| {name} | {p} | {mac_ratio:.3f} | {1000 * dense_t:.1f} | {1000 * ticket_t:.1f} | {speedup:.3f} | {speedup / mac_ratio:.1%} |"
        )
        print(lines[-1])
    lines.append("")
    suffix = "cpu" if args.device == "cpu" else "cuda"
    write_result(f"inference_speed_{suffix}.md" if suffix != "cpu" else "inference_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
