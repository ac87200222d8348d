"""Every autotune candidate of every Triton kernel, run once for correctness.

For each kernel of both operators and each of its candidate configs, that config is launched
(the others keep their fixed configs) in forward and backward at a shape, and out, dq, dk, dv
are checked against the float64 PyTorch reference with the low-precision rule of
tests/numerics.py (kernel error <= 2 x the error of PyTorch in the same dtype + one rounding).

    python bench/candidates.py [--json PATH]
On a GPU: the training shapes (16 x 64/128 x 48 x 48 at s = 2 and 3), fp16 and bf16. Without
one: tiny shapes under TRITON_INTERPRET=1 (bf16 emulated), a check of the tool itself.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from anywhere
CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["CSNLN_TRITON_AUTOTUNE"] = "0"   # the config under test is launched as the fixed one

from bench import markdown  # noqa: E402
from kernels import cross_scale_triton, in_scale_triton  # noqa: E402
from tests.numerics import NAMES, attention_inputs, operator, rel_err, rerun, twice_torch_bound  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# op -> [(N, Ck, Cv, H, W, s)]
SHAPES = ({"cross_scale": [(16, 64, 128, 48, 48, 2), (16, 64, 128, 48, 48, 3)],
           "in_scale": [(16, 64, 128, 48, 48, 1)]} if CUDA else
          {"cross_scale": [(1, 16, 16, 6, 10, 2)], "in_scale": [(1, 16, 16, 5, 7, 1)]})
MODULES = {"cross_scale": cross_scale_triton, "in_scale": in_scale_triton}


def _fixed(config):
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def rows(dtypes):
    """One row per (op, shape, kernel, candidate, dtype): the worst tensor's errors and the verdict."""
    out = []
    for op, shapes in SHAPES.items():
        module = MODULES[op]
        for shape in shapes:
            tensors, grad = attention_inputs(op, *shape, DEVICE)
            s = shape[-1]
            want = rerun(operator(op, s, "torch"), tensors, grad)
            references = {dtype: rerun(operator(op, s, "torch"), [t.to(dtype) for t in tensors], grad, dtype)
                          for dtype in dtypes}
            for name, (candidates, fixed) in list(module._CONFIGS.items()):
                for config in candidates:
                    module._CONFIGS[name] = (candidates, _fixed(config))
                    try:
                        for dtype in dtypes:
                            got = rerun(operator(op, s, "triton"), [t.to(dtype) for t in tensors], grad, dtype)
                            out.append(_row(op, shape, name, config, dtype, got, want, references[dtype]))
                    finally:
                        module._CONFIGS[name] = (candidates, fixed)
    return out


def _row(op, shape, name, config, dtype, got, want, torch_low):
    worst = None
    ok = True
    for tensor, a, b, r in zip(NAMES, got, want, torch_low):
        err, ref = rel_err(a, b), rel_err(r, b)
        ok &= bool(err <= twice_torch_bound(ref, dtype))   # NaN (an unwritten element) compares False
        if worst is None or err - 2 * ref > worst[1] - 2 * worst[2]:
            worst = (tensor, err, ref)
    return {"op": op, "shape": "x".join(map(str, shape)), "kernel": name, "dtype": str(dtype)[6:],
            "config": " ".join(f"{k}={v}" for k, v in _fixed(config).items()),
            "tensor": worst[0], "kernel_err": worst[1], "torch_err": worst[2], "ok": ok}


def format_rows(table):
    return markdown.table(["op", "shape", "kernel", "config", "dtype", "worst tensor", "kernel err", "torch err", "ok"],
                          [[r["op"], r["shape"], r["kernel"], r["config"], r["dtype"], r["tensor"],
                            f"{r['kernel_err']:.2e}", f"{r['torch_err']:.2e}", "yes" if r["ok"] else "NO"]
                           for r in table])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    table = rows([torch.float16, torch.bfloat16])
    print(format_rows(table))
    print(f"{len(table)} runs, {sum(not r['ok'] for r in table)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0 if all(r["ok"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
