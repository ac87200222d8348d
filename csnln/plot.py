"""Figures with matplotlib (Agg): the training curves and eval.py's comparison crops.

curves.png: training loss and validation PSNR per set against the epoch, with grids, ticks,
axis labels and legends. The comparison figure: one row per image, crops (e.g. bicubic, CSNLN,
HR) where bicubic is worst, each captioned with the image name and its PSNR against the HR crop.
"""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .files import atomic_write  # noqa: E402
from .metrics import psnr, psnr_y, rgb_to_y  # noqa: E402

FIGURE_CROP = 120   # HR pixels per crop side
DPI = 100


def save_figure(fig, path):
    """Write `fig` as a PNG atomically and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


# -- curves.png --------------------------------------------------------------------------------

def history_figure(history):
    """history: the per-epoch records of training (epoch, loss, psnr {set: dB}) -> Figure."""
    fig, (loss_ax, psnr_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    loss_ax.plot([r["epoch"] for r in history], [r["loss"] for r in history], marker="o", label="train")
    loss_ax.set(title="Training loss", ylabel="mean L1 loss")
    for name in sorted({name for r in history for name in r["psnr"]}):
        shown = [r for r in history if name in r["psnr"]]
        psnr_ax.plot([r["epoch"] for r in shown], [r["psnr"][name] for r in shown], marker="o", label=name)
    psnr_ax.set(title="Validation PSNR", ylabel="PSNR (dB)")
    for ax in (loss_ax, psnr_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.4)
        if ax.lines:
            ax.legend()
    return fig


def plot_history(history, path):
    save_figure(history_figure(history), path)


# -- eval.py's comparison figure -----------------------------------------------------------------

def worst_window(err, size, step=4):
    """Top-left corner of the size x size window with the largest summed error."""
    h, w = err.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    tops, lefts = np.arange(0, h - size + 1, step), np.arange(0, w - size + 1, step)
    sums = (integral[tops[:, None] + size, lefts[None, :] + size] - integral[tops[:, None], lefts[None, :] + size]
            - integral[tops[:, None] + size, lefts[None, :]] + integral[tops[:, None], lefts[None, :]])
    i, j = np.unravel_index(np.argmax(sums), sums.shape)
    return int(tops[i]), int(lefts[j])


def crops(panels, size=FIGURE_CROP):
    """Same-size uint8 images (HxW Y planes or HxWx3) -> their crops where the first (bicubic)
    differs most from the last (HR), and each crop's PSNR in dB against the HR crop (Y channel;
    the HR crop's own is inf)."""
    h, w = panels[0].shape[:2]
    size = min(size, h, w)
    luma = [p.astype(np.float64) if p.ndim == 2 else rgb_to_y(p) for p in (panels[0], panels[-1])]
    top, left = worst_window((luma[0] - luma[1]) ** 2, size)
    cut = [p[top:top + size, left:left + size] for p in panels]
    scores = [psnr_y(c.astype(np.float64), cut[-1].astype(np.float64), 0) if c.ndim == 2 else psnr(c, cut[-1], 0)
              for c in cut]
    return cut, scores


def comparison_figure(rows, captions, size=FIGURE_CROP):
    """rows: [(image name, panels)] with panels as for `crops`, in the order of `captions`
    -> Figure: one row of crops per image, each titled "<name>: <caption>, <PSNR> dB"."""
    fig, axes = plt.subplots(len(rows), len(captions), squeeze=False, layout="constrained",
                             figsize=(2.6 * len(captions), 2.8 * len(rows)))
    for (name, panels), row in zip(rows, axes):
        cut, scores = crops(panels, size)
        for ax, crop, caption, score in zip(row, cut, captions, scores):
            ax.imshow(crop, cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{name}: {caption}" + ("" if np.isinf(score) else f", {score:.2f} dB"), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
