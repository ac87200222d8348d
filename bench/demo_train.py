"""gpu_check.sh's `demo` step: train the demo model, score it with eval.py, return its weights.

    python bench/demo_train.py OUT WORK [--seconds S]

On a GPU: configs/demo_x2.yaml (its data staged in bench/gpu_data by bench/stage_gpu_data.py; the
bundled sample in tests/data when not staged). On the CPU a tiny model stands in (a dry run of a
few iterations). eval.py then scores the best checkpoint and bicubic on Set5 and Set14 x2 (whole
images on a GPU; on the CPU with --chop). OUT gets csnln_x2_demo.pt (the original-layout state dict, at most 16 MiB) and demo.json
(the run, the scores and bicubic's); WORK keeps the run folder and demo.md, the table printed.
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench.harness_check import run_tool  # noqa: E402
from bench.markdown import table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo_x2.yaml"
STAGED, BUNDLED = ROOT / "bench" / "gpu_data", ROOT / "tests" / "data"
CPU_STAND_IN = ["--n_feats", "8", "--depth", "1", "--patch_size", "24", "--batch_size", "4", "--test_every", "3",
                "--epochs", "2", "--n_threads", "0", "--data_test", "Set5", "--chop", "true"]
MAX_BYTES = 16 * 2 ** 20   # a device call returns files of at most 16 MiB


def _tool(argv, log):
    """`run_tool`, raising with its one line on failure."""
    failed = run_tool(argv, log)
    if failed:
        raise SystemExit(f"demo_train.py: {argv[0]} {failed}")


def _scores(results):
    return {name: {k: results[name]["x2"][k] for k in ("psnr", "ssim", "seconds_per_image")} for name in results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("work", type=pathlib.Path)
    parser.add_argument("--seconds", type=float, help="training wall-clock (default: the config's max_minutes)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    staged = STAGED.is_dir() and cuda
    data = STAGED if staged else BUNDLED
    run_dir = args.work / "run"
    train = ["train.py", "--config", str(CONFIG), "--data_path", str(data), "--save", str(run_dir), "--overwrite", "true"]
    if not staged:
        train += ["--data_train", "DIV2K"]
    if not cuda:
        train += CPU_STAND_IN
    if args.seconds is not None:
        train += ["--max_minutes", f"{args.seconds / 60:.3f}"]
    start = time.monotonic()
    _tool(train, args.work / "train.log")
    minutes = (time.monotonic() - start) / 60
    ckpt = run_dir / "model_best.pt"
    scores = {}
    for model, extra in (("csnln", ["--ckpt", str(ckpt)]), ("bicubic", [])):
        out = args.work / f"eval_{model}"
        if not cuda and model == "csnln":
            extra.append("--chop")
        _tool(["eval.py", "--model", model, *extra, "--data_path", str(data), "--data_test", "Set5+Set14",
               "--scale", "2", "--out", str(out)], args.work / f"eval_{model}.log")
        scores[model] = _scores(json.loads((out / "results.json").read_text()))
    if ckpt.stat().st_size > MAX_BYTES:
        raise SystemExit(f"demo_train.py: {ckpt} is {ckpt.stat().st_size / 2 ** 20:.1f} MiB, over the 16 MiB a call returns")
    shutil.copyfile(ckpt, args.out / "csnln_x2_demo.pt")
    epochs = [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]
    summary = {"device": torch.cuda.get_device_name() if cuda else "cpu (tiny stand-in model)",
               "data": str(data.relative_to(ROOT)), "iterations": epochs[-1]["iteration"],
               "minutes": minutes, "step_ms": epochs[-1]["step_ms"], "scores": scores}
    (args.out / "demo.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = [[model, name, f"{v['psnr']:.3f}", f"{v['ssim']:.4f}", f"{v['seconds_per_image']:.3f}"]
            for model, sets in scores.items() for name, v in sets.items()]
    text = (f"{summary['device']}: {summary['iterations']} iterations in {minutes:.1f} minutes (train.py, start to end), "
            f"{epochs[-1]['step_ms']:.1f} ms a step at the end, data {summary['data']}\n\n" + table(["model", "set (x2)", "PSNR dB", "SSIM", "s / image"], rows))
    (args.work / "demo.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
