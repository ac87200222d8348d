"""Dependency-free figures: a 3x5 pixel font, the training curves and eval.py's comparison crops.

curves.png has two panels, training loss and validation PSNR against the epoch, each with a
title naming the quantity and its unit, the extreme values on both axes and a legend. The
comparison figure shows captioned crops (e.g. bicubic, CSNLN, HR) where bicubic is worst.
"""
import numpy as np

from .images import write_image
from .metrics import rgb_to_y

FIGURE_CROP = 120   # HR pixels per crop side
FIGURE_GAP = 6      # white pixels between crops
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
INK = (0, 0, 0)
# each glyph: five rows of three pixels, one octal digit per row (4 = left pixel, 1 = right)
FONT = {
    "0": "75557", "1": "26227", "2": "71747", "3": "71717", "4": "55711", "5": "74717", "6": "74757",
    "7": "71111", "8": "75757", "9": "75717", "A": "25755", "B": "65656", "C": "34443", "D": "65556",
    "E": "74647", "F": "74644", "G": "34553", "H": "55755", "I": "72227", "J": "11152", "K": "55655",
    "L": "44447", "M": "57755", "N": "65555", "O": "25552", "P": "65644", "Q": "25573", "R": "65655",
    "S": "34216", "T": "72222", "U": "55557", "V": "55552", "W": "55775", "X": "55255", "Y": "55222",
    "Z": "71247", "d": "11757", " ": "00000", ".": "00002", ",": "00024", "-": "00700", "+": "02720",
    "(": "12221", ")": "42224", "/": "11244", ":": "02020", "_": "00007", "?": "71202",
}


def text(s, color=INK, scale=2):
    """`s` rendered in the 3x5 font -> uint8 [5 * scale, (4 * len(s) - 1) * scale, 3], `color` on
    white. Lower-case letters print as capitals, except those with a glyph of their own (the d of dB)."""
    rows = np.zeros((5, max(4 * len(s) - 1, 1)), bool)
    for i, ch in enumerate(s):
        glyph = FONT.get(ch, FONT.get(ch.upper(), FONT["?"]))
        for r, bits in enumerate(glyph):
            rows[r, 4 * i:4 * i + 3] = [int(bits, 8) >> shift & 1 for shift in (2, 1, 0)]
    mask = np.kron(rows, np.ones((scale, scale), bool))
    img = np.full(mask.shape + (3,), 255, np.uint8)
    img[mask] = color
    return img


def paste(img, patch, top, left):
    """Draw the non-white pixels of `patch` into `img` at (top, left), clipped to `img`."""
    h = min(patch.shape[0], img.shape[0] - top)
    w = min(patch.shape[1], img.shape[1] - left)
    region, part = img[top:top + h, left:left + w], patch[:h, :w]
    ink = (part != 255).any(axis=2)
    region[ink] = part[ink]


