"""Host (Python) time per call of both operators' launchers and of one autotuned launch, through
the autotuner's dispatch (Autotuner.run on every call) and through tc.launch's cached pick;
with --count, the Triton launches of each operator's forward + backward at the training shapes.

    python bench/launch_overhead.py [--calls 2000] [--count]
At 1 x 64/128 x 256 in-scale and 1 x 64/128 x 16 x 16, s 2 cross-scale (kernels of a few microseconds). On a GPU: real launches, host-bound (the
launch queue does not fill). Without one: kernels compiled for sm_90 by a stand-in driver whose
C launcher does nothing, so what is timed is all the Python of a launch (the launcher, the
autotuner or the cached pick, JITFunction.run's binding and cache lookup) but not
cuLaunchKernelEx itself; the cross-scale launchers' torch ops (layouts, key norms, GEMMs on
16 x 16 maps) run on the CPU, about their dispatch cost at this size. Autotuners pick their first surviving candidate (no benchmark).
"""
import argparse
import os
import sys
import time

if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["CSNLN_TRITON_AUTOTUNE"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402

from bench import markdown  # noqa: E402
from bench.compile_check import _Sm90Driver  # noqa: E402


class _NoLaunchDriver(_Sm90Driver):
    """The sm_90 stand-in, plus a loader and a C launcher that do nothing."""

    class utils:
        load_binary = staticmethod(lambda *args: (0, 0, 0, 0, 1024))
        unload_module = staticmethod(lambda *args: None)
        get_device_properties = staticmethod(lambda device: {"max_shared_mem": 232448})

    launcher_cls = staticmethod(lambda src, metadata: (lambda *args: None))


def _via_autotuner(kernel, fixed, grid_of, args, meta):
    """A launch through Autotuner.run's dispatch on every call (tc.launch before its cached pick)."""
    kernel[grid_of](*args, **meta)


def _per_call_us(fn, calls, repeats=5):
    """The best of `repeats` timings of `calls` calls (a shared machine's noise only adds)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def _first_candidates():
    """Every autotuner picks its first surviving candidate instead of benchmarking."""
    from kernels import cross_scale_triton, in_scale_triton
    for module in (in_scale_triton, cross_scale_triton):
        for kernel in module._KERNELS.values():
            kernel._bench = lambda *args, config, **meta: [0.0] * 3


def launch_counts(device):
    """Triton launches of one forward + backward call of each operator at the training shapes
    (fp16, Ck 64, Cv 128; batch 16): op -> launches."""
    from kernels import cross_scale_triton as cst
    from kernels import in_scale_triton as ist
    counted = []
    run = triton.runtime.jit.JITFunction.run

    def counting_run(fn, *args, **kwargs):
        counted.append(fn.__name__)
        return run(fn, *args, **kwargs)

    def randn(*shape):
        return torch.randn(*shape, device=device, dtype=torch.float16)

    out = {}
    triton.runtime.jit.JITFunction.run = counting_run
    try:
        for side in (48, 96):
            q, k, v = randn(16, 64, side * side), randn(16, 64, side * side), randn(16, 128, side * side)
            counted.clear()
            o, lse = ist._in_scale_forward(q, k, v, torch.empty_like(v))
            ist._in_scale_backward(q, k, v, o, lse, torch.randn_like(o))
            out[f"in-scale 16 x {side}x{side}"] = len(counted)
        for s, side in ((2, 48), (3, 48), (2, 96)):
            q, k, v = randn(16, 64, side, side), randn(16, 64, side // s, side // s), randn(16, 128, side, side)
            counted.clear()
            o, lse, inv_n = cst._forward(q, k, v, s, 10.0)
            cst._backward(q, k, v, torch.randn_like(o), lse, inv_n, s, 10.0, (True, True, True))
            out[f"cross-scale s{s} 16 x {side}x{side}"] = len(counted)
    finally:
        triton.runtime.jit.JITFunction.run = run
    return out


def _cross_scale_cases(device, n=1, ck=64, cv=128, side=16, s=2):
    """The cross-scale launchers' host work, in two parts: their Triton launches (recorded from one
    forward and one backward at 16 x 16, then replayed through tc.launch), and their torch ops with
    the Triton launches left out, on fp32 CPU tensors of 4 x 4 maps (dispatch plus a little
    compute: an upper bound of what the ops cost the host; meta tensors would time Python
    meta functions instead)."""
    from kernels import cross_scale_triton as cst

    def inputs(dev, side=side, dtype=torch.float16):
        q, k, v = (torch.randn(n, c, hw, hw, device=dev, dtype=dtype)
                   for c, hw in ((ck, side), (ck, side // s), (cv, side)))
        out, lse, inv_n = cst._forward(q, k, v, s, 10.0)
        return (q, k, v, s, 10.0), (q, k, v, torch.randn_like(out), lse, inv_n, s, 10.0, (True, True, True))

    launch, recorded = cst._launch, {"forward": [], "backward": []}
    fwd, bwd = inputs(device)
    for name, fn, args in (("forward", cst._forward, fwd), ("backward", cst._backward, bwd)):
        cst._launch = lambda *a, _to=recorded[name], **m: (_to.append((a, m)), launch(*a, **m))
        try:
            fn(*args)
        finally:
            cst._launch = launch
    cst._launch = lambda *a, **m: None
    try:
        tiny_fwd, tiny_bwd = inputs("cpu", 4, torch.float32)
    finally:
        cst._launch = launch

    def torch_ops(fn, args):
        def run():
            cst._launch = lambda *a, **m: None
            try:
                fn(*args)
            finally:
                cst._launch = launch
        return run

    replay = {name: (lambda calls=calls: [launch(*a, **m) for a, m in calls]) for name, calls in recorded.items()}
    return {f"cross-scale forward: its {len(recorded['forward'])} Triton launches": replay["forward"],
            "cross-scale forward: its torch ops (CPU, 4 x 4)": torch_ops(cst._forward, tiny_fwd),
            f"cross-scale backward: its {len(recorded['backward'])} Triton launches": replay["backward"],
            "cross-scale backward: its torch ops (CPU, 4 x 4)": torch_ops(cst._backward, tiny_bwd)}


def rows(calls, device):
    from kernels import _triton_common as tc
    from kernels import in_scale_triton as ist
    n, ck, cv, length = 1, 64, 128, 256   # kernels of a few microseconds: the host is the bottleneck
    q, k, do = (torch.randn(n, c, length, device=device, dtype=torch.float16) for c in (ck, ck, cv))
    v = torch.randn(n, cv, length, device=device, dtype=torch.float16)
    out, lse = ist._in_scale_forward(q, k, v, torch.empty_like(v))
    ist._in_scale_backward(q, k, v, out, lse, do)
    meta = ist._meta(ck, cv, q.dtype, length)
    one = (lambda: tc.launch(ist._KERNELS["fwd"], None, lambda m: (tc.cdiv(length, m["BLOCK_M"]), n),
                             (q, k, v, out, lse, length, *q.stride(), *k.stride(), *v.stride(), *out.stride()),
                             meta))
    cases = {"one forward launch (tc.launch)": one,
             "forward launcher (1 launch, lse buffer)": lambda: ist._in_scale_forward(q, k, v, out),
             "backward launcher (2 launches, 4 buffers)": lambda: ist._in_scale_backward(q, k, v, out, lse, do)}
    cases.update(_cross_scale_cases(device))
    table = []
    for name, fn in cases.items():
        cached = _per_call_us(fn, calls)
        saved = tc.launch
        tc.launch = _via_autotuner
        try:
            dispatched = _per_call_us(fn, calls)
        finally:
            tc.launch = saved
        table.append([name, f"{dispatched:.1f}", f"{cached:.1f}", f"{dispatched - cached:.1f}"])
    if device == "cuda":
        torch.cuda.synchronize()
    return table, f"{n} x {ck}/{cv} x {length}, cross-scale {n} x {ck}/{cv} x 16 x 16 s 2"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--count", action="store_true", help="also count the Triton launches of each operator's "
                        "forward + backward at the training shapes")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        triton.runtime.driver.set_active(_NoLaunchDriver())
    _first_candidates()
    table, shape = rows(args.calls, device)
    print(f"{'GPU launches' if device == 'cuda' else 'CPU, sm_90 stand-in, no C launch'}; in-scale fp16 "
          f"{shape}; torch {torch.__version__}, triton {triton.__version__}")
    print(markdown.table(["host path", "us / call via Autotuner.run", "us / call, cached pick", "saved us"], table))
    if args.count:
        print(markdown.table(["operator, forward + backward (training)", "Triton launches"],
                             [[name, str(n)] for name, n in launch_counts(device).items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
