"""The PyTorch reference backend of both operators against naive formulations."""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
from kernels.reference import cross_scale_attention_batched, cross_scale_attention_reference, in_scale_attention_reference
from tests.numerics import rel_err


def naive_in_scale(q, k, v):
    """Full score matrix, one einsum at a time."""
    scores = torch.einsum("nci,ncj->nij", q.flatten(2), k.flatten(2))
    return torch.einsum("nij,ncj->nci", scores.softmax(-1), v.flatten(2)).reshape(v.shape)


def random_inputs(n, ck, cv, h, w, s=1, dtype=torch.float64, requires_grad=False):
    q = torch.randn(n, ck, h, w, dtype=dtype)
    k = torch.randn(n, ck, h // s, w // s, dtype=dtype)
    v = torch.randn(n, cv, h, w, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("chunk", [kernels.DEFAULT_CHUNK_ELEMENTS, 50])
@pytest.mark.parametrize("n,ck,cv,h,w", [(2, 5, 7, 3, 5), (1, 16, 8, 7, 1), (3, 4, 4, 1, 1)])
def test_in_scale_matches_naive(n, ck, cv, h, w, chunk):
    q, k, v = random_inputs(n, ck, cv, h, w)
    out = kernels.in_scale_attention(q, k, v, backend="torch", chunk_elements=chunk)
    assert rel_err(out, naive_in_scale(q, k, v)) < 1e-13
    assert rel_err(in_scale_attention_reference(q, k, v), naive_in_scale(q, k, v)) < 1e-13


@pytest.mark.parametrize("chunk", [kernels.DEFAULT_CHUNK_ELEMENTS, 100])
@pytest.mark.parametrize("s,n,ck,cv,h,w", [(2, 2, 5, 7, 6, 10), (3, 1, 4, 3, 9, 6), (2, 1, 3, 2, 2, 2), (4, 2, 2, 3, 8, 4)])
def test_cross_scale_matches_per_image_formulation(s, n, ck, cv, h, w, chunk):
    q, k, v = random_inputs(n, ck, cv, h, w, s)
    out = kernels.cross_scale_attention(q, k, v, s, backend="torch", chunk_elements=chunk)
    assert out.shape == (n, cv, s * h, s * w)
    assert rel_err(out, cross_scale_attention_reference(q, k, v, s)) < 1e-13
    assert rel_err(cross_scale_attention_batched(q, k, v, s), cross_scale_attention_reference(q, k, v, s)) < 1e-13


def test_cross_scale_key_norm_floor():
    q, k, v = random_inputs(1, 3, 2, 6, 6, 2)
    k = k * 1e-7  # every key patch below the floor: the scores become q . k / floor
    out = kernels.cross_scale_attention(q, k, v, 2, backend="torch")
    assert rel_err(out, cross_scale_attention_reference(q, k, v, 2)) < 1e-13


def test_chunked_gradients_pass_gradcheck():
    q, k, v = random_inputs(1, 2, 2, 3, 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: kernels.in_scale_attention(a, b, c, backend="torch", chunk_elements=7),
                                    (q, k, v))
    q, k, v = random_inputs(1, 2, 1, 4, 4, 2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernels.cross_scale_attention(a, b, c, 2, backend="torch", chunk_elements=20), (q, k, v))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operator produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("op", ["in_scale", "cross_scale"])
def test_chunk_budget_bounds_every_tensor_forward_and_backward(op):
    n, ck, cv, h, w, s = 2, 2, 1, 32, 32, 2
    q, k, v = random_inputs(n, ck, cv, h, w, s if op == "cross_scale" else 1, torch.float32, requires_grad=True)
    budget = 4096
    with LargestTensor() as mode:
        if op == "in_scale":
            out = kernels.in_scale_attention(q, k, v, backend="torch", chunk_elements=budget)
            full = n * (h * w) ** 2
        else:
            out = kernels.cross_scale_attention(q, k, v, s, backend="torch", chunk_elements=budget)
            full = n * h * w * (h // s) * (w // s)
        out.sum().backward()
    linear = 9 * s * s * max(t.numel() for t in (q, k, v))  # unfolded value patches, outputs
    assert mode.largest <= max(budget, linear) < full


PEAK_RSS = """
import torch, kernels
from tests.peak_rss import peak_growth, reset_peak
torch.set_num_threads(1)
q, k, v = torch.randn(1, 16, 64, 64), torch.randn(1, 16, 32, 32), torch.randn(1, 16, 64, 64)
with torch.no_grad():
    kernels.cross_scale_attention(q[..., :8, :8], k[..., :4, :4], v[..., :8, :8], 2, backend="torch")   # warm-up
    start = reset_peak()
    out = kernels.cross_scale_attention(q, k, v, 2, backend="torch")
print(peak_growth(start) - out.numel() * 4)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_cross_scale_workspace_estimate_holds_the_measured_peak():
    """A no-grad call at 64 x 64 (a 16 MiB Gram tile) grows the peak resident size by its band's
    tensors, which `attention_workspace_bytes` counts: three Gram tiles (five before R and S were
    freed early)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", PEAK_RSS], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": root, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    estimate = kernels.attention_workspace_bytes("cross_scale", 1, 64, 64, 16, scale=2)
    assert estimate == 3 * 64 * 64 * 32 * 32 * 4
    assert 0.75 * estimate < int(out.stdout) <= estimate + 2 ** 21, (int(out.stdout), estimate)

# Scores reach softmax_scale * |Q| ~ 10 * sqrt(9 * 8) ~ 85, so one rounding of a score (u = 2^-8 bf16,
# 2^-11 fp16) moves a probability by up to ~85u relative: worst seen over 200 draws 2.6e-2 (bf16) and
# 2.9e-3 (fp16). The bounds leave ~4x; a wrong formula is off by O(1).
@pytest.mark.parametrize("dtype,bound", [(torch.float32, 1e-5), (torch.bfloat16, 1e-1), (torch.float16, 1e-2)])
def test_low_precision_on_cpu(dtype, bound):
    q, k, v = random_inputs(2, 8, 8, 6, 4, 2)
    ref = kernels.cross_scale_attention(q, k, v, 2, backend="torch")
    low = kernels.cross_scale_attention(q.to(dtype), k.to(dtype), v.to(dtype), 2, backend="torch")
    assert low.dtype == dtype and rel_err(low.double(), ref) < bound
    ref = kernels.in_scale_attention(q * 0.3, q * 0.3, v, backend="torch")
    low = kernels.in_scale_attention((q * 0.3).to(dtype), (q * 0.3).to(dtype), v.to(dtype), backend="torch")
    assert low.dtype == dtype and rel_err(low.double(), ref) < bound


def test_bad_inputs_are_named():
    q, k, v = random_inputs(1, 4, 4, 6, 6, 2)
    with pytest.raises(ValueError, match="divisible by scale 4"):
        kernels.cross_scale_attention(q, k, v, 4)
    with pytest.raises(ValueError, match=r"k must be \[N, Ck, 3, 3\]"):
        kernels.cross_scale_attention(q, q, v, 2)
    with pytest.raises(ValueError, match="same channel count"):
        kernels.in_scale_attention(q, v[:, :3], v)
    with pytest.raises(ValueError, match="share a dtype"):
        kernels.in_scale_attention(q, q.float(), q)
    with pytest.raises(ValueError, match="4-D"):
        kernels.in_scale_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.in_scale_attention(q, q, q, backend="cuda")


def test_triton_backend_refuses_cpu_tensors_without_the_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import torch, kernels\n"
            "x = torch.zeros(1, 2, 2, 2)\n"
            "try:\n kernels.in_scale_attention(x, x, x, backend='triton')\n"
            "except RuntimeError as e:\n print('refused:', e)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "refused:" in result.stdout and "Use backend=\"torch\"" in result.stdout, result.stderr


def test_auto_backend_uses_torch_for_cpu_tensors():
    assert kernels.resolve_backend("auto", torch.zeros(1)) == "torch"
