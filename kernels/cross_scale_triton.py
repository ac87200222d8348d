"""Cross-scale attention on the GPU: coalesced Triton kernels and cuBLAS GEMMs.

Per image (kernels.cross_scale_torch has the same math in PyTorch): q [Ck, H, W], k [Ck, h, w],
v [Cv, H, W], h = H/s, w = W/s, L = h*w, C = Cv*s*s, a = softmax_scale, taps
d_t = (dy, dx) in {-1, 0, 1}^2, inv_n[l] = 1 / max(||3x3 patch of k at l||, floor):

    S[p, l] = a inv_n[l] sum_t q[p + d_t] . k[l + d_t]      (zero padding)   P = softmax_l(S)
    P~[p, l] = sum_t P[p - d_t, l - d_t] / 6                 out = pixel_shuffle(P~ Vt, s)

with Vt = pixel_unshuffle(v, s) as [L, C]. Backward, Gt = pixel_unshuffle(dL/dout, s) as [HW, C]:

    E = Gt Vt^T     dP[p, l] = sum_t E[p + d_t, l + d_t] / 6     delta = rowsum(P dP)
    dS = P (dP - delta)    dSn = a inv_n dS    dR[p, l] = sum_t dSn[p - d_t, l - d_t]
    dq = (dR k^T)^T    dk = (dR^T q^T)^T + k * box3x3(c),  c_l = -inv_n^2 sum_p dS S (0 at the floor)
    dVt = P~^T Gt      (pixel_shuffle -> dv)

Layouts. q and k go channels-last and zero-padded ([H+2, W+2, CK], CK = Ck padded to a power of
two >= 16): a score tile is nine tensor-core products of [BLOCK_M, CK] query rows and [BLOCK_N, CK]
key rows, each row CK contiguous elements (no masks, no R buffer, no score stencil). P, P~, E, dP,
dSn, dR are band buffers [rows*W, L], key-contiguous. Every GEMM with K = L, HW or C (out, E, dVt,
dq, dk) is torch.bmm (cuBLAS), the pixel shuffles are one permuting copy each.

Kernels (grid: query tiles or key tiles, images of a group):
  _probs_kernel    P (input dtype) of a band's rows; STATS: the row log-sum-exp (base 2) first by an
                   online max / sum over key tiles, stored for the core rows, else the saved one
  _stencil_kernel  dst = scale sum_t src[p + SIGN d_t, l + SIGN d_t] over whole rows of keys (P~, dP,
                   dR); ROWDOT also gives delta = rowsum(P dst). Keys in aligned groups of VEC (the
                   largest power of two dividing w, at most 16 bytes): a tap is one vector load a
                   group (128-bit at fp16 where w % 8 == 0), the dx = +-1 taps' key across a group
                   boundary is loaded from the neighbouring group and moved in registers; masks are
                   per row and group
  _ds_kernel       dSn (input dtype) and the key-norm sums sum_p dS S, by key tile over the band's rows;
                   S from P and lse (S = (log2 P + lse) ln 2; a term with P = 0 has dS = 0)
  _key_norms_kernel, _key_grad_kernel   inv_n, and dk's term through the key normalisation

Bands. Query rows run in bands [y0, y1) over groups of images; the stencils need one halo row on
each side (P, E, dR on rows y0-1 .. y1). Buffers are sized by BAND_BYTES (default 1 GiB): whole
images in groups when they fit, else the most rows that fit. Per W*L elements of one query row
of one image, with e the input element size: forward (r+2) e (P) + r e (P~) + r e C/L (the GEMM
output); backward at its peak (r+2) e (P) + (r+2) e (E) + 4 r (dP fp32). Extra memory, fp16,
Ck 64, Cv 128 (plan() and band_bytes(); bench/cross_scale_model.py prints them for every shape):
  16x48x48 s2 and s3: whole batch, one band; forward 117 MiB, backward 162 MiB (s3: 72 MiB)
  16x96x96 s2: forward 2 groups of 8 images (720 MiB), backward 3 groups of 6 (972 MiB)
  1x192x192 s2: forward 2 bands of 96 rows (673 MiB), backward 3 bands of 64 rows (878 MiB)
Launches: per forward band 2 Triton kernels and 2 torch ops (GEMM, pixel-shuffle copy), per
backward band 5 Triton kernels and 7 torch ops (4 GEMMs, 3 accumulations); per call, forward 1
Triton kernel and 4 torch ops (layouts), backward 1 Triton kernel and 14 torch ops (layouts,
accumulators, output copies). With at most 3 band-groups up to 1x192x192 and 16x96x96: at most 17
launches per forward and 68 per forward+backward, whatever the batch; 9 and 36 at the training
shapes (tests/test_cross_scale_triton.py::test_launches_per_band counts them).

Precision: fp32 accumulation everywhere; P, P~, E, dSn, dR are rounded to the input dtype before
their products (as P and dS in flash attention), dP and delta stay fp32; fp32 inputs multiply
exactly in fp32 (input_precision="ieee").
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import _triton_common as tc
from ._triton_common import cast, mma
from .cross_scale_torch import KEY_NORM_FLOOR, band_rows

BAND_BYTES = 1 << 30   # band buffers of one call (forward or backward), bytes; settable
_INT32_LIMIT = 2 ** 31 - 1
LN2 = tl.constexpr(0.6931471805599453)   # a jit global must be a constexpr
# Sizes and strides are not specialised (no recompilation per image size); L is, so that Triton
# sees 16-element alignment of key rows in the band buffers (128-bit loads where L % 16 == 0).
_SIZE_ARGS = ["row0", "nrows", "y0", "y1", "src_lo", "src_rows", "dst_lo", "dst_rows", "wgt_lo", "wgt_rows",
              "p_lo", "p_rows", "ncore", "H", "W", "h", "w", "L_BUCKET"]


def _jit_sizes(fn):
    """triton.jit without specialisation on the size arguments of `fn`."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    return triton.jit(fn, do_not_specialize=[a for a in _SIZE_ARGS if a in names])


