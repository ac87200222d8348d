"""Bicubic baselines on the bundled Set5 against published / recorded averages."""
import pathlib

import imageio.v2 as imageio
import numpy as np
import pytest

from csnln.bicubic import bicubic_paper_y, bicubic_upscale, paper_hr_y
from csnln.metrics import psnr, psnr_y, ssim, ssim_y

BENCHMARK = pathlib.Path(__file__).parent / "data" / "benchmark"

# DRCN/VDSR "Bicubic" rows (PSNR / SSIM, Y channel, shave = scale).
PAPER = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
}
# Upscaled shipped LR, 'matlab' protocol. Set5 x2 (33.640 / 0.9292) is the given reference;
# the other rows were measured with this implementation and guard against regressions.
UPSCALE = {
    ("Set5", 2): (33.640, 0.9292), ("Set5", 3): (30.39, 0.8678), ("Set5", 4): (28.42, 0.8101),
}


def decimals(value):
    return len(repr(value).split(".")[1])


def images(set_name, scale):
    """(HR, LR) uint8 pairs of a bundled set; HR un-cropped as stored."""
    hr_paths = sorted((BENCHMARK / set_name / "HR").glob("*.png"))
    assert len(hr_paths) == {"Set5": 5, "Set14": 5}[set_name]
    for path in hr_paths:
        lr_path = BENCHMARK / set_name / "LR_bicubic" / f"X{scale}" / f"{path.stem}x{scale}.png"
        yield imageio.imread(path), imageio.imread(lr_path)


@pytest.mark.parametrize("set_name,scale", sorted(UPSCALE))
def test_bicubic_upscale_average(set_name, scale):
    scores = []
    for hr, lr in images(set_name, scale):
        sr = bicubic_upscale(lr, scale)
        h, w = sr.shape[:2]
        hr = hr[:h, :w]  # EDSR: crop HR to LR size x scale from the top-left
        if hr.ndim == 2:
            hr = np.repeat(hr[:, :, None], 3, axis=2)
        scores.append((psnr(sr, hr, scale), ssim(sr, hr, scale)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    exp_psnr, exp_ssim = UPSCALE[set_name, scale]
    assert round(mean_psnr, decimals(exp_psnr)) == exp_psnr
    assert round(mean_ssim, 4) == exp_ssim


@pytest.mark.parametrize("set_name,scale", sorted(PAPER))
def test_bicubic_paper_average(set_name, scale):
    scores = []
    for hr, _ in images(set_name, scale):
        y_sr, y_hr = bicubic_paper_y(hr, scale), paper_hr_y(hr, scale)
        scores.append((psnr_y(y_sr, y_hr, scale), ssim_y(y_sr, y_hr, scale)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    exp_psnr, exp_ssim = PAPER[set_name, scale]
    assert round(mean_psnr, 2) == exp_psnr
    assert round(mean_ssim, 4) == exp_ssim


def test_bicubic_upscale_grey_and_shape():
    lr = np.array([[10, 200], [30, 40]], dtype=np.uint8)
    sr = bicubic_upscale(lr, 3)
    assert sr.dtype == np.uint8 and sr.shape == (6, 6, 3)
    np.testing.assert_array_equal(sr[..., 0], sr[..., 2])
    with pytest.raises(ValueError):
        bicubic_upscale(lr.astype(np.float64), 2)


def test_bicubic_paper_y_shape_and_range():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, size=(31, 26, 3), dtype=np.uint8)
    y = bicubic_paper_y(hr, 3)
    assert y.dtype == np.uint8 and y.shape == (30, 24) == paper_hr_y(hr, 3).shape
    assert y.min() >= 16 and y.max() <= 235
    grey = hr[..., 0]
    np.testing.assert_array_equal(paper_hr_y(grey, 4), grey[:28, :24])
