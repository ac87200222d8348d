"""The model that ships inside the package: it loads strictly, beats bicubic, is eval.py's default,
and runs from an installed (non-editable) copy."""
import os
import pathlib
import shutil
import subprocess
import venv

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import eval as eval_cli
from csnln.bicubic import bicubic_upscale
from csnln.checkpoint import load_model
from csnln.evaluate import NetworkUpscaler
from csnln.images import read_image
from csnln.metrics import psnr
from csnln.shipped import SHIPPED, WEIGHTS, shipped_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
SET5 = ROOT / "tests" / "data" / "benchmark" / "Set5"


def test_every_shipped_model_loads_strictly_with_its_card():
    for scale, name in SHIPPED.items():
        path = shipped_checkpoint(scale)
        assert path.stat().st_size < 5e6
        model, found, training_config = load_model(path)   # strict=True inside
        assert found["scale"] == scale and training_config is None   # a bare state dict, not a training checkpoint
        assert name in (WEIGHTS / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("scale,bar", [(2, 2.0), (4, 2.0)])   # measured: +5.96 and +4.60 dB
def test_each_shipped_model_beats_bicubic_on_a_set5_image(scale, bar):
    lr = read_image(SET5 / "LR_bicubic" / f"X{scale}" / f"butterflyx{scale}.png")   # 256 / scale a side
    hr = read_image(SET5 / "HR" / "butterfly.png")
    model, _, _ = load_model(shipped_checkpoint(scale), attention_backend="torch")
    sr = NetworkUpscaler(model.eval(), scale, 1, torch.device("cpu"))(lr)
    gain = psnr(sr, hr, scale) - psnr(bicubic_upscale(lr, scale), hr, scale)
    assert gain > bar, f"x{scale}: {gain:.2f} dB over bicubic"


@pytest.mark.parametrize("scale", [2, 4])
def test_eval_input_without_ckpt_uses_the_shipped_model(tmp_path, capsys, scale):
    image = read_image(SET5 / "LR_bicubic" / "X2" / "womanx2.png")[:30, :22]
    imageio.imwrite(tmp_path / "photo.png", image)
    scale_args = ["--scale", "4"] if scale == 4 else []   # x2 is the default
    assert eval_cli.main(["--input", str(tmp_path / "photo.png"), "--output", str(tmp_path / "up"), *scale_args]) == 0
    err = capsys.readouterr().err
    assert f"the shipped model csnln_x{scale}_demo.pt" in err
    assert "tiles 64 x 64 overlapping by 16 LR pixels (--tile auto" in err   # the CPU default for --input
    assert imageio.imread(tmp_path / "up" / f"photo_x{scale}.png").shape == (30 * scale, 22 * scale, 3)


def test_a_scale_that_does_not_ship_is_one_line(tmp_path, capsys):
    code = eval_cli.main(["--input", str(SET5 / "HR" / "bird.png"), "--output", str(tmp_path), "--scale", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "no model of scale x3 ships with csnln (shipped: x2, x4)" in err


def test_an_installed_copy_upscales_from_another_directory(tmp_path):
    """pip install (not editable) into a venv that borrows this interpreter's packages, then
    csnln-eval from a folder far from the source tree: config and weights come from site-packages."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "csnln", "kernels"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", str(source)], check=True, env=env, capture_output=True)
    shutil.rmtree(source)   # nothing may come from the source tree
    work = tmp_path / "elsewhere"
    work.mkdir()
    imageio.imwrite(work / "small.png", np.random.default_rng(0).integers(0, 256, (12, 10, 3), np.uint8))
    result = subprocess.run([str(bin_dir / "csnln-eval"), "--input", "small.png", "--output", "up"], cwd=work,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(env_dir) in result.stderr   # the shipped model's path: the installed copy's
    assert imageio.imread(work / "up" / "small_x2.png").shape == (24, 20, 3)
