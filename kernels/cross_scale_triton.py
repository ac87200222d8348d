"""Cross-scale attention as fused Triton kernels (forward and backward).

Per image, with the stride-1 (space-to-depth) form of the operator (see
shared/notes/cross-scale-attention.md): q [Ck, H, W], k [Ck, h, w], v [Cv, H, W],
h = H/s, w = W/s, L = h*w, Vs = pixel_unshuffle(v, s) [Cv*s*s, h, w],
d_t = (t//3 - 1, t%3 - 1) for the 9 taps t of a 3x3 patch, a = softmax_scale,
inv_n[l] = 1 / max(||3x3 patch of k at l||, floor) (a small torch computation, O(L)):

    S[p, l]  = a * inv_n[l] * sum_t sum_c q[c, p + d_t] k[c, l + d_t]     (zero padding)
    P        = softmax_l(S)
    out_s2d[:, p] = 1/6 sum_t sum_l P[p - d_t, l] Vs[:, l + d_t],   out = pixel_shuffle(out_s2d, s)

The HW x L score / probability matrix is never materialised: every kernel recomputes
score tiles from q and k with an implicit 3x3 patch gather (_patch_dot: one loop over
9 taps x channel chunks of tl.dot, masks for the zero padding and the grid edges).
pixel_unshuffle / pixel_shuffle are index math on v, G = dL/dout, out and dv; all
inputs are read in place through their strides.  fp32 accumulation everywhere; fp32
inputs use exact fp32 products (input_precision="ieee"), fp16 / bf16 inputs feed the
tensor cores, with P and dS rounded to the input dtype before their matmuls.

Kernels (grid = (row tile, [channel slice,] image)):
  _fwd_stats   query tiles: online max / sum over key blocks -> lse[p] (base 2, fp32)
  _fwd_out     query tiles x slices of the Cv*s^2 channels of Vs: the gather form
               above; for each tap the scores of the shifted queries p - d_t are
               recomputed, and P @ Vs[slice, l + d_t] accumulates in fp32
  _bwd_dq      query tiles: loop 1 over keys -> delta[p] = sum_l P dP; loop 2 ->
               dS = P (dP - delta) and the unfolded dQc[(c, t), p] = a sum_l dS Kc
               (nine per-tap accumulators) into an fp32 scratch [N, 9Ck, HW]
  _bwd_dk      key tiles: transposed tiles dS^T -> unfolded dKc[(c, t), l] =
               a sum_p dS Qc into an fp32 scratch [N, 9Ck, L]
  _bwd_dv      key tiles x channel slices: dVs[:, l'] = 1/6 sum_t sum_p Gs[:, p + d_t] P[p, l' - d_t]
with dP[p, l] = 1/6 sum_t Gs[:, p + d_t] . Vs[:, l + d_t] (Gs = pixel_unshuffle(G, s)),
a patch dot product of the same form as the scores with Cv*s^2 channels.  torch folds
dQc / dKc (col2im) and applies the key normalisation's backward to dKc (O(L*9Ck)).
Memory besides inputs and outputs: lse, delta [N, HW] and inv_n [N, L] in fp32 (saved
for backward: q, k, v, lse, inv_n), scratch dQc [N, 9Ck, HW] and dKc [N, 9Ck, L] fp32.

Work per image pair (p, l), in units of 2 FLOP (minimal forward: 9Ck + 9Cv s^2), with
nsl = ceil(Cv s^2 / BLOCK_V) channel slices:
  forward  9Ck (stats) + 9 * nsl * 9Ck (recomputed scores) + 9 Cv s^2
  backward 9Ck (5 + 9 nsl) + 4 * 9 Cv s^2    (S and dP twice in _bwd_dq, once in _bwd_dk)
e.g. Ck=64, Cv=128, s=2, nsl=1: forward 2.0x the minimal count, backward 5.1x it.
The obvious optimisation target: _fwd_out and _bwd_dv recompute the score tile once
per tap and channel slice; the 9 taps only shift the query (key) rows, so P computed
once for a tile plus a one-pixel halo could serve all taps.  Next: delta from a stored
Oc, and pixel-contiguous copies of Vs and Gs (their space-to-depth views read
pixels s apart) for vectorised loads.
"""
import contextlib

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._backend import autocast_dtype, autotune_enabled, interpreting
from .cross_scale_torch import KEY_NORM_FLOOR

# Tests set this to fill every output / scratch buffer with NaN before the launches,
# so that an element a kernel forgets to write shows up.
_POISON = False

_INTERPRET = interpreting()
_AUTOTUNE = autotune_enabled()  # else one fixed config (interpreter, quick GPU checks)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LOG2E = 1.4426950408889634
_INT32_LIMIT = 2 ** 31 - 1
# Sizes and strides are not specialised (no recompilation per image size; the loads are
# gathers, so divisibility hints would not help them).
_SIZE_ARGS = ["H", "W", "h", "w"] + [f"s{t}_{d}" for t in "qkvgod" for d in "nchw"]


