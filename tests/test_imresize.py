"""csnln.imresize against MATLAB-made LR images and hand-computed cases."""
import pathlib

import imageio.v2 as imageio
import numpy as np
import pytest

from csnln.imresize import imresize, modcrop

DATA = pathlib.Path(__file__).parent / "data"
SCALES = (2, 3, 4)


def matlab_pairs():
    """(HR path, LR path, scale) for every bundled MATLAB-made LR image."""
    pairs = []
    for set_dir in sorted((DATA / "benchmark").glob("Set*")):
        for hr in sorted((set_dir / "HR").glob("*.png")):
            for s in SCALES:
                pairs.append((hr, set_dir / "LR_bicubic" / f"X{s}" / f"{hr.stem}x{s}.png", s))
    # Official DIV2K x2 LR (MATLAB-made); its X3/X4 were generated, so not used here.
    pairs.append((DATA / "DIV2K" / "DIV2K_train_HR" / "0004.png",
                  DATA / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / "0004x2.png", 2))
    return pairs


PAIRS = matlab_pairs()


def test_all_bundled_pairs_present():
    # Set5: 5 images, Set14: 5 of 14 (bridge is grey), 3 scales each, plus DIV2K 0004 x2.
    assert len(PAIRS) == (5 + 5) * 3 + 1
    assert all(hr.is_file() and lr.is_file() for hr, lr, _ in PAIRS)


@pytest.mark.parametrize("hr_path,lr_path,scale", PAIRS,
                         ids=[f"{lr.parent.parent.parent.name}-{lr.stem}" for _, lr, _ in PAIRS])
def test_bit_exact_with_matlab(hr_path, lr_path, scale):
    hr, lr = imageio.imread(hr_path), imageio.imread(lr_path)
    out = imresize(modcrop(hr, scale), 1 / scale)
    assert out.dtype == np.uint8
    assert out.shape == lr.shape
    assert np.count_nonzero(out != lr) == 0


def test_float_upscale_hand_computed():
    # Column [a, b] upscaled x2: u = 0.75, 1.25, 1.75, 2.25 with mirrored borders gives
    # weights (1.09375, -0.09375), (0.796875, 0.203125) and their mirror images.
    out = imresize(np.array([[0.0], [1.0]]), 2)
    assert out.dtype == np.float64
    assert out.shape == (4, 2)
    expected = np.array([-0.09375, 0.203125, 0.796875, 1.09375])
    np.testing.assert_allclose(out, np.stack([expected, expected], axis=1), rtol=0, atol=1e-15)


def test_uint8_rounds_and_saturates():
    # Same case on uint8: -23.9 -> 0, 51.797 -> 52, 203.203 -> 203, 278.9 -> 255.
    out = imresize(np.array([[0], [255]], dtype=np.uint8), 2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], [0, 52, 203, 255])


def test_float_downscale_antialiased_hand_computed():
    # x0.5: kernel 0.5 * cubic(x / 2), 10 taps; first output pixel weights on the
    # mirrored column (v1..v4) are 0.546875, 0.3984375, 0.1015625, -0.046875.
    v = np.array([[3.0], [-1.0], [2.0], [5.0]])
    out = imresize(v, 0.5)
    assert out.shape == (2, 1)
    w = np.array([0.546875, 0.3984375, 0.1015625, -0.046875])
    np.testing.assert_allclose(out[:, 0], [w @ v[:, 0], w[::-1] @ v[:, 0]], rtol=0, atol=1e-14)


def test_output_shapes():
    img = np.zeros((5, 7, 3), dtype=np.uint8)
    assert imresize(img, 3).shape == (15, 21, 3)
    assert imresize(img[:, :, 0], 2).shape == (10, 14)
    assert imresize(np.zeros((510, 255)), 1 / 3).shape == (170, 85)
    assert imresize(img, output_shape=(9, 4)).shape == (9, 4, 3)


def test_constant_image_is_preserved():
    img = np.full((6, 9, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, 3), 77)
    np.testing.assert_array_equal(imresize(img, 1 / 3), 77)


def test_argument_errors():
    img = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 2, output_shape=(8, 8))
    with pytest.raises(ValueError):
        imresize(np.zeros(4, dtype=np.uint8), 2)


def test_modcrop():
    img = np.arange(7 * 10).reshape(7, 10)
    out = modcrop(img, 3)
    assert out.shape == (6, 9)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(np.zeros((8, 8, 3)), 4).shape == (8, 8, 3)
