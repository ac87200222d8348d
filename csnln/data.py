"""Datasets in the EDSR folder layout: DIV2K for training, benchmark sets for testing.

    data_path/DIV2K/DIV2K_train_HR/0001.png
    data_path/DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png      (X3, X4)
    data_path/benchmark/Set5/HR/baby.png
    data_path/benchmark/Set5/LR_bicubic/X2/babyx2.png
Missing LR images of training sets are made from HR with MATLAB-exact bicubic and cached on
disk; test sets are read by `csnln.evaluate`, which needs their LR files.
"""
import hashlib
import os
import pathlib

import numpy as np
from torch.utils.data import Dataset

from .config import UserError, parse_range
from .files import atomic_write
from .images import ImageError, read_image, to_tensor, write_image
from .imresize import imresize, modcrop

LAYOUT = ("expected data_path/DIV2K/DIV2K_train_HR/0001.png and DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png "
          "(X3, X4; made from HR when missing) for training, benchmark/<Set>/HR/<name>.png and "
          "benchmark/<Set>/LR_bicubic/X2/<name>x2.png for testing")


class DataLayoutError(UserError, FileNotFoundError):
    """data_path does not hold what the configuration names; the message shows the layout."""


def _lr_cache_dir(lr_dir):
    """The LR folder itself when writable, else a per-data-path folder under ~/.cache/csnln."""
    try:
        lr_dir.mkdir(parents=True, exist_ok=True)
        if os.access(lr_dir, os.W_OK):
            return lr_dir
    except OSError:
        pass
    key = hashlib.sha1(str(lr_dir.resolve()).encode()).hexdigest()[:16]
    fallback = pathlib.Path.home() / ".cache" / "csnln" / "lr" / key
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def make_lr(hr_path, lr_path, scale):
    """LR = MATLAB imresize(modcrop(HR), 1/scale), written atomically to `lr_path`."""
    lr = imresize(modcrop(read_image(hr_path), scale), 1.0 / scale)
    write_image(lr_path, lr)
    return lr


def _lr_path(hr, lr_dir, scale):
    """The LR file of `hr` in `lr_dir`; where it is missing, a cached one made from HR."""
    lr = lr_dir / f"{hr.stem}x{scale}.png"
    if lr.is_file():
        return lr
    lr = _lr_cache_dir(lr_dir) / lr.name
    if not lr.is_file():
        make_lr(hr, lr, scale)
    return lr


def div2k_pairs(data_path, scale, first, last):
    """[(HR path, LR path)] for DIV2K images first..last; LR made from HR where missing."""
    root = pathlib.Path(data_path) / "DIV2K"
    hr_dir = root / "DIV2K_train_HR"
    if not hr_dir.is_dir():
        raise DataLayoutError(f"no DIV2K training images: {hr_dir} does not exist; {LAYOUT}")
    lr_dir = root / "DIV2K_train_LR_bicubic" / f"X{scale}"
    pairs = []
    for i in range(first, last + 1):
        hr = hr_dir / f"{i:04d}.png"
        if hr.is_file():
            pairs.append((hr, _lr_path(hr, lr_dir, scale)))
    if not pairs:
        raise DataLayoutError(f"no DIV2K images {first:04d}..{last:04d} in {hr_dir}; {LAYOUT}")
    return pairs


def benchmark_pairs(data_path, name, scale):
    """[(HR path, LR path)] of a benchmark set, sorted by name."""
    root = pathlib.Path(data_path) / "benchmark" / name
    hr_dir, lr_dir = root / "HR", root / "LR_bicubic" / f"X{scale}"
    if not hr_dir.is_dir():
        raise DataLayoutError(f"benchmark set {name!r} not found: {hr_dir} does not exist; {LAYOUT}")
    pairs = [(hr, _lr_path(hr, lr_dir, scale)) for hr in sorted(hr_dir.glob("*.png"))]
    if not pairs:
        raise DataLayoutError(f"benchmark set {name!r} has no PNG images in {hr_dir}; {LAYOUT}")
    return pairs


