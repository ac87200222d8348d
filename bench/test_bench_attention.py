"""Both attention operators, every backend and baseline, forward and forward+backward.

FLOP counts (multiply-add = 2), the minimal work of each operator's form:
  in-scale:    forward 2 * N * (HW)^2 * (Ck + Cv); forward+backward 3.5x that
  cross-scale: forward 2 * N * HW * L * (Ck + Cv s^2), L = HW / s^2 (the diagonal-stencil form);
               forward+backward adds 2 * N * HW * L * (3 Ck + 2 Cv s^2)
so TFLOP/s compare backends on one yardstick (the per-image and batched baselines do 9x the value
work). TB/s counts the unique bytes of the inputs, the output and (fwd+bwd) their gradients.
"""
import pytest
import torch

import kernels
from bench.conftest import CUDA, DEVICE, DTYPE, measure, requires_gpu_for
from kernels.reference import (cross_scale_attention_batched, cross_scale_attention_reference,
                               in_scale_attention_reference)

# name -> (N, H, W, s, Ck, Cv)
SHAPES = {
    "train-x2": (16, 48, 48, 2, 64, 128), "train-x3": (16, 48, 48, 3, 64, 128),
    "map96": (1, 96, 96, 2, 64, 128), "map192": (1, 192, 192, 2, 64, 128),
    "x4-stage2": (16, 96, 96, 2, 64, 128),
} if CUDA else {"cpu-small-s2": (2, 24, 24, 2, 16, 32), "cpu-small-s3": (2, 18, 18, 3, 16, 32),
                "cpu-64-s2": (1, 64, 64, 2, 64, 128)}
IN_SCALE_SHAPES = {name: shape for name, shape in SHAPES.items() if shape[3] == 2}  # s plays no part
ROUNDS = 20 if CUDA else 21   # CPU: the small shapes take a millisecond, and a few rounds' median wanders


def rounds(h, w):
    """Fewer rounds for the CPU's 64 x 64 maps (the per-image baseline takes 0.8 s a round there)."""
    return ROUNDS if CUDA or h * w <= 1024 else 5


def inputs(n, h, w, s, ck, cv, grad):
    def make():
        q = torch.randn(n, ck, h, w, device=DEVICE, dtype=DTYPE)
        k = torch.randn(n, ck, h // s, w // s, device=DEVICE, dtype=DTYPE)
        v = torch.randn(n, cv, h, w, device=DEVICE, dtype=DTYPE)
        return [t.requires_grad_(grad) for t in (q, k, v)]
    return make


def run(op, backward):
    if not backward:
        return lambda *a: op(*a)

    def step(*a):
        out = op(*a)
        out.backward(torch.ones_like(out))
    return step


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", ["triton", "torch", "batched", "per-image"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_cross_scale(benchmark, shape, backend, backward):
    requires_gpu_for(backend)
    if backend == "per-image" and CUDA and shape != "train-x2":
        pytest.skip("the paper's per-image loop is timed at the training shape only on a GPU (gpu_check's budget)")
    n, h, w, s, ck, cv = SHAPES[shape]
    if backend == "per-image":
        op = lambda q, k, v: cross_scale_attention_reference(q, k, v, s)  # noqa: E731
    elif backend == "batched":
        op = lambda q, k, v: cross_scale_attention_batched(q, k, v, s)  # noqa: E731
    else:
        op = lambda q, k, v: kernels.cross_scale_attention(q, k, v, s, backend=backend)  # noqa: E731
    pairs = n * h * w * (h // s) * (w // s)
    flop = 2 * pairs * (ck + cv * s * s) + (2 * pairs * (3 * ck + 2 * cv * s * s) if backward else 0)
    io = n * h * w * (ck + ck / s ** 2 + cv + cv * s * s) * torch.finfo(DTYPE).bits // 8 * (2 if backward else 1)
    benchmark.group = f"cross-scale {shape} {'fwd+bwd' if backward else 'fwd'}"
    measure(benchmark, inputs(n, h, w, s, ck, cv, backward), run(op, backward), flop, rounds(h, w), io)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", ["triton", "torch", "sdpa"])
@pytest.mark.parametrize("shape", list(IN_SCALE_SHAPES))
def test_in_scale(benchmark, shape, backend, backward):
    requires_gpu_for(backend)
    n, h, w, _, ck, cv = IN_SCALE_SHAPES[shape]
    if backend == "sdpa":
        op = in_scale_attention_reference
    else:
        op = lambda q, k, v: kernels.in_scale_attention(q, k, v, backend=backend)  # noqa: E731
    flop = 2 * n * (h * w) ** 2 * (ck + cv) * (3.5 if backward else 1)
    io = n * h * w * (2 * ck + 2 * cv) * torch.finfo(DTYPE).bits // 8 * (2 if backward else 1)
    benchmark.group = f"in-scale {shape} {'fwd+bwd' if backward else 'fwd'}"
    measure(benchmark, inputs(n, h, w, 1, ck, cv, backward), run(op, backward), flop, rounds(h, w), io)
