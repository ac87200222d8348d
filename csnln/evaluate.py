"""Benchmark evaluation and upscaling of user images (the library behind eval.py).

Benchmarks use the EDSR folder layout (see `LAYOUT`). Each super-resolved image is
quantised to 8 bits, the HR image is cropped from its top-left corner to the SR size,
and PSNR / SSIM are measured on the Y channel with `shave = scale` border pixels removed
(`csnln.metrics`). Three methods:

* ``csnln``: the network of a checkpoint, through `csnln.inference.upscale`;
* ``bicubic``: MATLAB bicubic upscaling of the shipped 8-bit LR files, same pipeline;
* ``bicubic_paper``: the DRCN/VDSR table recipe on the floating-point Y plane of the HR
  image (`csnln.bicubic.bicubic_paper_y`); it needs no LR files.
"""
import json
import pathlib
import sys
import time

import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from .files import atomic_write
from .bicubic import bicubic_paper_y, bicubic_upscale, paper_hr_y
from .images import IMAGE_EXTENSIONS, ImageError, read_image, to_rgb_uint8, to_tensor, to_uint8, write_image
from .inference import upscale
from .metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y

MODELS = ("csnln", "bicubic", "bicubic_paper")
FIGURE_IMAGES = 3   # images per figure (the first ones of the set)
FIGURE_CROP = 120   # HR pixels per crop side
FIGURE_GAP = 6      # white pixels between crops

LAYOUT = """expected the EDSR layout under --data_path {root}:
  {root}/benchmark/<Set>/HR/<name>.png
  {root}/benchmark/<Set>/LR_bicubic/X<s>/<name>x<s>.png
  {root}/DIV2K/DIV2K_train_HR/0801.png                      (--data_test DIV2K, --data_range .../801-900)
  {root}/DIV2K/DIV2K_train_LR_bicubic/X<s>/0801x<s>.png"""


class EvaluationError(ValueError):
    """Bad input to the evaluation (missing data, unusable options); the message says what to fix."""


# --------------------------------------------------------------------------- datasets

def _layout_error(what, root):
    return EvaluationError(f"{what}\n{LAYOUT.format(root=root)}")


def _test_range(data_range):
    part = str(data_range).split("/")[-1]
    try:
        first, last = (int(v) for v in part.split("-"))
    except ValueError:
        raise EvaluationError(f"data_range {data_range!r}: expected train/test ranges like 1-800/801-900") from None
    if first < 1 or last < first:
        raise EvaluationError(f"data_range {data_range!r}: bad test range {part!r}")
    return first, last


def dataset_images(data_path, dataset, scale, data_range="1-800/801-810", need_lr=True):
    """-> [(name, HR path, LR path)] of one test set, in name order; raises EvaluationError
    showing the expected layout when folders or files are missing."""
    root = pathlib.Path(data_path)
    if dataset == "DIV2K":
        base = root / "DIV2K"
        hr_dir, lr_dir = base / "DIV2K_train_HR", base / "DIV2K_train_LR_bicubic" / f"X{scale}"
        first, last = _test_range(data_range)
        names = [f"{i:04d}" for i in range(first, last + 1)]
    else:
        base = root / "benchmark" / dataset
        hr_dir, lr_dir = base / "HR", base / "LR_bicubic" / f"X{scale}"
        names = sorted(p.stem for p in hr_dir.glob("*.png")) if hr_dir.is_dir() else []
    for folder in (hr_dir, lr_dir) if need_lr else (hr_dir,):
        if not folder.is_dir():
            raise _layout_error(f"{dataset}: folder not found: {folder}", root)
    if not names:
        raise _layout_error(f"{dataset}: no .png images in {hr_dir}", root)
    items = [(n, hr_dir / f"{n}.png", lr_dir / f"{n}x{scale}.png") for n in names]
    missing = [str(p) for _, hr, lr in items for p in ((hr, lr) if need_lr else (hr,)) if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _layout_error(f"{dataset} x{scale}: missing {missing[0]}{more}", root)
    return items


def _read_hr_paper(path):
    """HR for the DRCN/VDSR recipe: a grey image stays a plane (its own Y), as the recipe does."""
    try:
        raw = imageio.imread(path)
    except Exception as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    img = to_rgb_uint8(raw)
    grey = raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] in (1, 2))
    return img[:, :, 0] if grey else img


