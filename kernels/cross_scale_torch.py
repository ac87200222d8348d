"""PyTorch cross-scale attention in the diagonal-stencil form, banded over query rows.

Per image, with h = H/s, w = W/s, L = h*w, a = softmax_scale, Vs = pixel_unshuffle(v, s)
[Cv*s*s, L], inv_n[l] = 1 / max(||3x3 patch of k at l||, KEY_NORM_FLOOR) and the nine taps
d_t = (dy, dx), dy, dx in {-1, 0, 1} (shared/notes/cross-scale-attention.md, last section):

    R       = q^T k                                    Gram matrix [HW, L], Ck multiply-adds a pair
    S[p, l] = a inv_n[l] sum_t R[p + d_t, l + d_t]     the 3x3-patch scores (zero padding)
    P       = softmax_l(S)
    P~[p,l] = sum_t P[p - d_t, l - d_t]                the overlap-add, moved onto P
    out     = pixel_shuffle(Vs P~^T / 6, s)            Cv*s*s multiply-adds a pair

This equals the paper's formulation (`reference.cross_scale_attention_reference`) exactly.
Query rows run in bands [y0, y1): a band needs P on rows y0-1 .. y1 and so R on rows
y0-2 .. y1+1 (clipped to the image); the Gram tile of a band holds at most `chunk_elements`
elements (at least one row). Under autograd each band is recomputed in the backward pass.
"""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

KEY_NORM_FLOOR = 9.999999747378752e-05  # float32(1e-4), the original `escape_NaN`
OUTPUT_DIVISOR = 6.0
DEFAULT_CHUNK_ELEMENTS = 1 << 26


def box3x3(x):
    """x [N, 1, h, w] -> the sum over each zero-padded 3x3 neighbourhood [N, 1, h, w]. Pooling,
    not a convolution with ones: cuDNN may run fp32 convolutions in TF32 (10-bit mantissas)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True) * 9


def key_norms_squared(k):
    """k [N, Ck, h, w] -> squared norms of the 3x3 zero-padded key patches [N, h*w]."""
    return box3x3(k.pow(2).sum(1, keepdim=True)).flatten(1)


def inv_key_norms(k):
    """k [N, Ck, h, w] -> 1 / max(||3x3 zero-padded patch||, floor) [N, h*w], differentiable.

    max(n, e) = sqrt(max(n^2, e^2)): the clamp comes before the root, so an all-zero patch
    has a finite (zero) gradient.
    """
    return key_norms_squared(k).clamp_min(KEY_NORM_FLOOR ** 2).rsqrt()


def _shift(size, d):
    """Destination and source slices of a shift by d along an axis of `size` (zero fill)."""
    return slice(max(0, -d), size - max(0, d)), slice(max(0, d), size - max(0, -d))


def diagonal_stencil(x, x_rows, y_rows, sign):
    """y[n, r, c, i, j] = sum_t x[n, r + sign*dy, c + sign*dx, i + sign*dy, j + sign*dx].

    x [N, b-a, W, h, w] holds the query-grid rows x_rows = (a, b); y [N, d-c, W, h, w] the
    rows y_rows = (c, d). Terms outside x's rows or outside the W x h x w grid are zero.
    The nine taps factor into three along (c, j) then three along (r, i): four shifted adds.
    The adjoint is the stencil with the rows swapped and the sign negated.
    """
    (a, b), (c, d) = x_rows, y_rows
    n, _, width, h, w = x.shape
    across = x.clone()                                  # sum over dx, on x's rows
    for dx in (-1, 1):
        (cd, cs), (jd, js) = _shift(width, sign * dx), _shift(w, sign * dx)
        across[:, :, cd, :, jd] += x[:, :, cs, :, js]
    inside = a <= c and d <= b                          # the dy = 0 tap covers every output row
    y = across[:, c - a:d - a].clone() if inside else x.new_zeros(n, d - c, width, h, w)
    for dy in (-1, 1) if inside else (-1, 0, 1):
        ey = sign * dy
        lo, hi = max(c, a - ey), min(d, b - ey)         # output rows whose source row is in x
        if lo < hi:
            id_, is_ = _shift(h, ey)
            y[:, lo - c:hi - c, :, id_] += across[:, lo + ey - a:hi + ey - a, :, is_]
    return y


class _Stencil(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_rows, y_rows, sign):
        ctx.rows = (x_rows, y_rows, sign)
        return diagonal_stencil(x, x_rows, y_rows, sign)

    @staticmethod
    def backward(ctx, grad):
        x_rows, y_rows, sign = ctx.rows
        return diagonal_stencil(grad, y_rows, x_rows, -sign), None, None, None


def _stencil(x, x_rows, y_rows, sign):
    """`diagonal_stencil`, through `_Stencil` (the adjoint stencil as its backward) only when
    autograd records: a plain trace (torch.onnx export) holds no Python autograd function."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Stencil.apply(x, x_rows, y_rows, sign)
    return diagonal_stencil(x, x_rows, y_rows, sign)