def _jit_sizes(fn):
    """triton.jit without specialisation on the size / stride arguments of `fn`."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    return triton.jit(fn, do_not_specialize=[a for a in _SIZE_ARGS if a in names])


# ----------------------------------------------------------------------------- helpers

@triton.jit
def _s2d_cols(cs, SS: tl.constexpr, sc, sh, sw):
    """Offsets of the space-to-depth channels cs (factor SS) in a raw map."""
    return (cs // (SS * SS)) * sc + ((cs // SS) % SS) * sh + (cs % SS) * sw


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot with fp32 accumulation; UPCAST (bf16 under the interpreter, whose bf16 dot is
    wrong) multiplies the same, already rounded, operands in fp32."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _patch_dot(acc, a_ptr, a_sc, a_sh, a_sw, ay, ax, am, a_H, a_W,
               b_ptr, b_sc, b_sh, b_sw, by, bx, bm, b_H, b_W,
               C, SS: tl.constexpr, BLOCK_C: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
               IDX64: tl.constexpr):
    """acc[r, n] += sum_t sum_{cs < C} A[cs, (ay_r, ax_r) + d_t] * B[cs, (by_n, bx_n) + d_t].

    A and B are the space-to-depth views (factor SS) of raw [C/SS^2, SS*H, SS*W]
    maps with strides (sc, sh, sw): X[cs, y, x] = raw[cs // SS^2, y*SS + (cs // SS) % SS,
    x*SS + cs % SS].  Rows whose mask is off, or whose shifted pixel leaves the
    grid, contribute zeros (the zero padding of the 3x3 patches).
    One flat loop over (tap, channel chunk); both tiles are loaded with the pixel
    dimension last (adjacent threads read adjacent pixels of one channel).
    """
    n_chunks = tl.cdiv(C, BLOCK_C)
    ra0 = ay * (SS * a_sh) + ax * (SS * a_sw)
    rb0 = by * (SS * b_sh) + bx * (SS * b_sw)
    for it in range(0, 9 * n_chunks):
        t = it // n_chunks
        dy = t // 3 - 1
        dx = t % 3 - 1
        cs = (it - t * n_chunks) * BLOCK_C + tl.arange(0, BLOCK_C)
        if IDX64:
            cs = cs.to(tl.int64)
        cm = cs < C
        ya = ay + dy
        xa = ax + dx
        ma = am & (ya >= 0) & (ya < a_H) & (xa >= 0) & (xa < a_W)
        ra = ra0 + (dy * (SS * a_sh) + dx * (SS * a_sw))
        yb = by + dy
        xb = bx + dx
        mb = bm & (yb >= 0) & (yb < b_H) & (xb >= 0) & (xb < b_W)
        rb = rb0 + (dy * (SS * b_sh) + dx * (SS * b_sw))
        if SS == 1:
            ca = cs * a_sc
            cb = cs * b_sc
        else:
            ca = _s2d_cols(cs, SS, a_sc, a_sh, a_sw)
            cb = _s2d_cols(cs, SS, b_sc, b_sh, b_sw)
        ta = tl.load(a_ptr + ca[:, None] + ra[None, :], mask=cm[:, None] & ma[None, :], other=0.0)
        tb = tl.load(b_ptr + cb[:, None] + rb[None, :], mask=cm[:, None] & mb[None, :], other=0.0)
        acc += _dot(tl.trans(ta), tb, PREC, UPCAST)
    return acc


@triton.jit
def _tap_acc(acc, wt, base, sc, sh, sw, y, x, m, Hg, Wg, C, row_scale,
             T: tl.constexpr, CKP: tl.constexpr, SCALE: tl.constexpr,
             PREC: tl.constexpr, UPCAST: tl.constexpr, IDX64: tl.constexpr):
    """acc [R, CKP] += wt [R, R'] @ X_T [R', CKP], where X_T[r', c] = X[c, (y, x)_r' + d_T]
    (times row_scale[r'] if SCALE): tap T of the unfolded 3x3 patches of a raw map X with
    strides (sc, sh, sw), zeros outside the Hg x Wg grid, for c >= C and masked rows.
    Loaded as [CKP, R'] (pixels last) and transposed."""
    c = tl.arange(0, CKP)
    if IDX64:
        c = c.to(tl.int64)
    yy = y + (T // 3 - 1)
    xx = x + (T % 3 - 1)
    mm = m & (yy >= 0) & (yy < Hg) & (xx >= 0) & (xx < Wg)
    tile = tl.load(base + (c * sc)[:, None] + (yy * sh + xx * sw)[None, :],
                   mask=(c < C)[:, None] & mm[None, :], other=0.0)
    if SCALE:
        tile = (tile.to(tl.float32) * row_scale[None, :]).to(wt.dtype)
    return acc + _dot(wt, tl.trans(tile), PREC, UPCAST)


@triton.jit
def _store_tap(base, acc, r, rm, R, C, T: tl.constexpr, CKP: tl.constexpr, IDX64: tl.constexpr):
    """Store acc [BR, CKP] (tap T of an unfolded gradient) into an F.fold-layout buffer
    [C*9, R] (row c*9 + T, column r), transposed so that adjacent threads write adjacent r."""
    c = tl.arange(0, CKP)
    if IDX64:
        c = c.to(tl.int64)
    off = ((c * 9 + T) * R)[:, None] + r[None, :]
    tl.store(base + off, tl.trans(acc), mask=(c < C)[:, None] & rm[None, :])


# ----------------------------------------------------------------------------- forward

@_jit_sizes
def _fwd_stats_kernel(q_ptr, k_ptr, invn_ptr, lse_ptr,
                      sq_n, sq_c, sq_h, sq_w, sk_n, sk_c, sk_h, sk_w,
                      H, W, h, w, qk_scale,
                      CK, CVS, SS: tl.constexpr, IDX64: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    L = h * w
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    if IDX64:
        p = p.to(tl.int64)
    pm = p < HW
    py = p // W
    px = p % W
    q_base = q_ptr + n * sq_n
    k_base = k_ptr + n * sk_n
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        l = l0 + tl.arange(0, BLOCK_N)
        if IDX64:
            l = l.to(tl.int64)
        lm = l < L
        ly = l // w
        lx = l % w
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        s = _patch_dot(s, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W,
                       k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
        sc = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0) * qk_scale
        s = tl.where(lm[None, :], s * sc[None, :], float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
        m_i = m_new
    tl.store(lse_ptr + n * HW + p, m_i + tl.log2(l_i), mask=pm)


@_jit_sizes
def _fwd_out_kernel(q_ptr, k_ptr, v_ptr, invn_ptr, lse_ptr, out_ptr,
                    sq_n, sq_c, sq_h, sq_w, sk_n, sk_c, sk_h, sk_w,
                    sv_n, sv_c, sv_h, sv_w, so_n, so_c, so_h, so_w,
                    H, W, h, w, qk_scale,
                    CK, CVS, SS: tl.constexpr, IDX64: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_V: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    HW = H * W
    L = h * w
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cs = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    if IDX64:
        p = p.to(tl.int64)
        cs = cs.to(tl.int64)
    pm = p < HW
    py = p // W
    px = p % W
    cm = cs < CVS
    q_base = q_ptr + n * sq_n
    k_base = k_ptr + n * sk_n
    v_base = v_ptr + n * sv_n + _s2d_cols(cs, SS, sv_c, sv_h, sv_w)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_V], tl.float32)
    for t in range(9):  # runtime loop: keeps the unrolled code to the 9 taps of _patch_dot
        dy = t // 3 - 1
        dx = t % 3 - 1
        qy = py - dy
        qx = px - dx
        qm = pm & (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
        lse = tl.load(lse_ptr + n * HW + qy * W + qx, mask=qm, other=0.0)
        for l0 in range(0, L, BLOCK_N):
            l = l0 + tl.arange(0, BLOCK_N)
            if IDX64:
                l = l.to(tl.int64)
            lm = l < L
            ly = l // w
            lx = l % w
            s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            s = _patch_dot(s, q_base, sq_c, sq_h, sq_w, qy, qx, qm, H, W,
                           k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
            sc = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0) * qk_scale
            s = tl.where(qm[:, None] & lm[None, :], s * sc[None, :] - lse[:, None], float("-inf"))
            prob = tl.exp2(s)
            vy = ly + dy
            vx = lx + dx
            vm = lm & (vy >= 0) & (vy < h) & (vx >= 0) & (vx < w)
            vt = tl.load(v_base + (vy * (SS * sv_h) + vx * (SS * sv_w))[None, :],
                         mask=cm[:, None] & vm[None, :], other=0.0)
            acc += _dot(prob.to(vt.dtype), tl.trans(vt), PREC, UPCAST)
    acc = acc * (1.0 / 6.0)
    o_off = _s2d_cols(cs, SS, so_c, so_h, so_w)[:, None] + (py * (SS * so_h) + px * (SS * so_w))[None, :]
    tl.store(out_ptr + n * so_n + o_off, tl.trans(acc).to(out_ptr.dtype.element_ty), mask=cm[:, None] & pm[None, :])


# ----------------------------------------------------------------------------- backward

@_jit_sizes
def _bwd_dq_kernel(q_ptr, k_ptr, v_ptr, g_ptr, invn_ptr, lse_ptr, delta_ptr, dqc_ptr,
                   sq_n, sq_c, sq_h, sq_w, sk_n, sk_c, sk_h, sk_w,
                   sv_n, sv_c, sv_h, sv_w, sg_n, sg_c, sg_h, sg_w,
                   H, W, h, w, qk_scale, a_scale,
                   CK, CVS, SS: tl.constexpr, IDX64: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                   CKP: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    L = h * w
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    if IDX64:
        p = p.to(tl.int64)
    pm = p < HW
    py = p // W
    px = p % W
    q_base = q_ptr + n * sq_n
    k_base = k_ptr + n * sk_n
    v_base = v_ptr + n * sv_n
    g_base = g_ptr + n * sg_n
    dt = q_ptr.dtype.element_ty
    lse = tl.load(lse_ptr + n * HW + p, mask=pm, other=0.0)

    # loop 1: delta[p] = sum_l P[p, l] dP[p, l]
    delta = tl.zeros([BLOCK_M], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        l = l0 + tl.arange(0, BLOCK_N)
        if IDX64:
            l = l.to(tl.int64)
        lm = l < L
        ly = l // w
        lx = l % w
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        s = _patch_dot(s, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W,
                       k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
        sc = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0) * qk_scale
        prob = tl.exp2(tl.where(pm[:, None] & lm[None, :], s * sc[None, :] - lse[:, None], float("-inf")))
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        dp = _patch_dot(dp, g_base, sg_c, sg_h, sg_w, py, px, pm, H, W,
                        v_base, sv_c, sv_h, sv_w, ly, lx, lm, h, w, CVS, SS, BLOCK_C, PREC, UPCAST, IDX64)
        delta += tl.sum(prob * dp, 1)
    delta = delta * (1.0 / 6.0)
    tl.store(delta_ptr + n * HW + p, delta, mask=pm)

    # loop 2: dS = P (dP - delta); dQc = a sum_l dS[p, l] Kc[:, l]
    # nine per-tap accumulators of the unfolded dQc (BLOCK_M x CKP each)
    a0 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a1 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a2 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a3 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a4 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a5 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a6 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a7 = tl.zeros([BLOCK_M, CKP], tl.float32)
    a8 = tl.zeros([BLOCK_M, CKP], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        l = l0 + tl.arange(0, BLOCK_N)
        if IDX64:
            l = l.to(tl.int64)
        lm = l < L
        ly = l // w
        lx = l % w
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        s = _patch_dot(s, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W,
                       k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
        inv_n = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0)
        prob = tl.exp2(tl.where(pm[:, None] & lm[None, :],
                                s * (inv_n * qk_scale)[None, :] - lse[:, None], float("-inf")))
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        dp = _patch_dot(dp, g_base, sg_c, sg_h, sg_w, py, px, pm, H, W,
                        v_base, sv_c, sv_h, sv_w, ly, lx, lm, h, w, CVS, SS, BLOCK_C, PREC, UPCAST, IDX64)
        ds = (prob * (dp * (1.0 / 6.0) - delta[:, None])).to(dt)
        # dQc[p, (c, t)] += sum_l dS[p, l] Kc[(c, t), l], with the normalised key patches
        # Kc = k[c, l + d_t] / n_l (|Kc| <= 1: safe to round to fp16 / bf16)
        a0 = _tap_acc(a0, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 0, CKP, True, PREC, UPCAST, IDX64)
        a1 = _tap_acc(a1, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 1, CKP, True, PREC, UPCAST, IDX64)
        a2 = _tap_acc(a2, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 2, CKP, True, PREC, UPCAST, IDX64)
        a3 = _tap_acc(a3, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 3, CKP, True, PREC, UPCAST, IDX64)
        a4 = _tap_acc(a4, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 4, CKP, True, PREC, UPCAST, IDX64)
        a5 = _tap_acc(a5, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 5, CKP, True, PREC, UPCAST, IDX64)
        a6 = _tap_acc(a6, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 6, CKP, True, PREC, UPCAST, IDX64)
        a7 = _tap_acc(a7, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 7, CKP, True, PREC, UPCAST, IDX64)
        a8 = _tap_acc(a8, ds, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w, CK, inv_n, 8, CKP, True, PREC, UPCAST, IDX64)
    base = dqc_ptr + n * (9 * CK) * HW
    _store_tap(base, a0 * a_scale, p, pm, HW, CK, 0, CKP, IDX64)
    _store_tap(base, a1 * a_scale, p, pm, HW, CK, 1, CKP, IDX64)
    _store_tap(base, a2 * a_scale, p, pm, HW, CK, 2, CKP, IDX64)
    _store_tap(base, a3 * a_scale, p, pm, HW, CK, 3, CKP, IDX64)
    _store_tap(base, a4 * a_scale, p, pm, HW, CK, 4, CKP, IDX64)
    _store_tap(base, a5 * a_scale, p, pm, HW, CK, 5, CKP, IDX64)
    _store_tap(base, a6 * a_scale, p, pm, HW, CK, 6, CKP, IDX64)
    _store_tap(base, a7 * a_scale, p, pm, HW, CK, 7, CKP, IDX64)
    _store_tap(base, a8 * a_scale, p, pm, HW, CK, 8, CKP, IDX64)


@_jit_sizes
def _bwd_dk_kernel(q_ptr, k_ptr, v_ptr, g_ptr, invn_ptr, lse_ptr, delta_ptr, dkc_ptr,
                   sq_n, sq_c, sq_h, sq_w, sk_n, sk_c, sk_h, sk_w,
                   sv_n, sv_c, sv_h, sv_w, sg_n, sg_c, sg_h, sg_w,
                   H, W, h, w, qk_scale, a_scale,
                   CK, CVS, SS: tl.constexpr, IDX64: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                   CKP: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # transposed tiles: rows = BLOCK_N keys (fixed), columns = BLOCK_M queries (looped)
    pid_l = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    L = h * w
    l = pid_l * BLOCK_N + tl.arange(0, BLOCK_N)
    if IDX64:
        l = l.to(tl.int64)
    lm = l < L
    ly = l // w
    lx = l % w
    q_base = q_ptr + n * sq_n
    k_base = k_ptr + n * sk_n
    v_base = v_ptr + n * sv_n
    g_base = g_ptr + n * sg_n
    dt = q_ptr.dtype.element_ty
    sc = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0) * qk_scale
    # nine per-tap accumulators of the unfolded dKc (BLOCK_N x CKP each)
    a0 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a1 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a2 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a3 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a4 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a5 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a6 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a7 = tl.zeros([BLOCK_N, CKP], tl.float32)
    a8 = tl.zeros([BLOCK_N, CKP], tl.float32)
    for p0 in range(0, HW, BLOCK_M):
        p = p0 + tl.arange(0, BLOCK_M)
        if IDX64:
            p = p.to(tl.int64)
        pm = p < HW
        py = p // W
        px = p % W
        lse = tl.load(lse_ptr + n * HW + p, mask=pm, other=0.0)
        delta = tl.load(delta_ptr + n * HW + p, mask=pm, other=0.0)
        st = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        st = _patch_dot(st, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w,
                        q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
        pt = tl.exp2(tl.where(lm[:, None] & pm[None, :], st * sc[:, None] - lse[None, :], float("-inf")))
        dpt = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        dpt = _patch_dot(dpt, v_base, sv_c, sv_h, sv_w, ly, lx, lm, h, w,
                         g_base, sg_c, sg_h, sg_w, py, px, pm, H, W, CVS, SS, BLOCK_C, PREC, UPCAST, IDX64)
        dst = (pt * (dpt * (1.0 / 6.0) - delta[None, :])).to(dt)
        # dKc[l, (c, t)] += sum_p dS[p, l] Qc[(c, t), p],  Qc = q[c, p + d_t]
        a0 = _tap_acc(a0, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 0, CKP, False, PREC, UPCAST, IDX64)
        a1 = _tap_acc(a1, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 1, CKP, False, PREC, UPCAST, IDX64)
        a2 = _tap_acc(a2, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 2, CKP, False, PREC, UPCAST, IDX64)
        a3 = _tap_acc(a3, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 3, CKP, False, PREC, UPCAST, IDX64)
        a4 = _tap_acc(a4, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 4, CKP, False, PREC, UPCAST, IDX64)
        a5 = _tap_acc(a5, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 5, CKP, False, PREC, UPCAST, IDX64)
        a6 = _tap_acc(a6, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 6, CKP, False, PREC, UPCAST, IDX64)
        a7 = _tap_acc(a7, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 7, CKP, False, PREC, UPCAST, IDX64)
        a8 = _tap_acc(a8, dst, q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, lse, 8, CKP, False, PREC, UPCAST, IDX64)
    base = dkc_ptr + n * (9 * CK) * L
    _store_tap(base, a0 * a_scale, l, lm, L, CK, 0, CKP, IDX64)
    _store_tap(base, a1 * a_scale, l, lm, L, CK, 1, CKP, IDX64)
    _store_tap(base, a2 * a_scale, l, lm, L, CK, 2, CKP, IDX64)
    _store_tap(base, a3 * a_scale, l, lm, L, CK, 3, CKP, IDX64)
    _store_tap(base, a4 * a_scale, l, lm, L, CK, 4, CKP, IDX64)
    _store_tap(base, a5 * a_scale, l, lm, L, CK, 5, CKP, IDX64)
    _store_tap(base, a6 * a_scale, l, lm, L, CK, 6, CKP, IDX64)
    _store_tap(base, a7 * a_scale, l, lm, L, CK, 7, CKP, IDX64)
    _store_tap(base, a8 * a_scale, l, lm, L, CK, 8, CKP, IDX64)


@_jit_sizes
def _bwd_dv_kernel(q_ptr, k_ptr, g_ptr, invn_ptr, lse_ptr, dv_ptr,
                   sq_n, sq_c, sq_h, sq_w, sk_n, sk_c, sk_h, sk_w,
                   sg_n, sg_c, sg_h, sg_w, sd_n, sd_c, sd_h, sd_w,
                   H, W, h, w, qk_scale,
                   CK, CVS, SS: tl.constexpr, IDX64: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_V: tl.constexpr):
    # rows = BLOCK_N output keys l' (fixed), loop over taps and query blocks
    pid_l = tl.program_id(0)
    pid_v = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    HW = H * W
    L = h * w
    lo = pid_l * BLOCK_N + tl.arange(0, BLOCK_N)
    cs = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    if IDX64:
        lo = lo.to(tl.int64)
        cs = cs.to(tl.int64)
    lom = lo < L
    loy = lo // w
    lox = lo % w
    cm = cs < CVS
    q_base = q_ptr + n * sq_n
    k_base = k_ptr + n * sk_n
    g_base = g_ptr + n * sg_n + _s2d_cols(cs, SS, sg_c, sg_h, sg_w)[:, None]
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for t in range(9):  # runtime loop: keeps the unrolled code to the 9 taps of _patch_dot
        dy = t // 3 - 1
        dx = t % 3 - 1
        ly = loy - dy
        lx = lox - dx
        lm = lom & (ly >= 0) & (ly < h) & (lx >= 0) & (lx < w)
        sc = tl.load(invn_ptr + n * L + ly * w + lx, mask=lm, other=0.0) * qk_scale
        for p0 in range(0, HW, BLOCK_M):
            p = p0 + tl.arange(0, BLOCK_M)
            if IDX64:
                p = p.to(tl.int64)
            pm = p < HW
            py = p // W
            px = p % W
            lse = tl.load(lse_ptr + n * HW + p, mask=pm, other=0.0)
            st = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
            st = _patch_dot(st, k_base, sk_c, sk_h, sk_w, ly, lx, lm, h, w,
                            q_base, sq_c, sq_h, sq_w, py, px, pm, H, W, CK, 1, BLOCK_C, PREC, UPCAST, IDX64)
            pt = tl.exp2(tl.where(lm[:, None] & pm[None, :], st * sc[:, None] - lse[None, :], float("-inf")))
            gy = py + dy
            gx = px + dx
            gm = pm & (gy >= 0) & (gy < H) & (gx >= 0) & (gx < W)
            gt = tl.load(g_base + (gy * (SS * sg_h) + gx * (SS * sg_w))[None, :],
                         mask=cm[:, None] & gm[None, :], other=0.0)
            acc += _dot(pt.to(gt.dtype), tl.trans(gt), PREC, UPCAST)
    acc = acc * (1.0 / 6.0)
    d_off = _s2d_cols(cs, SS, sd_c, sd_h, sd_w)[:, None] + (loy * (SS * sd_h) + lox * (SS * sd_w))[None, :]
    tl.store(dv_ptr + n * sd_n + d_off, tl.trans(acc).to(dv_ptr.dtype.element_ty), mask=cm[:, None] & lom[None, :])


# ----------------------------------------------------------------------------- launch configs

def _args(named_args, kwargs):
    merged = dict(named_args)
    merged.update(kwargs)
    return merged


def _prune_value_blocks(configs, named_args, **kwargs):
    """Drop channel slices wider than the next power of two of Cv*s^2 (keep the narrowest)."""
    cvs = _args(named_args, kwargs).get("CVS")
    if cvs is None:
        return configs
    cap = max(16, triton.next_power_of_2(int(cvs)))
    kept = [c for c in configs if c.kwargs["BLOCK_V"] <= cap]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_V"])]


def _prune_unfolded(rows_key):
    """Keep the nine fp32 per-tap accumulators (9 * CKP * rows values) at <= 96 registers
    per thread (keep the smallest if none fits)."""
    def prune(configs, named_args, **kwargs):
        ckp = _args(named_args, kwargs).get("CKP")
        if ckp is None:
            return configs
        size = lambda c: 9 * ckp * c.kwargs[rows_key]
        kept = [c for c in configs if size(c) <= 96 * 32 * c.num_warps]
        return kept or [min(configs, key=lambda c: size(c) / c.num_warps)]
    return prune


def _cfg(num_warps, num_stages, **kw):
    return triton.Config(kw, num_warps=num_warps, num_stages=num_stages)


_KEY = ["CK", "CVS", "SS"]

# Under the interpreter: one fixed small config per kernel (autotune needs a GPU driver).
_FIXED = {
    "stats": dict(BLOCK_M=64, BLOCK_N=16, BLOCK_C=64),
    "out": dict(BLOCK_M=64, BLOCK_N=16, BLOCK_C=64, BLOCK_V=64),
    "dq": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_C=64),
    "dk": dict(BLOCK_M=64, BLOCK_N=16, BLOCK_C=64),
    "dv": dict(BLOCK_M=64, BLOCK_N=16, BLOCK_C=64, BLOCK_V=64),
}

if not _AUTOTUNE:
    _fwd_stats = _fwd_stats_kernel
    _fwd_out = _fwd_out_kernel
    _bwd_dq = _bwd_dq_kernel
    _bwd_dk = _bwd_dk_kernel
    _bwd_dv = _bwd_dv_kernel
else:  # pragma: no cover - needs a GPU
    # Candidates checked offline for H100 (sm_90, Triton 3.9 -> cubin): with Ck=64, Cv=128,
    # s=2 the fp16 / bf16 variants compile to <= 255 registers without spills (fp32, whose
    # "ieee" dots run on the FMA units, spills in _bwd_dq / _bwd_dk).  Loads are gathers
    # (no async copies), so num_stages does not matter; 1 keeps it explicit.
    _fwd_stats = triton.autotune(
        configs=[_cfg(4, 1, BLOCK_M=64, BLOCK_N=64, BLOCK_C=32),
                 _cfg(8, 1, BLOCK_M=64, BLOCK_N=64, BLOCK_C=64),
                 _cfg(8, 1, BLOCK_M=128, BLOCK_N=64, BLOCK_C=64),
                 _cfg(8, 1, BLOCK_M=128, BLOCK_N=32, BLOCK_C=32)],
        key=_KEY)(_fwd_stats_kernel)
    _fwd_out = triton.autotune(
        configs=[_cfg(4, 1, BLOCK_M=64, BLOCK_N=32, BLOCK_C=32, BLOCK_V=64),
                 _cfg(8, 1, BLOCK_M=64, BLOCK_N=32, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=128, BLOCK_N=32, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=64, BLOCK_N=64, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=64, BLOCK_N=32, BLOCK_C=32, BLOCK_V=256),
                 # few rows, wide channel slices: fewer score recomputations per value
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_C=32, BLOCK_V=256),
                 _cfg(8, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_C=32, BLOCK_V=512)],
        key=_KEY, prune_configs_by={"early_config_prune": _prune_value_blocks})(_fwd_out_kernel)
    _bwd_dq = triton.autotune(
        configs=[_cfg(8, 1, BLOCK_M=16, BLOCK_N=32, BLOCK_C=32),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_C=32),
                 _cfg(8, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_C=32),
                 _cfg(4, 1, BLOCK_M=16, BLOCK_N=32, BLOCK_C=32)],
        key=_KEY, prune_configs_by={"early_config_prune": _prune_unfolded("BLOCK_M")})(_bwd_dq_kernel)
    _bwd_dk = triton.autotune(
        configs=[_cfg(8, 1, BLOCK_M=32, BLOCK_N=16, BLOCK_C=32),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_C=32),
                 _cfg(8, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_C=32),
                 _cfg(4, 1, BLOCK_M=32, BLOCK_N=16, BLOCK_C=32)],
        key=_KEY, prune_configs_by={"early_config_prune": _prune_unfolded("BLOCK_N")})(_bwd_dk_kernel)
    _bwd_dv = triton.autotune(
        configs=[_cfg(4, 1, BLOCK_M=32, BLOCK_N=64, BLOCK_C=32, BLOCK_V=64),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=64, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=128, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=64, BLOCK_N=64, BLOCK_C=32, BLOCK_V=128),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=64, BLOCK_C=32, BLOCK_V=256),
                 _cfg(8, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_C=32, BLOCK_V=256),
                 _cfg(8, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_C=32, BLOCK_V=512)],
        key=_KEY, prune_configs_by={"early_config_prune": _prune_value_blocks})(_bwd_dv_kernel)


def _launch(kernel, name, grid, *args, **const):
    """Launch `kernel` with the autotuned config, or the fixed one (interpreter, CSNLN_TRITON_AUTOTUNE=0)."""
    if not _AUTOTUNE:
        meta = _FIXED[name]
        kernel[grid(meta)](*args, **const, **meta)
    else:
        kernel[grid](*args, **const)


# ----------------------------------------------------------------------------- host side

def _empty(shape, dtype, device):
    if _POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _needs_int64(*tensors):
    """True when element offsets within one image may not fit in int32 (batch offsets are
    always 64-bit).  Each dim gets 256 extra indices: masked-off lanes (channel padding up
    to the block, the query tile tail, the one-pixel halo) compute offsets past the end."""
    for t in tensors:
        bound = sum((d + 256) * abs(st) for d, st in zip(t.shape[1:], t.stride()[1:]))
        if bound >= _INT32_LIMIT:
            return True
    return False


def _inv_key_norms(k):
    """1 / max(||3x3 zero-padded patch of k||, floor) per key, fp32 [N, h*w] (O(L) work)."""
    sq = k.float().pow(2).sum(1, keepdim=True)
    box = F.conv2d(sq, sq.new_ones(1, 1, 3, 3), padding=1)
    return box.clamp_min(0).sqrt().clamp_min(KEY_NORM_FLOOR).reciprocal().flatten(1).contiguous()


def _device_ctx(t):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _meta(q, k, v, s, *tensors):
    ck, cv = q.shape[1], v.shape[1]
    return dict(CK=ck, CVS=cv * s * s, SS=s, IDX64=_needs_int64(q, k, v, *tensors), PREC="ieee",
                UPCAST=bool(_INTERPRET and q.dtype == torch.bfloat16))


def _forward(q, k, v, s, a):
    """-> out [N, Cv, sH, sW] (v's dtype), lse [N, HW] (base 2, fp32), inv_n [N, L] (fp32)."""
    n, _, H, W = q.shape
    h, w = H // s, W // s
    hw, cvs = H * W, v.shape[1] * s * s
    inv_n = _inv_key_norms(k)
    lse = _empty((n, hw), torch.float32, q.device)
    out = _empty((n, v.shape[1], H * s, W * s), v.dtype, q.device)
    meta = _meta(q, k, v, s, out)
    qk_scale = float(a) * _LOG2E
    with _device_ctx(q):
        _launch(_fwd_stats, "stats", lambda m: (triton.cdiv(hw, m["BLOCK_M"]), n),
                q, k, inv_n, lse, *q.stride(), *k.stride(), H, W, h, w, qk_scale, **meta)
        _launch(_fwd_out, "out", lambda m: (triton.cdiv(hw, m["BLOCK_M"]), triton.cdiv(cvs, m["BLOCK_V"]), n),
                q, k, v, inv_n, lse, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
                H, W, h, w, qk_scale, **meta)
    return out, lse, inv_n


def _backward(q, k, v, g, lse, inv_n, s, a, need):
    """Gradients for the inputs flagged in `need` (None for the others), in the input dtype."""
    n, ck, H, W = q.shape
    h, w = H // s, W // s
    hw, L, cvs = H * W, h * w, v.shape[1] * s * s
    if g.dtype != v.dtype:
        g = g.to(v.dtype)
    qk_scale = float(a) * _LOG2E
    dq = dk = dv = None
    strides = (*q.stride(), *k.stride(), *v.stride(), *g.stride())
    with _device_ctx(q):
        if need[0] or need[1]:
            delta = _empty((n, hw), torch.float32, q.device)
            dqc = _empty((n, 9 * ck, hw), torch.float32, q.device)   # unfolded dQ, F.fold layout
            meta = _meta(q, k, v, s, g, dqc)
            meta["CKP"] = max(16, triton.next_power_of_2(ck))
            _launch(_bwd_dq, "dq", lambda m: (triton.cdiv(hw, m["BLOCK_M"]), n),
                    q, k, v, g, inv_n, lse, delta, dqc, *strides, H, W, h, w, qk_scale, float(a), **meta)
            if need[0]:
                dq = F.fold(dqc, (H, W), 3, padding=1).to(q.dtype)
            del dqc
            if need[1]:
                dkc = _empty((n, 9 * ck, L), torch.float32, q.device)  # unfolded dKc, F.fold layout
                _launch(_bwd_dk, "dk", lambda m: (triton.cdiv(L, m["BLOCK_N"]), n),
                        q, k, v, g, inv_n, lse, delta, dkc, *strides, H, W, h, w, qk_scale, float(a), **meta)
                dk = _key_norm_backward(k, dkc, h, w).to(k.dtype)
        if need[2]:
            dv = _empty(v.shape, v.dtype, q.device)
            meta = _meta(q, k, v, s, g, dv)
            _launch(_bwd_dv, "dv", lambda m: (triton.cdiv(L, m["BLOCK_N"]), triton.cdiv(cvs, m["BLOCK_V"]), n),
                    q, k, g, inv_n, lse, dv, *q.stride(), *k.stride(), *g.stride(), *dv.stride(),
                    H, W, h, w, qk_scale, **meta)
    return dq, dk, dv


def _key_norm_backward(k, dkc, h, w):
    """dKc (grad of the normalised unfolded keys, fp32 [N, 9Ck, L]) -> dk [N, Ck, h, w] fp32.

    Kc = Kr / n, n = max(||Kr||, floor): dKr = (dKc - Kc (Kc . dKc)) / n where the
    norm is above the floor, dKc / floor where it is clamped; then col2im on h x w.
    O(L * 9Ck) memory, like the scratch itself.
    """
    kr = F.unfold(k.float(), 3, padding=1)
    norm = kr.norm(dim=1, keepdim=True)
    nrm = norm.clamp_min(KEY_NORM_FLOOR)
    kc = kr / nrm
    radial = (kc * dkc).sum(1, keepdim=True)
    dkr = torch.where(norm > KEY_NORM_FLOOR, (dkc - kc * radial) / nrm, dkc / KEY_NORM_FLOOR)
    return F.fold(dkr, (h, w), 3, padding=1)


class _CrossScaleAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, softmax_scale):
        out, lse, inv_n = _forward(q, k, v, scale, softmax_scale)
        # saved: the inputs and the O(N*HW) / O(N*L) row statistics, not the output
        ctx.save_for_backward(q, k, v, lse, inv_n)
        ctx.scale = scale
        ctx.softmax_scale = softmax_scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, lse, inv_n = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            dq, dk, dv = _backward(q, k, v, grad_out, lse, inv_n, ctx.scale, ctx.softmax_scale,
                                   ctx.needs_input_grad[:3])
        return dq, dk, dv, None, None


def cross_scale_attention_triton(q, k, v, scale, softmax_scale=10.0):
    """Fused Triton cross-scale attention (shapes checked by kernels.cross_scale_attention).

    q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, s*H, s*W] in the
    input dtype (fp32, fp16, bf16), fp32 accumulation, differentiable in q, k, v
    (any strides).  Under autocast the inputs are cast to the autocast dtype first,
    like a matmul.
    """
    if not (q.is_cuda or (_INTERPRET and q.device.type == "cpu")):
        raise RuntimeError(f"cross_scale_attention_triton: tensors on {q.device} need CUDA "
                           "(or CPU with TRITON_INTERPRET=1 set before kernels.cross_scale_triton "
                           "was imported)")
    cast = autocast_dtype(q.device.type)
    if cast is not None:
        q, k, v = (t.to(cast) for t in (q, k, v))
    if q.dtype not in _DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"cross_scale_attention_triton: dtypes {q.dtype}, {k.dtype}, {v.dtype} are not "
                         "supported (one of float32, float16, bfloat16); use backend=\"torch\"")
    scale = int(scale)
    n, ck, H, W = q.shape
    cv = v.shape[1]
    if n == 0 or cv == 0 or H == 0 or W == 0:
        return _EmptyFn.apply(q, k, v, scale)          # the output has no elements
    if ck == 0:
        raise ValueError("cross_scale_attention_triton: q and k need at least one channel")
    ctx = torch.autocast(q.device.type, enabled=False) if cast is not None else contextlib.nullcontext()
    with ctx:
        return _CrossScaleAttentionFn.apply(q, k, v, scale, float(softmax_scale))


class _EmptyFn(torch.autograd.Function):
    """An output without elements, still attached to the graph (gradients are None = zero)."""
    @staticmethod
    def forward(ctx, q, k, v, scale):
        return v.new_zeros(v.shape[0], v.shape[1], q.shape[2] * scale, q.shape[3] * scale)

    @staticmethod
    def backward(ctx, grad_out):
        return None, None, None, None
