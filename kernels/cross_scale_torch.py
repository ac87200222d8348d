"""PyTorch reference of the cross-scale attention, chunked over bands of query rows.

Per image: queries are the zero-padded 3x3 neighbourhoods of q; keys the 3x3
neighbourhoods of k, L2-normalised with the norm floored at `KEY_NORM_FLOOR`;
P = softmax(softmax_scale * Q^T K) over the L keys; each key's value is the
(3s)x(3s) patch of v at stride s, padding s; the weighted patches are
overlap-added (transposed convolution, stride s, padding s) and divided by 6.
"""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

KEY_NORM_FLOOR = 9.999999747378752e-05  # float32(1e-4), the original `escape_NaN`
OUTPUT_DIVISOR = 6.0
DEFAULT_CHUNK_ELEMENTS = 1 << 26


def normalized_key_patches(k):
    """k [N, Ck, h, w] -> unit-norm (floored) 3x3 key patches [N, Ck*9, h*w]."""
    raw = F.unfold(k, 3, padding=1)
    return raw / raw.norm(dim=1, keepdim=True).clamp_min(KEY_NORM_FLOOR)


def _band(q_band, keys, values, scale, softmax_scale):
    """Output rows of one band of query rows.

    q_band [N, Ck, R+2, W+2] (zero-padded query rows y0-1 .. y1), keys
    [N, Ck*9, L], values [N, Cv*(3s)^2, L] -> [N, Cv, (R+2)*s, W*s].
    """
    n, _, rows2, width2 = q_band.shape
    queries = F.unfold(q_band, 3)                                   # [N, Ck*9, R*W]
    scores = queries.transpose(1, 2) @ keys                         # [N, R*W, L]
    probs = torch.softmax(scores * softmax_scale, dim=-1)
    cols = values @ probs.transpose(1, 2)                           # [N, Cv*(3s)^2, R*W]
    return F.fold(cols, (rows2 * scale, (width2 - 2) * scale), 3 * scale,
                  padding=(0, scale), stride=scale)


def cross_scale_attention_torch(q, k, v, scale, softmax_scale=10.0,
                                chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, s*H, s*W].

    Query rows are processed in bands so that neither the score tensor nor the
    column tensor of a band holds more than `chunk_elements` elements; under
    autograd each band is recomputed in the backward pass instead of stored.
    """
    n, _, h, w = q.shape
    cv = v.shape[1]
    s = scale
    keys = normalized_key_patches(k)
    values = F.unfold(v, 3 * s, padding=s, stride=s)                # [N, Cv*(3s)^2, L]
    per_query = max(keys.shape[2], values.shape[1])
    rows = max(1, chunk_elements // (n * w * per_query))
    q_padded = F.pad(q, (1, 1, 1, 1))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    out = q.new_zeros(n, cv, (h + 2) * s, w * s, dtype=v.dtype)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        band_in = (q_padded[:, :, y0:y1 + 2], keys, values, s, softmax_scale)
        if grad and rows < h:
            band = checkpoint(_band, *band_in, use_reentrant=False)
        else:
            band = _band(*band_in)
        out[:, :, y0 * s:(y1 + 2) * s] += band
    return out[:, :, s:(h + 1) * s] / OUTPUT_DIVISOR
