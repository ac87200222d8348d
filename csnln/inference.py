"""Super-resolution of one image with a trained network: padding, tiling, self-ensemble, precision.

No file I/O here; `csnln.evaluate` and `eval.py` read and write the images.

`upscale(model, lr, scale)` takes a float tensor [1, 3, H, W] in [0, rgb_range] and returns
[1, 3, scale*H, scale*W], unquantised. The model can be any nn.Module mapping an LR batch to
the upscaled batch; `model.size_multiple` (1 when absent) is the multiple the LR height and
width are padded to.
"""
import contextlib
import sys

import torch
import torch.nn.functional as F

from kernels import resolve_backend

from .config import ConfigError
from .tiling import upscale_tiled

CHOP_SHAVE = 10
CHOP_MIN_SIZE = 3600  # the CSNLN code's forward_chop default (LR pixels per tile)
PRECISIONS = ("fp32", "fp16", "bf16")


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


def _quadrants(h, w, multiple, shave):
    """The four overlapping quadrants of an h x w tile (h, w multiples of `multiple`).

    As EDSR's forward_chop: halves h // 2, w // 2 and tile sides half + shave, here rounded
    up to `multiple` (and at most the tile itself) so the network accepts every quadrant.
    -> (h_half, w_half, h_size, w_size, [(top, left), ...] of top-left, top-right,
    bottom-left, bottom-right).
    """
    h_half, w_half = h // 2, w // 2
    h_size = min(_round_up(h_half + shave, multiple), h)
    w_size = min(_round_up(w_half + shave, multiple), w)
    origins = [(0, 0), (0, w - w_size), (h - h_size, 0), (h - h_size, w - w_size)]
    return h_half, w_half, h_size, w_size, origins


def _is_leaf(h, w, multiple, shave, min_size):
    if h * w < min_size:
        return True
    _, _, h_size, w_size, _ = _quadrants(h, w, multiple, shave)
    return (h_size, w_size) == (h, w)  # cannot shrink any more (very thin tiles): run as is


def chop_tiles(h, w, multiple=1, shave=CHOP_SHAVE, min_size=CHOP_MIN_SIZE):
    """The leaf tiles `forward_chop` runs the network on, as (top, left, height, width) LR boxes.

    A tile with fewer than `min_size` pixels is run whole; a larger one is split into four
    overlapping quadrants of (h // 2 + shave) x (w // 2 + shave), rounded up to `multiple`,
    and each quadrant is handled the same way. Boxes are listed depth-first in the order
    top-left, top-right, bottom-left, bottom-right.
    """
    if h % multiple or w % multiple:
        raise ValueError(f"chop_tiles: {h} x {w} is not a multiple of {multiple}; pad first")
    if _is_leaf(h, w, multiple, shave, min_size):
        return [(0, 0, h, w)]
    _, _, h_size, w_size, origins = _quadrants(h, w, multiple, shave)
    sub = chop_tiles(h_size, w_size, multiple, shave, min_size)  # all four quadrants have one size
    return [(top + t, left + l, th, tw) for top, left in origins for t, l, th, tw in sub]


def chop_seams(h, w, multiple=1, scale=1, shave=CHOP_SHAVE, min_size=CHOP_MIN_SIZE):
    """-> (rows, cols): output pixel indices i (lines between pixels i - 1 and i) where
    `forward_chop`'s output switches from one tile to another."""
    if _is_leaf(h, w, multiple, shave, min_size):
        return [], []
    h_half, w_half, h_size, w_size, origins = _quadrants(h, w, multiple, shave)
    rows, cols = {scale * h_half}, {scale * w_half}
    sub_rows, sub_cols = chop_seams(h_size, w_size, multiple, scale, shave, min_size)
    for top, left in origins:   # a quadrant's own seams, where its part of the output holds them
        rows |= {scale * top + r for r in sub_rows if (scale * top + r < scale * h_half) == (top == 0)}
        cols |= {scale * left + c for c in sub_cols if (scale * left + c < scale * w_half) == (left == 0)}
    return sorted(rows), sorted(cols)


def forward_chop(model, x, scale, multiple=1, shave=CHOP_SHAVE, min_size=CHOP_MIN_SIZE):
    """The paper's (EDSR's) memory-saving tiled forward pass: [N, C, H, W] -> [N, C, sH, sW].

    Splits recursively as `chop_tiles` describes and stitches the quadrant outputs:
    each output quadrant (split at scale * h // 2, scale * w // 2) comes from its own tile,
    so the overlaps only give every tile context across the seams.
    """
    n, c, h, w = x.shape
    if _is_leaf(h, w, multiple, shave, min_size):
        return model(x)
    h_half, w_half, h_size, w_size, origins = _quadrants(h, w, multiple, shave)
    outs = [forward_chop(model, x[:, :, top:top + h_size, left:left + w_size], scale, multiple, shave, min_size)
            for top, left in origins]
    s = scale
    out = outs[0].new_empty(n, outs[0].shape[1], s * h, s * w)
    H, W, hh, wh = s * h, s * w, s * h_half, s * w_half
    for (top, left), tile, rows, cols in zip(origins, outs,
                                             [(0, hh), (0, hh), (hh, H), (hh, H)],
                                             [(0, wh), (wh, W), (0, wh), (wh, W)]):
        r0, c0 = s * top, s * left  # tile origin in output pixels
        out[:, :, rows[0]:rows[1], cols[0]:cols[1]] = tile[:, :, rows[0] - r0:rows[1] - r0, cols[0] - c0:cols[1] - c0]
    return out


