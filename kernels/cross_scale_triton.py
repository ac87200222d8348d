"""Cross-scale attention as Triton kernels in the diagonal-stencil form (forward and backward).

Per image (kernels.cross_scale_torch has the same math in PyTorch): q [Ck, H, W],
k [Ck, h, w], v [Cv, H, W], h = H/s, w = W/s, L = h*w, C = Cv*s*s, Vs = pixel_unshuffle(v, s)
[C, L], a = softmax_scale, inv_n[l] = 1 / max(||3x3 patch of k at l||, floor), taps
d_t = (dy, dx) in {-1, 0, 1}^2:

    R = q^T k          S[p, l] = a inv_n[l] sum_t R[p + d_t, l + d_t]        P = softmax_l(S)
    P~[p, l] = sum_t P[p - d_t, l - d_t]            out = pixel_shuffle(Vs P~^T / 6, s)

Backward, with Gs = pixel_unshuffle(dL/dout, s) [C, HW]:

    E = Gs^T Vs / 6    dP[p, l] = sum_t E[p + d_t, l + d_t]    delta = rowsum(P dP)
    dSn = a inv_n (P (dP - delta))     dR[p, l] = sum_t dSn[p - d_t, l - d_t]
    dq = k dR^T        dk = q dR + k * box3x3(c),  c_l = -inv_n[l]^2 sum_p dSn[p, l] S_raw[p, l]
                                                   (0 where the key norm is floored)
    dVs = Gs P~ / 6    (pixel_shuffle -> dv)

Every matmul (R, E, P~ Vs^T, dR k^T, dR^T q^T, P~^T Gs^T) is a tensor-core tile product with
fp32 accumulation; every stencil is nine masked loads of a tile of a band buffer. A band buffer
holds query rows of W*L elements, row y in slot y % capacity (_slots). Query rows run in bands
[y0, y1) over groups of images. The forward runs the bands top to bottom through rings: R
(capacity r+4 rows), P (r+2), so that each band computes only the rows of R (up to y1+1) and P
(up to y1) that the band before it did not, then P~ on its own rows y0 .. y1-1. The backward
gives each band its own buffers: R on rows y0-2 .. y1+1, P, E and dR on y0-1 .. y1, P~ and
dSn on y0 .. y1-1 (clipped to the image). R, P, E, dSn are fp32; P~ and dR are in the input
dtype, the operand type of their products. Bands are sized so that these buffers stay under
FWD_BAND_BYTES (inference) or BWD_BAND_BYTES (a forward that autograd records, and the
backward): whole images in groups when they fit, else the most rows that fit, at least one.
dq, dk, dVs accumulate over bands in fp32; rows y0-1 and y1 of a band's dq overlap its
neighbours' and are added, the bands running one after the other.

Kernels, grid (tile, [tile,] image of the group):
  _gram_kernel    out[p, l] = scale sum_c A[c, p] B[c, l] for A, B the space-to-depth views
                  of q and k (R) or of dL/dout and v (E)
  _probs_kernel   S from R by the stencil; with STATS the row log-sum-exp (base 2) first
                  (forward), else the saved one (backward); writes P
  _spread_kernel  P~ from P, dR from dSn (the stencil with sign -1), cast to the input dtype
  _out_kernel     out tile = P~ @ Vs^T tile / 6, per channel slice
  _ds_kernel      dP (stencil of E), delta, dSn
  _dq_kernel      dq += dR @ k^T
  _dk_kernel      dk += dR^T @ q^T, and sum_p dSn S_raw (S_raw: stencil of R) per key
  _dv_kernel      dVs += P~^T @ Gs^T, per channel slice

Work (multiply-adds per query-key pair); the backward's bands of r rows recompute halo rows,
R_h = (r+4)/r and P_h = (r+2)/r (1 for whole images):
  forward   Ck + C                                 (the minimum: the rings compute no row twice)
  backward  Ck R_h + C P_h + C + 2 Ck P_h          (minimum 3 Ck + 2 C; <= 2x it when r >= 2)
e.g. Ck 64, Cv 128, s 2 (C = 512): forward 576, backward 1216 on whole images. The stencils
add nine loads and adds per element of a buffer: forward 2 (S in two passes) + 1 (P~),
backward 1 (S) + 1 (P~) + 2 (dP in two passes) + 1 (dR) + 1 (S_raw for the key norms).
fp16 / bf16 inputs: P~ and dR are rounded to the input dtype before their products (as P and
dS in flash attention); fp32 inputs multiply exactly in fp32 (input_precision="ieee").
"""
import functools

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import _triton_common as tc
from ._triton_common import cast, mma
from .cross_scale_torch import KEY_NORM_FLOOR, band_rows, box3x3, inv_key_norms, key_norms_squared

FWD_BAND_BYTES = 48 << 20   # inference buffers of a band (R, P, P~): 1 x 192 x 192 stays under 64 MB
BWD_BAND_BYTES = 256 << 20  # training buffers (forward; backward R, P, E, dSn, P~, dR): whole batches fit
_INT32_LIMIT = 2 ** 31 - 1
# Sizes and strides are not specialised: no recompilation per image size.
_SIZE_ARGS = ["row0", "nrows", "cap", "src_lo", "src_hi", "src_cap", "r_lo", "r_hi", "r_cap", "r_row0", "r_nrows",
              "p_row0", "p_nrows", "p_cap", "y0", "ncore", "H", "W", "h", "w", "C"] + [f"s{t}_{d}" for t in "abqkvgo" for d in "nchw"]