# --------------------------------------------------------------------------- methods

def _sync(device):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class NetworkUpscaler:
    """uint8 LR [H, W, 3] -> uint8 SR [sH, sW, 3] with a network (see `inference.upscale`)."""

    def __init__(self, model, scale, rgb_range, device, chop=False, self_ensemble=False, precision="fp32"):
        self.model, self.scale, self.rgb_range, self.device = model, scale, rgb_range, device
        self.options = dict(chop=chop, self_ensemble=self_ensemble, precision=precision)

    def __call__(self, lr):
        x = to_tensor(lr, self.rgb_range).unsqueeze(0).to(self.device)
        return to_uint8(upscale(self.model, x, self.scale, **self.options)[0], self.rgb_range)


class BicubicUpscaler:
    device = None

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, lr):
        return bicubic_upscale(lr, self.scale)


def _peak_memory_reset(device):
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device):
    """CUDA: peak allocated memory since the reset; CPU: the process's peak resident set so far."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


# --------------------------------------------------------------------------- figures

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


def figure(rows, gap=FIGURE_GAP):
    """Rows from `figure_row` -> one uint8 image, rows stacked with white gaps (narrower rows padded)."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    white = np.full((gap, width, 3), 255, np.uint8)
    return np.concatenate([c for r in padded for c in (r, white)][:-1], axis=0)


# --------------------------------------------------------------------------- evaluation

def write_json_atomic(path, data):
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), binary=False)


def evaluate_dataset(method, dataset, scale, *, data_path, upscaler=None, data_range="1-800/801-810",
                     metric="matlab", out=None, save_results=False, label="CSNLN", progress=True):
    """Score one test set at one scale -> {"psnr", "ssim", "images", "seconds_per_image",
    "peak_memory_mb", "per_image"}; with `out`, also writes a crop figure
    (out/figures/<Set>_x<s>.png) and, with `save_results`, the SR images (out/<Set>/x<s>/<name>.png).

    `method` is "csnln" (give `upscaler`: uint8 LR -> uint8 SR), "bicubic" or "bicubic_paper".
    """
    if method not in MODELS:
        raise EvaluationError(f"model must be one of {', '.join(MODELS)}, got {method!r}")
    if method == "bicubic":
        upscaler = BicubicUpscaler(scale)
    items = dataset_images(data_path, dataset, scale, data_range, need_lr=method != "bicubic_paper")
    device = getattr(upscaler, "device", None)
    _peak_memory_reset(device)
    per_image, rows, seconds = {}, [], 0.0
    for name, hr_path, lr_path in tqdm(items, desc=f"{dataset} x{scale}", unit="img", disable=not progress,
                                       file=sys.stderr, leave=False):
        if method == "bicubic_paper":
            hr_raw = _read_hr_paper(hr_path)
            start = time.perf_counter()
            sr = bicubic_paper_y(hr_raw, scale)
            seconds += time.perf_counter() - start
            hr = paper_hr_y(hr_raw, scale)
            score = (psnr_y(sr, hr, scale), ssim_y(sr, hr, scale))
            panels = [sr, hr]
        else:
            hr, lr = read_image(hr_path), read_image(lr_path)
            _sync(device)
            start = time.perf_counter()
            sr = upscaler(lr)
            _sync(device)
            seconds += time.perf_counter() - start
            sh, sw = sr.shape[:2]
            if hr.shape[0] < sh or hr.shape[1] < sw:
                raise EvaluationError(f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}, smaller than "
                                      f"{lr_path} x{scale} ({sw}x{sh})")
            hr = hr[:sh, :sw]
            score = (psnr(sr, hr, scale, metric), ssim(sr, hr, scale))
            panels = [sr, hr] if method == "bicubic" else None
            if method == "csnln" and out is not None and len(rows) < FIGURE_IMAGES:
                panels = [bicubic_upscale(lr, scale), sr, hr]
        per_image[name] = {"psnr": score[0], "ssim": score[1]}
        if out is not None and save_results:
            write_image(pathlib.Path(out) / dataset / f"x{scale}" / f"{name}.png", sr)
        if out is not None and panels is not None and len(rows) < FIGURE_IMAGES:
            rows.append(figure_row(panels))
    if out is not None and rows:
        write_image(pathlib.Path(out) / "figures" / f"{dataset}_x{scale}.png", figure(rows))
    scores = np.array([[v["psnr"], v["ssim"]] for v in per_image.values()])
    return {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean()), "images": len(per_image),
            "seconds_per_image": seconds / len(per_image), "peak_memory_mb": _peak_memory_mb(device),
            "per_image": per_image}


