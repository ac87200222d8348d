"""The fused Triton in-scale attention against the float64 PyTorch reference.

Without a GPU the kernels run in Triton's interpreter. TRITON_INTERPRET must be set
before `kernels.in_scale_triton` (any @triton.jit module) is first imported in this
process: tests/conftest.py does it, and the setdefault below covers running this file
without that conftest. In a process that already imported the kernels compiled
(TRITON_INTERPRET unset) and has no GPU, the module is skipped.

Error measure: max |kernel - reference| / max |reference| per tensor, reference in
float64 on the same (rounded) inputs.
"""
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import kernels  # noqa: E402
from kernels import _triton_common as tc  # noqa: E402
from kernels import in_scale_triton as ist  # noqa: E402
from tests.numerics import (NAMES, assert_within_twice_torch, operator, random_tensor, rel_err,  # noqa: E402
                            rel_errs, rerun, run_with_grads, twice_torch_bound)

DEVICE = "cuda" if torch.cuda.is_available() and not tc.INTERPRET else "cpu"
if DEVICE == "cpu" and not tc.INTERPRET:
    pytest.skip("kernels.in_scale_triton was imported without TRITON_INTERPRET=1 and there is "
                "no GPU", allow_module_level=True)
pytestmark = pytest.mark.usefixtures("poison", "fresh_seed")

# fp32: the kernel and the reference differ only by fp32 rounding. Per score, a
# Ck-term fp32 dot product (Ck <= 128 here, randn inputs, |s| up to ~40) has absolute
# error ~ sqrt(Ck) * u * |s| with u = 2^-24, i.e. ~1e-5 in the worst rows; that is
# also the relative error of the probabilities (d exp(s) / exp(s) = ds). The softmax
# sums and the P.V, dS.K, dS^T.Q products add L- or Ck-term fp32 sums (L <= 84:
# ~sqrt(L) u). Observed errors over 175 random draws: 1e-7..5.5e-6; 5e-5 leaves a 10x
# margin against unlucky draws, while any indexing or masking bug gives O(1) errors.
FP32_TOL = 5e-5
# fp16/bf16: tests.numerics.assert_within_twice_torch (bf16 runs under the interpreter with
# fp32 dots of the bf16 tiles and emulated round-to-nearest casts, kernels._triton_common).


def _inputs(n, ck, cv, h, w, layout="contiguous", dtype=torch.float32):
    q, k, v = (random_tensor((n, c, h, w), layout, dtype, DEVICE).requires_grad_() for c in (ck, ck, cv))
    g = random_tensor((n, cv, h, w), "channels_last" if layout != "contiguous" else layout, dtype, DEVICE)
    return q, k, v, g


def _reference(q, k, v, g, dtype=torch.float64):
    return rerun(operator("in_scale", 1, "torch"), (q, k, v), g, dtype)


def _triton(q, k, v, g):
    return run_with_grads(operator("in_scale", 1, "triton"), (q, k, v), g)


def _check_fp32(case, q, k, v, g):
    got = _triton(q, k, v, g)
    want = _reference(q, k, v, g)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and a.dtype == torch.float32, (name, a.shape, a.dtype)
        assert torch.isfinite(a).all(), f"{case}: {name} has unwritten (NaN) or non-finite elements"
    errs = rel_errs(got, want)
    print(case, dict(zip(NAMES, errs)))
    assert max(errs) <= FP32_TOL, f"{case}: relative errors {dict(zip(NAMES, errs))}"


# n, ck, cv, h, w, layout. With the interpreter's 16 x 16 blocks:
FP32_CASES = [
    (2, 24, 40, 4, 5, "contiguous"),      # L=20: full block + tail; Ck != Cv, not powers of 2
    (2, 16, 16, 1, 7, "channels_last"),   # L=7 < one block: tail only; no channel padding
    (1, 40, 24, 3, 11, "strided"),        # L=33: two full blocks + 1-row tail; stride_c = 2L
    (2, 16, 40, 4, 8, "transposed"),   # L=32: full blocks only, no tail; copied input
    (1, 64, 128, 2, 9, "channels_last"),  # the network's Ck=64, Cv=128, L=18
    (2, 5, 16, 2, 3, "contiguous"),       # Ck < 16, L=6
    (1, 64, 128, 7, 12, "strided"),       # L=84: five full blocks + tail, network dims
]


