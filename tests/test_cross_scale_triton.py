"""The fused Triton cross-scale attention against the float64 PyTorch reference.

Without a GPU the kernels run in Triton's interpreter: TRITON_INTERPRET must be set
before `kernels.cross_scale_triton` (any @triton.jit module) is first imported in
this process; tests/conftest.py does it, and the setdefault below covers running
this file without that conftest. In a process that already imported the kernels
compiled (TRITON_INTERPRET unset) and has no GPU, the module is skipped.

Error measure: max |kernel - reference| / max |reference| per tensor, reference in
float64 on the same (rounded) inputs, for out = attention(q, k, v) and the grads
dq, dk, dv of <out, g> for a random g.
"""
import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import kernels  # noqa: E402
from kernels import cross_scale_triton as cst  # noqa: E402
from kernels.cross_scale_torch import KEY_NORM_FLOOR, cross_scale_attention_torch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not cst._INTERPRET else "cpu"
if DEVICE == "cpu" and not cst._INTERPRET:
    pytest.skip("kernels.cross_scale_triton was imported without TRITON_INTERPRET=1 and there is "
                "no GPU", allow_module_level=True)

NAMES = ("out", "dq", "dk", "dv")
# fp32: kernel and reference differ by fp32 rounding only. |Kc| <= 1, so a score
# S = a Q_p . Kc_l sums 9Ck products whose absolute values add up to <= a |Q_p|
# (~10 * sqrt(9 Ck) <= ~210 for randn with Ck <= 48); its fp32 error is of order
# u a |Q_p| ~ 1e-5 (u = 2^-24), which is also the relative error of the probabilities
# (d exp(S) = exp(S) dS) and so of everything downstream; the P.V, dP, dS.K, dS^T.Q
# products and the L- and HW-term sums add a few u each. Observed: 1e-7 .. 3e-6.
# 5e-5 leaves >3x over the estimate and >15x over the observations, while an indexing,
# masking or normalisation bug gives errors of 4e-4 (the floored keys' radial term,
# checked) up to O(1).
FP32_TOL = 5e-5
# fp16/bf16: kernel error <= 2 x the error of the PyTorch reference run in that dtype,
# plus one rounding of a result to the dtype (u = 2^-11 fp16, 2^-8 bf16): the kernel
# stores out / grads in the dtype and rounds P and dS to it before their matmuls, so a
# draw where the low-precision reference is unusually exact still passes.
SLACK = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """NaN-fill every buffer the launchers allocate (outputs, stats, scratch), so that an
    element a kernel fails to write shows up."""
    monkeypatch.setattr(cst, "_POISON", True)


def _tensor(shape, layout, dtype, gen):
    """A random tensor of `shape` [n, c, h, w] in a memory layout (a strided view unless contiguous)."""
    n, c, h, w = shape
    if layout == "contiguous":
        t = torch.randn(n, c, h, w, generator=gen)
    elif layout == "channels_last":    # channels innermost
        t = torch.randn(n, h, w, c, generator=gen).permute(0, 3, 1, 2)
    elif layout == "strided":          # every other channel, non-zero storage offset
        t = torch.randn(n, c, 2, h, w, generator=gen)[:, :, 1]
    elif layout == "transposed":       # H, W swapped in memory
        t = torch.randn(n, c, w, h, generator=gen).transpose(2, 3)
    else:
        raise ValueError(layout)
    return t.to(device=DEVICE, dtype=dtype)


