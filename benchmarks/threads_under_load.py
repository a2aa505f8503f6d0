"""Why a CPU run can slow a hundredfold when another process takes a core: torch threads x OpenMP waiting.

``python benchmarks/threads_under_load.py [--data digits|synthetic] [--image-size 32] [--chunk-seconds 2]
[--repeats 4] [--batch-size 64]``

Contenders, each a worker process of its own (OpenMP reads its environment once, when torch loads it), each
training its own ResNet-20 (option B) exactly as :func:`layerlottery.training.train` steps it: a batch from a
:class:`~layerlottery.data.DeviceLoader` (pad + crop), forward, cross-entropy, backward, SGD step.

- **2 threads**: torch's default on a 2-core machine, libgomp's default waiting (a thread that reaches a
  barrier first spins, ``GOMP_SPINCOUNT``, before it sleeps);
- **1 thread**: ``torch.set_num_threads(1)``, no OpenMP team at all;
- **2 threads, passive**: as the first, with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once; Intel's
  OpenMP, which other torch builds use, honours it too, as a ``KMP_BLOCKTIME`` of 0);
- **2 threads, short spin**: ``GOMP_SPINCOUNT=10000``, 30x shorter than libgomp's default spin before sleeping.

Each is timed quiet and beside a competitor: one Python process spinning ``while True: pass``, started by this
benchmark, kept frozen (SIGSTOP) while quiet and thawed (SIGCONT) for the loaded chunks, killed at the end.
Every repeat times one chunk per (contender, condition), conditions and contenders in an order shuffled per
repeat, with a short pause between chunks so that threads still spinning from the last one do not bill the next.
A chunk is as many steps as fill ``--chunk-seconds`` (at least one): sustained training, as an epoch is, rather
than a burst that the scheduler's credit for a just-woken process would flatter, at a bounded cost for the
contenders that stall. Reported per cell: the median over repeats of the chunk's ms/step, with its IQR, the
slowest single step seen, and paired ratios of the same repeat (loaded / quiet; contender / 1 thread).

Results go to ``benchmarks/results/threads_under_load.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import load_average, machine_line, quartiles, repeat_order, write_result

# (label, torch threads, extra environment). OMP_WAIT_POLICY is only read when libgomp loads.
CONTENDERS = [
    ("2 threads", 2, {}),
    ("1 thread", 1, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("2 threads, GOMP_SPINCOUNT=10000", 2, {"GOMP_SPINCOUNT": "10000"}),
]
CONDITIONS = ("quiet", "1 busy competitor")
PAUSE_S = 0.1  # between chunks: longer than libgomp's default spin (GOMP_SPINCOUNT=300000 pauses, a few ms)


# -- the worker: one process per contender, timing chunks of steps on request -------------------------------


def worker(args: argparse.Namespace) -> None:
    """Build the model and data, warm up, then answer each ``<seconds>`` line on stdin with the per-step seconds
    of as many steps as fill that time (at least one)."""
    import torch
    import torch.nn.functional as F

    import layerlottery as ll
    from layerlottery.config import TrainSettings
    from layerlottery.data import DeviceLoader, get_dataset
    from layerlottery.experiments.at_init import model_options_for
    from layerlottery.training import build_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.data == "digits":
        data = get_dataset("digits")
        loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=1, flip=False, seed=0)
    else:
        data = get_dataset("synthetic", num_samples=1024, image_size=args.image_size, channels=3)
        loader = DeviceLoader(data, args.batch_size, shuffle=True, augment=True, padding=4, flip=True, seed=0)
    model = ll.create_model("cifar_resnet20", **model_options_for(data, shortcut="B")).train()
    optimizer = build_optimizer(model, dataclasses.replace(TrainSettings(), epochs=1, batch_size=args.batch_size))

    def batches():
        epoch = 0
        while True:
            epoch += 1
            yield from loader.epoch(epoch)

    stream = batches()

    def step() -> float:
        start = time.perf_counter()
        inputs, labels = next(stream)
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for _ in range(2):  # allocator, oneDNN primitive choice, optimizer state
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        budget, steps = float(line), []
        while not steps or sum(steps) < budget:
            steps.append(step())
        print(json.dumps(steps), flush=True)


# -- the conductor ------------------------------------------------------------------------------------------


@dataclass
class Contender:
    label: str
    threads: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    chunks: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONDITIONS})
    """Per condition, the chunk's mean seconds per step, one per repeat."""
    slowest: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in CONDITIONS})
    steps: int = 0

    def start(self, args: argparse.Namespace) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), **self.env}
        command = [sys.executable, __file__, "--worker", "--threads", str(self.threads), "--data", args.data,
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {self.label!r} failed to start")

    def chunk(self, seconds: float, condition: str) -> None:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{seconds}\n")
        self.process.stdin.flush()
        seconds = json.loads(self.process.stdout.readline())
        self.chunks[condition].append(sum(seconds) / len(seconds))
        self.slowest[condition] = max(self.slowest[condition], max(seconds))
        self.steps += len(seconds)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=30)


