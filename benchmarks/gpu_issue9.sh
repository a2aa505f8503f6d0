#!/usr/bin/env bash
# Issue 9 (whole-step CUDA graphs) checked and measured on one GPU, in one bounded run (about 7.5 minutes).
#
#   bash benchmarks/gpu_issue9.sh            # from the repository root, on the GPU machine ($OUT set by the device tool)
#   TINY=1 bash benchmarks/gpu_issue9.sh     # a rehearsal on the CPU with tiny sizes (also chosen when CUDA is absent)
#
# Steps, in order of importance, each under its own timeout, all capped by BUDGET seconds in total (default 450):
#   1. nvidia-smi, versions; pip install -e . (no deps)
#   2. tests: tests/training/test_training_graphed.py (its CUDA tests: graphed == eager in float32 within 1e-5,
#      short last batch, BatchNorm statistics, schedule during replay, resume, capture-failure fallback) and the
#      other CUDA tests (-k cuda)
#   3. train_speed: eager / fused / graphed side by side, dense ResNet-56 and -32 and their tickets (first blocks)
#   4. epoch_time: one paper_resnet32 epoch (50,000 synthetic images, batch 128), graphed and eager
#   5. graphs_accuracy: the quickstart's dense run (bf16), 4 seeds, graphed vs eager
#   6. train_speed --dense-only: eager / graphed / torch.compile (compile time reported), ResNet-56 then -32
# Everything goes to $OUT as it happens: log.txt (every command's output) and the result files, copied after
# every step, so a step cut short still leaves what came before. On the GPU the result files are also written
# to benchmarks/results/*_cuda.md; copy them from $OUT into the repository to commit them.
set -u

DEFAULT_BUDGET=450
. "$(dirname "$0")/gpu_steps.sh"

copy_results() {
    for name in train_speed train_speed_compile epoch_time graphs_accuracy; do
        [ -f "$RESULTS/$name$SUFFIX.md" ] && cp -f "$RESULTS/$name$SUFFIX.md" "$OUT/" 2>/dev/null
    done
    return 0
}

log "issue 9 GPU script: device=$DEVICE budget=${BUDGET}s out=$OUT tiny=${TINY:-0}"
if [ -z "${TINY:-}" ]; then
    step nvidia-smi 20 nvidia-smi
    step install 90 pip install --no-deps --no-build-isolation -e .
fi
step versions 30 python -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"

step tests-graphed 150 python -m pytest -q -rs -p no:cacheprovider tests/training/test_training_graphed.py
step tests-cuda-other 90 python -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors -k cuda \
    tests/data/test_data_augment.py tests/data/test_data_loader.py tests/test_devices.py tests/test_corruptions.py

if [ -n "${TINY:-}" ]; then
    step train-speed 200 python benchmarks/train_speed.py --device cpu --batch-size 8 --steps 2 --repeats 2 --warmup 1 \
        --samples 64 --networks cifar_resnet20 --orders first --modes eager fused --out "$RESULTS/train_speed.md"
    step epoch-time 120 python benchmarks/epoch_time.py --device cpu --samples 64 --test-samples 32 --epochs 1 \
        --out "$RESULTS/epoch_time.md"
    step graphs-accuracy 120 python benchmarks/graphs_accuracy.py --device cpu --seeds 0 --epochs 1 \
        --out "$RESULTS/graphs_accuracy.md"
    step train-speed-compile 200 python benchmarks/train_speed.py --device cpu --batch-size 8 --steps 2 --repeats 2 \
        --warmup 1 --samples 64 --networks cifar_resnet20 --dense-only --modes eager fused \
        --out "$RESULTS/train_speed_compile.md"
else
    step train-speed 150 python benchmarks/train_speed.py --device cuda --batch-size 128 --steps 20 --repeats 7 --warmup 1 \
        --samples 2048 --networks cifar_resnet56 cifar_resnet32 --orders first --modes eager fused graphed \
        --note "Issue 9 GPU script (benchmarks/gpu_issue9.sh)." --out "$RESULTS/train_speed_cuda.md"
    step epoch-time 90 python benchmarks/epoch_time.py --device cuda --epochs 2 --out "$RESULTS/epoch_time_cuda.md"
    step graphs-accuracy 90 python benchmarks/graphs_accuracy.py --device cuda --seeds 0 1 2 3 --epochs 15 \
        --out "$RESULTS/graphs_accuracy_cuda.md"
    step train-speed-compile 200 python benchmarks/train_speed.py --device cuda --batch-size 128 --steps 20 --repeats 5 \
        --warmup 1 --samples 2048 --networks cifar_resnet56 cifar_resnet32 --dense-only --modes eager graphed compile \
        --note "Issue 9 GPU script: torch.compile against CUDA graphs." --out "$RESULTS/train_speed_compile_cuda.md"
fi
copy_results
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