def _panel(series, title, height=230, width=520, left=60, right=12, top=26, bottom=34):
    """Draw [(xs, ys, color, label)] as polylines in one white panel with its title, the extreme
    values on both axes, "epoch" under the x axis and a legend (top right) -> uint8 [H, W, 3]."""
    img = np.full((height, width, 3), 255, np.uint8)
    x_lo, x_hi, y_lo, y_hi = left, width - right, top, height - bottom  # plot box (pixels)
    img[[y_lo - 1, y_hi], x_lo - 1:x_hi + 1] = 160
    img[y_lo - 1:y_hi + 1, [x_lo - 1, x_hi]] = 160
    paste(img, text(title), 6, 6)
    label = text("epoch")
    paste(img, label, height - label.shape[0] - 4, (x_lo + x_hi - label.shape[1]) // 2)
    points = [(np.asarray(x, float), np.asarray(y, float), c, name) for x, y, c, name in series if len(x)]
    if not points:
        return img
    all_x = np.concatenate([p[0] for p in points])
    all_y = np.concatenate([p[1] for p in points])
    x0, x1 = all_x.min(), max(all_x.max(), all_x.min() + 1e-9)
    y0, y1 = all_y.min(), max(all_y.max(), all_y.min() + 1e-9)
    for value, row in ((y1, y_lo), (y0, y_hi - 10)):
        tick = text(f"{value:.4g}")
        paste(img, tick, row, x_lo - 4 - tick.shape[1])
    for value, col in ((x0, x_lo), (x1, None)):
        tick = text(f"{value:.4g}")
        paste(img, tick, y_hi + 4, x_hi - tick.shape[1] if col is None else col)
    for xs, ys, color, _ in points:
        t = np.linspace(0, 1, 4 * width) if len(xs) > 1 else np.zeros(1)
        px = np.interp(t, np.linspace(0, 1, len(xs)), xs)
        py = np.interp(t, np.linspace(0, 1, len(ys)), ys)
        cols = x_lo + np.round((px - x0) / (x1 - x0) * (x_hi - x_lo - 1)).astype(int)
        rows = y_hi - 1 - np.round((py - y0) / (y1 - y0) * (y_hi - y_lo - 1)).astype(int)
        for dr in (-1, 0, 1):
            img[np.clip(rows + dr, 0, height - 1), cols] = color
    col = x_hi
    for _, _, color, name in reversed(points):  # legend: right-aligned in the title row
        entry = text(name, color)
        col -= entry.shape[1]
        paste(img, entry, 6, col)
        img[10:12, col - 16:col - 4] = color
        col -= 28
    return img


def plot_history(history, path):
    """history: the per-epoch records of training (epoch, loss, psnr {set: dB})."""
    epochs = [r["epoch"] for r in history]
    loss = _panel([(epochs, [r["loss"] for r in history], COLORS[0], "train")], "TRAINING LOSS (MEAN L1)")
    sets = sorted({name for r in history for name in r["psnr"]})
    psnr = _panel([([r["epoch"] for r in history if name in r["psnr"]],
                    [r["psnr"][name] for r in history if name in r["psnr"]], COLORS[(i + 1) % len(COLORS)], name)
                   for i, name in enumerate(sets)], "VALIDATION PSNR (dB)")
    write_image(path, np.concatenate([loss, np.full((8, loss.shape[1], 3), 255, np.uint8), psnr]))


# -- the comparison figure of eval.py ---------------------------------------------------------

def _worst_window(err, size, step=4):
    """Top-left corner of the size x size window with the largest summed error."""
    h, w = err.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    tops, lefts = np.arange(0, h - size + 1, step), np.arange(0, w - size + 1, step)
    sums = (integral[tops[:, None] + size, lefts[None, :] + size] - integral[tops[:, None], lefts[None, :] + size]
            - integral[tops[:, None] + size, lefts[None, :]] + integral[tops[:, None], lefts[None, :]])
    i, j = np.unravel_index(np.argmax(sums), sums.shape)
    return int(tops[i]), int(lefts[j])


def figure_row(panels, size=FIGURE_CROP, gap=FIGURE_GAP):
    """Same-size uint8 images (HxW or HxWx3) -> one uint8 row of crops with white gaps.

    The crop is where the first panel (bicubic) differs most from the last (HR).
    """
    panels = [np.repeat(p[:, :, None], 3, axis=2) if p.ndim == 2 else p for p in panels]
    h, w = panels[0].shape[:2]
    size = min(size, h, w)
    err = (rgb_to_y(panels[0]) - rgb_to_y(panels[-1])) ** 2
    top, left = _worst_window(err, size)
    crops = [p[top:top + size, left:left + size] for p in panels]
    white = np.full((size, gap, 3), 255, np.uint8)
    return np.concatenate([c for crop in crops for c in (crop, white)][:-1], axis=1)


def figure(rows, captions, gap=FIGURE_GAP):
    """Rows from `figure_row` -> one uint8 image: `captions` centred over the columns, then the
    rows stacked with white gaps (narrower rows padded)."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    column = (rows[0].shape[1] - gap * (len(captions) - 1)) // len(captions)
    band = np.full((18, width, 3), 255, np.uint8)
    for i, caption in enumerate(captions):
        label = text(caption)
        paste(band, label, 4, max(i * (column + gap) + (column - label.shape[1]) // 2, 0))
    white = np.full((gap, width, 3), 255, np.uint8)
    return np.concatenate([band] + [c for r in padded for c in (r, white)][:-1], axis=0)
