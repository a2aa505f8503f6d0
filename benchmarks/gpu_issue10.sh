#!/usr/bin/env bash
# Issue 10 (other networks, language models, multi-GPU) checked and measured on one GPU, in one bounded run.
#
#   bash benchmarks/gpu_issue10.sh            # from the repository root, on the GPU machine ($OUT set by the device tool)
#   TINY=1 bash benchmarks/gpu_issue10.sh     # a rehearsal on the CPU with tiny sizes (also chosen when CUDA is absent)
#
# Steps, each under its own timeout, all capped by BUDGET seconds in total (default 420):
#   1. nvidia-smi, versions; pip install -e . (no deps)
#   2. tests: the DDP path on one GPU (two ranks over Gloo on cuda:0, SyncBatchNorm: equal to one process), and
#      the other CUDA tests
#   3. networks_speed: torchvision ResNet-50, timm ViT-S/16, GPT-2 small: dense vs tickets, training and inference
#   4. the lm_quickstart preset end to end on the GPU (a 6-layer GPT-2 on this repository's own text files)
# Everything goes to $OUT as it happens: log.txt and the result files. On the GPU the results are also written
# to benchmarks/results/*_cuda.md; copy them from $OUT into the repository to commit them.
set -u

DEFAULT_BUDGET=420
. "$(dirname "$0")/gpu_steps.sh"

copy_results() {
    [ -f "$RESULTS/networks_speed$SUFFIX.md" ] && cp -f "$RESULTS/networks_speed$SUFFIX.md" "$OUT/" 2>/dev/null
    [ -f "$OUT/lm_runs/lm_quickstart-table.md" ] && cp -f "$OUT/lm_runs/lm_quickstart-table.md" "$OUT/lm_quickstart_table.md" 2>/dev/null
    return 0
}

log "issue 10 GPU script: device=$DEVICE budget=${BUDGET}s out=$OUT tiny=${TINY:-0}"
if [ -z "${TINY:-}" ]; then
    step nvidia-smi 20 nvidia-smi
    step install 90 pip install --no-deps --no-build-isolation -e .
fi
step versions 30 python -c "import torch, torchvision, timm, transformers, platform; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, 'python', platform.python_version()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"

# A corpus for the language model: this repository's own text (README, docs, code), about 1 MB.
CORPUS="$OUT/corpus.txt"
cat README.md ARCHITECTURE.md $(git ls-files 'layerlottery/*.py' 'tests/*.py' 2>/dev/null || ls layerlottery/*.py) > "$CORPUS" 2>/dev/null
if [ -n "${TINY:-}" ]; then head -c 40000 "$CORPUS" > "$CORPUS.part" && mv "$CORPUS.part" "$CORPUS"; fi  # a CPU epoch in seconds
log "corpus: $(wc -c < "$CORPUS") bytes"

if [ -n "${TINY:-}" ]; then
    step networks-speed 200 python benchmarks/networks_speed.py --tiny --steps 2 --repeats 2 --warmup 1 --out "$RESULTS/networks_speed.md"
    step lm-quickstart 200 python -m layerlottery run lm_quickstart "data.data_dir=$CORPUS" runs_dir="$OUT/lm_runs" \
        train.epochs=1 carbon.enabled=false --quiet
else
    step tests-ddp-cuda 150 python -m pytest -q -rs -p no:cacheprovider tests/training/test_training_distributed_cuda.py
    step tests-cuda-other 120 python -m pytest -q -rs -p no:cacheprovider -m gpu tests --ignore=tests/training/test_training_distributed_cuda.py
    step networks-speed 200 python benchmarks/networks_speed.py --device cuda --steps 5 --repeats 7 --warmup 2 \
        --note "Issue 10 GPU script (benchmarks/gpu_issue10.sh)." --out "$RESULTS/networks_speed_cuda.md"
    step lm-quickstart 120 python -m layerlottery run lm_quickstart "data.data_dir=$CORPUS" runs_dir="$OUT/lm_runs" \
        train.epochs=3 carbon.enabled=false --quiet
fi
copy_results
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
