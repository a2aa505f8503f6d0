# Shared by the GPU scripts (gpu_issue9.sh, gpu_issue10.sh); sourced, not run. Sets up $OUT, the log and the time
# budget, decides between the GPU and the tiny CPU rehearsal (TINY=1, also chosen when CUDA is absent), and
# defines `log MESSAGE` and `step NAME LIMIT COMMAND...`: COMMAND under `timeout LIMIT` (less when the budget is
# nearly spent), its output to the log, then the sourcing script's `copy_results`.
OUT=${OUT:-$(mktemp -d)}
BUDGET=${BUDGET:-$DEFAULT_BUDGET}
START=$(date +%s)
LOG="$OUT/log.txt"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's package even if the editable install fails

log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

if [ -z "${TINY:-}" ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$LOG"; then
    log "no CUDA device: running the tiny CPU rehearsal (TINY=1)"
    TINY=1
fi
if [ -n "${TINY:-}" ]; then
    DEVICE=cpu
    RESULTS="$OUT/results"  # never overwrite the repository's CPU result files
    SUFFIX=""
else
    DEVICE=cuda
    RESULTS=benchmarks/results
    SUFFIX="_cuda"
fi
mkdir -p "$RESULTS"

step() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if (( limit > left )); then limit=$left; fi
    if (( limit < 15 )); then
        log "SKIP $name: the time budget is spent"
        return 0
    fi
    log "START $name (timeout ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    if (( rc == 124 || rc == 137 )); then log "TIMEOUT $name after ${limit}s"; else log "END $name rc=$rc"; fi
    copy_results
}