def band_rows(y0, y1, height, halo):
    """Rows y0-halo .. y1+halo-1, clipped to the image: (first, end)."""
    return max(0, y0 - halo), min(height, y1 + halo)


def band_height(n, height, width, scale, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Query rows per band: the Gram tile of a band and its 4 halo rows hold at most
    `chunk_elements` elements (at least one row)."""
    return max(1, chunk_elements // max(1, n * width * (height // scale) * (width // scale)) - 4)


def workspace_elements(n, height, width, scale, chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """Elements one forward call without autograd allocates at its peak beyond q, k, v and the
    output: three tensors of the largest band's Gram-tile size (in `_band`, a stencil's input,
    the Gram tile and then P, beside its two temporaries; under autograd S is kept too)."""
    rows = min(height, band_height(n, height, width, scale, chunk_elements) + 4)
    return 3 * n * rows * width * (height // scale) * (width // scale)


def _band(q_rows, k, inv_n, vs, y0, y1, height, softmax_scale):
    """Output columns of query rows [y0, y1): q_rows [N, Ck, rows, W] holds q on the rows
    band_rows(y0, y1, H, 2); k [N, Ck, h, w]; inv_n [N, L]; vs [N, Cv*s*s, L] (already / 6)
    -> [N, Cv*s*s, (y1-y0)*W]."""
    n, _, _, width = q_rows.shape
    h, w = k.shape[2:]
    r_rows, p_rows = band_rows(y0, y1, height, 2), band_rows(y0, y1, height, 1)
    gram = q_rows.flatten(2).transpose(1, 2) @ k.flatten(2)               # [N, rows*W, L]
    gram = gram.view(n, -1, width, h, w)
    scores = _stencil(gram, r_rows, p_rows, 1).flatten(3)
    del gram                                   # each `del` frees a Gram-tile-sized tensor early
    key_scale = (inv_n * softmax_scale)[:, None, None]
    scores = scores * key_scale if scores.requires_grad else scores.mul_(key_scale)
    probs = torch.softmax(scores, dim=-1).view(n, -1, width, h, w)
    del scores
    spread = _stencil(probs, p_rows, (y0, y1), -1)                 # P~ [N, y1-y0, W, h, w]
    return vs @ spread.view(n, (y1 - y0) * width, h * w).transpose(1, 2)


def cross_scale_attention_torch(q, k, v, scale, softmax_scale=10.0,
                                chunk_elements=DEFAULT_CHUNK_ELEMENTS):
    """q [N, Ck, H, W], k [N, Ck, H/s, W/s], v [N, Cv, H, W] -> [N, Cv, s*H, s*W] (v's dtype).

    Any device and dtype; differentiable in q, k, v. The Gram tile of a band of query rows
    (the largest tensor that grows with H*W*L) holds at most `chunk_elements` elements.
    """
    n, _, height, width = q.shape
    s = scale
    h, w = height // s, width // s
    if height == 0 or width == 0:
        return v.new_zeros(n, v.shape[1], 0, 0)
    inv_n = inv_key_norms(k)
    vs = F.pixel_unshuffle(v, s).flatten(2) / OUTPUT_DIVISOR              # [N, Cv*s*s, L], with the / 6
    rows = band_height(n, height, width, s, chunk_elements)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    cols = []
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        r0, r1 = band_rows(y0, y1, height, 2)
        band_in = (q[:, :, r0:r1], k, inv_n, vs, y0, y1, height, float(softmax_scale))
        if grad and rows < height:
            cols.append(checkpoint(_band, *band_in, use_reentrant=False))
        else:
            cols.append(_band(*band_in))
    out = torch.cat(cols, dim=2) if len(cols) > 1 else cols[0]
    # = F.pixel_shuffle(out, s), written as the permuting copy it is (2.5x faster on the CPU)
    out = out.view(n, -1, s, s, height, width).permute(0, 1, 4, 2, 5, 3)
    return out.reshape(n, out.shape[1], height * s, width * s)