class Competitor:
    """One spinning Python process, frozen with SIGSTOP and thawed with SIGCONT (POSIX only)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self.freeze()

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def openmp_runtime() -> str:
    """Which OpenMP library torch loaded (the wait-policy knobs differ): libgomp (GNU) or libiomp5 (Intel)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown OpenMP runtime"
    found = sorted({name for name in ("libgomp", "libiomp5", "libomp") if f"/{name}" in maps})
    return ", ".join(found) or "no OpenMP runtime"


def ms(q: tuple[float, float, float]) -> str:
    return f"{1000 * q[1]:.1f} [{1000 * q[0]:.1f}, {1000 * q[2]:.1f}]"


def ratio(q: tuple[float, float, float]) -> str:
    return f"{q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--data", choices=["digits", "synthetic"], default="digits",
                        help="digits: the quickstart's 8x8 images; synthetic: CIFAR-shaped at --image-size")
    parser.add_argument("--image-size", type=int, default=32, help="synthetic images only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-seconds", type=float, default=2.0, help="a timed chunk runs steps until this is filled")
    parser.add_argument("--repeats", type=int, default=4, help="timed chunks per (contender, condition)")
    parser.add_argument("--note", default="", help="a sentence for the results file, e.g. what else ran on the machine")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    started = time.perf_counter()
    load_before = load_average()
    contenders = [Contender(label, threads, env) for label, threads, env in CONTENDERS]
    competitor = Competitor()
    try:
        for c in contenders:  # start all, then wait: the imports overlap
            c.start(args)
        for c in contenders:
            c.wait_ready()
        for r in range(args.repeats):
            for k in repeat_order(len(CONDITIONS), r + 1000):
                condition = CONDITIONS[k]
                if condition != "quiet":
                    competitor.thaw()
                    time.sleep(PAUSE_S)  # let the scheduler see it busy
                for i in repeat_order(len(contenders), r):
                    time.sleep(PAUSE_S)
                    contenders[i].chunk(args.chunk_seconds, condition)
                competitor.freeze()
            print(f"repeat {r + 1}/{args.repeats} done after {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        competitor.kill()
        for c in contenders:
            c.stop()

    baseline = next(c for c in contenders if c.threads == 1)
    rows = []
    for c in contenders:
        quiet, loaded = (quartiles(c.chunks[cond]) for cond in CONDITIONS)
        slowdown = quartiles([b / a for a, b in zip(*(c.chunks[cond] for cond in CONDITIONS))])
        vs_one = [quartiles([x / y for x, y in zip(c.chunks[cond], baseline.chunks[cond])]) for cond in CONDITIONS]
        rows.append(
            f"| {c.label} | {ms(quiet)} | {ms(loaded)} | {ratio(slowdown)} | {ratio(vs_one[0])} | {ratio(vs_one[1])} | "
            f"{1000 * c.slowest['quiet']:.0f} / {1000 * c.slowest[CONDITIONS[1]]:.0f} | {c.steps} |"
        )
        print(rows[-1], flush=True)
    shape = "scikit-learn digits (1x8x8, the quickstart's data)" if args.data == "digits" else f"synthetic 3x{args.image_size}x{args.image_size}"
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/threads_under_load.py", *sys.argv[1:]])
    lines = [
        "# Threads under load: a training step with and without a competing busy process",
        "",
        f"Measured with `{command}` on {machine_line()} (the conductor; each contender sets its own).",
        f"ResNet-20 option B, batch {args.batch_size}, {shape}, float32, torch's OpenMP runtime: {openmp_runtime()}.",
        "Each contender is its own process; the competitor is one `while True: pass` Python process, frozen (SIGSTOP)",
        f"for the quiet chunks and thawed for the loaded ones. {args.repeats} repeats, each one chunk per (contender, condition): the steps that fill",
        f"{args.chunk_seconds:g} s (at least one); conditions and contenders in a shuffled order, {PAUSE_S:g} s pauses between",
        "chunks; 2 warm-up steps per process first.",
        "Cells: median over repeats of the chunk's ms/step, [Q1, Q3]; ratios are paired (same repeat): loaded / quiet",
        "of the same contender, and contender / 1 thread in the same condition; slowest = the worst single step.",
        "The machine is shared with other agents' jobs, so 'quiet' is only quiet of *our* competitor: 1-minute load",
        f"average {load_before} before, {load_average()} after; only the interleaved, paired ratios are meant to be",
        f"compared. Total wall time {time.perf_counter() - started:.0f} s.",
        *([args.note] if args.note else []),
        "",
        "| contender | quiet ms/step [IQR] | loaded ms/step [IQR] | loaded / quiet | / 1 thread, quiet | / 1 thread, loaded "
        "| slowest step ms, quiet / loaded | steps timed |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    write_result("threads_under_load.md", "\n".join(lines))


if __name__ == "__main__":
    main()
