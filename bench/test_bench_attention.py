"""Both attention operators, every backend and baseline, forward and forward+backward.

FLOP counts (forward, multiply-add = 2):
  in-scale:    2 * N * (HW)^2 * (Ck + Cv)
  cross-scale: 2 * N * HW * L * (9 Ck + 9 Cv s^2), L = HW / s^2
Forward+backward is counted as 3.5x the forward (recomputed scores included).
"""
import pytest
import torch

import kernels
from bench.baselines import per_image_cross_scale, sdpa_in_scale
from bench.conftest import CUDA, DEVICE, DTYPE, measure, requires_gpu_for

CK, CV = (64, 128) if CUDA else (16, 32)
# name -> (N, H, W, s)
SHAPES = {
    "train-x2": (16, 48, 48, 2), "train-x3": (16, 48, 48, 3), "map96": (1, 96, 96, 2),
    "map192": (1, 192, 192, 2), "x4-stage2": (16, 96, 96, 2),
} if CUDA else {"cpu-small-s2": (2, 24, 24, 2), "cpu-small-s3": (2, 18, 18, 3)}
IN_SCALE_SHAPES = {name: shape for name, shape in SHAPES.items() if shape[3] == 2}  # s plays no part
ROUNDS = 20 if CUDA else 3


def inputs(n, h, w, s, grad):
    def make():
        q = torch.randn(n, CK, h, w, device=DEVICE, dtype=DTYPE)
        k = torch.randn(n, CK, h // s, w // s, device=DEVICE, dtype=DTYPE)
        v = torch.randn(n, CV, h, w, device=DEVICE, dtype=DTYPE)
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
@pytest.mark.parametrize("backend", ["triton", "torch", "per-image"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_cross_scale(benchmark, shape, backend, backward):
    requires_gpu_for(backend)
    n, h, w, s = SHAPES[shape]
    if backend == "per-image":
        op = lambda q, k, v: per_image_cross_scale(q, k, v, s)  # noqa: E731
    else:
        op = lambda q, k, v: kernels.cross_scale_attention(q, k, v, s, backend=backend)  # noqa: E731
    flop = 2 * n * h * w * (h // s) * (w // s) * 9 * (CK + CV * s * s) * (3.5 if backward else 1)
    benchmark.group = f"cross-scale {shape} {'fwd+bwd' if backward else 'fwd'}"
    measure(benchmark, inputs(n, h, w, s, backward), run(op, backward), flop, ROUNDS)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", ["triton", "torch", "sdpa"])
@pytest.mark.parametrize("shape", list(IN_SCALE_SHAPES))
def test_in_scale(benchmark, shape, backend, backward):
    requires_gpu_for(backend)
    n, h, w, _ = IN_SCALE_SHAPES[shape]
    if backend == "sdpa":
        op = sdpa_in_scale
    else:
        op = lambda q, k, v: kernels.in_scale_attention(q, k, v, backend=backend)  # noqa: E731
    flop = 2 * n * (h * w) ** 2 * (CK + CV) * (3.5 if backward else 1)
    benchmark.group = f"in-scale {shape} {'fwd+bwd' if backward else 'fwd'}"
    measure(benchmark, inputs(n, h, w, 1, backward), run(op, backward), flop, ROUNDS)
