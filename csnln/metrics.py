"""Super-resolution metrics (PSNR, SSIM on the Y channel) in float64 numpy.

All public functions take uint8 images, HxW (grey) or HxWx3 (RGB). Grey
images are replicated to RGB before the Y conversion (EDSR loader convention).
"""
import numpy as np

from csnln.imresize import round_uint8


def _check_pair(sr, hr):
    for name, img in (("sr", sr), ("hr", hr)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 numpy array, got "
                             f"{getattr(img, 'dtype', type(img))}")
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {sr.shape} vs hr {hr.shape}")


def _check_planes(y1, y2):
    y1, y2 = np.asarray(y1), np.asarray(y2)
    for name, y in (("y_sr", y1), ("y_hr", y2)):
        if y.ndim != 2 or not (np.issubdtype(y.dtype, np.integer)
                               or np.issubdtype(y.dtype, np.floating)):
            raise ValueError(f"{name} must be a real HxW plane, got {y.dtype} {y.shape}")
    if y1.shape != y2.shape:
        raise ValueError(f"shape mismatch: {y1.shape} vs {y2.shape}")
    return y1.astype(np.float64), y2.astype(np.float64)


def _as_rgb(img):
    """HxW -> HxWx3 by replication; HxWx3 unchanged; anything else: ValueError."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected HxW or HxWx3 image, got shape {img.shape}")


def _shave(img, shave):
    h, w = img.shape[:2]
    if shave < 0 or 2 * shave >= min(h, w):
        raise ValueError(f"shave {shave} too large for image {h}x{w}")
    return img[shave:h - shave, shave:w - shave]


def rgb_to_y(img):
    """MATLAB ``rgb2ycbcr`` Y of a uint8 image, rounded to 8 bits; float64 HxW.

    Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), half away from
    zero as MATLAB's uint8 conversion. Grey (HxW) input is replicated to RGB
    first, so it is mapped to 16 + 219/255 * v (not returned unchanged).
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"rgb_to_y expects uint8, got {getattr(img, 'dtype', type(img))}")
    rgb = _as_rgb(img).astype(np.float64)
    y = (65.481 / 255 * rgb[..., 0] + 128.553 / 255 * rgb[..., 1]
         + 24.966 / 255 * rgb[..., 2] + 16)
    return round_uint8(y).astype(np.float64)


def _edsr_y(img):
    """EDSR's unrounded luma (65.738 R + 129.057 G + 25.064 B) / 256, float64."""
    rgb = _as_rgb(img).astype(np.float64)
    return (65.738 * rgb[..., 0] + 129.057 * rgb[..., 1] + 25.064 * rgb[..., 2]) / 256


def psnr_y(y_sr, y_hr, shave):
    """PSNR in dB (peak 255) of two HxW luma planes (values 0..255), borders shaved.

    Identical planes give ``inf``.
    """
    y_sr, y_hr = _check_planes(y_sr, y_hr)
    diff = _shave(y_sr - y_hr, shave)
    mse = np.mean(diff * diff)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(255.0 ** 2 / mse))


def psnr(sr, hr, shave, metric="matlab"):
    """PSNR in dB on the Y channel of uint8 images after removing ``shave`` pixels per border.

    metric='matlab': rounded MATLAB Y (``rgb_to_y``); metric='edsr': EDSR's
    unrounded Y (65.738 R + 129.057 G + 25.064 B) / 256. Peak 255.
    """
    _check_pair(sr, hr)
    if metric == "matlab":
        return psnr_y(rgb_to_y(sr), rgb_to_y(hr), shave)
    if metric == "edsr":
        return psnr_y(_edsr_y(sr), _edsr_y(hr), shave)
    raise ValueError(f"unknown metric {metric!r} (use 'matlab' or 'edsr')")


def _gaussian_window(size=11, sigma=1.5):
    """1-D factor of MATLAB fspecial('gaussian', size, sigma), normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img, g):
    """2-D 'valid' correlation of ``img`` with the separable window outer(g, g)."""
    n = g.size
    h, w = img.shape
    rows = sum(g[k] * img[k:h - n + 1 + k, :] for k in range(n))
    return sum(g[k] * rows[:, k:w - n + 1 + k] for k in range(n))


def ssim_y(y_sr, y_hr, shave):
    """Mean SSIM of two HxW luma planes (values 0..255) after removing ``shave`` border pixels.

    Wang et al.'s ssim_index: Gaussian window 11x11, sigma 1.5, K1=0.01,
    K2=0.03, L=255, 'valid' filtering, mean of the SSIM map.
    """
    y1, y2 = _check_planes(y_sr, y_hr)
    y1, y2 = _shave(y1, shave), _shave(y2, shave)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    if min(y1.shape) < g.size:
        raise ValueError(f"image {y1.shape} smaller than the 11x11 SSIM window")
    mu1, mu2 = _filter_valid(y1, g), _filter_valid(y2, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(y1 * y1, g) - mu1_sq
    sigma2_sq = _filter_valid(y2 * y2, g) - mu2_sq
    sigma12 = _filter_valid(y1 * y2, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(np.mean(ssim_map))


def ssim(sr, hr, shave):
    """Mean SSIM on the rounded MATLAB Y channel of uint8 images (see ``ssim_y``)."""
    _check_pair(sr, hr)
    return ssim_y(rgb_to_y(sr), rgb_to_y(hr), shave)


def seam_score(diff, rows, cols):
    """Seams in `diff` [H, W] or [H, W, C] (e.g. tiled SR minus whole-image SR, as float): the mean
    absolute vertical step across the lines above the rows `rows` together with the horizontal
    step across the lines left of the columns `cols`, and the same mean over every other line
    -> (on those lines, elsewhere). Equal values: no seam."""
    diff = np.asarray(diff, dtype=np.float64)
    down, right = np.abs(np.diff(diff, axis=0)), np.abs(np.diff(diff, axis=1))   # line i-1|i at index i-1
    on_rows = np.zeros(down.shape[0], bool)
    on_rows[[r - 1 for r in rows]] = True
    on_cols = np.zeros(right.shape[1], bool)
    on_cols[[c - 1 for c in cols]] = True
    on = np.concatenate([down[on_rows].ravel(), right[:, on_cols].ravel()])
    off = np.concatenate([down[~on_rows].ravel(), right[:, ~on_cols].ravel()])
    return float(on.mean()) if on.size else 0.0, float(off.mean())
