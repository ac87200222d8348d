"""torch.profiler's per-kernel tables: the x2 and x4 training steps and both attention operators
(forward + backward) at their benchmark shapes.

    python bench/kernel_profile.py [--top 30] [--cases NAME ...] [--out profile.md]
Each case runs twice (warm-up: autotuning, cuDNN benchmark, allocator), then STEPS times under the
profiler. On a GPU a table lists the top GPU kernels by total GPU time: calls and ms per step, ms per
call, share of the step's GPU time; its header gives the kernels launched per step. On the CPU
(tiny shapes, torch backend) the rows are the CPU operators by self time: a check of the tool.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from anywhere

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import kernels  # noqa: E402
from bench import markdown  # noqa: E402
from bench.conftest import CUDA, DEVICE, DTYPE, training_step  # noqa: E402
from bench.test_bench_attention import IN_SCALE_SHAPES, SHAPES  # noqa: E402
from csnln import CSNLN  # noqa: E402

STEPS = 2
# name -> (scale, n_feats, depth, batch, LR patch): the paper's step on a GPU, a tiny one on the CPU
TRAIN = ({"train x2": (2, 128, 12, 16, 48), "train x4": (4, 128, 12, 16, 48)} if CUDA else
         {"train x2": (2, 8, 1, 2, 12), "train x4": (4, 8, 1, 2, 12)})


def _training_step(scale, n_feats, depth, batch, patch):
    """One training step of bench/test_bench_network.py on fixed random inputs."""
    step = training_step(CSNLN(scale=scale, n_feats=n_feats, depth=depth).to(DEVICE))
    lr = torch.rand(batch, 3, patch, patch, device=DEVICE)
    hr = torch.rand(batch, 3, patch * scale, patch * scale, device=DEVICE)
    return lambda: step(lr, hr)


def _operator(op, n, h, w, s, ck, cv):
    """Forward + backward of an attention operator (the default backend): q, v [n, ck / cv, h, w],
    k [n, ck, h/s, w/s] (s = 1 for the in-scale operator), grad [n, cv, h*s, w*s]."""
    q = torch.randn(n, ck, h, w, device=DEVICE, dtype=DTYPE, requires_grad=True)
    k = torch.randn(n, ck, h // s, w // s, device=DEVICE, dtype=DTYPE, requires_grad=True)
    v = torch.randn(n, cv, h, w, device=DEVICE, dtype=DTYPE, requires_grad=True)
    g = torch.randn(n, cv, h * s, w * s, device=DEVICE, dtype=DTYPE)

    def step():
        out = (kernels.in_scale_attention(q, k, v) if op == "in_scale"
               else kernels.cross_scale_attention(q, k, v, s))
        torch.autograd.grad(out, (q, k, v), g)
    return step


def cases():
    """name -> a function building the case's step (built only when the case runs)."""
    out = {"train x2": lambda: _training_step(*TRAIN["train x2"])}
    for name, (n, h, w, s, ck, cv) in IN_SCALE_SHAPES.items():
        out[f"in_scale {name} ({n} x {h * w})"] = lambda a=(n, h, w, 1, ck, cv): _operator("in_scale", *a)
    for name, shape in SHAPES.items():
        out[f"cross_scale {name}"] = lambda a=shape: _operator("cross_scale", *a)
    out["train x4"] = lambda: _training_step(*TRAIN["train x4"])
    return out


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _device_time(e):
    return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)


def profile_case(step, top):
    """Profile STEPS calls of step() after two warm-up calls -> (header line, table)."""
    for _ in range(2):
        step()
    _sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(STEPS):
            step()
        _sync()
    wall_ms = (time.perf_counter() - start) * 1e3 / STEPS
    events = prof.key_averages()
    if CUDA:
        rows = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and _device_time(e) > 0]
        time_of = _device_time
    else:
        rows = [e for e in events if e.self_cpu_time_total > 0]
        time_of = lambda e: e.self_cpu_time_total  # noqa: E731
    total = sum(time_of(e) for e in rows) or 1
    rows.sort(key=time_of, reverse=True)
    launches = sum(e.count for e in rows) / STEPS
    header = (f"{wall_ms:.2f} ms per step (wall, profiled), {total / 1e3 / STEPS:.2f} ms {'GPU' if CUDA else 'CPU'} "
              f"time per step, {launches:.0f} {'kernels' if CUDA else 'operator calls'} per step")
    cells = [[e.key[:90].replace("|", "/"), f"{e.count / STEPS:g}", f"{time_of(e) / 1e3 / STEPS:.3f}",
              f"{time_of(e) / 1e3 / e.count:.4f}", f"{100 * time_of(e) / total:.1f}"] for e in rows[:top]]
    return header, markdown.table([f"{'kernel' if CUDA else 'operator'} (top {top})", "calls / step", "ms / step",
                                   "ms / call", "%"], cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--cases", nargs="+", help="case names to run (default: all); see --list")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = True   # as train.py's default
    builders = cases()
    if args.list:
        print("\n".join(builders))
        return 0
    device = torch.cuda.get_device_name() if CUDA else "CPU (tiny shapes, torch backend)"
    text = [f"# Per-kernel profiles: {device}, torch {torch.__version__}, {str(DTYPE)[6:]}, {STEPS} profiled steps"]
    failed = 0
    for name, build in builders.items():
        if args.cases and name not in args.cases:
            continue
        try:
            header, table = profile_case(build(), args.top)
            text.append(f"\n## {name}\n\n{header}\n\n{table}")
        except Exception as e:   # one case failing (memory, a kernel) must not lose the others
            failed += 1
            text.append(f"\n## {name}\n\nfailed: {type(e).__name__}: {str(e)[:300]}")
        print(text[-1], flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write("\n".join(text) + "\n")
        if CUDA:
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
