"""MATLAB-compatible bicubic ``imresize`` in numpy.

For uint8 input the result equals MATLAB's ``imresize(img, scale, 'bicubic')``
bit for bit: the image is resized one dimension at a time (dimension with the
smaller scale factor first, rows first on ties) and, as MATLAB does for uint8,
each pass is rounded half away from zero and saturated to [0, 255].
Float input is resized without any rounding and returned as float64.
"""
import math

import numpy as np


def _cubic(x):
    """Keys cubic kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return near + far


def _contributions(in_length, out_length, scale):
    """Weights (out_length, P) float64 and 0-based source indices (out_length, P)."""
    kernel_width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel by 1/scale
        def kernel(x):
            return scale * _cubic(scale * x)
        kernel_width = kernel_width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / np.sum(weights, axis=1, keepdims=True)
    # Symmetric (mirror) padding, as MATLAB's aux = [1:in, in:-1:1].
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)  # drop all-zero tap columns
    return weights[:, keep], indices[:, keep]


def round_uint8(x):
    """Float array -> uint8: round half away from zero, saturate to [0, 255] (MATLAB uint8())."""
    whole = np.trunc(x)
    frac = x - whole  # exact in floating point
    rounded = whole + np.sign(x) * (np.abs(frac) >= 0.5)
    return np.clip(rounded, 0, 255).astype(np.uint8)


def _resize_axis(img, axis, out_length, scale):
    """Resize float64 ``img`` along ``axis`` (0 or 1); taps accumulated in order."""
    weights, indices = _contributions(img.shape[axis], out_length, scale)
    shape = [1] * img.ndim
    shape[axis] = out_length
    out = np.zeros(img.shape[:axis] + (out_length,) + img.shape[axis + 1:])
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(img, indices[:, k], axis=axis)
    return out


def imresize(img, scale=None, output_shape=None):
    """Bicubic resize of an HxW or HxWxC image, as MATLAB ``imresize``.

    Give either ``scale`` (output size = ceil(scale * input size)) or
    ``output_shape`` = (H_out, W_out). uint8 input -> uint8 output (bit-exact
    with MATLAB); any other input -> float64 output without rounding.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    in_shape = img.shape[:2]
    if scale is not None:
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(s * n)) for s, n in zip(scales, in_shape))
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if len(out_shape) != 2 or min(out_shape) < 1:
            raise ValueError(f"output_shape must be (H, W) positive, got {output_shape}")
        scales = tuple(o / n for o, n in zip(out_shape, in_shape))

    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    # Stable sort: smaller scale first, rows first on ties (MATLAB's order).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        out = _resize_axis(out, axis, out_shape[axis], scales[axis])
        if is_uint8:
            out = round_uint8(out).astype(np.float64)
    return out.astype(np.uint8) if is_uint8 else out


def modcrop(img, scale):
    """Crop bottom/right so H and W are multiples of ``scale`` (any dtype, HxW[xC])."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
