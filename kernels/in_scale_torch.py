"""PyTorch reference of the in-scale non-local attention, chunked over queries.

out[n, :, p] = sum_j softmax_j(q[n, :, p] . k[n, :, j]) v[n, :, j], no scaling.
"""
import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_ELEMENTS = 1 << 26


def _attend(q_rows, k, v):
    """q_rows [N, R, Ck], k [N, Ck, L], v [N, L, Cv] -> [N, R, Cv]."""
    return torch.softmax(q_rows @ k, dim=-1) @ v


def chunk_rows(n, length, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Queries per chunk: a chunk's scores [N, rows, length] hold at most `chunk_elements`."""
    return max(1, chunk_elements // (n * length))


def workspace_elements(n, height, width, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Elements one forward call allocates at its peak beyond q, k, v and the output: three
    chunk-sized tensors (the scores, their softmax and its temporary; peak RSS on the CPU)."""
    length = height * width
    return 3 * n * min(length, chunk_rows(n, length, chunk_elements)) * length


def in_scale_attention_torch(q, k, v, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W].

    Queries are processed in chunks so that no score tensor holds more than
    `chunk_elements` elements; under autograd each chunk is recomputed in the
    backward pass (activation checkpointing) instead of being stored.
    """
    n, ck, h, w = q.shape
    cv = v.shape[1]
    length = h * w
    q_rows = q.reshape(n, ck, length).transpose(1, 2)
    keys = k.reshape(n, ck, length)
    values = v.reshape(n, cv, length).transpose(1, 2)
    rows = chunk_rows(n, length, chunk_elements)
    if rows >= length:
        out = _attend(q_rows, keys, values)
    else:
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        parts = []
        for start in range(0, length, rows):
            chunk = q_rows[:, start:start + rows]
            if grad:
                parts.append(checkpoint(_attend, chunk, keys, values, use_reentrant=False))
            else:
                parts.append(_attend(chunk, keys, values))
        out = torch.cat(parts, dim=1)
    return out.transpose(1, 2).reshape(n, cv, h, w)