def evaluate(method, datasets, scale, *, data_path, upscaler=None, data_range="1-800/801-810",
             metric="matlab", out=None, save_results=False, progress=True):
    """Several test sets at one scale -> {"Set5": {"x2": {...}}, ...}; with `out`, writes
    out/results.json atomically (and figures / SR images, see `evaluate_dataset`)."""
    if save_results and out is None:
        raise EvaluationError("--save_results needs --out DIR (where the SR images go)")
    # check every set before the (possibly long) runs
    for dataset in datasets:
        dataset_images(data_path, dataset, scale, data_range, need_lr=method != "bicubic_paper")
    results = {}
    for dataset in datasets:
        results.setdefault(dataset, {})[f"x{scale}"] = evaluate_dataset(
            method, dataset, scale, data_path=data_path, upscaler=upscaler, data_range=data_range,
            metric=metric, out=out, save_results=save_results, progress=progress)
    if out is not None:
        write_json_atomic(pathlib.Path(out) / "results.json", results)
    return results


def format_table(results, title=None):
    """The stdout table: one line per (dataset, scale)."""
    lines = [title] if title else []
    lines.append(f"{'dataset':<10} {'scale':>5} {'PSNR':>8} {'SSIM':>7} {'s/img':>8} {'peak MB':>9}")
    for dataset, by_scale in results.items():
        for scale, r in by_scale.items():
            mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(f"{dataset:<10} {scale:>5} {r['psnr']:>8.3f} {r['ssim']:>7.4f} "
                         f"{r['seconds_per_image']:>8.3f} {mem:>9}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- user images

def list_inputs(path):
    """A file -> [it]; a folder -> its image files (by extension), sorted."""
    path = pathlib.Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise EvaluationError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
        return files
    raise EvaluationError(f"input not found: {path}")


def upscale_files(upscaler, inputs, output_dir, scale, progress=True):
    """Upscale image files into output_dir/<stem>_x<s>.png (8-bit RGB: grey replicated, alpha
    dropped, 16-bit reduced). A file that fails is reported on stderr and skipped.
    -> (written paths, [(input, message)] failures)."""
    output_dir = pathlib.Path(output_dir)
    stems = [p.stem for p in inputs]
    written, failures = [], []
    for path in tqdm(inputs, desc=f"x{scale}", unit="img", disable=not progress, file=sys.stderr, leave=False):
        stem = path.stem if stems.count(path.stem) == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        target = output_dir / f"{stem}_x{scale}.png"
        try:
            write_image(target, upscaler(read_image(path)))
        except (ImageError, OSError, ValueError, RuntimeError, MemoryError) as e:
            message = str(e) if str(path) in str(e) else f"{path}: {e}"
            failures.append((path, message))
            tqdm.write(f"eval.py: skipped {message}", file=sys.stderr)
            continue
        written.append(target)
    return written, failures
