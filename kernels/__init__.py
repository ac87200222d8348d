"""The two CSNLN attention operators, with interchangeable backends.

`backend="torch"` is the chunked PyTorch backend (any device and dtype);
`backend="triton"` runs the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1);
`backend="auto"` picks Triton for CUDA tensors when it is installed and the torch backend
otherwise. `kernels.reference` holds the slow formulations both are tested against.
"""
from ._backend import BACKENDS, check_attention_inputs, resolve_backend
from . import cross_scale_torch, in_scale_torch
from .cross_scale_torch import (DEFAULT_CHUNK_ELEMENTS, KEY_NORM_FLOOR, OUTPUT_DIVISOR,
                                cross_scale_attention_torch)
from .in_scale_torch import in_scale_attention_torch

__all__ = ["in_scale_attention", "cross_scale_attention", "attention_workspace_bytes", "resolve_backend",
           "BACKENDS", "KEY_NORM_FLOOR", "OUTPUT_DIVISOR", "DEFAULT_CHUNK_ELEMENTS"]


def in_scale_attention(q, k, v, *, backend="auto", chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Non-local attention over all H*W positions: softmax(Q K^T) V, no scaling.

    q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W].
    `chunk_elements` bounds the score chunk of the torch backend.
    """
    check_attention_inputs("in_scale_attention", q, k, v)
    if q.shape[2:] != k.shape[2:] or q.shape[2:] != v.shape[2:]:
        raise ValueError("in_scale_attention: q, k, v need the same H, W, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if resolve_backend(backend, q) == "triton":
        from .in_scale_triton import in_scale_attention_triton
        return in_scale_attention_triton(q, k, v)
    return in_scale_attention_torch(q, k, v, chunk_elements=chunk_elements)


def cross_scale_attention(q, k, v, scale, *, softmax_scale=10.0, backend="auto",
                          chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Cross-scale attention: 3x3 query patches against normalised 3x3 key patches of
    the downscaled map, values are (3s)x(3s) patches overlap-added at stride s, / 6
    (both backends compute it in the diagonal-stencil form, Ck + Cv s^2 multiply-adds a pair).

    q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, s*H, s*W].
    `chunk_elements` bounds the Gram tile of a band of query rows in the torch backend.
    """
    check_attention_inputs("cross_scale_attention", q, k, v)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"cross_scale_attention: scale must be a positive int, got {scale!r}")
    n, _, h, w = q.shape
    if h % scale or w % scale:
        raise ValueError(f"cross_scale_attention: H x W = {h} x {w} must be divisible by scale {scale}")
    if tuple(k.shape[2:]) != (h // scale, w // scale):
        raise ValueError(f"cross_scale_attention: k must be [N, Ck, {h // scale}, {w // scale}] "
                         f"(q's H/s x W/s), got {tuple(k.shape)}")
    if v.shape[2:] != q.shape[2:]:
        raise ValueError(f"cross_scale_attention: v must have q's H x W, got {tuple(v.shape)} vs {tuple(q.shape)}")
    if resolve_backend(backend, q) == "triton":
        from .cross_scale_triton import cross_scale_attention_triton
        return cross_scale_attention_triton(q, k, v, scale, softmax_scale)
    return cross_scale_attention_torch(q, k, v, scale, softmax_scale, chunk_elements=chunk_elements)


def attention_workspace_bytes(op, n, height, width, channels, *, scale=1, element_size=4, backend="torch",
                              chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Bytes one forward call allocates at its peak beyond its inputs and output, from the band
    plan of `backend` ("torch" or "triton"): `op` "in_scale" or "cross_scale" on q [n, Ck, height,
    width] and v of `channels` channels, elements of `element_size` bytes. The Triton in-scale
    kernel keeps its scores on chip (0)."""
    if backend not in ("torch", "triton"):
        raise ValueError(f"backend must be torch or triton (resolved), got {backend!r}")
    if op == "in_scale":
        if backend == "triton":
            return 0
        return element_size * in_scale_torch.workspace_elements(n, height, width, chunk_elements)
    if op != "cross_scale":
        raise ValueError(f"op must be in_scale or cross_scale, got {op!r}")
    if backend == "torch":
        return element_size * cross_scale_torch.workspace_elements(n, height, width, scale, chunk_elements)
    from .cross_scale_triton import band_bytes, plan
    keys, values = (height // scale) * (width // scale), channels * scale * scale
    groups, bands = plan(n, height, width, keys, values, element_size, backward=False)
    images = max(b - a for a, b in groups)
    return max(images * band_bytes(y1 - y0, min(height, y1 + 1) - max(0, y0 - 1), width, keys, values, element_size,
                                   backward=False) for y0, y1 in bands)
