"""Evaluation: tiled / ensembled / padded inference, the benchmark harness and eval.py."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import eval as eval_cli
from csnln import CSNLN
from csnln.checkpoint import load_model
from csnln.evaluate import NetworkUpscaler
from csnln.inference import chop_tiles, forward_chop, upscale
from csnln.provenance import code_revision

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def tiny_csnln(scale=2, seed=0):
    torch.manual_seed(seed)
    return CSNLN(scale=scale, n_feats=8, depth=1, attention_backend="torch").double().eval()


class Nearest(nn.Module):
    """Nearest-neighbour upsampling: commutes with every flip and transpose."""

    def __init__(self, scale, size_multiple=1):
        super().__init__()
        self.scale, self.size_multiple = scale, size_multiple

    def forward(self, x):
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError("unpadded input")
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class LocalConv(nn.Module):
    """Two 3x3 convs then nearest upsampling: receptive-field radius 2, far below the shave."""

    def __init__(self, scale, size_multiple):
        super().__init__()
        torch.manual_seed(1)
        self.scale, self.size_multiple = scale, size_multiple
        self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 3, 3, padding=1)).double()

    def forward(self, x):
        assert x.shape[-2] % self.size_multiple == 0 and x.shape[-1] % self.size_multiple == 0
        return F.interpolate(self.body(x), scale_factor=self.scale, mode="nearest")


# ----------------------------------------------------------------------------- inference

def test_chop_equals_whole_image_below_min_size():
    model = tiny_csnln(2)
    lr = torch.rand(1, 3, 40, 50, dtype=torch.float64)  # 2000 < 3600 LR pixels: one tile
    assert chop_tiles(40, 50, 2) == [(0, 0, 40, 50)]
    whole = upscale(model, lr, 2)
    chopped = upscale(model, lr, 2, chop=True)
    assert chopped.shape == (1, 3, 80, 100)
    torch.testing.assert_close(chopped, whole, rtol=0, atol=1e-12)


def _expected_tiles(h, w, m, shave=10, min_size=3600, top=0, left=0):
    """The rule, written out independently: quadrants of (h//2 + shave, w//2 + shave) rounded up to m."""
    if h * w < min_size:
        return [(top, left, h, w)]
    hs, ws = -(-(h // 2 + shave) // m) * m, -(-(w // 2 + shave) // m) * m
    out = []
    for t, l in ((0, 0), (0, w - ws), (h - hs, 0), (h - hs, w - ws)):
        out += _expected_tiles(hs, ws, m, shave, min_size, top + t, left + l)
    return out


@pytest.mark.parametrize("h,w,m,leaf", [(100, 130, 2, (40, 48)), (99, 120, 3, (42, 48)),
                                        (256, 256, 2, (50, 50)), (60, 62, 2, (40, 42))])
def test_chop_tiles_follow_the_rule(h, w, m, leaf):
    tiles = chop_tiles(h, w, m)
    assert tiles == _expected_tiles(h, w, m)
    assert len(tiles) in (4, 16, 64)
    assert {(th, tw) for _, _, th, tw in tiles} == {leaf}
    for top, left, th, tw in tiles:
        assert th * tw < 3600 and th % m == tw % m == top % m == left % m == 0
        assert top >= 0 and left >= 0 and top + th <= h and left + tw <= w
    first_level = chop_tiles(h, w, m, min_size=h * w // 2)  # one split only
    hs, ws = -(-(h // 2 + 10) // m) * m, -(-(w // 2 + 10) // m) * m
    assert first_level == [(0, 0, hs, ws), (0, w - ws, hs, ws), (h - hs, 0, hs, ws), (h - hs, w - ws, hs, ws)]


@pytest.mark.parametrize("scale,m", [(2, 2), (3, 3), (4, 2)])
def test_chop_stitches_the_quadrants(scale, m):
    model = LocalConv(scale, m)
    lr = torch.rand(1, 3, 90, 120, dtype=torch.float64)  # two levels of splitting
    assert len(chop_tiles(90, 120, m)) == 16
    torch.testing.assert_close(forward_chop(model, lr, scale, m), model(lr), rtol=0, atol=1e-12)


def test_self_ensemble_of_an_equivariant_model_is_the_plain_result():
    model = Nearest(3, size_multiple=3)
    lr = torch.rand(1, 3, 11, 14, dtype=torch.float64)
    plain = upscale(model, lr, 3)
    torch.testing.assert_close(plain, F.interpolate(lr, scale_factor=3, mode="nearest"), rtol=0, atol=0)
    torch.testing.assert_close(upscale(model, lr, 3, self_ensemble=True), plain, rtol=0, atol=1e-15)
    torch.testing.assert_close(upscale(model, lr, 3, self_ensemble=True, chop=True), plain, rtol=0, atol=1e-15)


def test_self_ensemble_averages_the_eight_passes():
    class Skewed(nn.Module):  # not equivariant: adds a ramp 0, 1, ... along the output width
        def forward(self, x):
            return Nearest(2)(x) + torch.arange(2 * x.shape[-1], dtype=x.dtype)
    out = upscale(Skewed(), torch.zeros(1, 3, 4, 6, dtype=torch.float64), 2, self_ensemble=True)
    # un-flipped, the ramps average to their middle: (12 - 1) / 2 for the 4 passes without a
    # transpose (ramp along the width), (8 - 1) / 2 for the 4 transposed ones (along the height)
    torch.testing.assert_close(out, torch.full((1, 3, 8, 12), (5.5 + 3.5) / 2, dtype=torch.float64))


@pytest.mark.parametrize("scale,size", [(2, (13, 17)), (3, (13, 17)), (4, (9, 11))])
def test_odd_sizes_are_padded_and_cropped(scale, size):
    model = tiny_csnln(scale)
    lr = torch.rand(1, 3, *size, dtype=torch.float64)
    out = upscale(model, lr, scale)
    assert out.shape == (1, 3, scale * size[0], scale * size[1])
    m = model.size_multiple
    padded = F.pad(lr, (0, -size[1] % m, 0, -size[0] % m), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(out, model(padded)[:, :, :scale * size[0], :scale * size[1]])
    assert upscale(model, lr, scale, chop=True).shape == out.shape


def test_precision_on_cpu():
    torch.manual_seed(0)
    model = CSNLN(scale=2, n_feats=8, depth=1, attention_backend="torch").eval()
    lr = torch.rand(1, 3, 8, 10)
    ref = upscale(model, lr, 2)
    bf16 = upscale(model, lr, 2, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == ref.shape
    assert (bf16 - ref).abs().max() < 0.1
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        upscale(model, lr, 2, precision="fp16")


# ----------------------------------------------------------------------------- eval.py

def run_cli(*args, **env):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), *map(str, args)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x2.pt"
    torch.manual_seed(0)
    torch.save(CSNLN(scale=2, n_feats=8, depth=1).state_dict(), path)
    return path


def test_bicubic_end_to_end(tmp_path):
    result = run_cli("--model", "bicubic", "--data_test", "Set5", "--scale", 2, "--data_path", DATA,
                     "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    r = json.loads((tmp_path / "results.json").read_text())["Set5"]["x2"]
    assert round(r["psnr"], 3) == 33.640 and round(r["ssim"], 4) == 0.9292
    assert r["images"] == 5 and r["seconds_per_image"] > 0
    assert "33.640" in result.stdout and "0.9292" in result.stdout
    assert (tmp_path / "figures" / "Set5_x2.png").is_file()


def test_checkpoint_end_to_end(tmp_path, tiny_ckpt):
    result = run_cli("--ckpt", tiny_ckpt, "--data_test", "Set5", "--data_path", DATA, "--out", tmp_path,
                     "--chop", "--attention_backend", "torch", "--device", "cpu", "--save_results")
    assert result.returncode == 0, result.stderr
    r = json.loads((tmp_path / "results.json").read_text())["Set5"]["x2"]
    assert r["images"] == 5 and np.isfinite(r["psnr"]) and 0 < r["ssim"] < 1
    assert set(r["per_image"]) == {"baby", "bird", "butterfly", "head", "woman"}
    fig = imageio.imread(tmp_path / "figures" / "Set5_x2.png")
    assert fig.ndim == 3 and min(fig.shape[:2]) > 3 * 120  # 3 images x (bicubic | CSNLN | HR)
    sr = imageio.imread(tmp_path / "Set5" / "x2" / "bird.png")
    assert sr.shape == (288, 288, 3)
    assert "Set5" in result.stdout and "x2" in result.stdout


def test_user_images(tmp_path, tiny_ckpt):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    imageio.imwrite(src / "good.png", rng.integers(0, 256, (21, 30, 3), dtype=np.uint8))
    imageio.imwrite(src / "rgba.png", rng.integers(0, 256, (16, 15, 4), dtype=np.uint8))
    imageio.imwrite(src / "grey16.png", rng.integers(0, 65536, (11, 9), dtype=np.uint16))
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    code = eval_cli.main(["--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(dst), "--device", "cpu"])
    assert code == 1
    shapes = {p.name: imageio.imread(p).shape for p in dst.iterdir() if not p.name.startswith(".")}
    assert shapes == {"good_x2.png": (42, 60, 3), "rgba_x2.png": (32, 30, 3), "grey16_x2.png": (22, 18, 3)}


def test_user_images_report_the_bad_file(tmp_path, tiny_ckpt):
    imageio.imwrite(tmp_path / "ok.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"garbage")
    result = run_cli("--ckpt", tiny_ckpt, "--input", tmp_path, "--output", tmp_path / "out")
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "ok.jpg" not in result.stderr
    assert (tmp_path / "out" / "ok_x2.png").is_file()


def test_bad_inputs_give_their_messages(tmp_path, tiny_ckpt, capsys):
    def fails(*argv):
        assert eval_cli.main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    assert "checkpoint not found" in fails("--ckpt", tmp_path / "nope.pt", "--data_path", DATA)
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert f"{tmp_path / 'notes.txt'} is not a checkpoint" in fails("--ckpt", tmp_path / "notes.txt")
    assert fails("--ckpt", tmp_path / "empty.pt").endswith("empty.pt is not a checkpoint: torch.save writes a zip "
                                                        "archive (or, before torch 1.6, a pickle), and this file is empty\n")
    err = fails("--ckpt_file", tiny_ckpt, "--scale", 3, "--data_path", DATA)
    assert "scale: checkpoint has 2, asked for 3" in err
    err = fails("--model", "bicubic", "--data_test", "Set5+Urban100", "--data_path", DATA)
    assert "Urban100" in err and "benchmark/<Set>/LR_bicubic/X<s>/<name>x<s>.png" in err
    err = fails("--model", "bicubic", "--data_path", tmp_path / "empty")
    assert "folder not found" in err and "benchmark/<Set>/HR/<name>.png" in err
    assert f"({tmp_path / 'empty'} does not exist; a clone of csnln has sample sets in tests/data)" in err
    assert "no model of scale x3 ships with csnln (shipped: x2, x4)" in fails("--data_path", DATA, "--scale", 3)
    assert "unknown config key" in fails("--scael", 2)
    assert "input not found" in fails("--model", "bicubic", "--input", tmp_path / "x", "--output", tmp_path)


def test_div2k_validation_range(tmp_path):
    code = eval_cli.main(["--model", "bicubic", "--data_test", "DIV2K", "--data_range", "1-3/4-4",
                          "--data_path", str(DATA), "--out", str(tmp_path)])
    assert code == 0
    assert json.loads((tmp_path / "results.json").read_text())["DIV2K"]["x2"]["images"] == 1
    assert eval_cli.main(["--model", "bicubic", "--data_test", "DIV2K", "--data_range", "1-3/4-5",
                          "--data_path", str(DATA)]) == 2


def test_results_merge_scales_and_record_their_provenance(tmp_path):
    for scale in (2, 3):
        assert eval_cli.main(["--model", "bicubic", "--data_test", "Set5", "--scale", str(scale),
                              "--data_path", str(DATA), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["Set5"]) == {"x2", "x3"}
    assert round(results["Set5"]["x2"]["psnr"], 3) == 33.640 and round(results["Set5"]["x3"]["psnr"], 3) == 30.385
    provenance = results["Set5"]["x3"]["provenance"]
    assert (provenance["model"], provenance["scale"], provenance["checkpoint"]) == ("bicubic", 3, None)
    assert provenance["channels_last"] is False and provenance["compile"] is False
    assert provenance["versions"]["torch"] == torch.__version__  # with its build tag (+cpu, +cu130)
    git = shutil.which("git")
    commit = git and subprocess.run([git, "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    if commit:  # a git checkout (a copy without .git: the next test)
        assert provenance["code_revision"].split()[0] == commit.strip()


def test_code_revision_says_when_there_is_none(tmp_path):
    assert code_revision(tmp_path).startswith(f"none: {tmp_path} is not a git checkout")
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "a.py").write_text("1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_revision(tmp_path) == commit
    (tmp_path / "a.py").write_text("2\n")
    assert code_revision(tmp_path) == commit + " + uncommitted changes"


def test_folder_mode_names_what_it_skips_and_keeps_its_outputs(tmp_path, capsys):
    imageio.imwrite(tmp_path / "photo.png", np.zeros((6, 8, 3), np.uint8))
    imageio.imwrite(tmp_path / "photo_x2.png", np.zeros((12, 16, 3), np.uint8))  # an earlier run's output
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "nested").mkdir()
    code = eval_cli.main(["--model", "bicubic", "--input", str(tmp_path), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped {tmp_path / 'nested'}: a folder" in err and f"skipped {tmp_path / 'notes.txt'}: not" in err
    assert f"skipped {tmp_path / 'photo_x2.png'}: an output of an earlier run" in err
    assert f"{tmp_path / 'text.png'} is not an image" in err and "pip install" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nested", "notes.txt", "photo.png", "photo_x2.png",
                                                          "text.png"]


def test_what_cannot_run_here_is_refused_before_any_work(tmp_path, tiny_ckpt, capsys):
    base = ["--ckpt", str(tiny_ckpt), "--data_path", str(DATA), "--device", "cpu"]
    assert eval_cli.main(base + ["--precision", "fp16", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == ("eval.py: error: precision fp16 needs a CUDA device, not cpu; "
                                       "use --precision fp32 or bf16\n")
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    assert eval_cli.main(base + ["--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"eval.py: error: --out {tmp_path / 'file'} is a file, not a folder\n"
    result = run_cli(*base, "--attention_backend", "triton", TRITON_INTERPRET="0")  # the tests' own process interprets
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Triton kernels need CUDA" in result.stderr


def test_channels_last_gives_the_contiguous_images(tmp_path, tiny_ckpt):
    src = tmp_path / "in"
    src.mkdir()
    imageio.imwrite(src / "a.png", np.random.default_rng(2).integers(0, 256, (14, 12, 3), dtype=np.uint8))
    images = {}
    for flag in ("false", "true"):
        assert eval_cli.main(["--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(tmp_path / flag),
                              "--device", "cpu", "--channels_last", flag]) == 0
        images[flag] = imageio.imread(tmp_path / flag / "a_x2.png").astype(int)
    # the same network, fp32 sums possibly reordered by the NHWC convolutions: a rounding step apart
    assert np.abs(images["true"] - images["false"]).max() <= 1
    assert (images["true"] == images["false"]).mean() > 0.99
    model, found, _ = load_model(tiny_ckpt)
    NetworkUpscaler(model, found["scale"], found["rgb_range"], torch.device("cpu"), channels_last=True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


def test_compile_gives_the_eager_images(tmp_path, tiny_ckpt, monkeypatch):
    """--compile true runs the network through torch.compile (inductor; the attention kernels as
    custom ops, here under the interpreter) and writes the same image."""
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    imageio.imwrite(src / "a.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or real_compile(model, **kw))
    images = {}
    for flag in ("false", "true"):
        dst = tmp_path / flag
        assert eval_cli.main(["--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(dst), "--device", "cpu",
                              "--attention_backend", "triton", "--compile", flag]) == 0
        images[flag] = imageio.imread(dst / "a_x2.png").astype(int)
    assert len(compiled) == 1  # the network, in the --compile true run only
    # the same kernels, fp32 sums possibly reordered: at most a rounding step apart
    assert np.abs(images["true"] - images["false"]).max() <= 1
    assert (images["true"] == images["false"]).mean() > 0.99
