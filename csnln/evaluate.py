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

from kernels import resolve_backend

from .bicubic import bicubic_paper_y, bicubic_upscale, paper_hr_y
from .checkpoint import load_model
from .config import ConfigError, UserError, parse_range
from .files import atomic_write, writable_dir
from .images import IMAGE_EXTENSIONS, ImageError, read_image, to_rgb_uint8, to_tensor, to_uint8, write_image
from .inference import (check_runnable, inference_precision, memory_format, peak_memory_mb, pick_device,
                        reset_peak_memory, set_cudnn_benchmark, upscale, use_channels_last)
from .memory import largest_tile
from .metrics import psnr, psnr_y, ssim, ssim_y
from .onnx_runtime import OnnxNetwork
from .plot import comparison_figure, save_figure
from .provenance import provenance
from .shipped import shipped_checkpoint
from .tiling import check_tiling

MODELS = ("csnln", "bicubic", "bicubic_paper")
AUTO_TILE = 64    # LR pixels a side of --tile auto (--input on the CPU): see README, "Upscale your own images"
FIGURE_IMAGES = 3   # images per figure (the first ones of the set)

CHECKPOINT_KEYS = ("scale", "n_feats", "depth", "rgb_range")  # read from the checkpoint; a given one must match
VALIDATION_OPTIONS = ("chop", "self_ensemble", "precision")  # a training checkpoint's, unless given
LAYOUT = ("expected the EDSR layout under --data_path {root}: benchmark/<Set>/HR/<name>.png and "
          "benchmark/<Set>/LR_bicubic/X<s>/<name>x<s>.png; for --data_test DIV2K (the images of the second "
          "part of --data_range) DIV2K/DIV2K_train_HR/0801.png and DIV2K/DIV2K_train_LR_bicubic/X<s>/0801x<s>.png")


class EvaluationError(UserError, ValueError):
    """Bad input to the evaluation (missing data, unusable options); the message says what to fix."""


# --------------------------------------------------------------------------- datasets

def _layout_error(what, root):
    missing = "" if root.is_dir() else f" ({root} does not exist; a clone of csnln has sample sets in tests/data)"
    return EvaluationError(f"{what}; {LAYOUT.format(root=root)}{missing}")


def dataset_images(data_path, dataset, scale, data_range="1-800/801-810", need_lr=True):
    """-> [(name, HR path, LR path)] of one test set, in name order; raises EvaluationError
    showing the expected layout when folders or files are missing."""
    root = pathlib.Path(data_path)
    if dataset == "DIV2K":
        base = root / "DIV2K"
        hr_dir, lr_dir = base / "DIV2K_train_HR", base / "DIV2K_train_LR_bicubic" / f"X{scale}"
        _, (first, last) = parse_range(data_range)
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

    def __init__(self, model, scale, rgb_range, device, chop=False, self_ensemble=False, precision="fp32",
                 compile=False, channels_last=False, tile=0, tile_overlap=0):
        self.memory_format = memory_format(channels_last)
        if isinstance(model, torch.nn.Module):   # else an OnnxNetwork, which runs on the CPU
            model.to(device, memory_format=self.memory_format)
        self.model = torch.compile(model) if compile else model
        self.scale, self.rgb_range, self.device = scale, rgb_range, device
        self.options = dict(chop=chop, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble,
                            precision=precision)

    def __call__(self, lr):
        x = to_tensor(lr, self.rgb_range).unsqueeze(0).to(self.device, memory_format=self.memory_format)
        return to_uint8(upscale(self.model, x, self.scale, **self.options)[0], self.rgb_range)


class BicubicUpscaler:
    device = None

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, lr):
        return bicubic_upscale(lr, self.scale)


# --------------------------------------------------------------------------- evaluation

def write_json_atomic(path, data):
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), binary=False)


def evaluate_dataset(method, dataset, scale, *, data_path, upscaler=None, data_range="1-800/801-810",
                     metric="matlab", out=None, save_results=False, progress=True):
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
    captions = {"csnln": ("bicubic", "CSNLN", "HR"), "bicubic": ("bicubic", "HR"),
                "bicubic_paper": ("bicubic (Y)", "HR (Y)")}[method]
    reset_peak_memory(device)
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
            rows.append((name, panels))
    if out is not None and rows:
        save_figure(comparison_figure(rows, captions), pathlib.Path(out) / "figures" / f"{dataset}_x{scale}.png")
    scores = np.array([[v["psnr"], v["ssim"]] for v in per_image.values()])
    return {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean()), "images": len(per_image),
            "seconds_per_image": seconds / len(per_image), "peak_memory_mb": peak_memory_mb(device),
            "per_image": per_image}


