"""Tiled super-resolution that blends: any image size at the memory of one tile, without seams.

`upscale_tiled(upscaler, lr, tile, overlap)` runs `upscaler` ([1, C, h, w] -> [1, C, s*h, s*w],
e.g. a CSNLN module or an onnxruntime session wrapped in a function) on overlapping tiles of
`lr` [1, C, H, W] and blends the overlaps with a raised-cosine window, so that every output
pixel is a weighted mean of the tiles that cover it, with weights that fall smoothly to zero
towards each tile's inner borders. Tile sizes and overlaps are in LR pixels.
"""
import math

import torch

from .config import ConfigError

PATCH = 3   # the attention's patch side: the smallest tile holds one patch of the downscaled map


def min_tile(multiple):
    """The smallest tile side: one 3x3 patch of the attention's map, downscaled by `multiple`."""
    return PATCH * multiple


def check_tiling(tile, overlap, multiple):
    """ConfigError unless `tile` (0: whole images) and `overlap` (LR pixels) suit a network whose
    LR sides must be multiples of `multiple` (its attention scale)."""
    if tile < 0 or overlap < 0:
        raise ConfigError(f"--tile and --tile_overlap must be >= 0, got {tile} and {overlap}")
    if tile == 0:
        return
    if tile < min_tile(multiple):
        raise ConfigError(f"--tile {tile} is too small: tiles need at least {min_tile(multiple)} LR pixels a side "
                          f"(a {PATCH}x{PATCH} patch of the map the attention downscales by {multiple})")
    if overlap >= tile:
        raise ConfigError(f"--tile_overlap {overlap} must be smaller than the tile ({tile} LR pixels)")


def tile_starts(size, tile, overlap, multiple=1):
    """Offsets of the tiles along one side of `size` pixels (a multiple of `multiple`) -> (tile
    length, [start, ...]). Tiles of `tile` pixels (rounded down to `multiple`; the whole side
    when that is longer than it) step by tile - overlap rounded down to `multiple`, and the last
    one ends at the side's end, so neighbours overlap by at least `overlap` pixels."""
    length = min(size, max(multiple, tile // multiple * multiple))
    if length == size:
        return length, [0]
    step = max(multiple, (length - overlap) // multiple * multiple)
    count = math.ceil((size - length) / step) + 1
    return length, [min(i * step, size - length) for i in range(count)]


def ramp_weights(length, starts, scale, dtype=torch.float32, device=None):
    """Blend weights of one side's tiles in output pixels: [len(starts), scale*length].

    Each tile's weight rises as a raised cosine across the part it shares with the previous
    tile and falls across the part it shares with the next one (1 elsewhere and at the
    image's own borders; where the two parts meet, their product), so weights are continuous
    and strictly positive."""
    weights = torch.ones(len(starts), scale * length, dtype=dtype, device=device)
    for i, start in enumerate(starts):
        if i > 0:
            shared = scale * (starts[i - 1] + length - start)
            weights[i, :shared] *= _raised_cosine(shared, dtype, device)
        if i + 1 < len(starts):
            shared = scale * (start + length - starts[i + 1])
            weights[i, scale * length - shared:] *= _raised_cosine(shared, dtype, device).flip(0)
    return weights


def _raised_cosine(n, dtype, device):
    """n values rising from near 0 to near 1: sin^2 at the pixel centres of [0, pi/2]."""
    t = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n
    return torch.sin(t * (math.pi / 2)).pow(2).to(dtype)


def upscale_tiled(upscaler, lr, tile, overlap, multiple=None):
    """Super-resolve `lr` [1, C, H, W] tile by tile -> [1, C, s*H, s*W] (s read from the output).

    `upscaler` maps [1, C, h, w] to [1, C', s*h, s*w]; H and W must be multiples of `multiple`
    (default: `upscaler.size_multiple`, else 1), and so is every tile's side and offset. Tiles
    are `tile` x `tile` LR pixels (smaller along a side shorter than that: a tile at least as
    large as the image runs it whole), overlapping by at least `overlap`; the overlaps are
    blended (`ramp_weights`). Output in float32, or the upscaler's dtype when wider."""
    if multiple is None:
        multiple = int(getattr(upscaler, "size_multiple", 1))
    check_tiling(tile, overlap, multiple)
    _, _, height, width = lr.shape
    if height % multiple or width % multiple:
        raise ValueError(f"upscale_tiled: {height} x {width} is not a multiple of {multiple}; pad first")
    tile_h, rows = tile_starts(height, tile or height, overlap, multiple)
    tile_w, cols = tile_starts(width, tile or width, overlap, multiple)
    out = row_w = col_w = scale = None
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            sr = upscaler(lr[:, :, top:top + tile_h, left:left + tile_w])
            if out is None:
                scale = sr.shape[-1] // tile_w
                if sr.shape[-2:] != (scale * tile_h, scale * tile_w) or scale < 1:
                    raise ValueError(f"upscale_tiled: the upscaler gave {tuple(sr.shape)} for a tile of "
                                     f"{tile_h} x {tile_w}")
                dtype = torch.promote_types(sr.dtype, torch.float32)
                out = sr.new_zeros(1, sr.shape[1], scale * height, scale * width, dtype=dtype)
                row_w = ramp_weights(tile_h, rows, scale, dtype, sr.device)
                col_w = ramp_weights(tile_w, cols, scale, dtype, sr.device)
                total = sr.new_zeros(scale * height, scale * width, dtype=dtype)
            weight = row_w[i][:, None] * col_w[j][None, :]
            box = (slice(scale * top, scale * (top + tile_h)), slice(scale * left, scale * (left + tile_w)))
            out[:, :, box[0], box[1]] += sr.to(dtype) * weight
            total[box] += weight
    return out / total


def tile_edges(size, tile, overlap, multiple=1, scale=1):
    """Output pixel indices i (lines between pixels i - 1 and i) where a tile of `upscale_tiled`
    begins or ends inside a side of `size` LR pixels: where a seam would show."""
    length, starts = tile_starts(size, tile or size, overlap, multiple)
    return sorted({scale * e for start in starts for e in (start, start + length)} - {0, scale * size})