def _jit_sizes(fn):
    """triton.jit without specialisation on the size / stride arguments of `fn`."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    return triton.jit(fn, do_not_specialize=[a for a in _SIZE_ARGS if a in names])


# ----------------------------------------------------------------------------- helpers

@triton.jit
def _chan(c, SS: tl.constexpr, sc, sh, sw):
    """Offsets of channels c of the space-to-depth view (factor SS) of a raw map."""
    if SS == 1:
        return c * sc
    return (c // (SS * SS)) * sc + ((c // SS) % SS) * sh + (c % SS) * sw


@triton.jit
def _pix(y, x, SS: tl.constexpr, sh, sw):
    """Offsets of pixels (y, x) of the space-to-depth view (factor SS) of a raw map."""
    return y * (SS * sh) + x * (SS * sw)


@triton.jit
def _pixels(start, rows0, nrows, W, BLOCK: tl.constexpr, IDX64: tl.constexpr):
    """BLOCK flat pixels from `start` of the rows rows0 .. rows0+nrows-1: (y, x, mask)."""
    i = start + tl.arange(0, BLOCK)
    if IDX64:
        i = i.to(tl.int64)
    return rows0 + i // W, i % W, i < nrows * W


@triton.jit
def _slots(buf, rows, cols, cap, W, L):
    """Row pointers [BLOCK] of pixels (rows, cols) in a band buffer of `cap` query rows of W*L
    elements each: query row y lives in slot y % cap (a ring when bands reuse it)."""
    return buf + ((rows % cap) * W + cols)[:, None] * L


@triton.jit
def _stencil(buf, lo, hi, cap, py, px, pm, ly, lx, lm, W, h, w,
             SIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """sum_t X[(py, px) + SIGN d_t, (ly, lx) + SIGN d_t] as an fp32 [BLOCK_M, BLOCK_N] tile, X an
    fp32 band buffer (see _slots) holding query rows lo .. hi-1; terms outside those rows, the
    W columns or the h x w key grid are zero."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for t in range(9):  # a runtime loop: unrolled, the nine tile loads would all be live at once
        dy = SIGN * (t // 3 - 1)
        dx = SIGN * (t % 3 - 1)
        ry = py + dy
        rx = px + dx
        ky = ly + dy
        kx = lx + dx
        mp = pm & (ry >= lo) & (ry < hi) & (rx >= 0) & (rx < W)
        mk = lm & (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
        acc += tl.load(_slots(buf, ry, rx, cap, W, h * w) + (ky * w + kx)[None, :],
                       mask=mp[:, None] & mk[None, :], other=0.0)
    return acc


# ----------------------------------------------------------------------------- kernels

@_jit_sizes
def _gram_kernel(a_ptr, b_ptr, out_ptr, sa_n, sa_c, sa_h, sa_w, sb_n, sb_c, sb_h, sb_w,
                 row0, nrows, cap, W, h, w, C, scale,
                 SA: tl.constexpr, SB: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Query rows row0 .. row0+nrows-1 of the band buffer out [G, cap*W, L] (fp32) = scale A^T B;
    A [C, H, W] and B [C, h, w] are space-to-depth views (factors SA, SB) of strided raw maps."""
    n = tl.program_id(2).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, row0, nrows, W, BLOCK_M, IDX64)
    ly, lx, lm = _pixels(tl.program_id(1) * BLOCK_N, 0, h, w, BLOCK_N, IDX64)
    a_pix = a_ptr + n * sa_n + _pix(py, px, SA, sa_h, sa_w)[None, :]
    b_pix = b_ptr + n * sb_n + _pix(ly, lx, SB, sb_h, sb_w)[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        at = tl.load(a_pix + _chan(c, SA, sa_c, sa_h, sa_w)[:, None], mask=cm[:, None] & pm[None, :], other=0.0)
        bt = tl.load(b_pix + _chan(c, SB, sb_c, sb_h, sb_w)[:, None], mask=cm[:, None] & lm[None, :], other=0.0)
        acc = mma(tl.trans(at), bt, acc, EMU_BF16)
    tl.store(_slots(out_ptr + n * cap * W * L, py, px, cap, W, L) + (ly * w + lx)[None, :],
             acc * scale, mask=pm[:, None] & lm[None, :])


@_jit_sizes
def _probs_kernel(r_ptr, invn_ptr, lse_ptr, p_ptr, r_lo, r_hi, r_cap, p_row0, p_nrows, p_cap,
                  H, W, h, w, qk_scale, STATS: tl.constexpr, IDX64: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query rows p_row0 .. of the band buffer P [G, p_cap*W, L] (fp32), from the Gram buffer R
    [G, r_cap*W, L] holding rows r_lo .. r_hi-1: S = qk_scale inv_n[l] stencil(R) (base 2);
    STATS: lse [G, H*W] computed and stored first, else read."""
    n = tl.program_id(1).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, p_row0, p_nrows, W, BLOCK_M, IDX64)
    r_buf = r_ptr + n * r_cap * W * L
    lse_ptrs = lse_ptr + n * H * W + py * W + px
    if STATS:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        for l0 in range(0, L, BLOCK_N):
            ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
            sc = tl.load(invn_ptr + n * L + ly * w + lx, mask=lm, other=0.0) * qk_scale
            s = _stencil(r_buf, r_lo, r_hi, r_cap, py, px, pm, ly, lx, lm, W, h, w, 1, BLOCK_M, BLOCK_N)
            s = tl.where(lm[None, :], s * sc[None, :], float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
            m_i = m_new
        lse = m_i + tl.log2(l_i)
        tl.store(lse_ptrs, lse, mask=pm)
    else:
        lse = tl.load(lse_ptrs, mask=pm, other=0.0)
    p_rows = _slots(p_ptr + n * p_cap * W * L, py, px, p_cap, W, L)
    for l0 in range(0, L, BLOCK_N):
        ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
        sc = tl.load(invn_ptr + n * L + ly * w + lx, mask=lm, other=0.0) * qk_scale
        s = _stencil(r_buf, r_lo, r_hi, r_cap, py, px, pm, ly, lx, lm, W, h, w, 1, BLOCK_M, BLOCK_N)
        p = tl.exp2(s * sc[None, :] - lse[:, None])
        tl.store(p_rows + (ly * w + lx)[None, :], p, mask=pm[:, None] & lm[None, :])


@_jit_sizes
def _spread_kernel(src_ptr, dst_ptr, src_lo, src_hi, src_cap, row0, nrows, W, h, w,
                   SIGN: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dst [G, nrows*W, L] (its dtype) for query rows row0 .. = stencil(src), src an fp32 band
    buffer [G, src_cap*W, L] holding rows src_lo .. src_hi-1 (P~ from P, dR from dSn: SIGN -1)."""
    n = tl.program_id(2).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, row0, nrows, W, BLOCK_M, IDX64)
    ly, lx, lm = _pixels(tl.program_id(1) * BLOCK_N, 0, h, w, BLOCK_N, IDX64)
    x = _stencil(src_ptr + n * src_cap * W * L, src_lo, src_hi, src_cap, py, px, pm, ly, lx, lm, W, h, w,
                 SIGN, BLOCK_M, BLOCK_N)
    tl.store(_slots(dst_ptr + n * nrows * W * L, py, px, nrows, W, L) + (ly * w + lx)[None, :],
             cast(x, dst_ptr.dtype.element_ty, EMU_BF16), mask=pm[:, None] & lm[None, :])


@_jit_sizes
def _out_kernel(pt_ptr, v_ptr, out_ptr, sv_n, sv_c, sv_h, sv_w, so_n, so_c, so_h, so_w,
                y0, ncore, W, h, w, C,
                SS: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    """out rows y0 .. y0+ncore-1 (space-to-depth channels of one slice) = P~ Vs^T / 6, P~ the
    band buffer [G, ncore*W, L] in the input dtype."""
    n = tl.program_id(2).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, y0, ncore, W, BLOCK_M, IDX64)
    c = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    if IDX64:
        c = c.to(tl.int64)
    cm = c < C
    pt_rows = _slots(pt_ptr + n * ncore * W * L, py, px, ncore, W, L)
    v_chan = v_ptr + n * sv_n + _chan(c, SS, sv_c, sv_h, sv_w)[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_V], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
        pt = tl.load(pt_rows + (ly * w + lx)[None, :], mask=pm[:, None] & lm[None, :], other=0.0)
        vt = tl.load(v_chan + _pix(ly, lx, SS, sv_h, sv_w)[None, :], mask=cm[:, None] & lm[None, :], other=0.0)
        acc = mma(pt, tl.trans(vt), acc, EMU_BF16)
    off = n * so_n + _pix(py, px, SS, so_h, so_w)[:, None] + _chan(c, SS, so_c, so_h, so_w)[None, :]
    tl.store(out_ptr + off, cast(acc * (1.0 / 6.0), out_ptr.dtype.element_ty, EMU_BF16),
             mask=pm[:, None] & cm[None, :])


@_jit_sizes
def _ds_kernel(p_ptr, e_ptr, invn_ptr, ds_ptr, p_row0, p_nrows, y0, ncore, W, h, w, softmax_scale,
               IDX64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dSn [G, ncore*W, L] fp32 for rows y0 ..: dP = stencil(E), delta = rowsum(P dP),
    dSn = softmax_scale inv_n (P (dP - delta)); P and E are band buffers of rows p_row0 .."""
    n = tl.program_id(1).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, y0, ncore, W, BLOCK_M, IDX64)
    e_buf = e_ptr + n * p_nrows * W * L
    p_rows = _slots(p_ptr + n * p_nrows * W * L, py, px, p_nrows, W, L)
    p_hi = p_row0 + p_nrows
    delta = tl.zeros([BLOCK_M], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
        dp = _stencil(e_buf, p_row0, p_hi, p_nrows, py, px, pm, ly, lx, lm, W, h, w, 1, BLOCK_M, BLOCK_N)
        p = tl.load(p_rows + (ly * w + lx)[None, :], mask=pm[:, None] & lm[None, :], other=0.0)
        delta += tl.sum(p * dp, 1)
    ds_rows = _slots(ds_ptr + n * ncore * W * L, py, px, ncore, W, L)
    for l0 in range(0, L, BLOCK_N):
        ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
        dp = _stencil(e_buf, p_row0, p_hi, p_nrows, py, px, pm, ly, lx, lm, W, h, w, 1, BLOCK_M, BLOCK_N)
        p = tl.load(p_rows + (ly * w + lx)[None, :], mask=pm[:, None] & lm[None, :], other=0.0)
        sc = tl.load(invn_ptr + n * L + ly * w + lx, mask=lm, other=0.0) * softmax_scale
        tl.store(ds_rows + (ly * w + lx)[None, :], p * (dp - delta[:, None]) * sc[None, :],
                 mask=pm[:, None] & lm[None, :])


@_jit_sizes
def _dq_kernel(dr_ptr, k_ptr, dq_ptr, sk_n, sk_c, sk_h, sk_w, p_row0, p_nrows,
               H, W, h, w, C, CKP: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dq [G, C, H*W] fp32 += dR k^T on rows p_row0 .. (dR: band buffer [G, p_nrows*W, L], input dtype)."""
    n = tl.program_id(1).to(tl.int64)
    L = h * w
    py, px, pm = _pixels(tl.program_id(0) * BLOCK_M, p_row0, p_nrows, W, BLOCK_M, IDX64)
    c = tl.arange(0, CKP)
    cm = c < C
    dr_rows = _slots(dr_ptr + n * p_nrows * W * L, py, px, p_nrows, W, L)
    k_chan = k_ptr + n * sk_n + (c * sk_c)[:, None]
    acc = tl.zeros([BLOCK_M, CKP], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        ly, lx, lm = _pixels(l0, 0, h, w, BLOCK_N, IDX64)
        dr = tl.load(dr_rows + (ly * w + lx)[None, :], mask=pm[:, None] & lm[None, :], other=0.0)
        kt = tl.load(k_chan + (ly * sk_h + lx * sk_w)[None, :], mask=cm[:, None] & lm[None, :], other=0.0)
        acc = mma(dr, tl.trans(kt), acc, EMU_BF16)
    ptrs = dq_ptr + n * C * H * W + (py * W + px)[:, None] + (c * (H * W))[None, :]
    mask = pm[:, None] & cm[None, :]
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + acc, mask=mask)


@_jit_sizes
def _dk_kernel(dr_ptr, ds_ptr, r_ptr, q_ptr, dk_ptr, csum_ptr, sq_n, sq_c, sq_h, sq_w,
               y0, ncore, r_row0, r_nrows, p_row0, p_nrows, W, h, w, C,
               CKP: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dk [G, C, L] fp32 += (dR^T q^T)^T over rows p_row0 .. (dR: band buffer, input dtype);
    csum [G, L] += sum_p dSn S_raw over rows y0 .. (S_raw: stencil of the Gram buffer R)."""
    n = tl.program_id(1).to(tl.int64)
    L = h * w
    ly, lx, lm = _pixels(tl.program_id(0) * BLOCK_N, 0, h, w, BLOCK_N, IDX64)
    c = tl.arange(0, CKP)
    cm = c < C
    dr_buf = dr_ptr + n * p_nrows * W * L
    ds_buf = ds_ptr + n * ncore * W * L
    r_buf = r_ptr + n * r_nrows * W * L
    q_chan = q_ptr + n * sq_n + (c * sq_c)[:, None]
    acc = tl.zeros([BLOCK_N, CKP], tl.float32)
    for i0 in range(0, p_nrows * W, BLOCK_M):
        py, px, pm = _pixels(i0, p_row0, p_nrows, W, BLOCK_M, IDX64)
        dr = tl.load(_slots(dr_buf, py, px, p_nrows, W, L) + (ly * w + lx)[None, :],
                     mask=pm[:, None] & lm[None, :], other=0.0)
        qt = tl.load(q_chan + (py * sq_h + px * sq_w)[None, :], mask=cm[:, None] & pm[None, :], other=0.0)
        acc = mma(tl.trans(dr), tl.trans(qt), acc, EMU_BF16)
    csum = tl.zeros([BLOCK_N], tl.float32)
    for i0 in range(0, ncore * W, BLOCK_M):
        py, px, pm = _pixels(i0, y0, ncore, W, BLOCK_M, IDX64)
        dsn = tl.load(_slots(ds_buf, py, px, ncore, W, L) + (ly * w + lx)[None, :],
                      mask=pm[:, None] & lm[None, :], other=0.0)
        sraw = _stencil(r_buf, r_row0, r_row0 + r_nrows, r_nrows, py, px, pm, ly, lx, lm, W, h, w, 1,
                        BLOCK_M, BLOCK_N)
        csum += tl.sum(dsn * sraw, 0)
    ptrs = dk_ptr + n * C * L + (ly * w + lx)[:, None] + (c * L)[None, :]
    mask = lm[:, None] & cm[None, :]
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + acc, mask=mask)
    cs_ptrs = csum_ptr + n * L + ly * w + lx
    tl.store(cs_ptrs, tl.load(cs_ptrs, mask=lm, other=0.0) + csum, mask=lm)


@_jit_sizes
def _dv_kernel(pt_ptr, g_ptr, dvs_ptr, sg_n, sg_c, sg_h, sg_w, y0, ncore,
               W, h, w, C, SS: tl.constexpr, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    """dVs [G, C, L] fp32 += (P~^T Gs^T)^T over query rows y0 .. (P~: band buffer [G, ncore*W, L],
    input dtype; Gs: space-to-depth of dL/dout)."""
    n = tl.program_id(2).to(tl.int64)
    L = h * w
    ly, lx, lm = _pixels(tl.program_id(0) * BLOCK_N, 0, h, w, BLOCK_N, IDX64)
    c = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    if IDX64:
        c = c.to(tl.int64)
    cm = c < C
    pt_buf = pt_ptr + n * ncore * W * L
    g_chan = g_ptr + n * sg_n + _chan(c, SS, sg_c, sg_h, sg_w)[:, None]
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for i0 in range(0, ncore * W, BLOCK_M):
        py, px, pm = _pixels(i0, y0, ncore, W, BLOCK_M, IDX64)
        pt = tl.load(_slots(pt_buf, py, px, ncore, W, L) + (ly * w + lx)[None, :],
                     mask=pm[:, None] & lm[None, :], other=0.0)
        gt = tl.load(g_chan + _pix(py, px, SS, sg_h, sg_w)[None, :], mask=cm[:, None] & pm[None, :], other=0.0)
        acc = mma(tl.trans(pt), tl.trans(gt), acc, EMU_BF16)
    ptrs = dvs_ptr + n * C * L + (ly * w + lx)[:, None] + (c * L)[None, :]
    mask = lm[:, None] & cm[None, :]
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + acc, mask=mask)


# ----------------------------------------------------------------------------- launch configs

def _small_tiles_for_fp32(configs, named_args, **kwargs):
    """fp32 dots run on the FMA units and hold far more registers: keep the smallest tiles."""
    if not any(isinstance(t, torch.Tensor) and t.dim() == 4 and t.dtype == torch.float32
               for t in {**named_args, **kwargs}.values()):
        return configs
    area = lambda c: c.kwargs.get("BLOCK_M", 1) * c.kwargs.get("BLOCK_N", 1) * c.kwargs.get("BLOCK_V", 1)  # noqa: E731
    smallest = min(area(c) for c in configs)
    return [c for c in configs if area(c) == smallest]


_c = tc.config
# name -> (autotune candidates, fixed config for the interpreter / CSNLN_TRITON_AUTOTUNE=0).
# Every fp16 / bf16 candidate compiles for sm_90 without spills at Ck 64, Cv 128, s 2 and 3
# (bench/compile_check.py). The big dots keep both output tile sides >= 64; their reduction
# step is 32 where 64 would spill (the strided gathers of the operands hold many registers).
_CONFIGS = {
    "gram": ([_c(4, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_C=32), _c(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_C=32),
              _c(8, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_C=32), _c(4, 2, BLOCK_M=64, BLOCK_N=64, BLOCK_C=64)],
             dict(BLOCK_M=32, BLOCK_N=16, BLOCK_C=16, num_warps=4)),
    "probs": ([_c(4, 1, BLOCK_M=32, BLOCK_N=64), _c(8, 1, BLOCK_M=64, BLOCK_N=64),
               _c(8, 1, BLOCK_M=32, BLOCK_N=128)],
              dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    "spread": ([_c(4, 1, BLOCK_M=32, BLOCK_N=64), _c(8, 1, BLOCK_M=64, BLOCK_N=64),
                _c(8, 1, BLOCK_M=32, BLOCK_N=128)],
               dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    "out": ([_c(4, 2, BLOCK_M=64, BLOCK_N=32, BLOCK_V=64), _c(4, 2, BLOCK_M=64, BLOCK_N=32, BLOCK_V=128),
             _c(8, 2, BLOCK_M=128, BLOCK_N=32, BLOCK_V=128), _c(8, 2, BLOCK_M=64, BLOCK_N=32, BLOCK_V=256)],
            dict(BLOCK_M=32, BLOCK_N=16, BLOCK_V=32, num_warps=4)),
    "ds": ([_c(4, 1, BLOCK_M=32, BLOCK_N=64), _c(8, 1, BLOCK_M=32, BLOCK_N=128), _c(8, 1, BLOCK_M=64, BLOCK_N=64)],
           dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    "dq": ([_c(4, 2, BLOCK_M=64, BLOCK_N=32), _c(8, 2, BLOCK_M=128, BLOCK_N=32)],
           dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    "dk": ([_c(8, 1, BLOCK_M=64, BLOCK_N=64), _c(4, 1, BLOCK_M=32, BLOCK_N=64), _c(8, 1, BLOCK_M=32, BLOCK_N=128)],
           dict(BLOCK_M=16, BLOCK_N=32, num_warps=4)),
    "dv": ([_c(4, 1, BLOCK_M=64, BLOCK_N=64, BLOCK_V=64), _c(8, 2, BLOCK_M=64, BLOCK_N=128, BLOCK_V=128),
            _c(8, 2, BLOCK_M=32, BLOCK_N=64, BLOCK_V=256)],
           dict(BLOCK_M=16, BLOCK_N=32, BLOCK_V=32, num_warps=4)),
}
_KERNELS = {name: tc.tuned(kernel, _CONFIGS[name][0], key=key, prune=_small_tiles_for_fp32)
            for name, kernel, key in (("gram", _gram_kernel, ["C", "SA", "SB"]),
                                      ("probs", _probs_kernel, ["STATS"]),
                                      ("spread", _spread_kernel, ["SIGN"]),
                                      ("out", _out_kernel, ["C", "SS"]),
                                      ("ds", _ds_kernel, []),
                                      ("dq", _dq_kernel, ["CKP"]),
                                      ("dk", _dk_kernel, ["CKP"]),
                                      ("dv", _dv_kernel, ["C", "SS"]))}


def _launch(name, grid_of, *args, **meta):
    tc.launch(_KERNELS[name], _CONFIGS[name][1], grid_of, args, meta)


# ----------------------------------------------------------------------------- host side

def _needs_int64(*tensors):
    """True when element offsets within one image may not fit in int32 (batch offsets are
    always 64-bit). Each dim gets 256 extra indices for masked-off lanes past the edges."""
    return any(sum((d + 256) * abs(st) for d, st in zip(t.shape[1:], t.stride()[1:])) >= _INT32_LIMIT
               for t in tensors)


def _band_needs_int64(rows, W, L):
    """True when offsets within one image's band buffer (at most 4 halo rows more than a band)
    may not fit in int32."""
    return (max(y1 - y0 for y0, y1 in rows) + 4) * W * L >= _INT32_LIMIT


def _bands(n, H, W, L, budget, per_row, fixed):
    """(image groups, row bands) such that a band's buffers, per_row * rows + fixed bytes per
    W*L elements of one image, fit `budget`: whole images in as large groups as fit, else one
    image at a time and the most query rows that fit (at least one)."""
    unit = W * L
    rows_for_one = (budget // max(1, unit) - fixed) // per_row
    if rows_for_one >= H:
        group, rows = max(1, min(n, budget // max(1, (per_row * H + fixed) * unit))), H
    else:
        group, rows = 1, max(1, rows_for_one)
    images = [(i, min(n, i + group)) for i in range(0, n, group)]
    return images, [(y, min(H, y + rows)) for y in range(0, H, rows)]


def _fwd_bands(n, H, W, L, esize, training=False):
    """Forward buffers: R fp32 (r+4 rows), P fp32 (r+2), P~ (r, input dtype)."""
    return _bands(n, H, W, L, BWD_BAND_BYTES if training else FWD_BAND_BYTES, 8 + esize, 24)


def _bwd_bands(n, H, W, L, esize):
    """Backward buffers: R, P, E, dSn fp32 (r+4, r+2, r+2, r rows), P~ and dR (r, r+2, input dtype)."""
    return _bands(n, H, W, L, BWD_BAND_BYTES, 16 + 2 * esize, 32 + 2 * esize)


def _ring_rows(rows, H):
    """Rows of the forward's R and P rings for bands `rows` of an image of H rows."""
    r = rows[0][1] - rows[0][0]
    return min(H, r + 4), min(H, r + 2)


def _buffer(g, rows, W, L, dtype, device):
    """A band buffer of `rows` query rows of W*L elements for each of g images (see _slots)."""
    return tc.new_buffer((g, rows * W, L), dtype, device)


def _gram(out, a, b, sa, sb, rows, W, h, w, scale, meta):
    """Query rows `rows` of the fp32 band buffer `out` = scale (space-to-depth a)^T (space-to-depth b)."""
    g, (r0, r1), cap = a.shape[0], rows, out.shape[1] // W
    _launch("gram", lambda m: (triton.cdiv((r1 - r0) * W, m["BLOCK_M"]), triton.cdiv(h * w, m["BLOCK_N"]), g),
            a, b, out, *a.stride(), *b.stride(), r0, r1 - r0, cap, W, h, w, b.shape[1] * sb * sb, float(scale),
            SA=sa, SB=sb, **meta)
    return out


def _probs(probs, gram, r_window, p_rows, inv_n, lse, W, h, w, qk_scale, stats, meta):
    """Query rows p_rows of the fp32 band buffer `probs` = P, from the Gram buffer holding r_window."""
    g, (p0, p1) = gram.shape[0], p_rows
    _launch("probs", lambda m: (triton.cdiv((p1 - p0) * W, m["BLOCK_M"]), g),
            gram, inv_n, lse, probs, *r_window, gram.shape[1] // W, p0, p1 - p0, probs.shape[1] // W,
            lse.shape[1] // W, W, h, w, qk_scale, STATS=stats, IDX64=meta["IDX64"])
    return probs


def _spread(src, src_window, rows, W, h, w, dtype, meta):
    """A band buffer of query rows `rows` in `dtype` = the stencil (sign -1) of the fp32 band
    buffer src holding src_window."""
    g, (r0, r1) = src.shape[0], rows
    out = _buffer(g, r1 - r0, W, h * w, dtype, src.device)
    _launch("spread", lambda m: (triton.cdiv((r1 - r0) * W, m["BLOCK_M"]), triton.cdiv(h * w, m["BLOCK_N"]), g),
            src, out, *src_window, src.shape[1] // W, r0, r1 - r0, W, h, w, SIGN=-1, **meta)
    return out


def _forward(q, k, v, s, a, training):
    """-> out [N, Cv, sH, sW] (v's dtype), lse [N, HW] (base 2, fp32), inv_n [N, L] (fp32).

    Bands run top to bottom through ring buffers of R (r+4 rows) and P (r+2 rows): each band
    computes only the rows of R and P that the previous one did not, so no row is computed twice.
    """
    n, _, H, W = q.shape
    h, w, L, C = H // s, W // s, (H // s) * (W // s), v.shape[1] * s * s
    if n * H * W * v.shape[1] == 0:                   # no output element: no launch
        return (v.new_zeros(n, v.shape[1], H * s, W * s), q.new_zeros(n, H * W, dtype=torch.float32),
                q.new_zeros(n, L, dtype=torch.float32))
    inv_n = inv_key_norms(k.float()).contiguous()
    lse = tc.new_buffer((n, H * W), torch.float32, q.device)
    out = tc.new_output((n, v.shape[1], H * s, W * s), v)
    images, rows = _fwd_bands(n, H, W, L, q.element_size(), training)
    meta = dict(IDX64=_needs_int64(q, k, v, out) or _band_needs_int64(rows, W, L),
                EMU_BF16=tc.emulate_bf16(q.dtype))
    r_cap, p_cap = _ring_rows(rows, H)
    with tc.device_guard(q):
        for i0, i1 in images:
            qi, ki, vi, oi, li, ni = (t[i0:i1] for t in (q, k, v, out, lse, inv_n))
            gram = _buffer(i1 - i0, r_cap, W, L, torch.float32, q.device)
            probs = _buffer(i1 - i0, p_cap, W, L, torch.float32, q.device)
            r_done = p_done = 0                     # rows [0, done) computed so far
            for y0, y1 in rows:
                r_end, p_end = min(H, y1 + 2), min(H, y1 + 1)
                if r_end > r_done:
                    _gram(gram, qi, ki, 1, 1, (r_done, r_end), W, h, w, 1.0, meta)
                    r_done = r_end
                if p_end > p_done:
                    _probs(probs, gram, (max(0, r_done - r_cap), r_done), (p_done, p_end), ni, li, W, h, w,
                           float(a) * tc.LOG2E, True, meta)
                    p_done = p_end
                spread = _spread(probs, (max(0, p_done - p_cap), p_done), (y0, y1), W, h, w, q.dtype, meta)
                _launch("out", lambda m: (triton.cdiv((y1 - y0) * W, m["BLOCK_M"]), triton.cdiv(C, m["BLOCK_V"]),
                                          i1 - i0),
                        spread, vi, oi, *vi.stride(), *oi.stride(), y0, y1 - y0, W, h, w, C, SS=s, **meta)
    return out, lse, inv_n


def _backward(q, k, v, g, lse, inv_n, s, a, need):
    """Gradients for the inputs flagged in `need` (None for the others), in the input dtype."""
    n, ck, H, W = q.shape
    h, w, L, C = H // s, W // s, (H // s) * (W // s), v.shape[1] * s * s
    if n * H * W * v.shape[1] == 0:
        return [torch.zeros_like(t) if need else None for t, need in zip((q, k, v), need)]
    if g.dtype != v.dtype:
        g = g.to(v.dtype)
    zeros = functools.partial(torch.zeros, dtype=torch.float32, device=q.device)
    dq = zeros(n, ck, H * W) if need[0] else None
    dk, csum = (zeros(n, ck, L), zeros(n, L)) if need[1] else (None, None)
    dvs = zeros(n, C, L) if need[2] else None
    images, rows = _bwd_bands(n, H, W, L, q.element_size())
    meta = dict(IDX64=_needs_int64(q, k, v, g) or _band_needs_int64(rows, W, L), EMU_BF16=tc.emulate_bf16(q.dtype))
    ckp = tc.pad_channels(ck)
    with tc.device_guard(q):
        for i0, i1 in images:
            gi = i1 - i0
            qi, ki, vi, g_i, li, ni = (t[i0:i1] for t in (q, k, v, g, lse, inv_n))
            for y0, y1 in rows:
                r_rows, p_rows = band_rows(y0, y1, H, 2), band_rows(y0, y1, H, 1)
                p0, np_ = p_rows[0], p_rows[1] - p_rows[0]
                gram = _gram(_buffer(gi, r_rows[1] - r_rows[0], W, L, torch.float32, q.device),
                             qi, ki, 1, 1, r_rows, W, h, w, 1.0, meta)
                probs = _probs(_buffer(gi, np_, W, L, torch.float32, q.device), gram, r_rows, p_rows, ni, li,
                               W, h, w, float(a) * tc.LOG2E, False, meta)
                if need[2]:
                    spread = _spread(probs, p_rows, (y0, y1), W, h, w, q.dtype, meta)
                    _launch("dv", lambda m: (triton.cdiv(L, m["BLOCK_N"]), triton.cdiv(C, m["BLOCK_V"]), gi),
                            spread, g_i, dvs[i0:i1], *g_i.stride(), y0, y1 - y0, W, h, w, C, SS=s, **meta)
                    del spread
                if not (need[0] or need[1]):
                    continue
                e = _gram(_buffer(gi, np_, W, L, torch.float32, q.device), g_i, vi, s, s, p_rows, W, h, w,
                          1.0 / 6.0, meta)
                dsn = _buffer(gi, y1 - y0, W, L, torch.float32, q.device)
                _launch("ds", lambda m: (triton.cdiv((y1 - y0) * W, m["BLOCK_M"]), gi),
                        probs, e, ni, dsn, p0, np_, y0, y1 - y0, W, h, w, float(a), IDX64=meta["IDX64"])
                del e, probs
                dr = _spread(dsn, (y0, y1), p_rows, W, h, w, q.dtype, meta)
                if need[0]:
                    _launch("dq", lambda m: (triton.cdiv(np_ * W, m["BLOCK_M"]), gi),
                            dr, ki, dq[i0:i1], *ki.stride(), p0, np_, H, W, h, w, ck, CKP=ckp, **meta)
                if need[1]:
                    _launch("dk", lambda m: (triton.cdiv(L, m["BLOCK_N"]), gi),
                            dr, dsn, gram, qi, dk[i0:i1], csum[i0:i1], *qi.stride(), y0, y1 - y0,
                            r_rows[0], r_rows[1] - r_rows[0], p0, np_, W, h, w, ck, CKP=ckp, **meta)
    grads = [None, None, None]
    if need[0]:
        grads[0] = dq.view(n, ck, H, W).to(q.dtype)
    if need[1]:
        grads[1] = _key_norm_backward(k, dk, csum, inv_n).to(k.dtype)
    if need[2]:
        grads[2] = F.pixel_shuffle((dvs * (1.0 / 6.0)).view(n, C, h, w), s).to(v.dtype)
    return grads


def _key_norm_backward(k, dk_direct, csum, inv_n):
    """dk = q dR (dk_direct, fp32 [N, Ck, L]) + k * box3x3(c), c_l = -inv_n^2 csum_l where the
    norm is above the floor (the gradient through 1/||3x3 patch||), 0 where it is floored."""
    n, ck, h, w = k.shape
    above = key_norms_squared(k.float()) > KEY_NORM_FLOOR ** 2
    c = torch.where(above, -inv_n * inv_n * csum, torch.zeros_like(csum)).view(n, 1, h, w)
    return dk_direct.view(n, ck, h, w) + k.float() * box3x3(c)


# ----------------------------------------------------------------------------- custom ops
# torch.library ops, so that torch.compile calls the kernels as opaque ops (no graph break).

@torch.library.custom_op("csnln::cross_scale_attention_fwd", mutates_args=())
@tc.without_autocast
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: int, softmax_scale: float,
            training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> out [N, Cv, sH, sW], lse [N, HW] (base 2, fp32), inv_n [N, L] (fp32)."""
    return _forward(q, k, v, scale, softmax_scale, training)


@_fwd_op.register_fake
def _(q, k, v, scale, softmax_scale, training):
    n, _, H, W = q.shape
    return (tc.new_output((n, v.shape[1], H * scale, W * scale), v), q.new_empty(n, H * W, dtype=torch.float32),
            q.new_empty(n, (H // scale) * (W // scale), dtype=torch.float32))


@torch.library.custom_op("csnln::cross_scale_attention_bwd", mutates_args=())
@tc.without_autocast
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
            inv_n: torch.Tensor, scale: int, softmax_scale: float, need_dq: bool, need_dk: bool,
            need_dv: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _backward(q, k, v, grad_out, lse, inv_n, scale, softmax_scale, (need_dq, need_dk, need_dv))
    return tc.grads_or_empty(grads, (q, k, v))


@_bwd_op.register_fake
def _(grad_out, q, k, v, lse, inv_n, scale, softmax_scale, need_dq, need_dk, need_dv):
    return tc.fake_grads((q, k, v), (need_dq, need_dk, need_dv))


def _setup_context(ctx, inputs, output):
    q, k, v, ctx.scale, ctx.softmax_scale, _ = inputs
    ctx.save_for_backward(q, k, v, *output[1:])   # inputs and O(N*HW) / O(N*L) statistics


def _backward_of_fwd_op(ctx, grad_out, _grad_lse, _grad_inv_n):
    needs = ctx.needs_input_grad[:3]
    grads = _bwd_op(grad_out, *ctx.saved_tensors, ctx.scale, ctx.softmax_scale, *needs)
    return (*tc.needed(grads, needs), None, None, None)


_fwd_op.register_autograd(_backward_of_fwd_op, setup_context=_setup_context)


def cross_scale_attention_triton(q, k, v, scale, softmax_scale=10.0):
    """Triton cross-scale attention (shapes checked by kernels.cross_scale_attention).

    q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, s*H, s*W] in the input
    dtype (fp32, fp16, bf16), fp32 accumulation, differentiable in q, k, v (any strides).
    Under autocast the inputs are cast to the autocast dtype first, like a matmul. Ck <= 256.
    """
    q, k, v = tc.prepare_inputs("cross_scale_attention_triton", q, k, v)
    if not 1 <= q.shape[1] <= 256:
        raise ValueError(f"cross_scale_attention_triton: q and k need 1 to 256 channels, got {q.shape[1]}; "
                         "use backend=\"torch\"")
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return _fwd_op(q, k, v, int(scale), float(softmax_scale), training)[0]
