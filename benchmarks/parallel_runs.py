"""Wall time of an experiment trained one run after the other vs. ``--jobs 2`` vs. Ray tasks, on this machine.

``python benchmarks/parallel_runs.py [--preset quickstart] [--repeats 2] [override ...]``

Each contender is the command line a user types, timed from start to exit (imports, data, training, CKA,
the table), each time into a new runs folder:

- **sequential**: ``layerlottery run PRESET`` (torch's threads: one per core);
- **sequential, 1 thread**: the same with ``LAYERLOTTERY_THREADS=1``: the bits ``--jobs 2`` must equal;
- **--jobs 2**: two worker processes, one thread each on 2 cores;
- **ray**: ``--executor ray --jobs 2`` on a local Ray instance started by the command (its start-up is in the
  wall time, and reported on its own from the command's "Ray ready in" line).

Repeats run the contenders in an order shuffled per repeat (a machine shared with other jobs drifts), and
the load average is recorded around every command. Each run's final weights and test accuracy are compared
with those of the sequential 1-thread run: bitwise equality is the property the parallel path promises.
The default experiment is the quickstart with one seed (7 runs of 15 epochs): the whole quickstart (21 runs)
takes several minutes per contender on a shared 2-core machine; pass ``--seeds`` ... as overrides to change it.

Results go to ``benchmarks/results/parallel_runs.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_line, repeat_order, write_result  # noqa: E402

CONTENDERS = {
    "sequential": ([], {}),
    "sequential, 1 thread": ([], {"LAYERLOTTERY_THREADS": "1"}),
    "--jobs 2": (["--jobs", "2"], {}),
    "ray (--executor ray --jobs 2)": (["--executor", "ray", "--jobs", "2"], {}),
}


def run_once(preset: str, overrides: list[str], flags: list[str], env: dict[str, str], runs_dir: Path) -> dict:
    command = [sys.executable, "-m", "layerlottery.cli", "run", preset, *overrides, "--runs-dir", str(runs_dir), "-q", *flags]
    before = load_average()
    started = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    ray = re.search(r"Ray ready in ([0-9.]+) s", done.stderr)
    return {"seconds": seconds, "ray_start": float(ray.group(1)) if ray else None, "load": f"{before} -> {load_average()}"}


def final_weights(runs_dir: Path) -> dict[str, tuple[dict, float]]:
    """Per run directory: its final weights and test accuracy."""
    import json

    found = {}
    for result in sorted(runs_dir.glob("*/result.json")):
        weights = torch.load(result.parent / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
        found[result.parent.name] = (weights, json.loads(result.read_text())["test_acc"])
    return found


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[n][0].keys() == b[n][0].keys() and all(torch.equal(a[n][0][k], b[n][0][k]) for k in a[n][0]) for n in a
    )


def same_accuracy(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[n][1] == b[n][1] for n in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", default=["seeds=[0]"])
    args = parser.parse_args()

    names = list(CONTENDERS)
    times: dict[str, list[dict]] = {name: [] for name in names}
    kept: dict[str, dict] = {}
    scratch = Path(tempfile.mkdtemp(prefix="parallel-runs-"))
    try:
        for repeat in range(args.repeats):
            for index in repeat_order(len(names), repeat):
                name = names[index]
                runs_dir = scratch / f"{index}-{repeat}"
                flags, env = CONTENDERS[name]
                measured = run_once(args.preset, args.overrides, flags, env, runs_dir)
                times[name].append(measured)
                print(f"repeat {repeat + 1}: {name}: {measured['seconds']:.1f} s (load {measured['load']})", flush=True)
                if repeat == 0:
                    kept[name] = final_weights(runs_dir)
                shutil.rmtree(runs_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = statistics.median(m["seconds"] for m in times["sequential"])
    reference = kept["sequential, 1 thread"]
    rows = []
    for name in names:
        seconds = [m["seconds"] for m in times[name]]
        median = statistics.median(seconds)
        rays = [m["ray_start"] for m in times[name] if m["ray_start"] is not None]
        ray = f"{statistics.median(rays):.1f}" if rays else "-"
        bits = "yes" if same_bits(kept[name], reference) else ("accuracies only" if same_accuracy(kept[name], reference) else "no")
        each = ", ".join(f"{s:.1f}" for s in seconds)
        rows.append(f"| {name} | {median:.1f} | {each} | {median / base:.2f} | {ray} | {bits} |")
    loads = "; ".join(f"{name}: " + ", ".join(m["load"] for m in times[name]) for name in names)
    text = f"""# Parallel runs: sequential vs --jobs 2 vs Ray

`python benchmarks/parallel_runs.py --preset {args.preset} --repeats {args.repeats} {' '.join(args.overrides)}`

{machine_line()}; {os.cpu_count()} cores.

Wall time of the whole command (start to exit: imports, data, training, CKA, table), each into a new runs
folder, median over {args.repeats} repeats in shuffled order. Ratio: to the sequential median. Ray start-up is
inside the Ray wall time and shown on its own. "Same bits": every run's final weights equal those of the
sequential run at 1 thread (the thread count of a `--jobs 2` worker on 2 cores; a run's last bits depend on
its thread count).

| contender | median s | each repeat s | / sequential | Ray start-up s | same bits as sequential, 1 thread |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Load average (1 min) before -> after each command: {loads}.
"""
    write_result("parallel_runs.md", text)
    print(text)


if __name__ == "__main__":
    main()