# ----------------------------------------------------------------------------- kernels

@triton.jit
def _scores(q_rows, kp_img, l, w, CK: tl.constexpr, W, EMU_BF16: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """sum_t q[p + d_t] . k[l + d_t] as an fp32 [BLOCK_M, BLOCK_N] tile: q_rows [BLOCK_M, CK]
    pointers to the padded channels-last q at the query pixels, kp_img the image's padded k."""
    k_rows = kp_img + (((l // w + 1) * (w + 2) + l % w + 1) * CK)[:, None] + tl.arange(0, CK)[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for t in range(9):   # a pipelined K loop: nine [*, CK] operand pairs
        dy = t // 3 - 1
        dx = t % 3 - 1
        qt = tl.load(q_rows + (dy * (W + 2) + dx) * CK)
        kt = tl.load(k_rows + (dy * (w + 2) + dx) * CK)
        acc = mma(qt, tl.trans(kt), acc, EMU_BF16)
    return acc


@triton.jit
def _key_tile_scores(q_rows, kp_img, invn_img, l0, L, w, W, qk_scale, CK: tl.constexpr, IDX64: tl.constexpr,
                     EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Scores (base 2) of the key tile from l0 for the query rows q_rows: (S [BLOCK_M, BLOCK_N],
    keys l, mask l < L); keys past L repeat the last one."""
    l = l0 + tl.arange(0, BLOCK_N)
    if IDX64:
        l = l.to(tl.int64)
    lc = tl.minimum(l, L - 1)
    s = _scores(q_rows, kp_img, lc, w, CK, W, EMU_BF16, BLOCK_M, BLOCK_N)
    return s * (tl.load(invn_img + lc) * qk_scale)[None, :], l, l < L


@_jit_sizes
def _key_norms_kernel(kp_ptr, invn_ptr, h, w, L, floor, CK: tl.constexpr, BLOCK_N: tl.constexpr):
    """inv_n [G, L] (fp32) = 1 / max(||3x3 patch of k at l||, floor), kp [G, h+2, w+2, CK] the
    zero-padded channels-last k (no masks: the padding is the patch's zero padding)."""
    n = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    lm = l < L
    lc = tl.minimum(l, L - 1)
    rows = (kp_ptr + n * (h + 2) * (w + 2) * CK + (((lc // w + 1) * (w + 2) + lc % w + 1) * CK)[:, None]
            + tl.arange(0, CK)[None, :])
    acc = tl.zeros([BLOCK_N], tl.float32)
    for t in range(9):
        kt = tl.load(rows + ((t // 3 - 1) * (w + 2) + t % 3 - 1) * CK).to(tl.float32)
        acc += tl.sum(kt * kt, 1)
    tl.store(invn_ptr + n * L + l, 1.0 / tl.sqrt(tl.maximum(acc, floor * floor)), mask=lm)


@_jit_sizes
def _key_grad_kernel(kp_ptr, dkt_ptr, invn_ptr, csum_ptr, dk_ptr, h, w, L, ck, floor,
                     CK: tl.constexpr, BLOCK_N: tl.constexpr):
    """dk [G, L, ck] (fp32) = dkt + k * box3x3(c), c_l = -inv_n[l]^2 csum[l] where the key norm is
    above the floor (inv_n floor < 1), else 0: the gradient through the key normalisation.
    dkt [G, L, ck] fp32 (dR^T q^T), kp the zero-padded channels-last k, inv_n and csum [G, L]."""
    n = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    lm = l < L
    ki = l // w
    kj = l % w
    box = tl.zeros([BLOCK_N], tl.float32)
    for t in range(9):
        ni = ki + t // 3 - 1
        nj = kj + t % 3 - 1
        m = lm & (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
        inv = tl.load(invn_ptr + n * L + ni * w + nj, mask=m, other=0.0)
        cs = tl.load(csum_ptr + n * L + ni * w + nj, mask=m, other=0.0)
        box += tl.where(inv * floor < 1.0, -inv * inv * cs, 0.0)
    c = tl.arange(0, CK)
    mask = lm[:, None] & (c < ck)[None, :]
    kt = tl.load(kp_ptr + n * (h + 2) * (w + 2) * CK + (((ki + 1) * (w + 2) + kj + 1) * CK)[:, None] + c[None, :],
                 mask=mask, other=0.0).to(tl.float32)
    offs = n * L * ck + (l * ck)[:, None] + c[None, :]
    tl.store(dk_ptr + offs, tl.load(dkt_ptr + offs, mask=mask, other=0.0) + kt * box[:, None], mask=mask)


@_jit_sizes
def _probs_kernel(qp_ptr, kp_ptr, invn_ptr, lse_ptr, p_ptr, row0, nrows, y0, y1, H, W, h, w, L, qk_scale, L_BUCKET,
                  CK: tl.constexpr, STATS: tl.constexpr, IDX64: tl.constexpr,
                  EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """P [G, nrows*W, L] (its dtype) of query rows row0 .. row0+nrows-1; STATS: lse [G, H*W]
    (base 2) of the rows y0 .. y1-1 among them computed and stored, else read. qp [G, H+2, W+2, CK],
    kp [G, h+2, w+2, CK] zero-padded channels-last; qk_scale = a log2(e); L_BUCKET: unused (autotune key)."""
    n = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if IDX64:
        i = i.to(tl.int64)
    pm = i < nrows * W
    ic = tl.minimum(i, nrows * W - 1)           # tail lanes read a real row, store nothing
    py = row0 + ic // W
    px = ic % W
    q_rows = (qp_ptr + n * (H + 2) * (W + 2) * CK + (((py + 1) * (W + 2) + px + 1) * CK)[:, None]
              + tl.arange(0, CK)[None, :])
    kp_img = kp_ptr + n * (h + 2) * (w + 2) * CK
    invn_img = invn_ptr + n * L
    lse_ptrs = lse_ptr + n * H * W + py * W + px
    if STATS:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        for l0 in range(0, L, BLOCK_N):
            s, l, lm = _key_tile_scores(q_rows, kp_img, invn_img, l0, L, w, W, qk_scale, CK, IDX64, EMU_BF16,
                                        BLOCK_M, BLOCK_N)
            s = tl.where(lm[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
            m_i = m_new
        lse = m_i + tl.log2(l_i)
        tl.store(lse_ptrs, lse, mask=pm & (py >= y0) & (py < y1))
    else:
        lse = tl.load(lse_ptrs)
    p_rows = p_ptr + n * nrows * W * L + (i * L)[:, None]
    for l0 in range(0, L, BLOCK_N):
        s, l, lm = _key_tile_scores(q_rows, kp_img, invn_img, l0, L, w, W, qk_scale, CK, IDX64, EMU_BF16,
                                    BLOCK_M, BLOCK_N)
        p = tl.exp2(s - lse[:, None])
        tl.store(p_rows + l[None, :], cast(p, p_ptr.dtype.element_ty, EMU_BF16), mask=pm[:, None] & lm[None, :])


@triton.jit
def _shift_up(a, n, V: tl.constexpr):
    """[M, G, V] tiles -> r[.., e] = a[.., e + 1] for e < V - 1, r[.., V - 1] = n[.., 0]: a move
    along the in-thread axis (register renames: split / join of the even and odd elements)."""
    if V == 1:
        r = n
    else:
        a_even, a_odd = tl.split(tl.reshape(a, (a.shape[0], a.shape[1], V // 2, 2)))
        n_even, n_odd = tl.split(tl.reshape(n, (n.shape[0], n.shape[1], V // 2, 2)))
        r = tl.reshape(tl.join(a_odd, _shift_up(a_even, n_even, V // 2)), (a.shape[0], a.shape[1], V))
    return r


@triton.jit
def _shift_down(a, n, V: tl.constexpr):
    """[M, G, V] tiles -> r[.., e] = a[.., e - 1] for e > 0, r[.., 0] = n[.., V - 1]."""
    if V == 1:
        r = n
    else:
        a_even, a_odd = tl.split(tl.reshape(a, (a.shape[0], a.shape[1], V // 2, 2)))
        n_even, n_odd = tl.split(tl.reshape(n, (n.shape[0], n.shape[1], V // 2, 2)))
        r = tl.reshape(tl.join(_shift_down(a_odd, n_odd, V // 2), a_even), (a.shape[0], a.shape[1], V))
    return r


@_jit_sizes
def _stencil_kernel(src_ptr, dst_ptr, wgt_ptr, delta_ptr, src_lo, src_rows, dst_lo, dst_rows, wgt_lo, wgt_rows,
                    W, h, w, L, scale, SIGN: tl.constexpr, ROWDOT: tl.constexpr, IDX64: tl.constexpr,
                    EMU_BF16: tl.constexpr, VEC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dst [G, dst_rows*W, L] (its dtype) of query rows dst_lo .. = scale sum_t src[p + SIGN d_t, l + SIGN d_t],
    src [G, src_rows*W, L] holding rows src_lo ..; terms outside src's rows, the W columns or the
    h x w key grid are zero. ROWDOT: delta [G, dst_rows*W] (fp32) = rowsum(wgt * dst), wgt a band
    buffer holding rows wgt_lo .. (P). VEC divides w (a group of src at most 16 bytes): keys go in
    groups of VEC, one group a vector load. A tap's offset dy (W L + w) + dx (L + 1) is dx plus a
    multiple of VEC, so each (dy, dx) tap is one aligned group load (row p + dy W + dx, key
    l + dy w) and the dx = +-1 taps take their last / first key from the neighbouring group, moved
    in registers."""
    n = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if IDX64:
        i = i.to(tl.int64)
    pm = i < dst_rows * W
    y = dst_lo + i // W
    x = i % W
    G: tl.constexpr = BLOCK_N // VEC
    src = src_ptr + n * src_rows * W * L
    src_row = ((y - src_lo) * W + x) * L                   # element offsets of the rows (multiples of L)
    dst_rows_ptr = dst_ptr + n * dst_rows * W * L + tl.multiple_of(i * L, VEC)[:, None, None]
    wgt_rows_ptr = wgt_ptr + n * wgt_rows * W * L + tl.multiple_of(((y - wgt_lo) * W + x) * L, VEC)[:, None, None]
    dsum = tl.zeros([BLOCK_M], tl.float32)
    for l0 in range(0, L, BLOCK_N):
        kg = l0 + tl.arange(0, G) * VEC                    # the groups' first keys
        gm = kg < L
        ki = kg // w
        keys = tl.multiple_of(kg, VEC)[None, :, None] + tl.arange(0, VEC)[None, None, :]
        acc = tl.full([BLOCK_M, G, VEC], -0.0, tl.float32)   # -0.0 + x = x: the first adds fold away
        for u in tl.static_range(3):
            dx = SIGN * (u - 1)                              # a constexpr
            xm = pm & (x + dx >= 0) & (x + dx < W)
            # nm: the neighbouring group holds the tap's key of the group's last (dx = 1) / first
            # key, unless that key ends / starts a key row (then the term is zero)
            if dx == 1:
                nm = gm & ((kg + VEC) % w != 0)
            else:
                nm = gm & (kg % w != 0)
            part = tl.full([BLOCK_M, G, VEC], -0.0, tl.float32)
            edge = tl.full([BLOCK_M, G, VEC], -0.0, tl.float32)
            for t in range(3):   # dy; unrolled by the compiler at fp16 / bf16: 15 independent loads
                dy = SIGN * (t - 1)
                rm = xm & (y + dy >= src_lo) & (y + dy < src_lo + src_rows)
                km = (ki + dy >= 0) & (ki + dy < h)
                ptrs = src + tl.multiple_of(src_row + (dy * W + dx) * L + dy * w, VEC)[:, None, None] + keys
                if dx == 0 or VEC > 1:
                    part += tl.load(ptrs, mask=rm[:, None, None] & (gm & km)[None, :, None],
                                    other=0.0).to(tl.float32)
                if dx != 0:
                    edge += tl.load(ptrs + dx * VEC, mask=rm[:, None, None] & (nm & km)[None, :, None],
                                    other=0.0).to(tl.float32)
            if dx == 0:
                acc += part
            elif dx == 1:
                acc += _shift_up(part, edge, VEC)
            else:
                acc += _shift_down(part, edge, VEC)
        acc *= scale
        mask = pm[:, None, None] & gm[None, :, None]
        if ROWDOT:
            wt = tl.load(wgt_rows_ptr + keys, mask=mask, other=0.0).to(tl.float32)
            dsum += tl.sum(tl.sum(wt * acc, 2), 1)
        out = cast(acc, dst_ptr.dtype.element_ty, EMU_BF16)
        if VEC * dst_ptr.dtype.element_ty.primitive_bitwidth > 128:
            # a group wider than a 16-byte store (fp32, dP): its two halves, each a 16-byte store
            # from the registers that hold it (one store would take a 4-key layout, through shared memory)
            lo, hi = tl.split(tl.permute(tl.reshape(out, (BLOCK_M, G, 2, VEC // 2)), (0, 1, 3, 2)))
            half = tl.multiple_of(kg, VEC)[None, :, None] + tl.arange(0, VEC // 2)[None, None, :]
            tl.store(dst_rows_ptr + half, lo, mask=mask)
            tl.store(dst_rows_ptr + half + VEC // 2, hi, mask=mask)
        else:
            tl.store(dst_rows_ptr + keys, out, mask=mask)
    if ROWDOT:
        tl.store(delta_ptr + n * dst_rows * W + i, dsum, mask=pm)


@_jit_sizes
def _ds_kernel(p_ptr, dp_ptr, delta_ptr, lse_ptr, invn_ptr, ds_ptr, csum_ptr, p_lo, p_rows, y0, ncore,
               H, W, L, softmax_scale, IDX64: tl.constexpr, EMU_BF16: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Core rows y0 .. y0+ncore-1: dSn [G, ncore*W, L] (its dtype) = a inv_n P (dP - delta), and
    csum [G, L] += sum_p dS S with S = (log2 P + lse) ln 2. P: band buffer of rows p_lo ..;
    dP [G, ncore*W, L] and delta [G, ncore*W] fp32; lse [G, H*W] base 2. One program per key tile
    walks all core rows (deterministic column sums)."""
    n = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    lm = l < L
    sc = tl.load(invn_ptr + n * L + l, mask=lm, other=0.0) * softmax_scale
    p_img = p_ptr + n * p_rows * W * L + (y0 - p_lo) * W * L
    dp_img = dp_ptr + n * ncore * W * L
    ds_img = ds_ptr + n * ncore * W * L
    colsum = tl.zeros([BLOCK_N], tl.float32)
    for m0 in range(0, ncore * W, BLOCK_M):
        i = m0 + tl.arange(0, BLOCK_M)
        if IDX64:
            i = i.to(tl.int64)
        pm = i < ncore * W
        mask = pm[:, None] & lm[None, :]
        offs = (i * L)[:, None] + l[None, :]
        p = tl.load(p_img + offs, mask=mask, other=0.0).to(tl.float32)
        dp = tl.load(dp_img + offs, mask=mask, other=0.0)
        delta = tl.load(delta_ptr + n * ncore * W + i, mask=pm, other=0.0)
        lse = tl.load(lse_ptr + n * H * W + y0 * W + i, mask=pm, other=0.0)
        ds = p * (dp - delta[:, None])
        tl.store(ds_img + offs, cast(ds * sc[None, :], ds_ptr.dtype.element_ty, EMU_BF16), mask=mask)
        score = (tl.log2(tl.where(p > 0, p, 1.0)) + lse[:, None]) * LN2
        colsum += tl.sum(tl.where(p > 0, ds * score, 0.0), 0)
    cs = csum_ptr + n * L + l
    tl.store(cs, tl.load(cs, mask=lm, other=0.0) + colsum, mask=lm)


# ----------------------------------------------------------------------------- configs

_c = tc.config


def _small_tiles_for_fp32(configs, named_args, **_):
    """fp32 operands: tiles of at most 64 x 64 (twice the registers per element)."""
    if named_args["qp_ptr" if "qp_ptr" in named_args else "src_ptr"].dtype != torch.float32:
        return configs
    return [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64] or configs[:1]


# name -> (autotune candidates, the fixed config of the interpreter / CSNLN_TRITON_AUTOTUNE=0)
_CONFIGS = {
    "probs": ([_c(4, 3, BLOCK_M=64, BLOCK_N=64), _c(8, 3, BLOCK_M=128, BLOCK_N=64),
               _c(8, 3, BLOCK_M=64, BLOCK_N=128)],
              dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    # 16 keys a thread (two groups of 8); a warp access spans 2 (BLOCK_N 128) or 4 (64) query rows
    "stencil": ([_c(4, 1, BLOCK_M=16, BLOCK_N=128), _c(8, 1, BLOCK_M=32, BLOCK_N=128),
                 _c(8, 1, BLOCK_M=64, BLOCK_N=64)],
                dict(BLOCK_M=32, BLOCK_N=16, num_warps=4)),
    "ds": ([_c(4, 1, BLOCK_M=32, BLOCK_N=64), _c(4, 1, BLOCK_M=64, BLOCK_N=32), _c(8, 1, BLOCK_M=64, BLOCK_N=64)],
           dict(BLOCK_M=16, BLOCK_N=16, num_warps=4)),
    "norms": ([_c(4, 1, BLOCK_N=32)], dict(BLOCK_N=16, num_warps=4)),
    "key_grad": ([_c(4, 1, BLOCK_N=32)], dict(BLOCK_N=16, num_warps=4)),
}
_KERNELS = {name: tc.tuned(kernel, _CONFIGS[name][0], key=key,
                          prune=_small_tiles_for_fp32 if name in ("probs", "stencil") else None)
            for name, kernel, key in (("probs", _probs_kernel, ["CK", "STATS", "L_BUCKET"]),
                                      ("stencil", _stencil_kernel, ["SIGN", "ROWDOT", "VEC"]),
                                      ("ds", _ds_kernel, []),
                                      ("norms", _key_norms_kernel, ["CK"]),
                                      ("key_grad", _key_grad_kernel, ["CK"]))}


def _launch(name, grid_of, *args, **meta):
    tc.launch(_KERNELS[name], _CONFIGS[name][1], grid_of, args, meta)


# ----------------------------------------------------------------------------- band plan

def band_bytes(rows, halo_rows, W, L, C, esize, backward):
    """Bytes of one image's band buffers for a band of `rows` query rows (`halo_rows` = rows
    plus the halo rows inside the image): forward P, P~ and the out GEMM's result; backward at
    its peak P, E and dP (fp32)."""
    if backward:
        return W * L * (2 * halo_rows * esize + 4 * rows)
    return W * (L * (halo_rows + rows) + C * rows) * esize


def plan(n, H, W, L, C, esize, backward, budget=None):
    """(image groups, row bands) whose band buffers stay under `budget` (BAND_BYTES): whole
    images in groups when they fit, else one image at a time in bands of rows (at least one);
    groups and bands of near-equal size."""
    budget = BAND_BYTES if budget is None else budget
    whole = band_bytes(H, H, W, L, C, esize, backward)
    if whole <= budget:
        groups = tc.cdiv(n, max(1, budget // max(1, whole)))
        size = max(1, tc.cdiv(n, groups))
        return [(i, min(n, i + size)) for i in range(0, n, size)], [(0, H)]
    fits = next((r for r in range(H - 1, 0, -1) if band_bytes(r, min(H, r + 2), W, L, C, esize, backward) <= budget), 1)
    rows = tc.cdiv(H, tc.cdiv(H, fits))
    return [(i, i + 1) for i in range(n)], [(y, min(H, y + rows)) for y in range(0, H, rows)]


def _needs_int64(*tensors):
    """True when element offsets within one image of a (contiguous) tensor may not fit in int32."""
    return any(t[0].numel() * 2 >= _INT32_LIMIT for t in tensors)


def _band_needs_int64(rows, W, L):
    return (max(y1 - y0 for y0, y1 in rows) + 2) * W * L * 2 >= _INT32_LIMIT


# ----------------------------------------------------------------------------- host side

def _padded(x, ck_pad):
    """[N, C, H, W] -> zero-padded channels-last [N, H+2, W+2, ck_pad], one copy."""
    return F.pad(x.permute(0, 2, 3, 1), (0, ck_pad - x.shape[1], 1, 1, 1, 1))


def _tokens(x):
    """[N, C, H, W] -> [N, H*W, C] (channels-last rows; a view when x already is channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _unshuffled_tokens(x, s):
    """[N, Cv, H*s, W*s] -> pixel_unshuffle as tokens [N, H*W, Cv*s*s], one copy (v: [N, L, C])."""
    n, c, hs, ws = x.shape
    return x.view(n, c, hs // s, s, ws // s, s).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * s * s)


def _shuffle_into(dst, tokens, s):
    """dst [G, Cv, rows*s, W*s] (any strides) = pixel_shuffle of tokens [G, rows*W, Cv*s*s]."""
    g, cv, hs, ws = dst.shape
    dst.view(g, cv, hs // s, s, ws // s, s).copy_(tokens.view(g, hs // s, ws // s, cv, s, s).permute(0, 3, 1, 4, 2, 5))


def _probs(qp, kp, inv_n, lse, rows, core, W, h, w, a, stats, dtype, meta):
    """P [G, rows*W, L] in `dtype` for query rows `rows`; stats: lse of the rows `core` stored."""
    g, (r0, r1), L = qp.shape[0], rows, h * w
    probs = tc.new_buffer((g, (r1 - r0) * W, L), dtype, qp.device)
    _launch("probs", lambda m: (tc.cdiv((r1 - r0) * W, m["BLOCK_M"]), g),
            qp, kp, inv_n, lse, probs, r0, r1 - r0, *core, lse.shape[1] // W, W, h, w, L, float(a) * tc.LOG2E,
            CK=qp.shape[3], STATS=stats, L_BUCKET=tc.length_bucket(L), **meta)
    return probs


def _stencil(src, src_rows, dst_rows, W, h, w, sign, scale, dtype, meta, wgt=None, wgt_rows=None):
    """scale * the stencil of the band buffer src (rows src_rows) on rows dst_rows, in `dtype`;
    with wgt (a band buffer of rows wgt_rows) also delta = rowsum(wgt * result) [G, rows*W] fp32."""
    g, L = src.shape[0], h * w
    (s0, s1), (d0, d1) = src_rows, dst_rows
    dst = tc.new_buffer((g, (d1 - d0) * W, L), dtype, src.device)
    delta = tc.new_buffer((g, (d1 - d0) * W), torch.float32, src.device) if wgt is not None else dst
    w0, w1 = wgt_rows if wgt is not None else src_rows
    _launch("stencil", lambda m: (tc.cdiv((d1 - d0) * W, m["BLOCK_M"]), g),
            src, dst, src if wgt is None else wgt, delta, s0, s1 - s0, d0, d1 - d0, w0, w1 - w0, W, h, w, L,
            float(scale), SIGN=sign, ROWDOT=wgt is not None, VEC=min(16 // src.element_size(), w & -w), **meta)
    return (dst, delta) if wgt is not None else dst


def _meta(dtype, rows, W, L, *tensors):
    return dict(IDX64=_needs_int64(*tensors) or _band_needs_int64(rows, W, L), EMU_BF16=tc.emulate_bf16(dtype))


def _forward(q, k, v, s, a):
    """-> out [N, Cv, sH, sW] (v's dtype and memory format), lse [N, HW] (base 2, fp32),
    inv_n [N, L] (fp32)."""
    n, ck, H, W = q.shape
    h, w, L, C = H // s, W // s, (H // s) * (W // s), v.shape[1] * s * s
    out = tc.new_output((n, v.shape[1], H * s, W * s), v)
    if out.numel() == 0:                       # no output element: no launch
        return out, q.new_zeros(n, H * W, dtype=torch.float32), q.new_zeros(n, L, dtype=torch.float32)
    lse = tc.new_buffer((n, H * W), torch.float32, q.device)
    ckp = tc.pad_channels(ck)
    qp, kp = _padded(q, ckp), _padded(k, ckp)
    inv_n = tc.new_buffer((n, L), torch.float32, q.device)
    vt = _unshuffled_tokens(v, s)                                  # [N, L, C]
    images, rows = plan(n, H, W, L, C, q.element_size(), backward=False)
    meta = _meta(q.dtype, rows, W, L, qp, kp)
    with tc.device_guard(q):
        _launch("norms", lambda m: (tc.cdiv(L, m["BLOCK_N"]), n), kp, inv_n, h, w, L, KEY_NORM_FLOOR, CK=ckp)
        for i0, i1 in images:
            for y0, y1 in rows:
                p_rows = band_rows(y0, y1, H, 1)
                probs = _probs(qp[i0:i1], kp[i0:i1], inv_n[i0:i1], lse[i0:i1], p_rows, (y0, y1), W, h, w, a,
                               True, q.dtype, meta)
                spread = _stencil(probs, p_rows, (y0, y1), W, h, w, -1, 1 / 6, q.dtype, meta)
                del probs
                _shuffle_into(out[i0:i1, :, y0 * s:y1 * s], torch.bmm(spread, vt[i0:i1]), s)
    return out, lse, inv_n


def _backward(q, k, v, g, lse, inv_n, s, a, need):
    """Gradients for the inputs flagged in `need` (None for the others), contiguous, in the input dtype."""
    n, ck, H, W = q.shape
    h, w, L, C = H // s, W // s, (H // s) * (W // s), v.shape[1] * s * s
    if n * H * W * v.shape[1] == 0:
        return [torch.zeros_like(t) if wanted else None for t, wanted in zip((q, k, v), need)]
    g = g.to(v.dtype)
    ckp = tc.pad_channels(ck)
    qp, kp = _padded(q, ckp), _padded(k, ckp)
    gt = _unshuffled_tokens(g, s)                                  # [N, HW, C]
    vt = _unshuffled_tokens(v, s)                                  # [N, L, C]
    qt, kt = _tokens(q), _tokens(k)                                 # [N, HW, Ck], [N, L, Ck]
    f32 = dict(dtype=torch.float32, device=q.device)
    dqt = torch.zeros(n, H * W, ck, **f32) if need[0] else None
    dkt = torch.zeros(n, L, ck, **f32) if need[1] else None
    csum = torch.zeros(n, L, **f32)           # the ds kernel's key-norm sums (used for dk)
    dvt = torch.zeros(n, L, C, **f32) if need[2] else None
    images, rows = plan(n, H, W, L, C, q.element_size(), backward=True)
    meta = _meta(q.dtype, rows, W, L, qp, kp)
    with tc.device_guard(q):
        for i0, i1 in images:
            for y0, y1 in rows:
                p0, p1 = band_rows(y0, y1, H, 1)
                probs = _probs(qp[i0:i1], kp[i0:i1], inv_n[i0:i1], lse[i0:i1], (p0, p1), (y0, y1), W, h, w, a,
                               False, q.dtype, meta)
                if need[2]:
                    spread = _stencil(probs, (p0, p1), (y0, y1), W, h, w, -1, 1 / 6, q.dtype, meta)
                    dvt[i0:i1].add_(torch.bmm(spread.transpose(1, 2), gt[i0:i1, y0 * W:y1 * W]))
                    del spread
                if not (need[0] or need[1]):
                    continue
                e = torch.bmm(gt[i0:i1, p0 * W:p1 * W], vt[i0:i1].transpose(1, 2))      # [G, prows*W, L]
                dp, delta = _stencil(e, (p0, p1), (y0, y1), W, h, w, 1, 1 / 6, torch.float32, meta,
                                     wgt=probs, wgt_rows=(p0, p1))
                del e
                dsn = tc.new_buffer(dp.shape, q.dtype, q.device)
                _launch("ds", lambda m: (tc.cdiv(L, m["BLOCK_N"]), i1 - i0),
                        probs, dp, delta, lse[i0:i1], inv_n[i0:i1], dsn, csum[i0:i1], p0, p1 - p0, y0, y1 - y0,
                        H, W, L, float(a), **meta)
                del dp, probs
                dr = _stencil(dsn, (y0, y1), (p0, p1), W, h, w, -1, 1, q.dtype, meta)
                del dsn
                if need[0]:
                    dqt[i0:i1, p0 * W:p1 * W].add_(torch.bmm(dr, kt[i0:i1]))
                if need[1]:
                    dkt[i0:i1].add_(torch.bmm(dr.transpose(1, 2), qt[i0:i1, p0 * W:p1 * W]))
        grads = [None, None, None]
        if need[0]:
            grads[0] = dqt.view(n, H, W, ck).permute(0, 3, 1, 2).to(q.dtype, memory_format=torch.contiguous_format)
        if need[1]:
            dk = tc.new_buffer((n, L, ck), torch.float32, q.device)
            _launch("key_grad", lambda m: (tc.cdiv(L, m["BLOCK_N"]), n), kp, dkt, inv_n, csum, dk, h, w, L, ck,
                    KEY_NORM_FLOOR, CK=ckp)
            grads[1] = dk.view(n, h, w, ck).permute(0, 3, 1, 2).to(k.dtype, memory_format=torch.contiguous_format)
    if need[2]:
        grads[2] = v.new_empty(v.shape)
        _shuffle_into(grads[2], dvt, s)
    return grads


# ----------------------------------------------------------------------------- custom ops
# torch.library ops, so that torch.compile calls the kernels as opaque ops (no graph break).

@torch.library.custom_op("csnln::cross_scale_attention_fwd", mutates_args=())
@tc.without_autocast
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: int,
            softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> out [N, Cv, sH, sW], lse [N, HW] (base 2, fp32), inv_n [N, L] (fp32)."""
    return _forward(q, k, v, scale, softmax_scale)


@_fwd_op.register_fake
def _(q, k, v, scale, softmax_scale):
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
    q, k, v, ctx.scale, ctx.softmax_scale = inputs
    ctx.save_for_backward(q, k, v, *output[1:])   # inputs and O(N*HW) / O(N*L) statistics


def _backward_of_fwd_op(ctx, grad_out, _grad_lse, _grad_inv_n):
    needs = ctx.needs_input_grad[:3]
    grads = _bwd_op(grad_out, *ctx.saved_tensors, ctx.scale, ctx.softmax_scale, *needs)
    return (*tc.needed(grads, needs), None, None)


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
    return _fwd_op(q, k, v, int(scale), float(softmax_scale))[0]
