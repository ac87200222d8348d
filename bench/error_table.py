"""GPU error table of both Triton kernels: fp32, fp16, bf16 on odd shapes, fresh random inputs.

For out and every input gradient: the kernel's error against the float64 PyTorch reference,
next to the error of the PyTorch reference run in the same precision (max|err| / max|ref|).
A row passes when kernel <= 2 x torch + one rounding of the dtype (tests/numerics.py; fp32:
<= 1e-4). Kernel buffers are NaN-poisoned before each launch, so unwritten elements fail the row.

    python bench/error_table.py [--json PATH]
Without a GPU it runs tiny shapes under TRITON_INTERPRET=1 (bf16 with emulated dots and casts).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from anywhere
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench import markdown  # noqa: E402
from kernels import _triton_common  # noqa: E402
from tests.numerics import NAMES, attention_inputs, operator, rel_err, rerun, twice_torch_bound  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FP32_BOUND = 1e-4
# (op, N, Ck, Cv, H, W, s): odd sizes, non-square, H*W not a multiple of any block
CASES = ([("in_scale", 2, 64, 128, 33, 47, 1), ("in_scale", 1, 24, 40, 7, 5, 1),
          ("cross_scale", 2, 64, 128, 34, 46, 2), ("cross_scale", 1, 64, 128, 33, 21, 3),
          ("cross_scale", 1, 48, 16, 10, 6, 2)] if CUDA else
         [("in_scale", 2, 24, 40, 7, 5, 1), ("cross_scale", 1, 16, 32, 10, 6, 2),
          ("cross_scale", 1, 16, 16, 9, 6, 3)])


def error_rows():
    """Rows of the table; the kernels' outputs are NaN-poisoned while it runs."""
    saved, _triton_common.POISON = _triton_common.POISON, True
    try:
        return [row for case in CASES for row in _case_rows(*case)]
    finally:
        _triton_common.POISON = saved


def _case_rows(op, n, ck, cv, h, w, s):
    tensors, grad = attention_inputs(op, n, ck, cv, h, w, s, DEVICE)
    ref = rerun(operator(op, s, "torch"), tensors, grad)
    rows = []
    for dtype in DTYPES:
        kernel = rerun(operator(op, s, "triton"), tensors, grad, dtype)
        torch_low = rerun(operator(op, s, "torch"), tensors, grad, dtype)
        for name, r, a, b in zip(NAMES, ref, kernel, torch_low):
            err_k, err_t = rel_err(a, r), rel_err(b, r)
            bound = FP32_BOUND if dtype == torch.float32 else twice_torch_bound(err_t, dtype)
            rows.append({"op": op, "shape": f"{n}x{ck}/{cv}x{h}x{w}" + (f" s{s}" if s > 1 else ""),
                         "dtype": str(dtype).replace("torch.", ""), "tensor": name, "kernel": err_k,
                         "torch": err_t, "ok": bool(err_k <= bound)})  # NaN compares False
    return rows


def format_rows(rows):
    return markdown.table(["op", "shape", "dtype", "tensor", "kernel err", "torch err", "ok"],
                          [[r["op"], r["shape"], r["dtype"], r["tensor"], f"{r['kernel']:.2e}", f"{r['torch']:.2e}",
                            "yes" if r["ok"] else "NO"] for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = error_rows()
    device = torch.cuda.get_device_name() if CUDA else "CPU (Triton interpreter)"
    import triton
    print(f"{device}, torch {torch.__version__}, Triton {triton.__version__}")
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=2)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
