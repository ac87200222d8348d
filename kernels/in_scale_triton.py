"""Fused Triton kernels for the in-scale non-local attention (flash-attention style).

out[n, :, p] = sum_j softmax_j(q[n, :, p] . k[n, :, j]) v[n, :, j] over all
L = H*W positions, no scaling. q, k [N, Ck, H, W], v [N, Cv, H, W].

Design
------
* Tensors are read in their channel-first layout [N, C, L] through strides (any
  strides: permuted views are read in place; only views whose H and W cannot be
  merged into one L stride are copied by `flatten`). Batch is grid axis 1.
* Forward: one program per (query block, batch); online softmax over key blocks,
  the L x L score matrix never exists. Saved for backward: q, k, v, out and the
  per-row log-sum-exp `lse` [N, L] (fp32).
* Backward (flash-attention-2): `_in_scale_bwd_delta` computes
  delta = rowsum(dO * O); `_in_scale_bwd_dkdv` walks query blocks for one key block
  (dk, dv); `_in_scale_bwd_dq` walks key blocks for one query block (dq). Scores
  and probabilities are recomputed from q, k and lse; everything accumulates in
  fp32 and grads are stored in the input dtype.
* Head dims Ck, Cv (1..256) are padded to powers of two >= 16 with masks; L is a
  plain runtime int (`do_not_specialize`), so a new H*W does not recompile. Key and
  query loops run over full blocks without L masks, then one masked tail block.
* fp32 inputs use exact fp32 products (`input_precision="ieee"`, no TF32); fp16/bf16
  inputs feed the tensor cores with fp32 accumulation (P and dS are rounded to the
  input dtype before their matmuls, as in flash-attention).
* On GPU the block sizes are autotuned per (Ck, Cv, dtype), not per L (the first
  call of each key benchmarks the candidates, pruned by dtype and shared memory).
  Under TRITON_INTERPRET=1 or CSNLN_TRITON_AUTOTUNE=0 (decided once at import) a fixed
  small config is launched. Under the interpreter bf16 runs with fp32 dots of the bf16 tiles and emulated round-to-nearest casts
  (EMU_BF16): the interpreter's bf16 dot is wrong and its fp32->bf16 cast truncates.
* Offsets that scale with the batch or with L, and the loops' pointer steps, are
  64-bit.
"""
import contextlib

import torch
import triton
import triton.language as tl

from ._backend import autocast_dtype, autotune_enabled, interpreting

_INTERPRET = interpreting()
_AUTOTUNE = autotune_enabled()  # else one fixed config (interpreter, quick GPU checks)
# Block sizes used under the interpreter (tests may change them).
_INTERP_BLOCK_M = 16
_INTERP_BLOCK_N = 16
# Test hook: fill every output buffer with NaN before launching, so that elements
# a kernel fails to write show up.
_POISON = False

_MAX_CHANNELS = 256
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

LOG2E = tl.constexpr(1.4426950408889634)


# --------------------------------------------------------------------------- helpers

@triton.jit
def _load2(ptrs, rows, n_rows, cols, n_cols, MASK_R: tl.constexpr, MASK_C: tl.constexpr):
    """Load a 2-D tile, masking rows >= n_rows and/or cols >= n_cols to 0."""
    if MASK_R:
        if MASK_C:
            x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0)
        else:
            x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
    else:
        if MASK_C:
            x = tl.load(ptrs, mask=cols[None, :] < n_cols, other=0.0)
        else:
            x = tl.load(ptrs)
    return x


@triton.jit
def _mm(a, b, EMU_BF16: tl.constexpr):
    """a @ b in fp32; exact fp32 products for fp32 inputs (no TF32).

    EMU_BF16 (interpreter only) multiplies bf16 tiles in fp32: the interpreter's bf16
    dot is wrong, and fp32 products of bf16 values are exact, as on the GPU.
    """
    if EMU_BF16:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _mma(a, b, acc, EMU_BF16: tl.constexpr):
    """acc + a @ b, as `_mm`."""
    if EMU_BF16:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _rne(x, EMU_BF16: tl.constexpr):
    """Prepare fp32 `x` for `.to(bfloat16)`. The GPU rounds to nearest even; the
    interpreter truncates, so with EMU_BF16 round the fp32 bits to bf16 first."""
    if EMU_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x


@triton.jit
def _i64(x):
    """x as an int64 scalar (x: an int32 scalar or a constexpr, e.g. a stride specialised to 1)."""
    return tl.full([], 0, tl.int64) + x


