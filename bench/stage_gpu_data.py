"""Stage the x2 images that travel with a GPU call into bench/gpu_data (git-ignored; carry it).

    python bench/stage_gpu_data.py SOURCE [--dest bench/gpu_data] [--mib 44]

SOURCE is a data folder in the EDSR layout (such as ../shared/data). Staged, in this order, HR with
its X2 LR: the DIV2K sample and Set5 from tests/data, then Set14 (the demo's validation), B100 and
Urban100 from SOURCE, image by image while the total stays under --mib (a device call carries
64 MiB with the working tree, about 15 MiB). Set5 and Set14 are for validation only:
configs/demo_x2.yaml trains on the rest.
"""
import argparse
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "tests" / "data"
SETS = (("Set5", BUNDLED), ("Set14", None), ("B100", None), ("Urban100", None))   # None: SOURCE


def pairs(root, name):
    """[(HR path, X2 LR path, their folder under the data root)] of a set in the EDSR layout."""
    if name == "DIV2K":
        hr_dir, lr_dir = root / "DIV2K" / "DIV2K_train_HR", root / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2"
    else:
        hr_dir, lr_dir = root / "benchmark" / name / "HR", root / "benchmark" / name / "LR_bicubic" / "X2"
    found = [(hr, lr_dir / f"{hr.stem}x2.png") for hr in sorted(hr_dir.glob("*.png"))]
    missing = [str(lr) for _, lr in found if not lr.is_file()]
    if not found or missing:
        raise SystemExit(f"stage_gpu_data.py: {hr_dir}: {'no HR images' if not found else 'no ' + missing[0]}")
    return [(hr, lr, root) for hr, lr in found]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("--dest", type=pathlib.Path, default=ROOT / "bench" / "gpu_data")
    parser.add_argument("--mib", type=float, default=44)
    args = parser.parse_args(argv)
    if args.dest.exists():
        shutil.rmtree(args.dest)
    budget, used, staged = args.mib * 2 ** 20, 0, {}
    candidates = pairs(BUNDLED, "DIV2K") + [p for name, root in SETS for p in pairs(root or args.source, name)]
    for hr, lr, root in candidates:
        size = hr.stat().st_size + lr.stat().st_size
        if used + size > budget:
            continue
        for path in (hr, lr):
            target = args.dest / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        used += size
        key = hr.parent.parent.name if hr.parent.name == "HR" else "DIV2K"
        staged[key] = staged.get(key, 0) + 1
    print(f"staged {used / 2 ** 20:.1f} MiB in {args.dest}: "
          + ", ".join(f"{name} {count}" for name, count in staged.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
