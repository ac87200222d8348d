#!/usr/bin/env bash
# One-shot GPU check, run from the source tree without installing anything:
#   1. GPU error table of both kernels (fp32/fp16/bf16, odd shapes, poisoned outputs, 2x rule),
#      and every autotune candidate of every kernel once at the training shapes (fp16, bf16),
#   2. the kernels' test files on CUDA tensors,
#   3. `pytest bench` (autotuned kernels, baselines, whole network),
# then prints the compact tables last. Full JSON and logs go to $1, else $OUT, else bench/out.
# Steps 1-2 use one fixed block config per kernel (CSNLN_TRITON_AUTOTUNE=0) so they finish in
# minutes; step 3 autotunes. Without a GPU it runs the same steps on the CPU (interpreter).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out}}"
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|',
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$out/versions.txt"

CSNLN_TRITON_AUTOTUNE=0 timeout 240 python bench/error_table.py --json "$out/errors.json" > "$out/errors.md" 2>&1
errors=$?
timeout 300 python bench/candidates.py --json "$out/candidates.json" > "$out/candidates.md" 2>&1
candidates=$?
CSNLN_TRITON_AUTOTUNE=0 timeout 240 python -m pytest -q -p no:cacheprovider \
    tests/test_in_scale_triton.py tests/test_cross_scale_triton.py > "$out/kernel_tests.log" 2>&1
tests=$?
timeout 420 python -m pytest -q -p no:cacheprovider bench --benchmark-json "$out/bench.json" \
    > "$out/bench.log" 2>&1
bench=$?

echo "== kernel tests on the device (exit $tests): $(tail -n 1 "$out/kernel_tests.log")"
echo "== error table (exit $errors)"
cat "$out/errors.md"
echo "== autotune candidates (exit $candidates): $(tail -n 1 "$out/candidates.md")"
grep -E "\| NO \|" "$out/candidates.md"
echo "== benchmarks (exit $bench): $(tail -n 1 "$out/bench.log")"
[ -f "$out/bench.json" ] && python bench/summarize.py "$out/bench.json" | tee "$out/table.md"
exit $((errors || candidates || tests || bench))
