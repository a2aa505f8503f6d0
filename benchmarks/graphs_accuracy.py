"""Does a CUDA-graphed bf16 run reach the accuracy of an eager one? The quickstart's dense run, several seeds, both ways.

``python benchmarks/graphs_accuracy.py [--device cuda] [--seeds 0 1 2 3] [--epochs 15] [--out FILE]``

Each seed trains the ``quickstart`` preset's dense network (ResNet-20 option B on scikit-learn's digits, real
data bundled with scikit-learn, 15 epochs of batch 64 with a short last batch every epoch, cosine schedule) from
the same initial weights and the same batches twice: ``train.cuda_graphs=true`` and ``false``, on CUDA with the
defaults (bfloat16 autocast, channels-last). Graph replays run the eager kernels, so the two differ only in
float rounding (a float32 learning-rate tensor, the order of atomic additions), which training then amplifies;
the question is whether the trained accuracy moves by more than the seeds do. Reported per seed: final test
accuracy both ways and the difference, then the mean and standard deviation over seeds, and the verdict: the
mean paired difference within one seed standard deviation.

Results go to ``benchmarks/results/graphs_accuracy_cuda.md`` (``graphs_accuracy.md`` on the CPU, where both
ways train eagerly and must agree exactly) or ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
from pathlib import Path

from common import RESULTS, Fallbacks, add_machine_arguments, apply_threads, machine_line, write_result
from layerlottery.config import load_settings
from layerlottery.experiments.at_init import initial_model, model_options_for
from layerlottery.experiments.sources import data_source
from layerlottery.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, help="results file (default: results/graphs_accuracy.md, _cuda.md on CUDA)")
    args = parser.parse_args()
    device = apply_threads(args)
    fallbacks = Fallbacks()
    out = args.out or RESULTS / ("graphs_accuracy.md" if device.type == "cpu" else "graphs_accuracy_cuda.md")

    preset = load_settings("quickstart")
    source = data_source(preset.data)
    options = model_options_for(source, shortcut=preset.model.shortcut, zero_init_residual=preset.model.zero_init_residual)
    rows, eager_accs, graphed_accs = [], [], []
    for seed in args.seeds:
        accs = {}
        for graphs in (False, True):
            settings = dataclasses.replace(preset.train, epochs=args.epochs, device=str(device), cuda_graphs=graphs)
            train_loader, test_loader = source.loaders(settings, seed, device)
            model = initial_model(preset.model.name, options, seed, device)
            result = train(model, train_loader, settings, eval_loader=test_loader, progress=False, seed=seed)
            accs[graphs] = result.final_test_acc
        eager_accs.append(accs[False])
        graphed_accs.append(accs[True])
        rows.append(f"| {seed} | {accs[False]:.4f} | {accs[True]:.4f} | {accs[True] - accs[False]:+.4f} |")
        print(rows[-1], flush=True)

    spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    mean_difference = statistics.mean(g - e for g, e in zip(graphed_accs, eager_accs))
    noise = max(spread(eager_accs), spread(graphed_accs))
    verdict = "within" if abs(mean_difference) <= noise else "NOT within"
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/graphs_accuracy.py", *sys.argv[1:]])
    lines = [
        "# Accuracy with CUDA graphs vs eager (bfloat16 on CUDA)",
        "",
        f"Measured with `{command}` on {machine_line(str(device))}.",
        f"The `quickstart` dense run (ResNet-20 option B, scikit-learn digits, {args.epochs} epochs, batch 64, cosine), each seed",
        "trained from the same weights and batches with `train.cuda_graphs=false` (eager) and `true` (graphed).",
        "",
        "| seed | eager test acc | graphed test acc | graphed - eager |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Mean: eager {statistics.mean(eager_accs):.4f} (sd {spread(eager_accs):.4f}), graphed {statistics.mean(graphed_accs):.4f} "
        f"(sd {spread(graphed_accs):.4f}); mean paired difference {mean_difference:+.4f}: {verdict} one seed standard "
        f"deviation ({noise:.4f}).",
        "",
        f"CUDA graphs fallbacks logged: {'; '.join(fallbacks.messages) or 'none'}.",
        "",
    ]
    write_result(out, "\n".join(lines))


if __name__ == "__main__":
    main()