@pytest.mark.parametrize("case", FP32_CASES, ids=lambda c: "n{}_ck{}_cv{}_{}x{}_{}".format(*c))
def test_fp32_matches_float64_reference(case):
    _check_fp32(case, *_inputs(*case))


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter block sizes")
@pytest.mark.parametrize("blocks", [(32, 16), (16, 32)])
def test_fp32_unequal_blocks(monkeypatch, blocks):
    """BLOCK_M != BLOCK_N, so a query mask confused with a key mask shows."""
    for name, (candidates, _) in ist._CONFIGS.items():
        monkeypatch.setitem(ist._CONFIGS, name, (candidates, dict(BLOCK_M=blocks[0], BLOCK_N=blocks[1])))
    case = (2, 24, 16, 5, 7, "channels_last")   # L=35
    _check_fp32((blocks, *case), *_inputs(*case))


LOW_CASES = [
    (torch.float16, (2, 24, 40, 4, 5, "contiguous")),
    (torch.float16, (1, 64, 128, 3, 11, "channels_last")),
    (torch.bfloat16, (2, 40, 24, 3, 7, "strided")),
]


@pytest.mark.parametrize("dtype,case", LOW_CASES, ids=lambda x: str(x).replace("torch.", "").replace(" ", ""))
def test_low_precision_within_twice_torch_error(dtype, case):
    q, k, v, g = _inputs(*case, dtype=dtype)
    got = _triton(q, k, v, g)
    want = _reference(q, k, v, g)                     # float64 on the rounded inputs
    torch_low = _reference(q, k, v, g, dtype=dtype)   # the PyTorch reference in `dtype`
    for a in got:
        assert a.dtype == dtype and torch.isfinite(a).all(), a.dtype
    assert_within_twice_torch(got, want, torch_low, dtype, f"{dtype} {case}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("wanted", ["q", "k", "v", "qk"])
def test_fused_backward_each_gradient_alone(wanted, dtype):
    """The one backward kernel with only some gradients asked for (dq's atomics skipped when
    only dk / dv are wanted; dk, dv computed but not returned when only dq is): odd sizes,
    L = 39 (two full 16-blocks and a tail), against float64; fp16 / bf16 under the 2x rule."""
    q, k, v, g = _inputs(2, 20, 36, 3, 13, "strided", dtype=dtype)
    leaves = [t for name, t in zip("qkv", (q, k, v)) if name in wanted]
    out = kernels.in_scale_attention(q, k, v, backend="triton")
    got = torch.autograd.grad(out, leaves, g)
    want = _reference(q, k, v, g)
    torch_low = _reference(q, k, v, g, dtype=dtype)
    for grad, name in zip(got, wanted):
        i = 1 + "qkv".index(name)
        err = rel_err(grad, want[i])
        bound = FP32_TOL if dtype == torch.float32 else twice_torch_bound(rel_err(torch_low[i], want[i]), dtype)
        assert grad.dtype == dtype and err <= bound, (name, err, bound)


def test_single_position():
    """L = 1: out = v exactly, dv = g exactly; dq = dk = 0 up to the fp32 rounding of
    dp - delta (two Cv-term sums of |g v| ~ 1, so a few 1e-7)."""
    q, k, v, g = _inputs(2, 16, 24, 1, 1)
    out, dq, dk, dv = _triton(q, k, v, g)
    assert torch.equal(out, v) and torch.equal(dv, g)
    assert dq.abs().max() <= 1e-5 and dk.abs().max() <= 1e-5


def test_partial_grads_and_expanded_grad_output():
    """Only v needs a grad (the dq/dk kernels' outputs are skipped), and the grad output
    of out.sum() is an expanded tensor with all strides 0."""
    q, k, v, _ = _inputs(2, 24, 16, 3, 7)
    q, k = q.detach(), k.detach()
    kernels.in_scale_attention(q, k, v, backend="triton").sum().backward()
    g = torch.ones((), device=DEVICE).expand(2, 16, 3, 7)
    want = _reference(q, k, v, g)[3]
    assert rel_err(v.grad, want) <= FP32_TOL


def test_empty_batch():
    q = torch.randn(0, 16, 3, 3, device=DEVICE, requires_grad=True)
    out = kernels.in_scale_attention(q, q, q, backend="triton")
    assert out.shape == (0, 16, 3, 3)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_autocast_casts_like_a_matmul():
    q, k, v, g = _inputs(2, 24, 40, 3, 5)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = kernels.in_scale_attention(q, k, v, backend="triton")
    assert out.dtype == torch.float16
    grads = torch.autograd.grad(out, (q, k, v), g.half())
    assert all(t.dtype == torch.float32 for t in grads)
    half = [t.detach().half().requires_grad_() for t in (q, k, v)]
    expect = _triton(*half, g.half())
    assert torch.equal(out, expect[0])
    for a, b in zip(grads, expect[1:]):
        assert torch.equal(a, b.float())


def test_saves_only_inputs_output_and_lse():
    q, k, v, _ = _inputs(2, 16, 24, 3, 3)
    out = kernels.in_scale_attention(q, k, v, backend="triton")
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 5
    lse = saved[-1]
    assert lse.shape == (2, 9) and lse.dtype == torch.float32
    scores = torch.einsum("nci,ncj->nij", q.detach().flatten(2).double(), k.detach().flatten(2).double())
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), rtol=1e-5, atol=1e-5)