def _inputs(n, ck, cv, H, W, s, layout="contiguous", keys="normal", dtype=torch.float32, seed=0):
    """q, k, v leaves and an output grad g; keys="floor" scales all of k by 1e-6 (every patch
    norm ~1e-5 < floor), keys="mixed" only the top-left quarter (patches inside it are at the
    floor, those on its border mix tiny and normal entries)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = H // s, W // s
    q = _tensor((n, ck, H, W), layout, dtype, gen)
    k = _tensor((n, ck, h, w), layout, dtype, gen)
    v = _tensor((n, cv, H, W), layout, dtype, gen)
    g = _tensor((n, cv, H * s, W * s), "transposed" if layout == "contiguous" else "contiguous", dtype, gen)
    with torch.no_grad():
        if keys == "floor":
            k.mul_(1e-6)
        elif keys == "mixed":
            k[:, :, : (h + 1) // 2, : (w + 1) // 2].mul_(1e-6)
    return [t.requires_grad_() for t in (q, k, v)] + [g]


def _run(fn, q, k, v, g, s):
    out = fn(q, k, v, s)
    return (out, *torch.autograd.grad(out, (q, k, v), g))


def _reference(q, k, v, g, s, dtype=torch.float64):
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    return _run(cross_scale_attention_torch, *leaves, g.to(dtype), s)


def _triton(q, k, v, g, s):
    return _run(lambda *t: kernels.cross_scale_attention(*t, backend="triton"), q, k, v, g, s)


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def _errors(got, want, k):
    """Relative errors of out, dq, dk, dv; with keys at the floor the dk of floored keys is
    ~1/floor larger than the rest, so dk is also measured on the keys away from the tiny region."""
    errs = {name: _rel(a, b) for name, a, b in zip(NAMES, got, want)}
    tiny = (k.detach().abs() < 1e-3).float()
    near = torch.nn.functional.max_pool2d(tiny, 3, 1, 1) > 0   # within one pixel of a tiny entry
    if near.any() and not near.all():
        errs["dk_normal_keys"] = _rel(got[2][~near], want[2][~near])
    return errs


def _check_fp32(case, q, k, v, g, s):
    got = _triton(q, k, v, g, s)
    want = _reference(q, k, v, g, s)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and a.dtype == torch.float32, (name, a.shape, a.dtype)
        assert torch.isfinite(a).all(), f"{case}: {name} has unwritten (NaN) or non-finite elements"
    errs = _errors(got, want, k)
    print(case, {key: f"{e:.2e}" for key, e in errs.items()})
    assert max(errs.values()) <= FP32_TOL, f"{case}: relative errors {errs}"
    return errs


# n, ck, cv, H, W, s, layout, keys. Interpreter blocks: 64 queries, 16 keys, 64 channels.
FP32_CASES = [
    (1, 16, 32, 12, 8, 2, "contiguous", "mixed"),    # L=24: 2 key blocks (online softmax), HW=96 tail
    (1, 48, 16, 9, 6, 3, "channels_last", "normal"),  # s=3, Ck=48 padded; Cv s^2=144: 3 slices, tail
    (2, 16, 16, 4, 4, 2, "strided", "floor"),         # 2x2 keys, all at the floor; batch 2
    (2, 16, 32, 10, 6, 2, "transposed", "mixed"),     # odd key grid 5x3, H != W; batch 2
    (1, 16, 16, 5, 3, 1, "contiguous", "normal"),     # s=1 (plain patch attention)
    (1, 16, 16, 8, 4, 4, "channels_last", "mixed"),   # s=4: 2x1 keys, Cv s^2=256: 4 slices
]


@pytest.mark.parametrize("case", FP32_CASES, ids=lambda c: "n{}_ck{}_cv{}_{}x{}_s{}_{}_{}".format(*c))
def test_fp32_matches_float64_reference(case):
    *shape, layout, keys = case
    q, k, v, g = _inputs(*shape, layout=layout, keys=keys)
    _check_fp32(case, q, k, v, g, shape[-1])


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter block sizes")
def test_fp32_small_blocks_and_int64_offsets(monkeypatch):
    """Blocks of 16 everywhere: several channel chunks per tap (Ck=48 -> 3) and a masked
    Cv s^2 slice tail, query blocks != key blocks; and the 64-bit offset code path."""
    for name in cst._FIXED:
        small = {key: 16 for key in cst._FIXED[name]}
        if name in ("out", "dv"):
            small["BLOCK_V"] = 32                       # Cv s^2 = 4*12 = 48: slices 32 + 16
        if name in ("stats", "dk"):
            small["BLOCK_M"] = 32
        monkeypatch.setitem(cst._FIXED, name, small)
    monkeypatch.setattr(cst, "_needs_int64", lambda *t: True)
    case = (1, 48, 12, 6, 8, 2, "strided", "mixed")    # L=12, HW=48: 3 query blocks of 16
    *shape, layout, keys = case
    q, k, v, g = _inputs(*shape, layout=layout, keys=keys, seed=1)
    _check_fp32(("small blocks, IDX64", case), q, k, v, g, 2)


LOW_CASES = [
    (torch.float16, (2, 16, 32, 8, 6, 2, "contiguous")),
    (torch.float16, (1, 48, 16, 9, 6, 3, "channels_last")),
    (torch.bfloat16, (1, 32, 16, 8, 6, 2, "strided")),   # bf16 dot emulated in fp32 (UPCAST) here
]


@pytest.mark.parametrize("dtype,case", LOW_CASES, ids=lambda x: str(x).replace("torch.", "").replace(" ", ""))
def test_low_precision_within_twice_torch_error(dtype, case):
    *shape, layout = case
    s = shape[-1]
    q, k, v, g = _inputs(*shape, layout=layout, dtype=dtype)
    got = _triton(q, k, v, g, s)
    want = _reference(q, k, v, g, s)                     # float64 on the rounded inputs
    torch_low = _reference(q, k, v, g, s, dtype=dtype)   # the PyTorch reference in `dtype`
    for name, a in zip(NAMES, got):
        assert a.dtype == dtype and torch.isfinite(a).all(), (name, a.dtype)
    errs = [_rel(a, b) for a, b in zip(got, want)]
    ref_errs = [_rel(a, b) for a, b in zip(torch_low, want)]
    print(dtype, case, {n: (f"{e:.2e}", f"{r:.2e}") for n, e, r in zip(NAMES, errs, ref_errs)})
    for name, e, r in zip(NAMES, errs, ref_errs):
        assert e <= 2 * r + SLACK[dtype], f"{dtype} {case} {name}: kernel {e:.3g} vs torch {r:.3g}"


def test_autocast_casts_like_a_matmul():
    q, k, v, g = _inputs(1, 16, 16, 6, 4, 2)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = kernels.cross_scale_attention(q, k, v, 2, backend="triton")
    assert out.dtype == torch.float16
    grads = torch.autograd.grad(out, (q, k, v), g.half())
    assert all(t.dtype == torch.float32 for t in grads)
    half = [t.detach().half().requires_grad_() for t in (q, k, v)]
    expect = _triton(*half, g.half(), 2)
    assert torch.equal(out, expect[0])
    for a, b in zip(grads, expect[1:]):
        assert torch.equal(a, b.float())


def test_saves_inputs_and_row_stats_only():
    q, k, v, _ = _inputs(2, 16, 16, 6, 4, 2, keys="mixed")
    out = kernels.cross_scale_attention(q, k, v, 2, softmax_scale=7.0, backend="triton")
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 5 and all(a is b for a, b in zip(saved[:3], (q, k, v)))
    lse, inv_n = saved[3:]
    assert lse.shape == (2, 24) and inv_n.shape == (2, 6)
    assert lse.dtype == inv_n.dtype == torch.float32
    queries = torch.nn.functional.unfold(q.detach().double(), 3, padding=1)
    raw = torch.nn.functional.unfold(k.detach().double(), 3, padding=1)
    norms = raw.norm(dim=1).clamp_min(KEY_NORM_FLOOR)
    torch.testing.assert_close(inv_n.double(), 1 / norms, rtol=1e-5, atol=0)
    scores = 7.0 * queries.transpose(1, 2) @ (raw / norms[:, None])
    # lse is kept in base 2: log2 sum_l 2^(S log2 e) = logsumexp(S) / ln 2
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1) / torch.log(torch.tensor(2.0)).double(),
                               rtol=1e-5, atol=1e-5)


def test_partial_requires_grad():
    q, k, v, g = _inputs(1, 16, 16, 6, 4, 2)
    q.requires_grad_(False)
    k.requires_grad_(False)
    out = kernels.cross_scale_attention(q, k, v, 2, backend="triton")
    (dv,) = torch.autograd.grad(out, (v,), g)
    want = _reference(q, k, v, g, 2)
    assert _rel(dv, want[3]) <= FP32_TOL


def test_rejects_unsupported_dtype():
    q = torch.zeros(1, 16, 4, 4, dtype=torch.float64, device=DEVICE)
    k = torch.zeros(1, 16, 2, 2, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="float64"):
        kernels.cross_scale_attention(q, k, q, 2, backend="triton")


def test_empty_batch():
    q, k, v, _ = _inputs(1, 16, 16, 4, 4, 2)
    out = kernels.cross_scale_attention(q[:0], k[:0], v[:0], 2, backend="triton")
    assert out.shape == (0, 16, 8, 8)


def test_cpu_without_interpreter_raises():
    """A fresh process without TRITON_INTERPRET: CPU tensors are refused with RuntimeError."""
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    code = ("import torch\n"
            "from kernels.cross_scale_triton import cross_scale_attention_triton\n"
            "x, y = torch.zeros(1, 16, 4, 4), torch.zeros(1, 16, 2, 2)\n"
            "try:\n    cross_scale_attention_triton(x, y, x, 2)\n"
            "except RuntimeError as e:\n    print('refused:', e)\n"
            "else:\n    print('ran')\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "refused:" in result.stdout, result.stdout + result.stderr
