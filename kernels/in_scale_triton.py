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
* Backward (flash-attention-2): `_bwd_delta_kernel` computes
  delta = rowsum(dO * O); `_bwd_kernel` walks the query blocks for one key block,
  recomputing S and P from q, k and lse once: dk, dv accumulate in registers, and
  each block's dq share dS.k is added to an fp32 [N, Ck, L] buffer with atomics
  (summation order on a GPU varies run to run). Everything accumulates in fp32;
  grads are stored in the input dtype.
* Head dims Ck, Cv (1..256) are padded to powers of two >= 16 with masks; L is a
  plain runtime int (`do_not_specialize`), so a new H*W does not recompile. Key and
  query loops run over full blocks without L masks, then one masked tail block.
* fp32 inputs use exact fp32 products (`input_precision="ieee"`, no TF32); fp16/bf16
  inputs feed the tensor cores with fp32 accumulation (P and dS are rounded to the
  input dtype before their matmuls, as in flash-attention).
* On GPU the block sizes are autotuned per (Ck, Cv, dtype, power-of-two bucket of L:
  `L_BUCKET`, an argument the kernels only carry for the key); the first call of each key
  benchmarks the candidates, pruned by dtype and shared memory.
  Under TRITON_INTERPRET=1 or CSNLN_TRITON_AUTOTUNE=0 (decided once at import) a fixed
  small config is launched. Under the interpreter bf16 runs with fp32 dots of the bf16 tiles and emulated round-to-nearest casts
  (EMU_BF16): the interpreter's bf16 dot is wrong and its fp32->bf16 cast truncates.
* Offsets that scale with the batch or with L, and the loops' pointer steps, are
  64-bit.
"""
import torch
import triton
import triton.language as tl

from . import _triton_common as tc
from ._triton_common import cast, mma

_MAX_CHANNELS = 256

LOG2E = tl.constexpr(tc.LOG2E)


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
def _i64(x):
    """x as an int64 scalar (x: an int32 scalar or a constexpr, e.g. a stride specialised to 1)."""
    return tl.full([], 0, tl.int64) + x


# --------------------------------------------------------------------------- forward

@triton.jit
def _fwd_loop(acc, m_i, l_i, q, k_ptrs, v_ptrs, start, end, L, offs_n, offs_dk, offs_dv,
              sk_l, sv_l, CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
              BLOCK_N: tl.constexpr, MASK_N: tl.constexpr, EMU_BF16: tl.constexpr):
    """Online-softmax sweep over key blocks [start, end); k_ptrs/v_ptrs point at `start`."""
    k_step = _i64(sk_l) * BLOCK_N
    v_step = _i64(sv_l) * BLOCK_N
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        kt = _load2(k_ptrs, offs_dk, CK, cols, L, CK < DK, MASK_N)   # [DK, BN]
        v = _load2(v_ptrs, cols, L, offs_dv, CV, MASK_N, CV < DV)    # [BN, DV]
        s = mma(q, kt, None, EMU_BF16)                                # [BM, BN] fp32
        if MASK_N:
            s = tl.where(cols[None, :] < L, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2((m_i - m_new) * LOG2E)
        p = tl.exp2((s - m_new[:, None]) * LOG2E)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = mma(cast(p, v.dtype, EMU_BF16), v, acc * alpha[:, None], EMU_BF16)
        m_i = m_new
        k_ptrs += k_step
        v_ptrs += v_step
    return acc, m_i, l_i


@triton.jit(do_not_specialize=["L", "L_BUCKET"])
def _fwd_kernel(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, L,
                  sq_n, sq_c, sq_l, sk_n, sk_c, sk_l, sv_n, sv_c, sv_l, so_n, so_c, so_l, L_BUCKET,
                  CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                  EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """q_ptr, k_ptr [N, CK, L], v_ptr, out_ptr [N, CV, L] (strided), lse_ptr [N, L] fp32 contiguous.
    L_BUCKET: unused (autotune key). Grid (cdiv(L, BLOCK_M), N).
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

    q = _load2(q_ptr + b * sq_n + m64[:, None] * sq_l + dk64[None, :] * sq_c,
               offs_m, L, offs_dk, CK, True, CK < DK)                     # [BM, DK]
    k_ptrs = k_ptr + b * sk_n + dk64[:, None] * sk_c + n64[None, :] * sk_l       # [DK, BN]
    v_ptrs = v_ptr + b * sv_n + n64[:, None] * sv_l + dv64[None, :] * sv_c       # [BN, DV]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DV], tl.float32)
    l_full = (L // BLOCK_N) * BLOCK_N
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, k_ptrs, v_ptrs, 0, l_full, L, offs_n, offs_dk,
                              offs_dv, sk_l, sv_l, CK, CV, DK, DV, BLOCK_N, False, EMU_BF16)
    tail = _i64(l_full)
    acc, m_i, l_i = _fwd_loop(acc, m_i, l_i, q, k_ptrs + tail * sk_l, v_ptrs + tail * sv_l, l_full, L,
                              L, offs_n, offs_dk, offs_dv, sk_l, sv_l, CK, CV, DK, DV, BLOCK_N, True,
                              EMU_BF16)

    out = acc / l_i[:, None]
    row_ok = offs_m < L
    o_ptrs = out_ptr + b * so_n + m64[:, None] * so_l + dv64[None, :] * so_c
    tl.store(o_ptrs, cast(out, out_ptr.dtype.element_ty, EMU_BF16), mask=row_ok[:, None] & (offs_dv[None, :] < CV))
    tl.store(lse_ptr + b * L + m64, m_i + tl.log(l_i), mask=row_ok)


