"""The Triton cross-scale attention (stencil form) against the float64 PyTorch reference.

Without a GPU the kernels run in Triton's interpreter: TRITON_INTERPRET must be set before
`kernels.cross_scale_triton` is first imported in this process (tests/conftest.py does it; the
setdefault below covers running this file without it). In a process that already imported
the kernels compiled and has no GPU, the module is skipped. Errors: tests/numerics.py.
"""
import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import kernels  # noqa: E402
from kernels import _triton_common as tc  # noqa: E402
from kernels import cross_scale_triton as cst  # noqa: E402
from kernels.cross_scale_torch import KEY_NORM_FLOOR, diagonal_stencil  # noqa: E402
from tests.numerics import (NAMES, SLACK, assert_within_twice_torch, operator, random_tensor,  # noqa: E402
                            rel_err, rel_errs, rerun, run_with_grads)

DEVICE = "cuda" if torch.cuda.is_available() and not tc.INTERPRET else "cpu"
if DEVICE == "cpu" and not tc.INTERPRET:
    pytest.skip("kernels.cross_scale_triton was imported without TRITON_INTERPRET=1 and there is "
                "no GPU", allow_module_level=True)
pytestmark = pytest.mark.usefixtures("poison", "fresh_seed")

# fp32: kernel and reference differ by fp32 rounding only. |inv_n k patch| <= 1, so a score
# a S_raw inv_n sums 9 Ck products whose absolute values add up to <= a |Q_p| (~10 sqrt(9 Ck)
# <= ~210 for randn with Ck <= 48); its fp32 error is of order u a |Q_p| ~ 1e-5 (u = 2^-24),
# also the relative error of the probabilities (d exp(S) = exp(S) dS) and of everything
# downstream; the stencil sums, the products and the L- and HW-term sums add a few u each.
# Observed: 1e-7 .. 3e-6. 5e-5 leaves >3x over the estimate and >15x over the observations,
# while an indexing, masking or normalisation bug gives errors of 4e-4 (the floored keys'
# radial term) up to O(1).
FP32_TOL = 5e-5


