"""A dependency-free PNG of the training curves: loss (top) and validation PSNR (bottom)."""
import numpy as np

from .images import write_image

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def _panel(series, height=200, width=480, margin=12):
    """Draw [(xs, ys, color)] as polylines scaled to one white panel -> uint8 [H, W, 3]."""
    img = np.full((height, width, 3), 255, np.uint8)
    img[[margin - 1, height - margin], margin - 1:width - margin + 1] = 160
    img[margin - 1:height - margin + 1, [margin - 1, width - margin]] = 160
    points = [(np.asarray(x, float), np.asarray(y, float), c) for x, y, c in series if len(x)]
    if not points:
        return img
    all_x = np.concatenate([p[0] for p in points])
    all_y = np.concatenate([p[1] for p in points])
    x0, x1 = all_x.min(), max(all_x.max(), all_x.min() + 1e-9)
    y0, y1 = all_y.min(), max(all_y.max(), all_y.min() + 1e-9)
    for xs, ys, color in points:
        t = np.linspace(0, 1, 4 * width) if len(xs) > 1 else np.zeros(1)
        px = np.interp(t, np.linspace(0, 1, len(xs)), xs)
        py = np.interp(t, np.linspace(0, 1, len(ys)), ys)
        cols = margin + np.round((px - x0) / (x1 - x0) * (width - 2 * margin - 1)).astype(int)
        rows = height - margin - 1 - np.round((py - y0) / (y1 - y0) * (height - 2 * margin - 1)).astype(int)
        for dr in (-1, 0, 1):
            img[np.clip(rows + dr, 0, height - 1), cols] = color
    return img


def plot_history(history, path):
    """history: the per-epoch records of training (epoch, loss, psnr {set: dB})."""
    epochs = [r["epoch"] for r in history]
    loss = _panel([(epochs, [r["loss"] for r in history], COLORS[0])])
    sets = sorted({name for r in history for name in r["psnr"]})
    psnr = _panel([([r["epoch"] for r in history if name in r["psnr"]],
                    [r["psnr"][name] for r in history if name in r["psnr"]], COLORS[(i + 1) % len(COLORS)])
                   for i, name in enumerate(sets)])
    write_image(path, np.concatenate([loss, np.full((8, loss.shape[1], 3), 255, np.uint8), psnr]))