# --------------------------------------------------------------------------- backward

@triton.jit(do_not_specialize=["L"])
def _bwd_delta_kernel(out_ptr, do_ptr, delta_ptr, L, so_n, so_c, so_l, sdo_n, sdo_c, sdo_l,
                        CV: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_ptr[n, l] = sum_c do_ptr[n, c, l] * out_ptr[n, c, l]; out_ptr, do_ptr [N, CV, L], delta_ptr [N, L] fp32.

    Grid (cdiv(L, BLOCK_M), N).
    """
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, DV)
    m64 = offs_m.to(tl.int64)
    dv64 = offs_dv.to(tl.int64)
    o = _load2(out_ptr + b * so_n + m64[:, None] * so_l + dv64[None, :] * so_c,
               offs_m, L, offs_dv, CV, True, CV < DV)
    do = _load2(do_ptr + b * sdo_n + m64[:, None] * sdo_l + dv64[None, :] * sdo_c,
                offs_m, L, offs_dv, CV, True, CV < DV)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(delta_ptr + b * L + m64, delta, mask=offs_m < L)


@triton.jit
def _bwd_loop(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, dq_ptrs, start, end, L, offs_m,
              offs_dk, offs_dv, sq_l, sdo_l, CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr,
              DV: tl.constexpr, BLOCK_M: tl.constexpr, MASK_M: tl.constexpr, NEED_DQ: tl.constexpr,
              EMU_BF16: tl.constexpr):
    """One key block over query blocks [start, end) (transposed scores): accumulate dk, dv and
    add each query block's dq share to dq_ptrs (fp32 [BM, DK] tile pointers) atomically."""
    q_step = _i64(sq_l) * BLOCK_M
    do_step = _i64(sdo_l) * BLOCK_M
    dq_ok = offs_dk[None, :] < CK
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
        st = mma(k, tl.trans(q), None, EMU_BF16)                         # [BN, BM]
        pt = tl.exp2((st - lse[None, :]) * LOG2E)
        dv = mma(cast(pt, do.dtype, EMU_BF16), do, dv, EMU_BF16)
        dpt = mma(v, tl.trans(do), None, EMU_BF16)                       # [BN, BM]
        dst = cast(pt * (dpt - delta[None, :]), q.dtype, EMU_BF16)
        dk = mma(dst, q, dk, EMU_BF16)
        if NEED_DQ:
            dq = mma(tl.trans(dst), k, None, EMU_BF16)                   # [BM, DK]
            if MASK_M:
                tl.atomic_add(dq_ptrs, dq, mask=(rows[:, None] < L) & dq_ok, sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq, mask=dq_ok, sem="relaxed")
        q_ptrs += q_step
        do_ptrs += do_step
        dq_ptrs += BLOCK_M
        lse_ptrs += BLOCK_M
        delta_ptrs += BLOCK_M
    return dk, dv


@triton.jit(do_not_specialize=["L", "L_BUCKET"])
def _bwd_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, dk_ptr, dv_ptr, L,
                sq_n, sq_c, sq_l, sk_n, sk_c, sk_l, sv_n, sv_c, sv_l, sdo_n, sdo_c, sdo_l,
                sdk_n, sdk_c, sdk_l, sdv_n, sdv_c, sdv_l, L_BUCKET,
                CK: tl.constexpr, CV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                NEED_DQ: tl.constexpr, EMU_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dk_ptr [N, CK, L], dv_ptr [N, CV, L] (strided) of one key block per program; dq_ptr
    [N, CK, L] fp32 contiguous, zeroed, accumulated over key blocks (when NEED_DQ).
    L_BUCKET: unused (autotune key). Grid (cdiv(L, BLOCK_N), N)."""
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
    L64 = _i64(L)

    k = _load2(k_ptr + b * sk_n + n64[:, None] * sk_l + dk64[None, :] * sk_c,
               offs_n, L, offs_dk, CK, True, CK < DK)                     # [BN, DK]
    v = _load2(v_ptr + b * sv_n + n64[:, None] * sv_l + dv64[None, :] * sv_c,
               offs_n, L, offs_dv, CV, True, CV < DV)                     # [BN, DV]
    q_ptrs = q_ptr + b * sq_n + m64[:, None] * sq_l + dk64[None, :] * sq_c       # [BM, DK]
    do_ptrs = do_ptr + b * sdo_n + m64[:, None] * sdo_l + dv64[None, :] * sdo_c   # [BM, DV]
    dq_ptrs = dq_ptr + b * CK * L64 + m64[:, None] + dk64[None, :] * L64          # [BM, DK]
    lse_ptrs = lse_ptr + b * L + m64
    delta_ptrs = delta_ptr + b * L + m64

    dk = tl.zeros([BLOCK_N, DK], tl.float32)
    dv = tl.zeros([BLOCK_N, DV], tl.float32)
    l_full = (L // BLOCK_M) * BLOCK_M
    dk, dv = _bwd_loop(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, dq_ptrs, 0, l_full, L,
                       offs_m, offs_dk, offs_dv, sq_l, sdo_l, CK, CV, DK, DV, BLOCK_M, False, NEED_DQ,
                       EMU_BF16)
    tail = _i64(l_full)
    dk, dv = _bwd_loop(dk, dv, k, v, q_ptrs + tail * sq_l, do_ptrs + tail * sdo_l, lse_ptrs + tail,
                       delta_ptrs + tail, dq_ptrs + tail, l_full, L, L, offs_m, offs_dk, offs_dv, sq_l,
                       sdo_l, CK, CV, DK, DV, BLOCK_M, True, NEED_DQ, EMU_BF16)

    row_ok = offs_n[:, None] < L
    tl.store(dk_ptr + b * sdk_n + n64[:, None] * sdk_l + dk64[None, :] * sdk_c,
             cast(dk, dk_ptr.dtype.element_ty, EMU_BF16), mask=row_ok & (offs_dk[None, :] < CK))
    tl.store(dv_ptr + b * sdv_n + n64[:, None] * sdv_l + dv64[None, :] * sdv_c,
             cast(dv, dv_ptr.dtype.element_ty, EMU_BF16), mask=row_ok & (offs_dv[None, :] < CV))


# --------------------------------------------------------------------------- configs

def _cfg(bm, bn, warps, stages):
    return tc.config(warps, stages, BLOCK_M=bm, BLOCK_N=bn)


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
_BWD_CONFIGS = (    # BLOCK_N: key rows per program, BLOCK_M: streamed query rows
    [_cfg(32, 128, 8, 3), _cfg(32, 64, 8, 3), _cfg(32, 64, 4, 3),
     _cfg(16, 128, 8, 3), _cfg(16, 64, 4, 2)],
    [_cfg(16, 32, 8, 2), _cfg(32, 16, 8, 2), _cfg(16, 16, 8, 2), _cfg(16, 16, 4, 2)],
)
_SMEM_BUDGET = 160 * 1024


def _pruner(config_sets, streamed):
    """Keep the configs for the input dtype whose streamed tiles fit the shared-memory budget.

    `streamed` names the block dim streamed through the loop ("BLOCK_N" or "BLOCK_M").
    """
    half_cfgs, fp32_cfgs = config_sets

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        esize = args["q_ptr"].element_size()
        wanted = fp32_cfgs if esize == 4 else half_cfgs
        chosen = [c for c in configs if any(c is w for w in wanted)]
        width = tc.pad_channels(args["q_ptr"].shape[1]) + tc.pad_channels(args["v_ptr"].shape[1])
        fits = [c for c in chosen
                if max(c.num_stages, 1) * c.kwargs[streamed] * width * esize <= _SMEM_BUDGET]
        if fits:
            return fits
        return [min(chosen, key=lambda c: c.kwargs[streamed] * max(c.num_stages, 1))]

    return prune


# name -> (autotune candidates, fixed config for the interpreter / CSNLN_TRITON_AUTOTUNE=0)
_CONFIGS = {"fwd": (_FWD_CONFIGS[0] + _FWD_CONFIGS[1], dict(BLOCK_M=16, BLOCK_N=16)),
            "bwd": (_BWD_CONFIGS[0] + _BWD_CONFIGS[1], dict(BLOCK_M=16, BLOCK_N=16))}
_KEY = ["CK", "CV", "L_BUCKET"]
_KERNELS = {name: tc.tuned(kernel, _CONFIGS[name][0], key=_KEY, prune=_pruner(config_sets, streamed))
            for name, kernel, config_sets, streamed in (("fwd", _fwd_kernel, _FWD_CONFIGS, "BLOCK_N"),
                                                         ("bwd", _bwd_kernel, _BWD_CONFIGS, "BLOCK_M"))}


def _launch(name, grid_of, args, meta):
    tc.launch(_KERNELS[name], _CONFIGS[name][1], grid_of, args, meta)


# --------------------------------------------------------------------------- launchers

def _new(shape, like, dtype=None):
    return tc.new_buffer(shape, like.dtype if dtype is None else dtype, like.device)


def _meta(ck, cv, dtype, length):
    return dict(L_BUCKET=tc.length_bucket(length), CK=ck, CV=cv, DK=tc.pad_channels(ck),
                DV=tc.pad_channels(cv), EMU_BF16=tc.emulate_bf16(dtype))


def _in_scale_forward(q, k, v, out):
    """q, k [N, Ck, L], v [N, Cv, L] (strided views) -> out (written: [N, Cv, L], any strides),
    lse [N, L] fp32."""
    n, ck, length = q.shape
    cv = v.shape[1]
    lse = _new((n, length), v, torch.float32)
    if n and length:
        with tc.device_guard(q):
            _launch("fwd", lambda m: (tc.cdiv(length, m["BLOCK_M"]), n),
                    (q, k, v, out, lse, length, *q.stride(), *k.stride(), *v.stride(), *out.stride()),
                    _meta(ck, cv, q.dtype, length))
    return out, lse


def _in_scale_backward(q, k, v, out, lse, do, need_dq=True, need_dkdv=True):
    """All [N, C, L] (strided); returns dq, dk, dv contiguous in the input dtype
    (None for the ones not needed)."""
    n, ck, length = q.shape
    cv = v.shape[1]
    # dq accumulates in fp32 over the key blocks: the buffer must start at zero.
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device) if need_dq else q.new_empty(0)
    dk, dv = _new(k.shape, k), _new(v.shape, v)   # written whenever the kernel runs
    if n and length:
        delta = _new((n, length), q, torch.float32)
        meta = _meta(ck, cv, q.dtype, length)
        with tc.device_guard(q):
            block = 16 if tc.INTERPRET else max(16, 4096 // meta["DV"])
            _bwd_delta_kernel[(tc.cdiv(length, block), n)](
                out, do, delta, length, *out.stride(), *do.stride(),
                CV=cv, DV=meta["DV"], BLOCK_M=block)
            _launch("bwd", lambda m: (tc.cdiv(length, m["BLOCK_N"]), n),
                    (q, k, v, do, lse, delta, dq, dk, dv, length, *q.stride(), *k.stride(), *v.stride(),
                     *do.stride(), *dk.stride(), *dv.stride()),
                    dict(meta, NEED_DQ=need_dq))
    else:
        dk.zero_(), dv.zero_()
    dq = dq.to(q.dtype) if need_dq else None
    return (dq, dk, dv) if need_dkdv else (dq, None, None)


# --------------------------------------------------------------------------- custom ops
# torch.library ops, so that torch.compile calls the kernels as opaque ops (no graph break).

@torch.library.custom_op("csnln::in_scale_attention_fwd", mutates_args=())
@tc.without_autocast
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [N, Ck, H, W], v [N, Cv, H, W] -> out [N, Cv, H, W], lse [N, H*W] (fp32)."""
    n, _, h, w = q.shape
    out = tc.new_output((n, v.shape[1], h, w), v)
    _, lse = _in_scale_forward(q.flatten(2), k.flatten(2), v.flatten(2), out.flatten(2))
    return out, lse


@_fwd_op.register_fake
def _(q, k, v):
    n, _, h, w = q.shape
    return tc.new_output((n, v.shape[1], h, w), v), q.new_empty(n, h * w, dtype=torch.float32)


@torch.library.custom_op("csnln::in_scale_attention_bwd", mutates_args=())
@tc.without_autocast
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, need_dq: bool, need_dk: bool,
            need_dv: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _in_scale_backward(q.flatten(2), k.flatten(2), v.flatten(2), out.flatten(2), lse,
                               grad_out.to(out.dtype).flatten(2), need_dq, need_dk or need_dv)
    grads = [None if g is None or not need else g.view(x.shape)
             for g, need, x in zip(grads, (need_dq, need_dk, need_dv), (q, k, v))]
    return tc.grads_or_empty(grads, (q, k, v))


@_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, need_dq, need_dk, need_dv):
    return tc.fake_grads((q, k, v), (need_dq, need_dk, need_dv))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)   # q, k, v, out and the row log-sum-exp


def _backward_of_fwd_op(ctx, grad_out, _grad_lse):
    needs = ctx.needs_input_grad[:3]
    return tc.needed(_bwd_op(grad_out, *ctx.saved_tensors, *needs), needs)


_fwd_op.register_autograd(_backward_of_fwd_op, setup_context=_setup_context)


def in_scale_attention_triton(q, k, v):
    """Fused Triton in-scale attention: q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W].

    Differentiable in q, k, v. Under autocast the inputs are cast to the autocast
    dtype first, like a matmul. fp32, fp16 and bf16; Ck, Cv up to 256.
    """
    q, k, v = tc.prepare_inputs("in_scale_attention_triton", q, k, v)
    if max(q.shape[1], v.shape[1]) > _MAX_CHANNELS:
        raise ValueError(f"in_scale_attention_triton: channels Ck={q.shape[1]}, Cv={v.shape[1]} "
                         f"exceed {_MAX_CHANNELS}; use backend=\"torch\"")
    return _fwd_op(q, k, v)[0]
