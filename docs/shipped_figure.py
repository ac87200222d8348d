"""The README's picture: a crop of one Set14 image as bicubic | the shipped x2 model | HR, each
titled with its PSNR (Y, dB) against the HR crop, where bicubic is worst (eval.py's figure code).

    python docs/shipped_figure.py --data_path ../shared/data [--image zebra] [--out docs/shipped_x2.png]

The shipped model runs on the whole LR image (no tiles) on the CPU.
"""
import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from csnln.bicubic import bicubic_upscale  # noqa: E402
from csnln.checkpoint import load_model  # noqa: E402
from csnln.evaluate import NetworkUpscaler, dataset_images  # noqa: E402
from csnln.images import read_image  # noqa: E402
from csnln.plot import comparison_figure, save_figure  # noqa: E402
from csnln.shipped import shipped_checkpoint  # noqa: E402

CROP = 160   # HR pixels a side


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", default="data", help="a data folder in the EDSR layout holding Set14")
    parser.add_argument("--image", default="zebra", help="the Set14 image")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent / "shipped_x2.png")
    args = parser.parse_args(argv)
    items = {name: (hr, lr) for name, hr, lr in dataset_images(args.data_path, "Set14", 2)}
    if args.image not in items:
        raise SystemExit(f"shipped_figure.py: no Set14 image {args.image!r} (there are {', '.join(items)})")
    hr_path, lr_path = items[args.image]
    lr = read_image(lr_path)
    model, _, _ = load_model(shipped_checkpoint(2), attention_backend="torch")
    sr = NetworkUpscaler(model.eval(), 2, 1, torch.device("cpu"))(lr)
    hr = read_image(hr_path)[:sr.shape[0], :sr.shape[1]]
    figure = comparison_figure([(args.image, [bicubic_upscale(lr, 2), sr, hr])], ("bicubic", "shipped x2 model", "HR"),
                               size=CROP)
    save_figure(figure, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