def _inputs(n, ck, cv, H, W, s, layout="contiguous", keys="normal", dtype=torch.float32):
    """q, k, v leaves and an output grad g; keys="floor" scales all of k by 1e-6 (every patch
    norm ~1e-5 < floor), keys="mixed" only the top-left quarter (patches inside it are at the
    floor, those on its border mix tiny and normal entries)."""
    h, w = H // s, W // s
    q, k, v = (random_tensor(shape, layout, dtype, DEVICE) for shape in
               ((n, ck, H, W), (n, ck, h, w), (n, cv, H, W)))
    g = random_tensor((n, cv, H * s, W * s), "transposed" if layout == "contiguous" else "contiguous",
                      dtype, DEVICE)
    with torch.no_grad():
        if keys == "floor":
            k.mul_(1e-6)
        elif keys == "mixed":
            k[:, :, : (h + 1) // 2, : (w + 1) // 2].mul_(1e-6)
    return [t.requires_grad_() for t in (q, k, v)] + [g]


def _reference(q, k, v, g, s, dtype=torch.float64):
    return rerun(operator("cross_scale", s, "torch"), (q, k, v), g, dtype)


def _triton(q, k, v, g, s):
    return run_with_grads(operator("cross_scale", s, "triton"), (q, k, v), g)


def _check_fp32(case, q, k, v, g, s):
    got = _triton(q, k, v, g, s)
    want = _reference(q, k, v, g, s)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and a.dtype == torch.float32, (name, a.shape, a.dtype)
        assert torch.isfinite(a).all(), f"{case}: {name} has unwritten (NaN) or non-finite elements"
    errs = dict(zip(NAMES, rel_errs(got, want)))
    tiny = (k.detach().abs() < 1e-3).float()     # dk of floored keys is ~1/floor larger: also
    near = torch.nn.functional.max_pool2d(tiny, 3, 1, 1) > 0   # measure the keys away from them
    if near.any() and not near.all():
        errs["dk_normal_keys"] = rel_err(got[2][~near], want[2][~near])
    print(case, {key: f"{e:.2e}" for key, e in errs.items()})
    assert max(errs.values()) <= FP32_TOL, f"{case}: relative errors {errs}"


# n, ck, cv, H, W, s, layout, keys. Interpreter blocks: 32 queries, 16 keys, 16 channels.
FP32_CASES = [
    (1, 16, 32, 12, 8, 2, "contiguous", "mixed"),    # L=24: 2 key blocks, HW=96 tail
    (1, 48, 16, 9, 6, 3, "channels_last", "normal"),  # s=3, Ck=48 padded to 64; C=144: 5 slices
    (2, 16, 16, 4, 4, 2, "strided", "floor"),         # 2x2 keys, all at the floor; batch 2
    (2, 20, 24, 10, 6, 2, "transposed", "mixed"),     # odd key grid 5x3, H != W, Ck not a power of 2
    (1, 16, 16, 5, 3, 1, "contiguous", "normal"),     # s=1 (plain patch attention)
    (1, 16, 16, 8, 4, 4, "channels_last", "mixed"),   # s=4: 2x1 keys, C=256
    (1, 8, 8, 2, 14, 2, "contiguous", "normal"),      # one row of keys, Ck < 16
    (1, 16, 16, 4, 32, 2, "strided", "mixed"),        # w=16: the stencils' 8-key groups, 2 a key row
]


@pytest.mark.parametrize("case", FP32_CASES, ids=lambda c: "n{}_ck{}_cv{}_{}x{}_s{}_{}_{}".format(*c))
def test_fp32_matches_float64_reference(case):
    *shape, layout, keys = case
    q, k, v, g = _inputs(*shape, layout=layout, keys=keys)
    _check_fp32(case, q, k, v, g, shape[-1])


def _plans(n, H, W, s, cv, esize=4):
    """The launchers' (forward, backward) band plans for q [n, *, H, W], v [n, cv, H, W]."""
    L, C = (H // s) * (W // s), cv * s * s
    return [cst.plan(n, H, W, L, C, esize, backward) for backward in (False, True)]


def _budget_for_rows(rows, H, W, s, cv, esize=4):
    """A band budget under which both passes run bands of at most `rows` query rows of one image."""
    L, C = (H // s) * (W // s), cv * s * s
    return min(cst.band_bytes(rows, min(H, rows + 2), W, L, C, esize, backward) for backward in (False, True))


# (n, H, W, s, rows): 1-row bands; bands that do not divide H (the last one shorter); 2 and 3
# rows, where every band's halo rows belong to both neighbours.
BAND_CASES = [(2, 7, 4, 1, 1), (1, 10, 6, 2, 4), (1, 9, 6, 3, 2), (1, 8, 4, 2, 3)]


@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: "n{}_{}x{}_s{}_rows{}".format(*c))
def test_bands_of_query_rows(monkeypatch, case):
    """Bands of query rows in the forward and the backward (BAND_BYTES), one image at a time."""
    n, H, W, s, rows = case
    monkeypatch.setattr(cst, "BAND_BYTES", _budget_for_rows(rows, H, W, s, 16))
    for images, bands in _plans(n, H, W, s, 16):
        assert images == [(i, i + 1) for i in range(n)]
        assert len(bands) > 1 and bands[0][0] == 0 and bands[-1][1] == H
        assert all(b[1] == c[0] for b, c in zip(bands, bands[1:])) and max(y1 - y0 for y0, y1 in bands) <= rows
    q, k, v, g = _inputs(n, 16, 16, H, W, s, layout="strided", keys="mixed")
    _check_fp32(case, q, k, v, g, s)
    with torch.no_grad():
        out = kernels.cross_scale_attention(q, k, v, s, backend="triton")
    assert rel_err(out, _reference(q, k, v, g, s)[0]) <= FP32_TOL


def test_image_groups(monkeypatch):
    """Whole images in groups of two: 3 images -> groups (0, 2), (2, 3)."""
    n, H, W, s = 3, 6, 4, 2
    L, C = (H // s) * (W // s), 16 * s * s
    whole = [cst.band_bytes(H, H, W, L, C, 4, backward) for backward in (False, True)]
    monkeypatch.setattr(cst, "BAND_BYTES", 2 * max(whole))
    for size, (images, bands) in zip(whole, _plans(n, H, W, s, 16)):
        assert bands == [(0, H)]
        assert images == [(0, 2), (2, 3)] if size == max(whole) else images[0] in ((0, 2), (0, 3))
    q, k, v, g = _inputs(n, 16, 16, H, W, s, layout="channels_last")
    _check_fp32("groups", q, k, v, g, s)


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter block sizes")
def test_blocks_and_int64_offsets(monkeypatch):
    """Blocks of 16 where the fixed configs have more, several channel chunks in the Gram
    (Ck=48 -> 3), a masked slice tail (C = 4*12 = 48: slices 32 + 16), and the 64-bit path."""
    for name in cst._CONFIGS:
        fixed = {key: (32 if key == "BLOCK_V" else 16) if key.startswith("BLOCK") else val
                 for key, val in cst._CONFIGS[name][1].items()}
        monkeypatch.setitem(cst._CONFIGS, name, (cst._CONFIGS[name][0], fixed))
    monkeypatch.setattr(cst, "_needs_int64", lambda *t: True)
    case = (1, 48, 12, 6, 8, 2, "strided", "mixed")    # L=12, HW=48: 3 query blocks of 16
    *shape, layout, keys = case
    q, k, v, g = _inputs(*shape, layout=layout, keys=keys)
    _check_fp32(("small blocks, IDX64", case), q, k, v, g, 2)


# (images, W, h, w, src rows, dst rows, sign, rows of the delta weights or None, 64-bit offsets):
# w = 16, 24, 12, 6, 3, 5 give key groups of VEC = 8, 8, 4, 2, 1, 1 keys at fp16 / bf16 (at most 4 at
# fp32), at least two groups a key row, so that the dx = +-1 taps take keys from a neighbouring
# group; the three stencils' row ranges: P~
# (dst inside src), dP + delta (dst inside src, weights), dR (dst = src plus a halo row each side).
STENCIL_CASES = [
    (2, 6, 3, 16, (0, 5), (0, 5), -1, None, False),
    (1, 7, 2, 24, (1, 6), (2, 5), 1, (1, 6), False),
    (1, 8, 3, 12, (2, 4), (1, 5), -1, None, True),
    (2, 7, 2, 6, (0, 4), (1, 3), 1, (0, 4), False),
    (1, 5, 3, 3, (1, 3), (0, 4), -1, None, False),
    (1, 9, 1, 5, (0, 3), (0, 3), 1, (0, 3), True),
]


@pytest.mark.parametrize("case", STENCIL_CASES, ids=lambda c: "W{}_h{}_w{}_src{}_dst{}_sign{}".format(*c[1:7]))
@pytest.mark.parametrize("dtype", tc.DTYPES)
def test_stencil_kernel_matches_the_torch_stencil(case, dtype):
    """_stencil_kernel against kernels.cross_scale_torch.diagonal_stencil in float64 on a random
    band buffer: every element (NaN-poisoned outputs), fp32 to rounding, fp16 / bf16 to one unit
    roundoff (the sum is fp32, rounded once)."""
    g, W, h, w, (s0, s1), (d0, d1), sign, wgt_rows, idx64 = case
    L = h * w
    src = torch.randn(g, (s1 - s0) * W, L, dtype=dtype, device=DEVICE)
    meta = dict(IDX64=idx64, EMU_BF16=tc.emulate_bf16(dtype))
    want = diagonal_stencil(src.double().view(g, s1 - s0, W, h, w), (s0, s1), (d0, d1), sign).view(g, -1, L) / 6
    tol = FP32_TOL if dtype == torch.float32 else SLACK[dtype]
    if wgt_rows is None:
        got = cst._stencil(src, (s0, s1), (d0, d1), W, h, w, sign, 1 / 6, dtype, meta)
        assert got.dtype == dtype and rel_err(got, want) <= tol
        return
    w0, w1 = wgt_rows
    wgt = torch.randn(g, (w1 - w0) * W, L, dtype=dtype, device=DEVICE)
    got, delta = cst._stencil(src, (s0, s1), (d0, d1), W, h, w, sign, 1 / 6, torch.float32, meta,
                              wgt=wgt, wgt_rows=wgt_rows)
    weights = wgt.double().view(g, w1 - w0, W, L)[:, d0 - w0:d1 - w0].reshape(g, -1, L)
    assert got.dtype == torch.float32 and rel_err(got, want) <= FP32_TOL
    assert rel_err(delta, (weights * want).sum(-1)) <= FP32_TOL


LOW_CASES = [
    (torch.float16, (2, 16, 32, 8, 6, 2, "contiguous")),
    (torch.float16, (1, 48, 16, 9, 6, 3, "channels_last")),
    (torch.bfloat16, (1, 32, 16, 8, 6, 2, "strided")),   # emulated bf16 dots and casts here
    (torch.bfloat16, (1, 16, 16, 6, 9, 3, "contiguous")),
    (torch.float16, (1, 16, 16, 4, 24, 2, "channels_last")),   # w=12: 4-key groups, 3 a key row
]


@pytest.mark.parametrize("dtype,case", LOW_CASES, ids=lambda x: str(x).replace("torch.", "").replace(" ", ""))
def test_low_precision_within_twice_torch_error(dtype, case):
    *shape, layout = case
    s = shape[-1]
    q, k, v, g = _inputs(*shape, layout=layout, dtype=dtype)
    got = _triton(q, k, v, g, s)
    for a in got:
        assert a.dtype == dtype and torch.isfinite(a).all(), a.dtype
    assert_within_twice_torch(got, _reference(q, k, v, g, s), _reference(q, k, v, g, s, dtype=dtype),
                              dtype, f"{dtype} {case}")


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's bf16 emulation")
def test_bf16_emulation_rounds_to_nearest_even():
    """The emulated cast equals torch's fp32 -> bf16 rounding (nearest even), not truncation."""
    import triton
    import triton.language as tl

    @triton.jit
    def to_bf16(x_ptr, y_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(y_ptr + i, tc.cast(tl.load(x_ptr + i), tl.bfloat16, True))

    x = torch.randn(1024) * 100
    x[:4] = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8 + 2 ** -20), 1 - 2 ** -10])
    y = torch.empty(1024, dtype=torch.bfloat16)
    to_bf16[(1,)](x, y, N=1024)
    assert torch.equal(y, x.to(torch.bfloat16))


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


@pytest.mark.parametrize("wanted", [(False, False, True), (True, False, False), (False, True, False)],
                         ids=["dv", "dq", "dk"])
def test_partial_requires_grad(wanted):
    q, k, v, g = _inputs(1, 16, 16, 6, 4, 2, keys="mixed")
    for t, need in zip((q, k, v), wanted):
        t.requires_grad_(need)
    leaves = [t for t, need in zip((q, k, v), wanted) if need]
    out = kernels.cross_scale_attention(q, k, v, 2, backend="triton")
    (grad,) = torch.autograd.grad(out, leaves, g)
    want = _reference(q, k, v, g, 2)[1 + wanted.index(True)]
    assert rel_err(grad, want) <= FP32_TOL


def test_rejects_unsupported_inputs():
    q = torch.zeros(1, 16, 4, 4, dtype=torch.float64, device=DEVICE)
    k = torch.zeros(1, 16, 2, 2, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="float64"):
        kernels.cross_scale_attention(q, k, q, 2, backend="triton")
    q, k = torch.zeros(1, 300, 4, 4, device=DEVICE), torch.zeros(1, 300, 2, 2, device=DEVICE)
    with pytest.raises(ValueError, match="1 to 256 channels"):
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


def test_channels_last_in_channels_last_out():
    """The output takes v's memory format (no layout copy before the next convolution), same values."""
    q, k, v, _ = _inputs(2, 16, 16, 6, 4, 2, layout="channels_last")
    out = kernels.cross_scale_attention(q, k, v, 2, backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    plain = kernels.cross_scale_attention(*(t.detach().contiguous() for t in (q, k, v)), 2, backend="triton")
    assert plain.is_contiguous() and rel_err(out, plain) <= 1e-6   # the same sums, maybe reassociated


def test_band_plan_of_whole_images_and_training_batches():
    """fp16, Ck 64, Cv 128, s 2 under the default 1 GiB: 1 x 192 x 192 runs bands of at least 32
    rows (no H*W x L buffer: 0.68 GB for an fp16 P alone), 16 x 48 x 48 whole batches in one band, and
    every band's buffers stay under the budget."""
    assert cst.BAND_BYTES == 1 << 30
    for n, H in ((1, 192), (16, 48), (16, 96)):
        L, C = (H // 2) ** 2, 512
        for backward, (images, bands) in zip((False, True), _plans(n, H, H, 2, 128, esize=2)):
            rows = max(y1 - y0 for y0, y1 in bands)
            group = max(i1 - i0 for i0, i1 in images)
            halo = H if len(bands) == 1 else min(H, rows + 2)
            assert group * cst.band_bytes(rows, halo, H, L, C, 2, backward) <= cst.BAND_BYTES
            assert rows >= 32
            if H == 48:
                assert images == [(0, 16)] and bands == [(0, 48)]
            if H == 192:
                assert len(bands) <= 3


def _count_launches(fn):
    """(Triton launches, other non-view torch ops) while fn() runs: what a GPU would launch. The
    Triton launches are counted, not run (the interpreter runs them through torch ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = [0, 0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[1] += not (func.is_view or func.__name__.startswith(("empty", "detach", "lift_fresh")))
            return func(*args, **(kwargs or {}))

    launch, cst._launch = cst._launch, lambda *a, **k: counts.__setitem__(0, counts[0] + 1)
    try:
        with Count():
            fn()
    finally:
        cst._launch = launch
    return tuple(counts)


def test_launches_per_band(monkeypatch):
    """Launches grow with the number of bands only: not with the batch (one group) nor with the
    image size inside a band. Per band: forward 2 Triton kernels + 2 torch ops (GEMM, shuffle
    copy); backward 5 Triton kernels + 7 torch ops (4 GEMMs, 3 accumulations); per call: forward
    the key-norm kernel + 4 torch ops, backward the key-gradient kernel + 14 torch ops."""
    monkeypatch.setattr(tc, "POISON", False)   # NaN fills would count as launches

    def launches(n, H, rows=None):
        q, k, v, g = _inputs(n, 16, 16, H, 6, 2)
        monkeypatch.setattr(cst, "BAND_BYTES", 1 << 40 if rows is None else _budget_for_rows(rows, H, 6, 2, 16))
        bands = [len(p[1]) for p in _plans(n, H, 6, 2, 16)]
        q, k, v = (t.detach() for t in (q, k, v))
        out = []        # the launchers themselves: a dispatch mode does not see inside a custom op
        fwd = _count_launches(lambda: out.extend(cst._forward(q, k, v, 2, 10.0)))
        bwd = _count_launches(lambda: cst._backward(q, k, v, g, *out[1:], 2, 10.0, (True, True, True)))
        return fwd, bwd, bands

    fwd1, bwd1, bands = launches(1, 8)
    assert bands == [1, 1] and launches(3, 8)[:2] == (fwd1, bwd1) and launches(1, 12)[:2] == (fwd1, bwd1)
    for rows in (4, 2, 1):
        fwd, bwd, (bf, bb) = launches(1, 8, rows)
        assert bf > 1 and bb > 1
        assert fwd == (1 + 2 * bf, fwd1[1] + 2 * (bf - 1)), (rows, fwd, fwd1, bf)
        assert bwd == (1 + 5 * bb, bwd1[1] + 7 * (bb - 1)), (rows, bwd, bwd1, bb)
    assert (fwd1, bwd1) == ((3, 6), (6, 21)), (fwd1, bwd1)   # the module docstring's counts
    print("one band: forward (Triton, torch ops)", fwd1, "backward", bwd1)