def _transforms():
    """The 8 flips/transposes of the dihedral group as (forward, inverse) pairs on [N, C, H, W]."""
    pairs = []
    for transpose in (False, True):
        for flip_h in (False, True):
            for flip_w in (False, True):
                dims = [d for d, on in ((2, flip_h), (3, flip_w)) if on]

                def fwd(t, dims=dims, transpose=transpose):
                    t = t.flip(dims) if dims else t
                    return t.transpose(2, 3) if transpose else t

                def inv(t, dims=dims, transpose=transpose):
                    t = t.transpose(2, 3) if transpose else t
                    return t.flip(dims) if dims else t
                pairs.append((fwd, inv))
    return pairs


def _autocast(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if device.type != "cuda" and precision == "fp16":
        raise ValueError(f"precision fp16 needs a CUDA device (the model is on {device}); "
                         "use bf16 or fp32 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def pick_device(name):
    """"auto" -> CUDA when present, else the CPU; "cuda" without CUDA is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def inference_precision(precision):
    """The precision validation and evaluation run at: "auto" means fp32."""
    return "fp32" if precision == "auto" else precision


def check_runnable(precision, attention_backend, device):
    """ConfigError, before any work, if `precision` or `attention_backend` cannot run on `device`."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device, not {device}; use --precision fp32 or bf16")
    try:
        resolve_backend(attention_backend, torch.empty(0, device=device))
    except RuntimeError as e:
        raise ConfigError(f"--attention_backend {attention_backend}: {e}") from None


def _model_placement(model, lr):
    for p in model.parameters() if isinstance(model, torch.nn.Module) else ():
        return p.device, p.dtype
    return lr.device, lr.dtype


def upscale(model, lr, scale, *, chop=False, tile=0, tile_overlap=0, self_ensemble=False, precision="fp32"):
    """Super-resolve one image: float [1, C, H, W] in [0, rgb_range] -> [1, C, scale*H, scale*W].

    H and W are padded (replicate, bottom and right) to a multiple of `model.size_multiple`
    and the output is cropped back. `chop` runs `forward_chop`; `tile` > 0 runs blended tiles of
    `tile` LR pixels overlapping by `tile_overlap` (`tiling.upscale_tiled`); `self_ensemble` averages
    the 8 flipped/transposed passes, each mapped back, before any quantisation;
    `precision` fp16/bf16 runs under torch.autocast (fp16 only on CUDA). The result is not
    clipped; it is on the model's device, in float32 (or the model's dtype when wider).
    """
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"upscale expects one image [1, C, H, W], got {tuple(lr.shape)}")
    if not lr.is_floating_point():
        raise ValueError(f"upscale expects a float tensor in [0, rgb_range], got {lr.dtype}")
    if chop and tile:
        raise ValueError("upscale: chop and tile are two ways of tiling; choose one")
    multiple = int(getattr(model, "size_multiple", 1))
    device, dtype = _model_placement(model, lr)
    h, w = lr.shape[-2:]
    x = lr.to(device=device, dtype=dtype)
    pad_h, pad_w = _round_up(h, multiple) - h, _round_up(w, multiple) - w
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")

    def run(t):
        if tile:
            y = upscale_tiled(model, t, tile, tile_overlap, multiple)
        else:
            y = forward_chop(model, t, scale, multiple) if chop else model(t)
        return y if y.dtype in (torch.float32, torch.float64) else y.float()

    with torch.no_grad(), _autocast(precision, device):
        if self_ensemble:
            out = None
            for fwd, inv in _transforms():
                y = inv(run(fwd(x)))
                out = y if out is None else out + y
            out = out / 8
        else:
            out = run(x)
    if out.shape[-2:] != (scale * x.shape[-2], scale * x.shape[-1]):
        raise ValueError(f"the model gave {tuple(out.shape)} for input {tuple(x.shape)} at x{scale}")
    return out[:, :, :scale * h, :scale * w]


def set_cudnn_benchmark(wanted, shapes_repeat):
    """torch.backends.cudnn.benchmark: on when `wanted` (the config key) and the same convolution
    shapes repeat (training steps, chopped tiles, ensemble passes), so that cuDNN's timing run
    of its algorithms, once per new shape, pays off. Returns the setting made."""
    torch.backends.cudnn.benchmark = bool(wanted and shapes_repeat)
    return torch.backends.cudnn.benchmark


def memory_format(channels_last):
    """The network's memory format: channels-last (NHWC strides) or contiguous (NCHW)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def use_channels_last(setting, device):
    """The `channels_last` config key on `device`: "auto" means on with CUDA (the x2 training step
    measured 299 against 317 ms on an H200), off elsewhere."""
    return device.type == "cuda" if setting == "auto" else setting


def reset_peak_memory(device):
    """Start a new peak for `peak_memory_mb` (CUDA; the CPU peak cannot be reset)."""
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device):
    """CUDA: peak allocated memory since the reset; CPU: the process's peak resident set so far."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10
