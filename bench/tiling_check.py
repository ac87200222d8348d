"""Tiled inference against whole-image inference on a test set: PSNR and seam scores.

    python bench/tiling_check.py CKPT [--data_path DIR] [--data_test Set14] [--tiles 48,96] [--overlap 16]

For each image: the SR image whole, with blended tiles of each size (eval.py --tile T
--tile_overlap O) and with --chop, quantised to 8 bits as eval.py does; PSNR (matlab protocol)
against HR, and the seam score of (SR - whole-image SR): its mean absolute step across the
lines where tiles begin or end (for --chop: where the output switches tile) against the same
mean over every other line (`metrics.seam_score`). Prints a markdown table, set means.
"""
import argparse
import platform
import time

import numpy as np
import torch

from csnln.checkpoint import load_model
from csnln.evaluate import dataset_images
from csnln.images import read_image, to_tensor, to_uint8
from csnln.inference import chop_seams, peak_memory_mb, upscale
from csnln.metrics import psnr, seam_score
from csnln.tiling import tile_edges


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--data_path", default="data")
    parser.add_argument("--data_test", default="Set14")
    parser.add_argument("--tiles", default="48,96")
    parser.add_argument("--overlap", type=int, default=16)
    args = parser.parse_args()
    model, found, _ = load_model(args.ckpt, attention_backend="torch")
    model.eval()
    scale, m, rgb = found["scale"], model.size_multiple, found["rgb_range"]
    methods = {"whole": {}} | {f"tile {t}": {"tile": int(t), "tile_overlap": args.overlap}
                               for t in args.tiles.split(",")} | {"chop": {"chop": True}}
    rows = {name: {"psnr": [], "seam": [], "else": [], "seconds": []} for name in methods}
    for name, hr_path, lr_path in dataset_images(args.data_path, args.data_test, scale):
        lr, hr = read_image(lr_path), read_image(hr_path)
        h, w = (-(-n // m) * m for n in lr.shape[:2])   # the padded size the tiles cover
        x = to_tensor(lr, rgb).unsqueeze(0)
        whole = None
        for method, options in methods.items():
            start = time.perf_counter()
            sr = to_uint8(upscale(model, x, scale, **options)[0], rgb)
            rows[method]["seconds"].append(time.perf_counter() - start)
            rows[method]["psnr"].append(psnr(sr, hr[:sr.shape[0], :sr.shape[1]], scale, "matlab"))
            if whole is None:
                whole = sr.astype(np.float64)
                continue
            if "chop" in options:
                lines = chop_seams(h, w, m, scale)
            else:
                lines = (tile_edges(h, options["tile"], args.overlap, m, scale),
                         tile_edges(w, options["tile"], args.overlap, m, scale))
            on, off = seam_score(sr - whole, *lines)
            rows[method]["seam"].append(on)
            rows[method]["else"].append(off)
        print(name, {k: round(v["psnr"][-1], 3) for k, v in rows.items()}, flush=True)
    print(f"\n{args.data_test} x{scale}, {args.ckpt}; CPU ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}, peak RSS {peak_memory_mb(None):.0f} MB\n")
    print("| inference | PSNR (dB) | seam score on tile borders | elsewhere | s/image |")
    print("|---|---|---|---|---|")
    for method, r in rows.items():
        seam = f"{np.mean(r['seam']):.3f} | {np.mean(r['else']):.3f}" if r["seam"] else "- | -"
        print(f"| {method} | {np.mean(r['psnr']):.3f} | {seam} | {np.mean(r['seconds']):.2f} |")


if __name__ == "__main__":
    main()
