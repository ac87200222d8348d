"""Slow, obviously right formulations of both operators: the oracles of the tests and the
baselines of the benchmarks.

- `cross_scale_attention_reference`: the paper's formulation, a Python loop over the batch
  with conv2d (normalised 3x3 key patches as filters), softmax over the keys and
  conv_transpose2d with the (3s)x(3s) value patches, / 6.
- `cross_scale_attention_batched`: the same math as one unfold / bmm / softmax / bmm / fold over
  the whole batch (the ten-line PyTorch peer a user would write; an H*W x L score matrix).
- `in_scale_attention_reference`: torch's scaled_dot_product_attention, one head, scale 1.
"""
import torch
import torch.nn.functional as F

from .cross_scale_torch import KEY_NORM_FLOOR, OUTPUT_DIVISOR


def cross_scale_attention_reference(q, k, v, s, softmax_scale=10.0):
    """q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, sH, sW]."""
    out = []
    for qi, ki, vi in zip(q, k, v):
        keys = F.unfold(ki[None], 3, padding=1)[0].T.reshape(-1, ki.shape[0], 3, 3)
        norms = keys.flatten(1).norm(dim=1).clamp_min(KEY_NORM_FLOOR)
        scores = F.conv2d(F.pad(qi[None], (1, 1, 1, 1)), keys / norms[:, None, None, None])
        values = F.unfold(vi[None], 3 * s, padding=s, stride=s)[0].T.reshape(-1, vi.shape[0], 3 * s, 3 * s)
        probs = torch.softmax(scores * softmax_scale, dim=1)
        out.append(F.conv_transpose2d(probs, values, stride=s, padding=s)[0] / OUTPUT_DIVISOR)
    return torch.stack(out)


def cross_scale_attention_batched(q, k, v, s, softmax_scale=10.0):
    """q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, sH, sW]."""
    height, width = q.shape[2:]
    keys = F.unfold(k, 3, padding=1)                                          # [N, 9 Ck, L]
    keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(KEY_NORM_FLOOR)
    scores = F.unfold(q, 3, padding=1).transpose(1, 2) @ keys                # [N, HW, L]
    probs = torch.softmax(scores * softmax_scale, dim=-1)
    values = F.unfold(v, 3 * s, padding=s, stride=s)                         # [N, Cv 9 s^2, L]
    cols = values @ probs.transpose(1, 2)                                    # [N, Cv 9 s^2, HW]
    out = F.fold(cols, (height * s, width * s), 3 * s, padding=s, stride=s)
    return out / OUTPUT_DIVISOR


def in_scale_attention_reference(q, k, v):
    """q, k [N, Ck, H, W], v [N, Cv, H, W] -> [N, Cv, H, W] through one-head SDPA, scale 1."""
    n, cv, h, w = v.shape
    tokens = [t.flatten(2).transpose(1, 2)[:, None] for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*tokens, scale=1.0)
    return out[:, 0].transpose(1, 2).reshape(n, cv, h, w)
