"""Compile every Triton kernel of both operators, with every autotune candidate, for sm_90
(H100 / H200) on a machine without a GPU; fail on a compile error, on register spills in
fp16 / bf16, or on scalar main-operand loads in a hot kernel.

A stand-in Triton driver reports a CUDA sm_90 target, so each launch of the operators' own
launchers (on CPU tensors) compiles instead of running, and each autotuned launch compiles
every candidate its pruner keeps. `ptxas -v` (bundled with Triton) then gives registers, spill
bytes and the shared memory of each variant, and `cuobjdump -sass` the global-memory
instruction mix (LDG widths, LDGSTS = cp.async, UTMALDG = TMA, STG widths), the tensor-core
instructions (HGMMA / HMMA) per trip of the innermost loop that holds them, and the instructions
(all / integer-pipe) of the largest innermost loop's body, which bench/cross_scale_model.py takes
for its issue bounds. Nothing runs: outputs are not computed.

    python bench/compile_check.py [--dtype fp16 bf16 fp32] [--ops in_scale cross_scale] [--json PATH]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ["CSNLN_TRITON_AUTOTUNE"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import autotuner, jit  # noqa: E402

from bench import markdown  # noqa: E402
from bench.sass import NO_SPILLS, mix_text, sass_mix, scalar_main_loads  # noqa: E402

ARCH = 90
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class _Sm90Driver:
    """Just enough of a CUDA driver for Triton to compile for sm_90 without a device."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", ARCH, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


class Recorder:
    """Patches Triton's launch paths to compile only, and keeps one row per variant."""

    def __init__(self):
        self.rows = {}
        self.dtype = None
        self._jit_run = jit.JITFunction.run

    def install(self):
        triton.runtime.driver.set_active(_Sm90Driver())
        recorder = self

        def jit_run(fn, *args, grid, warmup, **kwargs):
            key = (recorder.dtype, fn.__name__, _describe(kwargs))
            if key in recorder.rows:
                return None
            try:
                compiled = recorder._jit_run(fn, *args, grid=grid, warmup=True, **kwargs)
                recorder.rows[key] = dict(_ptxas(compiled), shared=compiled.metadata.shared,
                                          **sass_mix(_sass(compiled.asm["cubin"])))
            except Exception as e:  # a compile failure is a finding, not a crash of the tool
                recorder.rows[key] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
            return None

        def autotune_run(tuner, *args, **kwargs):
            tuner.nargs = dict(zip(tuner.arg_names, args))
            grid = kwargs.pop("grid", None)
            kwargs.pop("warmup", None)
            for config in tuner.prune_configs(kwargs):
                tuner.fn.run(*args, grid=grid, warmup=True, **{**kwargs, **config.all_kwargs()})
            tuner.nargs = None

        jit.JITFunction.run = jit_run
        autotuner.Autotuner.run = autotune_run


def _describe(kwargs):
    """The constexpr / config part of a launch, as a short stable string."""
    keep = {k: v for k, v in kwargs.items() if k.isupper() or k.startswith("num_") or "BLOCK" in k}
    return " ".join(f"{k.replace('BLOCK_', '')}={v}" for k, v in sorted(keep.items()))


def _ptxas(compiled):
    ptxas = triton.backends.nvidia.compiler.get_ptxas(ARCH).path
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        text = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{ARCH}a", src, "-o", os.path.join(d, "k.o")],
                              capture_output=True, text=True).stderr
    found = lambda pattern: int(m.group(1)) if (m := re.search(pattern, text)) else 0  # noqa: E731
    return dict(regs=found(r"Used (\d+) registers"), spill_store=found(r"(\d+) bytes spill stores"),
                spill_load=found(r"(\d+) bytes spill loads"))


def _sass(cubin):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", path], capture_output=True, text=True).stdout


def drive_launchers(dtype, ops):
    """Run the operators' forward and backward launchers (once per scale) on CPU tensors."""
    from kernels import cross_scale_triton as cst
    from kernels import in_scale_triton as ist
    n, ck, cv = 2, 64, 128
    for s in (2, 3) if "cross_scale" in ops else ():
        q = torch.randn(n, ck, 48, 48, dtype=dtype)
        k = torch.randn(n, ck, 48 // s, 48 // s, dtype=dtype)
        v = torch.randn(n, cv, 48, 48, dtype=dtype)
        out, lse, inv_n = cst._forward(q, k, v, s, 10.0)
        cst._backward(q, k, v, torch.randn_like(out), lse, inv_n, s, 10.0, (True, True, True))
    if "in_scale" not in ops:
        return
    q, k, v = (torch.randn(n, c, 48 * 48, dtype=dtype) for c in (ck, ck, cv))
    out, lse = ist._in_scale_forward(q, k, v, torch.empty_like(v))
    ist._in_scale_backward(q, k, v, out, lse, torch.randn_like(out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--ops", nargs="+", default=["in_scale", "cross_scale"], choices=["in_scale", "cross_scale"])
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    recorder = Recorder()
    recorder.install()
    for name in args.dtype:
        recorder.dtype = name
        drive_launchers(DTYPES[name], args.ops)
    print(f"Triton {triton.__version__}, target sm_{ARCH}a (compiled, not run)")
    failed, cells = 0, []
    for (dtype, kernel, config), row in recorder.rows.items():
        if "error" in row:
            verdict, stats = row["error"], ["", "", "", "", "", ""]
        else:
            spilled = row["spill_store"] > 0 or row["spill_load"] > 0
            verdict = "SPILLS" if spilled and dtype in NO_SPILLS else ("spills (fp32 allowed)" if spilled else "ok")
            verdict = scalar_main_loads(dtype, kernel, row) or verdict
            stats = [row["regs"], f"{row['spill_store']}/{row['spill_load']}", f"{row['shared'] / 1024:.1f}",
                     mix_text(row["mix"]), row["mma_per_trip"], "{} / {}".format(*row["hot_loop"])]
        failed += verdict not in ("ok", "spills (fp32 allowed)")
        cells.append([dtype, kernel, config, *stats, verdict])
    print(markdown.table(["dtype", "kernel", "constexprs and config", "regs", "spill st/ld B", "shared KB",
                          "global memory instructions (SASS)", "MMA / loop trip", "hot loop insns / int",
                          "verdict"], cells))
    print(f"{len(recorder.rows)} variants compiled, {failed} failed (compile errors, fp16/bf16 spills, "
          "or scalar main-operand loads)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(dtype=d, kernel=k, config=c, **r) for (d, k, c), r in recorder.rows.items()], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
