"""csnln.metrics on hand-computed cases."""
import math

import numpy as np
import pytest

from csnln.metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def pixels(*rgb):
    return np.array([rgb], dtype=np.uint8)  # 1 x N x 3


def test_rgb_to_y_known_pixels():
    y = rgb_to_y(pixels((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert y.dtype == np.float64 and y.shape == (1, 5)
    # 16, 235, 16 + 65.481, 16 + 128.553 (rounds up), 16 + 24.966
    np.testing.assert_array_equal(y, [[16, 235, 81, 145, 41]])


def test_rgb_to_y_grey_is_replicated():
    grey = np.array([[0, 100, 255]], dtype=np.uint8)
    # 16 + 219 * 100 / 255 = 101.88 -> 102
    np.testing.assert_array_equal(rgb_to_y(grey), [[16, 102, 235]])
    np.testing.assert_array_equal(rgb_to_y(grey), rgb_to_y(np.stack([grey] * 3, axis=2)))


def test_psnr_constant_offset_is_exact():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 200, size=(20, 30)).astype(np.float64)
    assert psnr_y(y + 5, y, shave=2) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)


def test_psnr_matlab_and_edsr_on_uniform_images():
    hr = np.zeros((8, 8, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[..., 0] = 255  # pure red: matlab Y 81 vs 16; edsr Y 65.738 * 255 / 256 vs 0
    assert psnr(sr, hr, 1) == pytest.approx(20 * math.log10(255 / 65), abs=1e-12)
    assert psnr(sr, hr, 1, metric="edsr") == pytest.approx(20 * math.log10(256 / 65.738), abs=1e-12)


def test_identical_images():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    assert psnr(img, img, 2) == math.inf
    assert psnr(img, img, 2, metric="edsr") == math.inf
    assert ssim(img, img, 2) == pytest.approx(1.0, abs=1e-12)


def test_shave_removes_exactly_the_border():
    hr = np.full((20, 20, 3), 100, dtype=np.uint8)
    sr = hr.copy()
    sr[:3, :] = sr[-3:, :] = sr[:, :3] = sr[:, -3:] = 0  # 3-pixel frame differs
    assert psnr(sr, hr, 3) == math.inf
    assert ssim(sr, hr, 3) == pytest.approx(1.0, abs=1e-12)
    # shave 2 keeps the innermost frame ring: 16x16 region, 16*16 - 14*14 = 60 pixels differ
    # by Y(100) - Y(0) = 102 - 16 = 86.
    assert psnr(sr, hr, 2) == pytest.approx(10 * math.log10(255 ** 2 / (60 * 86 ** 2 / 256)), abs=1e-12)
    assert ssim(sr, hr, 2) < 0.99


def test_ssim_constant_planes():
    # 11x11 planes -> a single 'valid' window; sigmas vanish, SSIM = luminance term.
    a, b = np.full((11, 11), 100.0), np.full((11, 11), 110.0)
    expected = (2 * 100 * 110 + C1) / (100 ** 2 + 110 ** 2 + C1)
    assert ssim_y(a, b, shave=0) == pytest.approx(expected, abs=1e-12)


def ssim_one_bright_pixel(w, d):
    """SSIM of a zero window vs one with a single pixel d at Gaussian weight w.

    mu1 = sigma1 = sigma12 = 0, mu2 = w*d, sigma2^2 = w*d^2 - (w*d)^2.
    """
    return C1 * C2 / (((w * d) ** 2 + C1) * (w * d * d - (w * d) ** 2 + C2))


def test_ssim_gaussian_window_and_valid_filtering():
    x, y = np.meshgrid(np.arange(-5, 6), np.arange(-5, 6))
    g = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()  # normalised 11x11 Gaussian, sigma 1.5
    d = 200.0
    # 11x11: one window, the pixel at its centre.
    y1, y2 = np.zeros((11, 11)), np.zeros((11, 11))
    y2[5, 5] = d
    assert ssim_y(y1, y2, shave=0) == pytest.approx(ssim_one_bright_pixel(g[5, 5], d), rel=1e-9)
    # 12x12: 'valid' gives a 2x2 map; window (i, j) sees the pixel at offset (5 - i, 5 - j).
    y1, y2 = np.zeros((12, 12)), np.zeros((12, 12))
    y2[5, 5] = d
    expected = np.mean([ssim_one_bright_pixel(g[5 - i, 5 - j], d) for i in (0, 1) for j in (0, 1)])
    assert ssim_y(y1, y2, shave=0) == pytest.approx(expected, rel=1e-9)


def test_errors():
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:15], 1)
    with pytest.raises(ValueError, match="uint8"):
        psnr(a.astype(np.float32), a, 1)
    with pytest.raises(ValueError, match="uint8"):
        ssim(a, a.astype(np.int64), 1)
    with pytest.raises(ValueError, match="shape"):
        ssim(a, a[:, :15], 1)
    with pytest.raises(ValueError, match="metric"):
        psnr(a, a, 1, metric="foo")
    with pytest.raises(ValueError):
        rgb_to_y(a.astype(np.float64))
