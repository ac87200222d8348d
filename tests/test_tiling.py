"""Blended tiled inference (csnln.tiling), the memory cap (csnln.memory) and their eval.py options."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as eval_cli
from csnln import CSNLN
from csnln.images import read_image, to_tensor
from csnln.inference import chop_seams, forward_chop, upscale
from csnln.memory import largest_tile, tile_bytes
from csnln.metrics import seam_score
from csnln.tiling import ramp_weights, tile_edges, tile_starts, upscale_tiled
from test_eval import DATA, ROOT, tiny_csnln


class ConstantShift:
    """Nearest x2 upsampling plus the number of calls so far: every tile is off by its own constant."""
    size_multiple = 2

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return F.interpolate(x, scale_factor=2, mode="nearest") + self.calls


@pytest.mark.parametrize("size,tile,overlap,multiple", [(50, 16, 4, 2), (48, 16, 12, 2), (10, 16, 4, 2), (99, 30, 7, 3)])
def test_tiles_cover_the_side_and_overlap_enough(size, tile, overlap, multiple):
    length, starts = tile_starts(size, tile, overlap, multiple)
    assert starts[0] == 0 and starts[-1] + length == size and length <= max(tile, multiple)
    assert all(s % multiple == 0 for s in starts) and length % multiple == 0
    assert all(b + length - a >= min(overlap, size) or length == size for a, b in zip(starts[1:], starts))
    assert all(a + length - b >= overlap for a, b in zip(starts, starts[1:]))


def test_blend_weights_are_positive_and_meet_smoothly():
    length, starts = tile_starts(40, 16, 6, 2)
    weights = ramp_weights(length, starts, 2)
    assert (weights > 0).all() and weights.max() == 1
    total = torch.zeros(80)
    for start, weight in zip(starts, weights):
        total[2 * start:2 * (start + length)] += weight
    assert total.min() > 0.5                            # every output pixel has a weight


def test_a_constant_shift_per_tile_leaves_no_border_step():
    model = ConstantShift()
    out = upscale_tiled(model, torch.zeros(1, 3, 40, 50), 16, 6)
    assert out.shape == (1, 3, 80, 100) and model.calls == 4 * 5
    # neighbouring tiles differ by up to 5 (vertically): a hard stitch would step by 5; the blend spreads
    # it over the 2 x 6 shared output pixels as a raised cosine, max step 5 sin(pi / 24) ~ 0.65
    assert (out[..., 1:, :] - out[..., :-1, :]).abs().max() < 0.7
    assert (out[..., 1:] - out[..., :-1]).abs().max() < 0.2
    assert out[..., :8, :8].eq(1).all() and out[..., -8:, -8:].eq(20).all()   # unshared corners: their own tile


def test_a_tile_as_large_as_the_image_is_the_whole_image():
    model = tiny_csnln()
    x = torch.rand(1, 3, 12, 14, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(upscale_tiled(model, x, 16, 4), model(x))
        assert torch.equal(upscale(model, x, 2, tile=0), model(x))


def test_the_network_in_small_tiles_has_no_seams_where_chop_has():
    torch.manual_seed(0)
    model = CSNLN(scale=2, n_feats=8, depth=1, attention_backend="torch").double().eval()
    lr = read_image(DATA / "benchmark" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png")[:40, :40]
    x = to_tensor(lr, 1).unsqueeze(0).double()
    with torch.no_grad():
        whole = model(x)[0].permute(1, 2, 0).numpy()
        tiled = upscale(model, x, 2, tile=16, tile_overlap=8)[0].permute(1, 2, 0).numpy()
        chopped = forward_chop(model, x, 2, 2, shave=4, min_size=1000)[0].permute(1, 2, 0).numpy()
    edges = tile_edges(40, 16, 8, 2, 2)
    assert edges == [16, 32, 48, 64]   # tiles at 0, 8, 16, 24, x2
    on, off = seam_score(tiled - whole, edges, edges)
    chop_on, chop_off = seam_score(chopped - whole, *chop_seams(40, 40, 2, 2, shave=4, min_size=1000))
    assert chop_on > 3 * chop_off       # hard stitching: a step on the stitch lines (measured 3.3x)
    assert on < 1.2 * off               # blended: the tile borders look like any other line (measured 0.8x)


def test_seam_score_finds_a_step():
    diff = np.zeros((8, 8))
    diff[4:] = 1.0
    assert seam_score(diff, [4], []) == (1.0, 0.0)   # the step is on the line above row 4, none elsewhere


def test_the_tile_under_a_budget_grows_with_it_and_fits():
    model = CSNLN(scale=2, n_feats=16, depth=2)
    small, large = largest_tile(model, 2 ** 27), largest_tile(model, 2 ** 29)
    assert 6 <= small < large and small % 2 == 0
    assert tile_bytes(model, small, small) <= 2 ** 27 < tile_bytes(model, small + 2, small + 2)


MEASURE = """
import sys, torch
from csnln import CSNLN
from csnln.images import read_image, to_tensor
from csnln.inference import upscale
from csnln.memory import largest_tile
from tests.peak_rss import peak_growth, reset_peak
torch.set_num_threads(1)
model = CSNLN(scale=2, n_feats=16, depth=2, attention_backend="torch").eval()
tile = largest_tile(model, float(sys.argv[1]) * 2 ** 20)
x = torch.rand(1, 3, 160, 120)
with torch.no_grad():
    model(x[:, :, :6, :6])   # loads the code that runs (the loaded model's baseline)
start = reset_peak()
upscale(model, x, 2, tile=tile, tile_overlap=8)
print(tile, peak_growth(start) / 2 ** 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_peak_rss_stays_under_the_budget():
    # a fresh process after one tiny pass: its peak resident size grows by one tile's forward pass and the output buffers
    # (160 x 120 LR: 2 x 4 x 320 x 240 x 4 bytes ~ 2.5 MB)
    for budget_mb in (64, 256):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(budget_mb)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        tile, grown = out.stdout.split()
        assert int(tile) < 120 and 0 < float(grown) < budget_mb + 16, (tile, grown)   # + the output buffers and allocator slack


def test_eval_tiles_and_refuses_bad_tilings(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(CSNLN(scale=2, n_feats=8, depth=1).state_dict(), ckpt)
    base = ["--ckpt", str(ckpt), "--data_path", str(DATA), "--data_test", "Set5", "--device", "cpu"]

    def fails(*argv):
        assert eval_cli.main(base + [str(a) for a in argv] + ["--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("eval.py: error: ") and err.count("\n") == 1
        return err

    assert "too small" in fails("--tile", 4)
    assert "must be smaller than the tile" in fails("--tile", 16, "--tile_overlap", 16)
    assert "no tile fits" in fails("--max_memory_gb", 0.000001)
    assert "choose one" in fails("--tile", 32, "--chop")
    assert "not both" in fails("--tile", 32, "--max_memory_gb", 1)
    assert not (tmp_path / "never").exists() or not any((tmp_path / "never").iterdir())
    out = tmp_path / "tiled"
    assert eval_cli.main(base + ["--data_test", "Set5", "--max_memory_gb", "0.05", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "tiles " in err and "the largest under --max_memory_gb 0.05" in err