# --------------------------------------------------------------------------- forward

@triton.jit
def _fwd_loop(acc, m_i, l_i, q, k_ptrs, v_ptrs, start, end, L, offs_n, offs_dk, offs_dv,
              skl, svl, CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
              BLOCK_N: tl.constexpr, MASK_N: tl.constexpr, EMU_BF16: tl.constexpr):
    """Online-softmax sweep over key blocks [start, end); k_ptrs/v_ptrs point at `start`."""
    k_step = _i64(skl) * BLOCK_N
    v_step = _i64(svl) * BLOCK_N
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        kt = _load2(k_ptrs, offs_dk, CK, cols, L, CK < DK, MASK_N)   # [DK, BN]
        v = _load2(v_ptrs, cols, L, offs_dv, CV, MASK_N, CV < DV)    # [BN, DV]
        s = _mm(q, kt, EMU_BF16)                                # [BM, BN] fp32
        if MASK_N:
            s = tl.where(cols[None, :] < L, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2((m_i - m_new) * LOG2E)
        p = tl.exp2((s - m_new[:, None]) * LOG2E)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = _mma(_rne(p, EMU_BF16).to(v.dtype), v, acc * alpha[:, None], EMU_BF16)
        m_i = m_new
        k_ptrs += k_step
        v_ptrs += v_step
    return acc, m_i, l_i


@triton.jit(do_not_specialize=["L"])
def _in_scale_fwd(Q, K, V, Out, Lse, L,
                  sqn, sqc, sql, skn, skc, skl, svn, svc, svl, son, soc, sol,
                  CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                  EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Q, K [N, CK, L], V, Out [N, CV, L] (strided), Lse [N, L] fp32 contiguous.

    Grid (cdiv(L, BLOCK_M), N).
    """
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dk = tl.arange(0, DK)
    offs_dv = tl.arange(0, DV)
    m64 = offs_m.to(tl.int64)
    n64 = offs_n.to(tl.int64)
    dk64 = offs_dk.to(tl.int64)
    dv64 = offs_dv.to(tl.int64)

    q = _load2(Q + b * sqn + m64[:, None] * sql + dk64[None, :] * sqc,
               offs_m, L, offs_dk, CK, True, CK < DK)                     # [BM, DK]
    k_ptrs = K + b * skn + dk64[:, None] * skc + n64[None, :] * skl       # [DK, BN]
    v_ptrs = V + b * svn + n64[:, None] * svl + dv64[None, :] * svc       # [BN, DV]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DV], tl.float32)
    l_full = (L // BLOCK_N) * BLOCK_N
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, k_ptrs, v_ptrs, 0, l_full, L, offs_n, offs_dk,
                              offs_dv, skl, svl, CK, CV, DK, DV, BLOCK_N, False, EMU_BF16)
    tail = _i64(l_full)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, k_ptrs + tail * skl, v_ptrs + tail * svl, l_full, L,
                              L, offs_n, offs_dk, offs_dv, skl, svl, CK, CV, DK, DV, BLOCK_N, True,
                              EMU_BF16)

    out = acc / l_i[:, None]
    row_ok = offs_m < L
    o_ptrs = Out + b * son + m64[:, None] * sol + dv64[None, :] * soc
    tl.store(o_ptrs, _rne(out, EMU_BF16).to(Out.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < CV))
    tl.store(Lse + b * L + m64, m_i + tl.log(l_i), mask=row_ok)


# --------------------------------------------------------------------------- backward

@triton.jit(do_not_specialize=["L"])
def _in_scale_bwd_delta(Out, dOut, Delta, L, son, soc, sol, sdn, sdc, sdl,
                        CV: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr):
    """Delta[n, l] = sum_c dOut[n, c, l] * Out[n, c, l]; Out, dOut [N, CV, L], Delta [N, L] fp32.

    Grid (cdiv(L, BLOCK_M), N).
    """
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, DV)
    m64 = offs_m.to(tl.int64)
    dv64 = offs_dv.to(tl.int64)
    o = _load2(Out + b * son + m64[:, None] * sol + dv64[None, :] * soc,
               offs_m, L, offs_dv, CV, True, CV < DV)
    do = _load2(dOut + b * sdn + m64[:, None] * sdl + dv64[None, :] * sdc,
                offs_m, L, offs_dv, CV, True, CV < DV)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + b * L + m64, delta, mask=offs_m < L)


@triton.jit
def _dkdv_loop(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, start, end, L, offs_m,
               offs_dk, offs_dv, sql, sdl, CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr,
               DV: tl.constexpr, BLOCK_M: tl.constexpr, MASK_M: tl.constexpr, EMU_BF16: tl.constexpr):
    """Accumulate dk, dv of one key block over query blocks [start, end) (transposed scores)."""
    q_step = _i64(sql) * BLOCK_M
    do_step = _i64(sdl) * BLOCK_M
    for start_m in range(start, end, BLOCK_M):
        rows = start_m + offs_m
        q = _load2(q_ptrs, rows, L, offs_dk, CK, MASK_M, CK < DK)      # [BM, DK]
        do = _load2(do_ptrs, rows, L, offs_dv, CV, MASK_M, CV < DV)    # [BM, DV]
        if MASK_M:
            # lse = +inf makes p = 0 on padded query rows.
            lse = tl.load(lse_ptrs, mask=rows < L, other=float("inf"))
            delta = tl.load(delta_ptrs, mask=rows < L, other=0.0)
        else:
            lse = tl.load(lse_ptrs)
            delta = tl.load(delta_ptrs)
        st = _mm(k, tl.trans(q), EMU_BF16)                         # [BN, BM]
        pt = tl.exp2((st - lse[None, :]) * LOG2E)
        dv = _mma(_rne(pt, EMU_BF16).to(do.dtype), do, dv, EMU_BF16)
        dpt = _mm(v, tl.trans(do), EMU_BF16)                       # [BN, BM]
        dst = pt * (dpt - delta[None, :])
        dk = _mma(_rne(dst, EMU_BF16).to(q.dtype), q, dk, EMU_BF16)
        q_ptrs += q_step
        do_ptrs += do_step
        lse_ptrs += BLOCK_M
        delta_ptrs += BLOCK_M
    return dk, dv


@triton.jit(do_not_specialize=["L"])
def _in_scale_bwd_dkdv(Q, K, V, dOut, Lse, Delta, dK, dV, L,
                       sqn, sqc, sql, skn, skc, skl, svn, svc, svl, sdn, sdc, sdl,
                       sdkn, sdkc, sdkl, sdvn, sdvc, sdvl,
                       CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                       EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dK [N, CK, L], dV [N, CV, L] for one key block per program; grid (cdiv(L, BLOCK_N), N)."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_dk = tl.arange(0, DK)
    offs_dv = tl.arange(0, DV)
    n64 = offs_n.to(tl.int64)
    m64 = offs_m.to(tl.int64)
    dk64 = offs_dk.to(tl.int64)
    dv64 = offs_dv.to(tl.int64)

    k = _load2(K + b * skn + n64[:, None] * skl + dk64[None, :] * skc,
               offs_n, L, offs_dk, CK, True, CK < DK)                     # [BN, DK]
    v = _load2(V + b * svn + n64[:, None] * svl + dv64[None, :] * svc,
               offs_n, L, offs_dv, CV, True, CV < DV)                     # [BN, DV]
    q_ptrs = Q + b * sqn + m64[:, None] * sql + dk64[None, :] * sqc       # [BM, DK]
    do_ptrs = dOut + b * sdn + m64[:, None] * sdl + dv64[None, :] * sdc   # [BM, DV]
    lse_ptrs = Lse + b * L + m64
    delta_ptrs = Delta + b * L + m64

    dk = tl.zeros([BLOCK_N, DK], tl.float32)
    dv = tl.zeros([BLOCK_N, DV], tl.float32)
    l_full = (L // BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_loop(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, 0, l_full, L, offs_m,
                        offs_dk, offs_dv, sql, sdl, CK, CV, DK, DV, BLOCK_M, False, EMU_BF16)
    tail = _i64(l_full)
    dk, dv = _dkdv_loop(dk, dv, k, v, q_ptrs + tail * sql, do_ptrs + tail * sdl, lse_ptrs + tail,
                        delta_ptrs + tail, l_full, L, L, offs_m, offs_dk, offs_dv, sql, sdl,
                        CK, CV, DK, DV, BLOCK_M, True, EMU_BF16)

    row_ok = offs_n[:, None] < L
    tl.store(dK + b * sdkn + n64[:, None] * sdkl + dk64[None, :] * sdkc,
             _rne(dk, EMU_BF16).to(dK.dtype.element_ty), mask=row_ok & (offs_dk[None, :] < CK))
    tl.store(dV + b * sdvn + n64[:, None] * sdvl + dv64[None, :] * sdvc,
             _rne(dv, EMU_BF16).to(dV.dtype.element_ty), mask=row_ok & (offs_dv[None, :] < CV))


@triton.jit
def _dq_loop(dq, q, do, lse, delta, k_ptrs, v_ptrs, start, end, L, offs_n, offs_dk, offs_dv,
             skl, svl, CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
             BLOCK_N: tl.constexpr, MASK_N: tl.constexpr, EMU_BF16: tl.constexpr):
    """Accumulate dq of one query block over key blocks [start, end)."""
    k_step = _i64(skl) * BLOCK_N
    v_step = _i64(svl) * BLOCK_N
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        kt = _load2(k_ptrs, offs_dk, CK, cols, L, CK < DK, MASK_N)   # [DK, BN]
        vt = _load2(v_ptrs, offs_dv, CV, cols, L, CV < DV, MASK_N)   # [DV, BN]
        s = _mm(q, kt, EMU_BF16)                                # [BM, BN]
        p = tl.exp2((s - lse[:, None]) * LOG2E)
        if MASK_N:
            p = tl.where(cols[None, :] < L, p, 0.0)
        dp = _mm(do, vt, EMU_BF16)                              # [BM, BN]
        ds = p * (dp - delta[:, None])
        dq = _mma(_rne(ds, EMU_BF16).to(kt.dtype), tl.trans(kt), dq, EMU_BF16)
        k_ptrs += k_step
        v_ptrs += v_step
    return dq


@triton.jit(do_not_specialize=["L"])
def _in_scale_bwd_dq(Q, K, V, dOut, Lse, Delta, dQ, L,
                     sqn, sqc, sql, skn, skc, skl, svn, svc, svl, sdn, sdc, sdl,
                     sdqn, sdqc, sdql,
                     CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                     EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ [N, CK, L] for one query block per program; grid (cdiv(L, BLOCK_M), N)."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dk = tl.arange(0, DK)
    offs_dv = tl.arange(0, DV)
    m64 = offs_m.to(tl.int64)
    n64 = offs_n.to(tl.int64)
    dk64 = offs_dk.to(tl.int64)
    dv64 = offs_dv.to(tl.int64)
    row_ok = offs_m < L

    q = _load2(Q + b * sqn + m64[:, None] * sql + dk64[None, :] * sqc,
               offs_m, L, offs_dk, CK, True, CK < DK)                     # [BM, DK]
    do = _load2(dOut + b * sdn + m64[:, None] * sdl + dv64[None, :] * sdc,
                offs_m, L, offs_dv, CV, True, CV < DV)                    # [BM, DV]
    lse = tl.load(Lse + b * L + m64, mask=row_ok, other=float("inf"))
    delta = tl.load(Delta + b * L + m64, mask=row_ok, other=0.0)
    k_ptrs = K + b * skn + dk64[:, None] * skc + n64[None, :] * skl       # [DK, BN]
    v_ptrs = V + b * svn + dv64[:, None] * svc + n64[None, :] * svl       # [DV, BN]

    dq = tl.zeros([BLOCK_M, DK], tl.float32)
    l_full = (L // BLOCK_N) * BLOCK_N
    dq = _dq_loop(dq, q, do, lse, delta, k_ptrs, v_ptrs, 0, l_full, L, offs_n, offs_dk, offs_dv,
                  skl, svl, CK, CV, DK, DV, BLOCK_N, False, EMU_BF16)
    tail = _i64(l_full)
    dq = _dq_loop(dq, q, do, lse, delta, k_ptrs + tail * skl, v_ptrs + tail * svl, l_full, L, L,
                  offs_n, offs_dk, offs_dv, skl, svl, CK, CV, DK, DV, BLOCK_N, True, EMU_BF16)

    tl.store(dQ + b * sdqn + m64[:, None] * sdql + dk64[None, :] * sdqc,
             _rne(dq, EMU_BF16).to(dQ.dtype.element_ty), mask=row_ok[:, None] & (offs_dk[None, :] < CK))


# --------------------------------------------------------------------------- configs

def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# (fp16/bf16 candidates, fp32 candidates): (BLOCK_M, BLOCK_N, num_warps, num_stages).
# Chosen so that, for the network's Ck=64, Cv=128, every candidate compiles for sm_90
# without register spills (checked offline with Triton 3.9's ptxas); fp32 runs exact
# FMA dots (no tensor cores), which need far more registers, hence the small tiles.
_FWD_CONFIGS = (    # BLOCK_M: query rows per program, BLOCK_N: streamed key rows
    [_cfg(128, 64, 8, 3), _cfg(128, 128, 8, 3), _cfg(128, 32, 4, 3), _cfg(64, 64, 4, 3),
     _cfg(64, 128, 8, 3), _cfg(64, 32, 4, 2)],
    [_cfg(32, 32, 8, 2), _cfg(64, 32, 8, 2), _cfg(32, 16, 4, 2), _cfg(16, 32, 4, 2),
     _cfg(16, 64, 4, 2), _cfg(32, 32, 4, 2)],
)
_DKDV_CONFIGS = (   # BLOCK_N: key rows per program, BLOCK_M: streamed query rows
    [_cfg(32, 128, 8, 3), _cfg(64, 128, 8, 3), _cfg(64, 64, 8, 3), _cfg(32, 64, 4, 3),
     _cfg(16, 128, 8, 3), _cfg(16, 64, 4, 2)],
    [_cfg(16, 32, 8, 2), _cfg(32, 16, 8, 2), _cfg(16, 16, 8, 2), _cfg(16, 16, 4, 2)],
)
_DQ_CONFIGS = (     # BLOCK_M: query rows per program, BLOCK_N: streamed key rows
    [_cfg(128, 32, 4, 3), _cfg(128, 64, 8, 3), _cfg(128, 32, 8, 3), _cfg(64, 64, 4, 3),
     _cfg(64, 32, 4, 3), _cfg(64, 16, 4, 2)],
    [_cfg(32, 16, 4, 2), _cfg(16, 32, 4, 2), _cfg(32, 64, 8, 2), _cfg(16, 16, 4, 2)],
)
_SMEM_BUDGET = 160 * 1024


def _pruner(config_sets, streamed):
    """Keep the configs for the input dtype whose streamed tiles fit the shared-memory budget.

    `streamed` names the block dim streamed through the loop ("BLOCK_N" or "BLOCK_M").
    """
    half_cfgs, fp32_cfgs = config_sets

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        esize = args["Q"].element_size()
        wanted = fp32_cfgs if esize == 4 else half_cfgs
        chosen = [c for c in configs if any(c is w for w in wanted)]
        width = _pad(args["Q"].shape[1]) + _pad(args["V"].shape[1])
        fits = [c for c in chosen
                if max(c.num_stages, 1) * c.kwargs[streamed] * width * esize <= _SMEM_BUDGET]
        if fits:
            return fits
        return [min(chosen, key=lambda c: c.kwargs[streamed] * max(c.num_stages, 1))]

    return prune


def _tuned(kernel, config_sets, streamed):
    return triton.autotune(configs=config_sets[0] + config_sets[1], key=["CK", "CV"],
                           prune_configs_by={"early_config_prune": _pruner(config_sets, streamed)})(kernel)


if not _AUTOTUNE:
    _fwd_kernel, _dkdv_kernel, _dq_kernel = _in_scale_fwd, _in_scale_bwd_dkdv, _in_scale_bwd_dq
else:
    _fwd_kernel = _tuned(_in_scale_fwd, _FWD_CONFIGS, "BLOCK_N")
    _dkdv_kernel = _tuned(_in_scale_bwd_dkdv, _DKDV_CONFIGS, "BLOCK_M")
    _dq_kernel = _tuned(_in_scale_bwd_dq, _DQ_CONFIGS, "BLOCK_N")


def _launch(kernel, grid_of, args, meta):
    """Launch `kernel`: the autotuned config, or a fixed one (interpreter, CSNLN_TRITON_AUTOTUNE=0)."""
    if not _AUTOTUNE:
        blocks = {"BLOCK_M": _INTERP_BLOCK_M, "BLOCK_N": _INTERP_BLOCK_N}
        kernel[grid_of(blocks)](*args, **meta, **blocks)
    else:
        kernel[grid_of](*args, **meta)


# --------------------------------------------------------------------------- launchers

def _pad(c):
    return max(16, triton.next_power_of_2(c))


def _new(shape, like, dtype=None):
    dtype = like.dtype if dtype is None else dtype
    if _POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _device_guard(t):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _meta(ck, cv, dtype):
    return dict(CK=ck, CV=cv, DK=_pad(ck), DV=_pad(cv),
                EMU_BF16=bool(_INTERPRET and dtype == torch.bfloat16))


def _in_scale_forward(q, k, v):
    """q, k [N, Ck, L], v [N, Cv, L] (strided views) -> out [N, Cv, L] contiguous, lse [N, L] fp32."""
    n, ck, length = q.shape
    cv = v.shape[1]
    out = _new((n, cv, length), v)
    lse = _new((n, length), v, torch.float32)
    if n and length:
        with _device_guard(q):
            _launch(_fwd_kernel, lambda m: (triton.cdiv(length, m["BLOCK_M"]), n),
                    (q, k, v, out, lse, length, *q.stride(), *k.stride(), *v.stride(), *out.stride()),
                    _meta(ck, cv, q.dtype))
    return out, lse


def _in_scale_backward(q, k, v, out, lse, do, need_dq=True, need_dkdv=True):
    """All [N, C, L] (strided); returns dq, dk, dv contiguous in the input dtype
    (None for the ones not needed)."""
    n, ck, length = q.shape
    cv = v.shape[1]
    dq = _new(q.shape, q) if need_dq else None
    dk, dv = (_new(k.shape, k), _new(v.shape, v)) if need_dkdv else (None, None)
    if not (n and length):
        return tuple(None if t is None else t.zero_() for t in (dq, dk, dv))
    delta = _new((n, length), q, torch.float32)
    meta = _meta(ck, cv, q.dtype)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    with _device_guard(q):
        block = 16 if _INTERPRET else max(16, 4096 // meta["DV"])
        _in_scale_bwd_delta[(triton.cdiv(length, block), n)](
            out, do, delta, length, *out.stride(), *do.stride(),
            CV=cv, DV=meta["DV"], BLOCK_M=block)
        if need_dkdv:
            _launch(_dkdv_kernel, lambda m: (triton.cdiv(length, m["BLOCK_N"]), n),
                    (q, k, v, do, lse, delta, dk, dv, length, *strides, *dk.stride(), *dv.stride()),
                    meta)
        if need_dq:
            _launch(_dq_kernel, lambda m: (triton.cdiv(length, m["BLOCK_M"]), n),
                    (q, k, v, do, lse, delta, dq, length, *strides, *dq.stride()), meta)
    return dq, dk, dv


class _InScaleAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        """q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W]."""
        n, _, h, w = q.shape
        qf, kf, vf = q.flatten(2), k.flatten(2), v.flatten(2)
        out, lse = _in_scale_forward(qf, kf, vf)
        ctx.save_for_backward(qf, kf, vf, out, lse)
        ctx.shapes = (q.shape, k.shape, v.shape)
        return out.view(n, v.shape[1], h, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qf, kf, vf, out, lse = ctx.saved_tensors
        do = grad_out.to(out.dtype).flatten(2)
        need_dq, need_dk, need_dv = ctx.needs_input_grad[:3]
        grads = _in_scale_backward(qf, kf, vf, out, lse, do, need_dq, need_dk or need_dv)
        return tuple(None if g is None or not need else g.view(shape)
                     for g, need, shape in zip(grads, (need_dq, need_dk, need_dv), ctx.shapes))


def in_scale_attention_triton(q, k, v):
    """Fused Triton in-scale attention: q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W].

    Differentiable in q, k, v. Under autocast the inputs are cast to the autocast
    dtype first, like a matmul. fp32, fp16 and bf16; Ck, Cv up to 256.
    """
    if not (q.is_cuda or (_INTERPRET and q.device.type == "cpu")):
        raise RuntimeError(f"in_scale_attention_triton: tensors on {q.device} need CUDA "
                           "(or CPU with TRITON_INTERPRET=1 set before kernels.in_scale_triton "
                           "was imported)")
    cast = autocast_dtype(q.device.type)
    if cast is not None:
        q, k, v = (t.to(cast) for t in (q, k, v))
    if q.dtype not in _DTYPES:
        raise ValueError(f"in_scale_attention_triton: dtype {q.dtype} is not supported "
                         "(float32, float16, bfloat16); use backend=\"torch\"")
    if max(q.shape[1], v.shape[1]) > _MAX_CHANNELS:
        raise ValueError(f"in_scale_attention_triton: channels Ck={q.shape[1]}, Cv={v.shape[1]} "
                         f"exceed {_MAX_CHANNELS}; use backend=\"torch\"")
    return _InScaleAttention.apply(q, k, v)
