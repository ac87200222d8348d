"""The figures say what they show: curves with grids, ticks and legends; crops captioned with
the image name and each crop's PSNR, taken where bicubic is worst."""
import imageio.v2 as imageio
import numpy as np
import pytest

from csnln.metrics import psnr
from csnln.plot import comparison_figure, crops, history_figure, plot_history


def test_curves_have_titles_axes_grids_ticks_and_legends(tmp_path):
    history = [{"epoch": e, "loss": 0.3 / e, "psnr": {"Set5": 20.0 + e, "Set14": 19.0 + e / 2}} for e in (1, 2, 3)]
    loss, psnr_ax = history_figure(history).axes
    assert loss.get_title() == "Training loss" and psnr_ax.get_title() == "Validation PSNR"
    assert psnr_ax.get_ylabel() == "PSNR (dB)" and loss.get_xlabel() == psnr_ax.get_xlabel() == "epoch"
    assert [t.get_text() for t in psnr_ax.get_legend().get_texts()] == ["Set14", "Set5"]  # "Set5", not "SETS"
    series = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in psnr_ax.lines}
    assert series["Set5"] == ([1, 2, 3], [21.0, 22.0, 23.0]) and series["Set14"][1] == [19.5, 20.0, 20.5]
    for ax in (loss, psnr_ax):
        assert all(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
        assert len([t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]) >= 3
        assert all(float(t).is_integer() for t in ax.get_xticks())  # epochs, not 1.5
    plot_history(history, tmp_path / "curves.png")
    img = imageio.imread(tmp_path / "curves.png")
    assert img.ndim == 3 and img.shape[1] > 600 and len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_crops_are_where_bicubic_is_worst_and_carry_their_psnr():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
    bicubic, sr = hr.copy(), hr.copy()
    bicubic[50:80, 60:90] = 255 - bicubic[50:80, 60:90]  # the worst 30x30 window
    sr[50:80, 60:90] ^= 4
    cut, scores = crops([bicubic, sr, hr], size=30)
    assert np.array_equal(cut[2], hr[48:78, 60:90]) or np.array_equal(cut[2], hr[52:82, 60:90])
    assert scores[0] == psnr(cut[0], cut[2], 0) and scores[1] == psnr(cut[1], cut[2], 0)
    assert scores[0] < scores[1] < scores[2] == float("inf")


@pytest.mark.parametrize("grey", [False, True])
def test_comparison_figure_captions_name_the_image_and_the_crop_psnr(grey):
    rng = np.random.default_rng(1)
    shape = (60, 70) if grey else (60, 70, 3)
    rows = [(name, [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]) for name in ("baby", "bird")]
    fig = comparison_figure(rows, ("bicubic", "CSNLN", "HR"), size=40)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 6 and titles[2] == "baby: HR" and titles[5] == "bird: HR"
    for (name, panels), row_titles in zip(rows, (titles[:3], titles[3:])):
        _, scores = crops(panels, 40)
        assert row_titles[:2] == [f"{name}: bicubic, {scores[0]:.2f} dB", f"{name}: CSNLN, {scores[1]:.2f} dB"]
    assert fig.axes[0].get_images()[0].get_array().shape == ((40, 40) if grey else (40, 40, 3))
