"""The figures say what they show: curves.png's titles, axes and legend, the comparison captions."""
import imageio.v2 as imageio
import numpy as np

from csnln.plot import COLORS, FIGURE_GAP, figure, figure_row, plot_history, text


def find(img, patch):
    """Top-left corners where `patch` (text on white) appears exactly in `img`."""
    ph, pw = patch.shape[:2]
    py, px = np.argwhere((patch != 255).any(axis=2))[0]
    hits = []
    for y, x in np.argwhere((img == patch[py, px]).all(axis=2)):
        top, left = y - py, x - px
        if top >= 0 and left >= 0 and np.array_equal(img[top:top + ph, left:left + pw], patch):
            hits.append((int(top), int(left)))
    return hits


def test_curves_have_titles_axes_and_a_legend(tmp_path):
    history = [{"epoch": e, "loss": 0.3 / e, "psnr": {"Set5": 20.0 + e, "Set14": 19.0 + e / 2}} for e in (1, 2, 3)]
    plot_history(history, tmp_path / "curves.png")
    img = imageio.imread(tmp_path / "curves.png")
    assert find(img, text("TRAINING LOSS (MEAN L1)")) and find(img, text("VALIDATION PSNR (dB)"))
    assert len(find(img, text("EPOCH"))) == 2
    assert find(img, text("23")) and find(img, text("19.5"))  # the PSNR axis runs from 19.5 to 23 dB
    assert find(img, text("Set14", COLORS[1])) and find(img, text("Set5", COLORS[2]))  # legend in curve colours
    assert (img == COLORS[2]).all(axis=2).sum() > 100  # and the Set5 curve itself


def test_comparison_figure_has_column_captions():
    rng = np.random.default_rng(0)
    panels = [rng.integers(0, 256, (60, 70, 3), dtype=np.uint8) for _ in range(3)]
    img = figure([figure_row(panels, size=60)] * 2, ("bicubic", "CSNLN", "HR"))
    assert img.shape == (18 + 2 * 60 + FIGURE_GAP, 3 * 60 + 2 * FIGURE_GAP, 3)
    for column, caption in enumerate(("bicubic", "CSNLN", "HR")):
        [(top, left)] = find(img, text(caption))
        label = text(caption)
        assert top + label.shape[0] <= 18
        assert abs(left + label.shape[1] / 2 - (column * (60 + FIGURE_GAP) + 30)) <= 1