class ImageCache:
    """Decoded uint8 images by path: "memory" (decoded once per process), "npy"
    (decoded once to .npy files under `npy_dir`, memory-mapped after) or "none"."""

    def __init__(self, mode, npy_dir=None):
        if mode not in ("memory", "npy", "none"):
            raise ValueError(f"cache must be memory, npy or none, got {mode!r}")
        self.mode, self.npy_dir, self.images = mode, npy_dir, {}

    def get(self, path):
        if self.mode == "none":
            return read_image(path)
        if path not in self.images:
            self.images[path] = read_image(path) if self.mode == "memory" else self._npy(path)
        return self.images[path]

    def _npy(self, path):
        key = hashlib.sha1(str(pathlib.Path(path).resolve()).encode()).hexdigest()[:16]
        npy = pathlib.Path(self.npy_dir) / f"{pathlib.Path(path).stem}-{key}.npy"
        if not npy.is_file():
            img = read_image(path)
            atomic_write(npy, lambda f: np.save(f, img))
        return np.load(npy, mmap_mode="r")


def augment(lr, hr, flips):
    """Apply (horizontal flip, vertical flip, transpose) flags to an aligned LR/HR pair."""
    hflip, vflip, transpose = flips
    out = []
    for img in (lr, hr):
        if hflip:
            img = img[:, ::-1]
        if vflip:
            img = img[::-1]
        if transpose:
            img = img.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(img))
    return out


class TrainPatches(Dataset):
    """Random aligned LR/HR patches: item i -> (LR [3, p/s, p/s], HR [3, p, p]) in [0, rgb_range].

    One epoch has `length` items cycling over the images. The crop and the flips of
    item i in epoch e depend only on (seed, e, i), so runs resume exactly and do
    not depend on the number of loader workers.
    """

    def __init__(self, pairs, scale, patch_size, rgb_range, length, seed, augment=True, cache="memory",
                 npy_dir=None):
        self.pairs, self.scale, self.patch_size = pairs, scale, patch_size
        self.rgb_range, self.length, self.seed, self.augment = rgb_range, length, seed, augment
        self.cache = ImageCache(cache, npy_dir)
        self.epoch = 0
        for hr_path, lr_path in pairs:  # decode (and check) every image once, before workers fork
            hr, lr = self.cache.get(hr_path), self.cache.get(lr_path)
            lp = patch_size // scale
            if lr.shape[0] < lp or lr.shape[1] < lp:
                raise ImageError(f"{lr_path}: LR image {lr.shape[1]}x{lr.shape[0]} is smaller than the "
                                 f"LR patch {lp}x{lp} (patch_size {patch_size} / scale {scale})")
            if hr.shape[0] < lr.shape[0] * scale or hr.shape[1] < lr.shape[1] * scale:
                raise ImageError(f"{hr_path}: HR is smaller than {scale} x its LR {lr_path}")

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        hr_path, lr_path = self.pairs[index % len(self.pairs)]
        hr, lr = self.cache.get(hr_path), self.cache.get(lr_path)
        lp, s = self.patch_size // self.scale, self.scale
        y = int(rng.integers(0, lr.shape[0] - lp + 1))
        x = int(rng.integers(0, lr.shape[1] - lp + 1))
        lr_patch = lr[y:y + lp, x:x + lp]
        hr_patch = hr[y * s:(y + lp) * s, x * s:(x + lp) * s]
        flips = tuple(bool(f) for f in rng.random(3) < 0.5) if self.augment else (False,) * 3
        lr_patch, hr_patch = augment(lr_patch, hr_patch, flips)
        return to_tensor(lr_patch, self.rgb_range), to_tensor(hr_patch, self.rgb_range)


def training_set(config, npy_dir=None):
    """The TrainPatches of a configuration; data_train may name several sets with '+'."""
    (first, last), _ = parse_range(config["data_range"])
    pairs = []
    for name in config["data_train"].split("+"):
        if name == "DIV2K":
            pairs += div2k_pairs(config["data_path"], config["scale"], first, last)
        else:
            pairs += benchmark_pairs(config["data_path"], name, config["scale"])
    return TrainPatches(pairs, config["scale"], config["patch_size"], config["rgb_range"],
                        length=config["batch_size"] * config["test_every"], seed=config["seed"],
                        augment=not config["no_augment"], cache=config["cache"], npy_dir=npy_dir)
