#!/usr/bin/env bash
# One-shot GPU check, run from the source tree without installing anything:
#   bash bench/gpu_check.sh [OUT] [STEP ...]        (default OUT: $OUT, else bench/out)
# Steps, most valuable first, in this order (default: all):
#   tests       the kernels' test files on CUDA tensors: are the rebuilt kernels right?
#   bench       `pytest bench` (autotuned kernels, baselines, whole network), each Triton row beside
#               its prediction (bench/predictions.py)
#   harness     train.py and eval.py as a user runs them: ms per step (x2, x3, x4, eager then
#               compiled), x2 whole-image inference at LR 256 x 256, s per image, peak memory,
#               beside the predictions (bench/harness_check.py)
#   demo        train the demo model (configs/demo_x2.yaml, 4 minutes; its data staged in
#               bench/gpu_data by bench/stage_gpu_data.py) and score it on Set5 and Set14
#               (bench/demo_train.py)
#   profile     per-kernel tables (torch.profiler, top 30 by GPU time) of the x2 and x4 training
#               steps and of both operators at their bench shapes (bench/kernel_profile.py)
#   errors      error table of both kernels (fp32/fp16/bf16, odd shapes, poisoned outputs, 2x rule)
#   launch      host time per call of the in-scale launchers, Triton launches per operator call
#               (bench/launch_overhead.py)
#   candidates  every autotune candidate of every kernel once at the training shapes (fp16, bf16)
# All steps share one time budget, GPU_CHECK_SECONDS (default 530, so that the check ends within
# 9 minutes): each step runs under its own cap or the time left, whichever is less. A step that
# runs out of time is reported and is not a failure; the exit status is 1 when a step failed.
# OUT gets at most five files: summary.md (versions, each step's status and every table),
# profile.md, logs.tar.gz (every log and JSON; large logs keep their last 4 MiB), and from the demo
# csnln_x2_demo.pt (its weights, original layout) and demo.json. Run folders, checkpoints and
# the raw logs live in a temporary folder, removed at the end. tests and errors use one fixed block
# config per kernel (CSNLN_TRITON_AUTOTUNE=0); the rest autotune. Without a GPU the same steps run
# on the CPU (the interpreter, tiny shapes, a tiny demo model).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
shift $(( $# > 0 ? 1 : 0 ))
all="tests bench harness demo profile errors launch candidates"
steps="${*:-$all}"
budget="${GPU_CHECK_SECONDS:-530}"
for name in $steps; do
    [[ " $all " == *" $name "* ]] || { echo "gpu_check.sh: no step $name" >&2; exit 2; }
done
mkdir -p "$out"
rm -f "$out/summary.md" "$out/profile.md" "$out/logs.tar.gz" "$out/csnln_x2_demo.pt" "$out/demo.json"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|',
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$work/versions.txt"

declare -A status
limit() {  # limit CAP -> seconds for the next step: CAP or the budget left, less 10 s for the summary
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
gpu=$(python -c "import torch; print(int(torch.cuda.is_available()))")
calls=$(( gpu ? 300 : 20 ))   # the launch step's calls per case: on the CPU the host times are indicative only

CSNLN_TRITON_AUTOTUNE=0 run tests 60 "$work/kernel_tests.log" python -m pytest -q -p no:cacheprovider \
    tests/test_in_scale_triton.py tests/test_cross_scale_triton.py tests/test_triton_launch.py
run bench 100 "$work/bench.log" python -m pytest -q -p no:cacheprovider bench --benchmark-json "$work/bench.json"
run harness 90 "$work/harness.log" python bench/harness_check.py "$work/harness" --seconds $(( $(limit 90) - 10 ))
# the demo trains for its time less 45 s: start-up, the last validation, and eval.py on Set5 and Set14
run demo 280 "$work/demo.log" python bench/demo_train.py "$out" "$work/demo" --seconds $(( $(limit 280) - 45 ))
run profile 150 "$work/profile.log" python bench/kernel_profile.py --out "$work/profile.md"
CSNLN_TRITON_AUTOTUNE=0 run errors 40 "$work/errors.md" python bench/error_table.py --json "$work/errors.json"
run launch 40 "$work/launch.md" python bench/launch_overhead.py --calls $calls --count
run candidates 150 "$work/candidates.md" python bench/candidates.py --json "$work/candidates.json"

failed=0
{
    cat "$work/versions.txt"
    for name in $steps; do
        echo
        echo "== $name: ${status[$name]:-not run}"
        [[ "${status[$name]:-}" == exit\ [1-9]* ]] && failed=1
        case $name in
            tests) [ -f "$work/kernel_tests.log" ] && tail -n 1 "$work/kernel_tests.log" ;;
            bench) if [ -s "$work/bench.json" ]; then python bench/summarize.py "$work/bench.json"
                   else echo "no results: pytest bench did not finish; its log ends:"; tail -c 400 "$work/bench.log"; echo; fi ;;
            harness) [ -f "$work/harness/harness.md" ] && cat "$work/harness/harness.md" ;;
            demo) [ -f "$work/demo/demo.md" ] && cat "$work/demo/demo.md" || tail -n 3 "$work/demo.log" ;;
            profile) [ -f "$work/profile.md" ] && grep -E "^## |per step" "$work/profile.md" ;;
            errors) [ -f "$work/errors.md" ] && cat "$work/errors.md" ;;
            launch) [ -f "$work/launch.md" ] && grep -v -i warn "$work/launch.md" ;;
            candidates) [ -f "$work/candidates.md" ] && { tail -n 1 "$work/candidates.md"; grep -E "\| NO \|" "$work/candidates.md"; } ;;
        esac
    done
    echo
    echo "== $SECONDS s of ${budget} s"
} > "$out/summary.md" 2>&1
cat "$out/summary.md"
[ -f "$work/profile.md" ] && cp "$work/profile.md" "$out/profile.md"
# the archive: logs, tables and JSON only (no checkpoints, images or linked data), each capped at 4 MiB
find "$work" -type f -size +4M | while read -r big; do
    tail -c 4M "$big" > "$big.tail" && mv "$big.tail" "$big"
done
(cd "$work" && find . -type f \( -name "*.log" -o -name "*.md" -o -name "*.json" -o -name "*.jsonl" -o -name "*.txt" \) \
    -not -path "./harness/data/*" -print0 | tar -czf - --null -T -) > "$out/logs.tar.gz"
exit $failed
