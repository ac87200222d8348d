"""Bicubic super-resolution baselines.

* ``bicubic_upscale``: upscale a shipped uint8 LR image (EDSR-style baseline).
* ``bicubic_paper_y``: the DRCN/VDSR table recipe, working on the Y plane of
  the HR image in floating point; score it with
  ``metrics.psnr_y / ssim_y(bicubic_paper_y(hr, s), paper_hr_y(hr, s), shave=s)``.
"""
import numpy as np

from csnln.imresize import imresize, modcrop, round_uint8
from csnln.metrics import rgb_to_y


def bicubic_upscale(lr, scale):
    """uint8 HxW[x3] LR -> uint8 (H*scale)x(W*scale)x3 by MATLAB bicubic (grey replicated to RGB)."""
    if lr.dtype != np.uint8:
        raise ValueError(f"expected uint8 LR image, got {lr.dtype}")
    if lr.ndim == 2:
        lr = np.repeat(lr[:, :, None], 3, axis=2)
    return imresize(lr, scale)


def paper_hr_y(hr, scale):
    """uint8 HxW Y plane of the mod-cropped HR (``rgb_to_y``; grey images are the Y plane)."""
    if hr.dtype != np.uint8:
        raise ValueError(f"expected uint8 HR image, got {hr.dtype}")
    hr = modcrop(hr, scale)
    if hr.ndim == 2:
        return hr.copy()
    return rgb_to_y(hr).astype(np.uint8)


def bicubic_paper_y(hr, scale):
    """uint8 HR (HxW[x3]) -> uint8 Y plane of size ``paper_hr_y(hr, scale)``.

    Y/255 is downscaled by 1/scale and upscaled by scale with float bicubic
    (no intermediate rounding), clipped to [16, 235]/255 and rounded to 8 bits.
    """
    y = paper_hr_y(hr, scale).astype(np.float64) / 255
    up = imresize(imresize(y, 1 / scale), scale)
    return round_uint8(np.clip(up, 16 / 255, 235 / 255) * 255)
