#!/usr/bin/env bash
# Issue 7's MNIST robustness evaluation, in one command: train the mnist_cpu preset (the dense ResNet-20 and its
# GraSP and SNIP tickets at initialization, p = 1..3, seeds 0 and 1), evaluate every run under the generated
# corruptions (noise, blur and digital families, severities 1-5, all 2,000 test images) and PGD (L-inf, 10 steps,
# eps 0.07, 500 images), and write the robustness table and the report (figures and tables).
#
#   bash benchmarks/mnist_robustness.sh RUNS_DIR [DEVICE] [setting=value ...]
#
# DEVICE is cpu (default; hours on 2 cores) or cuda. Extra settings go to `layerlottery run` (e.g.
# data.data_dir=DIR for the MNIST idx files). Idempotent: rerun it and only what is missing is computed.
set -euo pipefail
runs=${1:?usage: bash benchmarks/mnist_robustness.sh RUNS_DIR [DEVICE] [setting=value ...]}
device=${2:-cpu}
shift $(( $# >= 2 ? 2 : 1 ))

layerlottery run mnist_cpu runs_dir="$runs" train.device="$device" carbon.enabled=false -q "$@"
layerlottery robustness "$runs" --device "$device" -q
layerlottery robustness "$runs" --json > "$runs/robustness.json.txt"  # computes nothing: prints the stored results
layerlottery report "$runs" --out "$runs/report" > "$runs/report.txt"
