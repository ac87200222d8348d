"""ONNX export (python -m csnln.export), checked by running the file in onnxruntime, and eval.py --onnx."""
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import eval as eval_cli
from csnln import CSNLN
from csnln.export import main as export_main
from test_eval import DATA, ROOT

onnxruntime = pytest.importorskip("onnxruntime")   # the export extra, which the test extra includes


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = CSNLN(scale=2, n_feats=8, depth=2, attention_backend="torch").eval()
    torch.save(model.state_dict(), folder / "tiny.pt")
    result = subprocess.run([sys.executable, "-m", "csnln.export", "--ckpt", str(folder / "tiny.pt"), "--onnx",
                             str(folder / "tiny.onnx"), "--opset", "17"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "torch attention backend" in result.stderr
    return model, folder


@pytest.mark.parametrize("size", [(12, 16), (22, 10)])
def test_onnxruntime_matches_pytorch_at_any_size(exported, size):
    model, folder = exported
    session = onnxruntime.InferenceSession(str(folder / "tiny.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {"lr": x.numpy()})[0]
    assert got.shape == (1, 3, 2 * size[0], 2 * size[1])
    assert np.abs(got - expected).max() < 1e-4
    assert session.get_modelmeta().custom_metadata_map["scale"] == "2"


def test_eval_runs_the_exported_file_in_tiles(exported, tmp_path):
    _, folder = exported
    lr = imageio.imread(DATA / "benchmark" / "Set5" / "LR_bicubic" / "X2" / "birdx2.png")[:40, :36]
    imageio.imwrite(tmp_path / "bird.png", lr)
    common = ["--input", str(tmp_path / "bird.png"), "--tile", "16", "--tile_overlap", "4"]
    assert eval_cli.main(["--ckpt", str(folder / "tiny.pt"), "--device", "cpu", "--output", str(tmp_path / "pt")]
                         + common) == 0
    assert eval_cli.main(["--onnx", str(folder / "tiny.onnx"), "--output", str(tmp_path / "onnx")] + common) == 0
    torch_sr, onnx_sr = (imageio.imread(tmp_path / d / "bird_x2.png").astype(int) for d in ("pt", "onnx"))
    assert torch_sr.shape == (80, 72, 3) and np.abs(torch_sr - onnx_sr).max() <= 1


def test_bad_files_give_one_line(exported, tmp_path, capsys):
    _, folder = exported

    def fails(main, prog, *argv):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1
        return err

    (tmp_path / "corrupt.onnx").write_bytes(b"not a protobuf at all")
    assert "not found" in fails(eval_cli.main, "eval.py", "--onnx", tmp_path / "missing.onnx", "--data_path", DATA)
    assert "not a readable ONNX model" in fails(eval_cli.main, "eval.py", "--onnx", tmp_path / "corrupt.onnx",
                                                "--data_path", DATA)
    assert "not both" in fails(eval_cli.main, "eval.py", "--onnx", folder / "tiny.onnx", "--ckpt", folder / "tiny.pt")
    assert "opset >= 11" in fails(export_main, "csnln.export", "--ckpt", folder / "tiny.pt", "--onnx",
                                  tmp_path / "old.onnx", "--opset", 9)
    assert "is a folder" in fails(export_main, "csnln.export", "--ckpt", folder / "tiny.pt", "--onnx", tmp_path)
    assert "not a checkpoint" in fails(export_main, "csnln.export", "--ckpt", tmp_path / "corrupt.onnx", "--onnx",
                                       tmp_path / "x.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx"]   # nothing half-written
