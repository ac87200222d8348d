"""Shared pieces of the benchmarks: device, shapes, and a timing wrapper with extra info.

On a GPU: paper shapes, timed with CUDA synchronisation after warm-up, inputs rotated.
Without one: small CPU shapes of the torch backend and the baselines only.
"""
import platform

import pytest
import torch

try:
    import triton
    TRITON_VERSION = triton.__version__
except ImportError:
    TRITON_VERSION = None

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
DEVICE_NAME = torch.cuda.get_device_name() if CUDA else platform.processor() or "cpu"


def sync():
    if CUDA:
        torch.cuda.synchronize()


def requires_gpu_for(backend):
    if backend == "triton" and not CUDA:
        pytest.skip("Triton kernels are benchmarked on a GPU only (the CPU interpreter is not a speed measure)")


def training_step(model):
    """step(lr, hr): one fp16-autocast (GPU) training step of `model`: L1 loss, GradScaler, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=CUDA)

    def step(lr, hr):
        with torch.autocast(DEVICE.type, dtype=DTYPE, enabled=CUDA):
            loss = torch.nn.functional.l1_loss(model(lr).float(), hr)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def cuda_launches(fn):
    """Kernels one call of fn launches on the GPU (torch.profiler; None without CUDA)."""
    if not CUDA:
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def measure(benchmark, make_inputs, fn, flop, rounds, io_bytes=0):
    """Time fn(*inputs) with inputs rotated over 3 sets; record TFLOP/s, TB/s of io_bytes, memory,
    GPU launches per call and versions."""
    sets = [make_inputs() for _ in range(3)]
    counter = iter(range(10**9))

    def call():
        fn(*sets[next(counter) % len(sets)])
        sync()

    for _ in range(2):
        call()  # warm-up: compilation, autotuning, allocator
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:   # --benchmark-disable: the calls ran once, as a smoke test
        return None
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "device": DEVICE_NAME, "torch": torch.__version__, "triton": TRITON_VERSION,
        "dtype": str(DTYPE).replace("torch.", ""), "median_ms": median * 1e3,
        "tflops": flop / median / 1e12 if flop else None,
        "tbps": io_bytes / median / 1e12 if io_bytes else None,
        "peak_extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20 if CUDA else None,
        "launches": cuda_launches(call),
    })
    return median