def test_rejects_unsupported_inputs():
    x = torch.zeros(1, 16, 2, 2, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="float64"):
        kernels.in_scale_attention(x, x, x, backend="triton")
    big = torch.zeros(1, 300, 1, 1, device=DEVICE)
    with pytest.raises(ValueError, match="exceed"):
        kernels.in_scale_attention(big, big, big, backend="triton")


def test_cpu_without_interpreter_raises():
    """A fresh process without TRITON_INTERPRET: CPU tensors are refused with RuntimeError."""
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    code = ("import torch, kernels\n"
            "from kernels.in_scale_triton import in_scale_attention_triton\n"
            "x = torch.zeros(1, 16, 2, 2)\n"
            "for f in (lambda: kernels.in_scale_attention(x, x, x, backend='triton'),\n"
            "          lambda: in_scale_attention_triton(x, x, x)):\n"
            "    try:\n        f()\n"
            "    except RuntimeError as e:\n        print('refused:', e)\n"
            "    else:\n        print('ran')\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.stdout.count("refused:") == 2, result.stdout + result.stderr


@pytest.mark.skipif(DEVICE == "cpu" and not os.environ.get("CSNLN_BIG_TESTS"),
                    reason="needs a GPU, or CSNLN_BIG_TESTS=1 (13.4 GB of address space, "
                           "little host memory)")
def test_offsets_beyond_int32():
    """Element offsets past 2^31, from batch index * batch stride, from position *
    position stride and from the loops' pointer steps (BLOCK * 2^27), in every kernel:
    q, k, v and the output grad are interleaved views into one fp16 storage of 6.7e9
    elements (13.4 GB; on the host only the touched pages become real memory)."""
    n, c, h, w = 3, 16, 5, 7
    length = h * w
    batch_stride = 2 ** 30 + 2 ** 12                     # fits int32; batch 2 starts past 2^31
    pos_stride = 2 ** 27                                 # position 34 lies at 4.6e9
    strides = (batch_stride, 1, w * pos_stride, pos_stride)
    base = torch.empty((n - 1) * batch_stride + (length - 1) * pos_stride + 4 * c,
                       dtype=torch.float16, device=DEVICE)
    q, k, v, g = (base.as_strided((n, c, h, w), strides, i * c) for i in range(4))
    for t in (q, k, v, g):
        t.copy_(torch.randn(t.shape, device=DEVICE))
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    got = _triton(*leaves, g)
    want = _reference(*leaves, g)
    torch_low = _reference(*leaves, g, dtype=torch.float16)
    assert_within_twice_torch(got, want, torch_low, torch.float16, "offsets beyond int32")


def test_channels_last_in_channels_last_out():
    """The output takes v's memory format (no layout copy before the next convolution), same values."""
    q, k, v, _ = _inputs(2, 16, 24, 3, 5, "channels_last")
    out = kernels.in_scale_attention(q, k, v, backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    plain = kernels.in_scale_attention(*(t.detach().contiguous() for t in (q, k, v)), backend="triton")
    assert plain.is_contiguous() and rel_err(out, plain) <= 1e-6   # the same sums, maybe reassociated
