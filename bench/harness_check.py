"""train.py and eval.py run as a user runs them, with speed and memory per run, in one table.

    python bench/harness_check.py OUT [--runs NAME ...] [--seconds 300]

Each training run is two short epochs on the bundled DIV2K image (tests/data): epoch 1 holds the
warm-up (autotuning, compilation, CUDA-graph recording), epoch 2 gives the step time and the peak
memory that train.py logs. On a GPU the runs are the paper's configurations (batch 16, depth 12,
128 features, LR patch 48: HR 96 / 144 / 192 at x2 / x3 / x4) with one lever changed at a time;
on the CPU a tiny model stands in and the CUDA-only runs are left out. eval.py then scores the
x2 run's checkpoint on one LR 256 x 256 image (a crop of the DIV2K sample; fp16 on CUDA; 32 x 32 on
the CPU) and on Set5, whole images and with --chop (seconds per image, peak memory). Runs go in the
order of RUNS, most valuable first, each under the time left of `--seconds`; the rest are listed as
not run, and a run cut short by that time is listed as timed out: neither is a failure. The
runs with a prediction (bench/predictions.py, H200) show it and measured / predicted. Logs and
outputs go under OUT; the table is printed and written to OUT/harness.md.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import imageio.v2 as imageio
import torch

from bench import predictions
from bench.markdown import table
from csnln.imresize import imresize

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CUDA = torch.cuda.is_available()
# scale, precision, extra options
TRAIN_RUNS = {
    "x2": (2, "fp16", []),
    "x3": (3, "fp16", []),
    "x4": (4, "fp16", []),
    "x2 compile": (2, "fp16", ["--compile", "true"]),
    "x3 compile": (3, "fp16", ["--compile", "true"]),
    "x4 compile": (4, "fp16", ["--compile", "true"]),
    "x4 checkpoint_sem": (4, "fp16", ["--checkpoint_sem", "true"]),
    "x2 bf16": (2, "bf16", []),
    "x2 fp32": (2, "fp32", []),
    "x2 contiguous": (2, "fp16", ["--channels_last", "false"]),   # the default on CUDA is channels-last
    "x2 cuda_graphs": (2, "fp16", ["--cuda_graphs", "true"]),
}
CROP = 256 if CUDA else 32   # LR side of the one-image test set Crop{CROP}
CROP_RUN = f"eval LR {CROP} whole"
# x2's checkpoint: (test set, options)
EVAL_RUNS = {CROP_RUN: (f"Crop{CROP}", ["--precision", "fp16"] if CUDA else []),
             "eval Set5 whole": ("Set5", []), "eval Set5 chop": ("Set5", ["--chop", "true"])}
CUDA_ONLY = {"x2 cuda_graphs"}
PREDICTED_MS = {"x2": predictions.step_ms(2), "x3": predictions.step_ms(3), "x4": predictions.step_ms(4),
                CROP_RUN: predictions.inference_ms(CROP, CROP)}
if CUDA:
    MODEL, ITERATIONS, LR_PATCH, BATCH = ["--n_feats", "128", "--depth", "12"], 10, 48, 16
else:
    MODEL, ITERATIONS, LR_PATCH, BATCH = ["--n_feats", "8", "--depth", "1"], 3, 12, 4  # 12: x2, x3 and x4 divide it
    TRAIN_RUNS = {name: (scale, "fp32" if precision == "fp16" else precision, extra)
                  for name, (scale, precision, extra) in TRAIN_RUNS.items() if name not in CUDA_ONLY}
ORDER = ["x2", "x3", "x4", CROP_RUN, "x2 compile", "x3 compile", "x4 compile", "eval Set5 whole",
         "eval Set5 chop", "x4 checkpoint_sem", "x2 bf16", "x2 fp32", "x2 contiguous", "x2 cuda_graphs"]
RUNS = [name for name in ORDER if name in TRAIN_RUNS or name in EVAL_RUNS]
MIN_SECONDS = 20  # a run is not started with less time left


def _data_path(out):
    """OUT/data: the bundled images, linked, so that the x3 and x4 LR images that train.py makes
    land in OUT and not in the source tree; and benchmark/Crop{CROP}, the DIV2K sample's top-left
    2 CROP x 2 CROP (x2: LR CROP x CROP, MATLAB bicubic)."""
    root = out / "data"
    sets = [p.relative_to(DATA) for p in (DATA / "benchmark").iterdir()]
    for part in ("DIV2K/DIV2K_train_HR", "DIV2K/DIV2K_train_LR_bicubic/X2", *sets):
        link = root / part
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(DATA / part, target_is_directory=True)
    crop = root / "benchmark" / f"Crop{CROP}"
    if not crop.is_dir():
        hr = imageio.imread(DATA / "DIV2K" / "DIV2K_train_HR" / "0004.png")[:2 * CROP, :2 * CROP]
        for folder, image in (("HR", hr), ("LR_bicubic/X2", imresize(hr, 0.5))):
            (crop / folder).mkdir(parents=True)
            imageio.imwrite(crop / folder / ("0004.png" if folder == "HR" else "0004x2.png"), image)
    return root


def _train_argv(name, out):
    scale, precision, extra = TRAIN_RUNS[name]
    return ["train.py", "--data_path", str(_data_path(out.parent)), "--data_range", "4-4/4-4", "--data_test", "", "--scale",
            str(scale), "--patch_size", str(LR_PATCH * scale), "--batch_size", str(BATCH), "--epochs", "2",
            "--test_every", str(ITERATIONS), "--print_every", str(ITERATIONS), "--precision", precision,
            "--n_threads", "2", "--cache", "memory", "--save", str(out), "--overwrite", "true", *MODEL, *extra]


def _eval_argv(name, ckpt, out):
    dataset, options = EVAL_RUNS[name]
    return ["eval.py", "--ckpt", str(ckpt), "--data_path", str(_data_path(out.parent)), "--data_test", dataset,
            "--scale", "2", "--out", str(out), *options]


def run_tool(argv, log, seconds=None):
    """Run train.py or eval.py from the source tree, output to `log`, for at most `seconds` ->
    None when it succeeded, else why not (one short line)."""
    try:
        with open(log, "w") as f:
            code = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=seconds).returncode
    except subprocess.TimeoutExpired:
        return f"timed out after {seconds:.0f} s"
    if code:
        lines = pathlib.Path(log).read_text().strip().splitlines()
        return f"exit {code}: {lines[-1][:120] if lines else 'no output'}"
    return None


def _predicted(name, ms):
    """[predicted ms, measured / predicted] cells of a run (GPU only: the predictions are the H200's)."""
    if name not in PREDICTED_MS:
        return ["", ""]
    return [f"{PREDICTED_MS[name]:.3g}", f"{ms / PREDICTED_MS[name]:.2f}" if CUDA and ms else ""]


def _train_row(name, out, seconds):
    failed = run_tool(_train_argv(name, out), out.with_suffix(".log"), seconds)
    if failed:
        return [name, failed, "", "", "", *_predicted(name, None)]
    epochs = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    first, second = epochs
    return [name, "ok", f"{first['step_ms'] * ITERATIONS / 1e3:.1f}", f"{second['step_ms']:.1f}",
            f"{second['peak_memory_mb']:.0f}", *_predicted(name, second["step_ms"])]


def _eval_row(name, ckpt, out, seconds):
    failed = run_tool(_eval_argv(name, ckpt, out), out.with_suffix(".log"), seconds)
    if failed:
        return [name, failed, "", "", "", *_predicted(name, None)]
    result = json.loads((out / "results.json").read_text())[EVAL_RUNS[name][0]]["x2"]
    ms = 1e3 * result["seconds_per_image"]
    return [name, f"ok, PSNR {result['psnr']:.2f} dB", "", f"{ms:.0f} / image", f"{result['peak_memory_mb']:.0f}",
            *_predicted(name, ms)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=RUNS)
    parser.add_argument("--seconds", type=float, default=300, help="time for all runs together")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.seconds
    ckpt = args.out / "x2" / "model_latest.pt"
    rows = []
    for name in RUNS:
        if name not in args.runs:
            continue
        left = deadline - time.monotonic()
        folder = args.out / name.replace(" ", "_")
        if left < MIN_SECONDS:
            rows.append([name, "not run: out of time", "", "", "", *_predicted(name, None)])
        elif name in EVAL_RUNS and not ckpt.is_file():
            rows.append([name, "not run: no x2 checkpoint", "", "", "", *_predicted(name, None)])
        elif name in EVAL_RUNS:
            rows.append(_eval_row(name, ckpt, folder, left))
        else:
            rows.append(_train_row(name, folder, left))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if CUDA else "CPU"
    text = (f"{device}, torch {torch.__version__}; training: batch {BATCH}, LR patch {LR_PATCH}, "
            f"{' '.join(MODEL)}, {ITERATIONS} steps per epoch\n\n"
            + table(["run", "result", "epoch 1 (warm-up) s", "ms per step or image", "peak MB", "predicted ms (H200)",
                     "measured / predicted"], rows))
    (args.out / "harness.md").write_text(text + "\n")
    print(text)
    return int(any(row[1].startswith("exit") for row in rows))


if __name__ == "__main__":
    sys.exit(main())
