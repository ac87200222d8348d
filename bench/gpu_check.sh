#!/usr/bin/env bash
# One-shot GPU check, run from the source tree without installing anything:
#   bash bench/gpu_check.sh [OUT] [STEP ...]        (default OUT: $OUT, else bench/out)
# Steps, in this order (default: all):
#   tests       the kernels' test files on CUDA tensors
#   errors      error table of both kernels (fp32/fp16/bf16, odd shapes, poisoned outputs, 2x rule)
#   harness     train.py and eval.py as a user runs them: ms per step, s per image, peak memory,
#               one lever at a time (bench/harness_check.py)
#   bench       `pytest bench` (autotuned kernels, baselines, whole network)
#   candidates  every autotune candidate of every kernel once at the training shapes (fp16, bf16)
# All steps share one time budget, GPU_CHECK_SECONDS (default 480): each step runs under its own
# cap or the time left, whichever is less, and the tables print last. Logs and JSON go to OUT, so
# a rerun can name the steps that failed or ran out of time. tests and errors use one fixed block
# config per kernel (CSNLN_TRITON_AUTOTUNE=0); the rest autotune. Without a GPU the same steps run
# on the CPU (the interpreter, tiny shapes).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
shift $(( $# > 0 ? 1 : 0 ))
steps="${*:-tests errors harness bench candidates}"
budget="${GPU_CHECK_SECONDS:-480}"
for name in $steps; do
    [[ " tests errors harness bench candidates " == *" $name "* ]] || { echo "gpu_check.sh: no step $name" >&2; exit 2; }
done
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|',
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$out/versions.txt"

declare -A status
limit() {  # limit CAP -> seconds for the next step: CAP or the budget left, less 10 s for the tables
    local left=$(( budget - SECONDS - 10 ))
    echo $(( left < $1 ? left : $1 ))
}
run() {  # run NAME CAP LOG COMMAND... : the command under its limit, output to LOG, exit kept
    local name=$1 seconds log=$3
    seconds=$(limit "$2")
    shift 3
    [[ " $steps " == *" $name "* ]] || return 0
    if (( seconds < 15 )); then
        status[$name]="not run: out of time"
        return 0
    fi
    echo "-- $name (up to ${seconds} s)"
    timeout "$seconds" "$@" > "$log" 2>&1
    local code=$?
    status[$name]=$([ $code -eq 124 ] && echo "timed out after ${seconds} s" || echo "exit $code")
}

CSNLN_TRITON_AUTOTUNE=0 run tests 120 "$out/kernel_tests.log" python -m pytest -q -p no:cacheprovider \
    tests/test_in_scale_triton.py tests/test_cross_scale_triton.py
CSNLN_TRITON_AUTOTUNE=0 run errors 60 "$out/errors.md" python bench/error_table.py --json "$out/errors.json"
run harness 180 "$out/harness.log" python bench/harness_check.py "$out/harness" --seconds $(( $(limit 180) - 10 ))
run bench 150 "$out/bench.log" python -m pytest -q -p no:cacheprovider bench --benchmark-json "$out/bench.json"
run candidates 300 "$out/candidates.md" python bench/candidates.py --json "$out/candidates.json"

failed=0
for name in $steps; do
    echo "== $name: ${status[$name]:-not run}"
    [[ "${status[$name]:-}" == "exit 0" ]] || failed=1
    case $name in
        tests) [ -f "$out/kernel_tests.log" ] && tail -n 1 "$out/kernel_tests.log" ;;
        errors) [ -f "$out/errors.md" ] && cat "$out/errors.md" ;;
        harness) [ -f "$out/harness/harness.md" ] && cat "$out/harness/harness.md" ;;
        bench) [ -f "$out/bench.json" ] && python bench/summarize.py "$out/bench.json" | tee "$out/table.md" ;;
        candidates) [ -f "$out/candidates.md" ] && { tail -n 1 "$out/candidates.md"; grep -E "\| NO \|" "$out/candidates.md"; } ;;
    esac
done
echo "== $SECONDS s of ${budget} s"
exit $failed