def evaluate(method, datasets, scale, *, data_path, upscaler=None, data_range="1-800/801-810",
             metric="matlab", out=None, save_results=False, progress=True, provenance=None):
    """Several test sets at one scale -> {"Set5": {"x2": {...}}, ...}. With `out`, merges them into
    out/results.json (other sets and scales stay), each entry with `provenance`, and writes the
    figures / SR images (see `evaluate_dataset`)."""
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
        if provenance is not None:
            results[dataset][f"x{scale}"]["provenance"] = provenance
    if out is not None:
        path = pathlib.Path(out) / "results.json"
        merged = _read_results(path)
        for dataset, by_scale in results.items():
            merged.setdefault(dataset, {}).update(by_scale)
        write_json_atomic(path, merged)
    return results


def _read_results(path):
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EvaluationError(f"cannot merge into {path} ({e}); move it away or choose another --out") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"cannot merge into {path}: not a results.json; choose another --out")
    return data


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

def list_inputs(path, scale, output):
    """A file -> [it]; a folder -> its image files (by extension), sorted. Also -> [(path, why)]
    of what a folder holds but is skipped: sub-folders, other extensions, and, when the folder is
    `output` too, the `<name>_x<scale>.png` outputs of an earlier run."""
    path = pathlib.Path(path)
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise EvaluationError(f"input not found: {path}")
    same = path.resolve() == pathlib.Path(output).resolve()
    files, skipped = [], []
    for p in sorted(path.iterdir()):
        if p.is_dir():
            skipped.append((p, "a folder (sub-folders are not searched)"))
        elif p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((p, f"not {', '.join(IMAGE_EXTENSIONS)}"))
        elif same and p.name.endswith(f"_x{scale}.png"):
            skipped.append((p, "an output of an earlier run (--input is --output)"))
        else:
            files.append(p)
    if not files:
        raise EvaluationError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return files, skipped


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


# --------------------------------------------------------------------------- eval.py

def inference_options(config, explicit, stored, device):
    """chop, self_ensemble and precision: those given (command line or --config), else those a
    training checkpoint's run validated with (`stored`, its config), else the defaults; and
    channels_last resolved on `device` -> (options, "chop true (checkpoint), ...").
    A stored fp16 runs as fp32 without CUDA."""
    options, said = {}, []
    for key in VALIDATION_OPTIONS:
        from_ckpt = key not in explicit and stored is not None and key in stored
        value = stored[key] if from_ckpt else config[key]
        source = "checkpoint" if from_ckpt else "given" if key in explicit else "default"
        if key == "precision":
            value = inference_precision(value)
            if from_ckpt and value == "fp16" and device.type != "cuda":
                value, source = "fp32", "the checkpoint's fp16 needs CUDA"
        options[key] = value
        said.append(f"{key} {str(value).lower()} ({source})")
    options["channels_last"] = use_channels_last(config["channels_last"], device)
    return options, ", ".join(said)


def tiling_options(config, net, options, backend, device):
    """--tile / --tile_overlap, or the tile --max_memory_gb picks for `net` (a CSNLN or an
    OnnxNetwork) with attention `backend` -> (tile, tile_overlap, "tile 96 (...)" or ""). --tile
    auto tiles --input images on the CPU (AUTO_TILE), where whole-image attention gets slow."""
    tile, overlap, budget = config["tile"], config["tile_overlap"], config["max_memory_gb"]
    auto = tile == "auto"
    if auto:
        tile = AUTO_TILE if config["input"] and device.type == "cpu" and not (budget or options["chop"]) else 0
    if budget < 0:
        raise ConfigError(f"--max_memory_gb must be > 0 (0: no cap), got {budget:g}")
    if budget and tile:
        raise ConfigError("give --tile or --max_memory_gb (which picks the tile), not both")
    if budget:
        element_size = 4 if options["precision"] == "fp32" else 2
        tile = largest_tile(net, budget * 2 ** 30, backend, element_size)
    if tile and options["chop"]:
        raise ConfigError("--chop and --tile / --max_memory_gb are two ways of tiling; choose one")
    check_tiling(tile, overlap, net.size_multiple)
    if not tile:
        return 0, overlap, ""
    source = (f"the largest under --max_memory_gb {budget:g}" if budget else
              "--tile auto: on the CPU, whole-image attention is slow; --tile 0 runs whole images" if auto else "given")
    return tile, overlap, f"; tiles {tile} x {tile} overlapping by {overlap} LR pixels ({source})"


