"""The memory one forward pass of CSNLN needs, and the largest tile that fits a budget.

`tile_bytes(net, h, w)` estimates the peak memory a no-grad forward pass over one LR tile of
h x w pixels allocates beyond the loaded model: the network's activations (the per-recurrence
HR estimates kept for the tail, their concatenation, one projection's transients) plus the larger
of the two attention operators' workspaces, taken from their band plans
(`kernels.attention_workspace_bytes`). `largest_tile` inverts it for `--max_memory_gb`.
"""
import torch

import kernels

from .config import ConfigError
from .tiling import min_tile

# Activation elements of one forward pass per LR pixel, in units of n_feats: LR_MAPS maps at LR
# size, and at HR size HR_MAPS plus 2 a recurrence (its estimate and its copy in the tail's
# concatenation). Measured peaks (peak RSS growth on the CPU, tests/test_memory.py) stay below.
LR_MAPS = 12
HR_MAPS = 12


def _attention_maps(net, h, w):
    """The (height, width) of the maps the attention runs on: the LR tile, and for x4 also the
    first stage's 2x map."""
    return [(h, w)] + ([(2 * h, 2 * w)] if net.scale == 4 else [])


def _chunk_elements(net):
    """The torch backend's chunk budget of a CSNLN module; an exported network's own (whole maps)."""
    if isinstance(net, torch.nn.Module):
        return net.SEM.multi_source_projection.up_attention.chunk_elements
    return net.chunk_elements


def tile_bytes(net, h, w, backend="torch", element_size=4):
    """Estimated peak bytes of one forward pass of `net` (a CSNLN, or an `OnnxNetwork`) over a
    [1, 3, h, w] tile, beyond the network itself; `backend` is the attention backend that runs
    ("torch" or "triton")."""
    feats, r, s, chunk = net.n_feats, net.scale, net.size_multiple, _chunk_elements(net)
    activations = feats * h * w * (LR_MAPS + r * r * (HR_MAPS + 2 * net.depth))
    attention = max(kernels.attention_workspace_bytes(op, 1, mh, mw, feats, scale=s, element_size=element_size,
                                                      backend=backend, chunk_elements=chunk)
                    for mh, mw in _attention_maps(net, h, w) for op in ("in_scale", "cross_scale"))
    return activations * element_size + attention


def largest_tile(net, budget_bytes, backend="torch", element_size=4, limit=4096):
    """The largest square tile side (a multiple of `net.size_multiple`, at most `limit`) whose
    `tile_bytes` fits `budget_bytes`; ConfigError when not even the smallest tile fits."""
    m = net.size_multiple
    smallest = min_tile(m)
    need = tile_bytes(net, smallest, smallest, backend, element_size)
    if need > budget_bytes:
        raise ConfigError(f"--max_memory_gb {budget_bytes / 2 ** 30:g}: no tile fits; the smallest tile "
                          f"({smallest} x {smallest} LR pixels) needs {need / 2 ** 30:.3g} GB")
    lo, hi = smallest // m, limit // m          # in units of m; tile_bytes grows with the side
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tile_bytes(net, mid * m, mid * m, backend, element_size) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo * m