def _network(config, explicit, device):
    """The network of --ckpt or --onnx, or without either the shipped model of --scale -> (network,
    model config, a training checkpoint's config or None, where it came from)."""
    if config["ckpt"] and config["onnx"]:
        raise ConfigError("give --ckpt or --onnx, not both")
    if not config["onnx"]:
        ckpt = config["ckpt"] or shipped_checkpoint(config["scale"])
        expect = {k: config[k] for k in CHECKPOINT_KEYS if k in explicit}
        model, found, stored = load_model(ckpt, expect=expect, attention_backend=config["attention_backend"])
        origin = config["ckpt"] or f"the shipped model {ckpt.name} (its card: {ckpt.parent / 'MODEL_CARD.md'})"
        return model.eval(), found, stored, origin
    if config["device"] == "cuda" or config["compile"] or inference_precision(config["precision"]) != "fp32":
        raise ConfigError("--onnx runs in onnxruntime on the CPU in fp32: drop --device cuda, --compile and "
                          "--precision other than fp32")
    net = OnnxNetwork(config["onnx"])
    found = {key: getattr(net, key) for key in ("scale", "n_feats", "depth", "rgb_range")}
    mismatch = [f"{k}: the file has {found[k]}, asked for {config[k]}" for k in CHECKPOINT_KEYS
                if k in explicit and config[k] != found[k]]
    if mismatch:
        raise ConfigError(f"{config['onnx']} does not match: " + "; ".join(mismatch))
    return net, found, None, f"{config['onnx']} (onnxruntime)"


def _upscaler(config, explicit, device):
    """-> (upscaler or None for the bicubic methods, scale, inference options, a description line)."""
    method = config["model"]
    if method not in MODELS:
        raise ConfigError(f"config key 'model' must be one of {', '.join(MODELS)}, got {method!r}")
    if method != "csnln":
        if config["ckpt"] or config["onnx"]:
            raise ConfigError(f"--ckpt and --onnx are only used with --model csnln, not {method}")
        options, _ = inference_options(config, explicit, None, device)
        return None, config["scale"], options, f"{method}, x{config['scale']}"
    net, found, stored, source = _network(config, explicit, device)
    options, said = inference_options(config, explicit, stored, device)
    if not config["onnx"]:
        check_runnable(options["precision"], config["attention_backend"], device)
    backend = "torch" if config["onnx"] else resolve_backend(config["attention_backend"], torch.empty(0, device=device))
    options["tile"], options["tile_overlap"], tiles = tiling_options(config, net, options, backend, device)
    set_cudnn_benchmark(config["cudnn_benchmark"],
                        shapes_repeat=options["chop"] or options["tile"] or options["self_ensemble"])
    upscaler = NetworkUpscaler(net, found["scale"], found["rgb_range"], device, **options, compile=config["compile"])
    line = (f"CSNLN x{found['scale']} (n_feats {found['n_feats']}, depth {found['depth']}, "
            f"rgb_range {found['rgb_range']}) from {source} on {device}; {said}{tiles}")
    return upscaler, found["scale"], options, line


def run(config, explicit):
    """eval.py: benchmarks, or --input images -> exit status (0, or 1 when some images failed)."""
    device = pick_device("cpu" if config["onnx"] else config["device"])
    upscaler, scale, options, line = _upscaler(config, explicit, device)
    if config["input"] or config["output"]:
        if not (config["input"] and config["output"]):
            raise ConfigError("upscaling your own images needs both --input FILE_OR_DIR and --output DIR")
        if config["model"] == "bicubic_paper":
            raise ConfigError("--model bicubic_paper needs HR images; use --model csnln or bicubic with --input")
        inputs, skipped = list_inputs(config["input"], scale, config["output"])
        writable_dir(config["output"], "--output")
        print(line, file=sys.stderr)
        for path, why in skipped:
            print(f"eval.py: skipped {path}: {why}", file=sys.stderr)
        written, failures = upscale_files(upscaler or BicubicUpscaler(scale), inputs, config["output"], scale)
        print(f"wrote {len(written)} image(s) to {config['output']}"
              + (f"; {len(failures)} failed: " + ", ".join(str(p) for p, _ in failures) if failures else ""))
        return 1 if failures else 0
    if config["out"]:
        writable_dir(config["out"], "--out")
    if config["model"] != "csnln" and (config["chop"] or config["self_ensemble"] or config["tile"] not in (0, "auto")):
        print(f"note: --chop / --tile / --self_ensemble do not apply to --model {config['model']}", file=sys.stderr)
    print(line, file=sys.stderr)
    datasets = [d for d in config["data_test"].split("+") if d]
    if not datasets:
        raise ConfigError("--data_test names no test set (e.g. Set5+Set14)")
    results = evaluate(config["model"], datasets, scale, data_path=config["data_path"], upscaler=upscaler,
                       data_range=config["data_range"], metric=config["metric"], out=config["out"] or None,
                       save_results=config["save_results"],
                       provenance=provenance(config, scale, device, options))
    protocol = "DRCN/VDSR recipe" if config["model"] == "bicubic_paper" else f"{config['metric']} protocol"
    print(format_table(results, f"{config['model']} ({protocol}, Y channel, shave = scale)"))
    if config["out"]:
        print(f"results: {config['out']}/results.json")
    return 0
