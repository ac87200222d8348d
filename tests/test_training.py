"""The training harness on CPU: gloo DDP, resume, atomic checkpoints, errors, quick start."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from csnln import CSNLN
from csnln.checkpoint import atomic_save, load_model
from csnln.config import load_config
from csnln.data import DataLayoutError, training_set
from csnln.images import ImageError
from csnln.training import Trainer, run

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY = ["--data_path", str(DATA), "--data_range", "4-4/4-4", "--data_test", "", "--n_feats", "8",
        "--depth", "1", "--patch_size", "16", "--batch_size", "4", "--test_every", "3", "--n_threads", "0",
        "--lr", "5e-4", "--device", "cpu", "--print_every", "1"]


def tiny_config(save, *more):
    return load_config(overrides=TINY + ["--save", str(save), *more])


def _ddp_worker(rank, config, store, out):
    # a file rendezvous: no TCP port to race for
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    trainer = Trainer(config, torch.device("cpu"))
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save({"params": gathered, "iterations": trainer.iteration}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_ddp_keeps_ranks_identical(tmp_path):
    config = tiny_config(tmp_path / "run", "--epochs", "1")
    out = tmp_path / "result.pt"
    mp.spawn(_ddp_worker, args=(config, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    result = torch.load(out)
    assert result["iterations"] == 3
    torch.manual_seed(config["seed"])  # the trainer seeds the same way before building its model
    initial = torch.cat([p.detach().flatten() for p in CSNLN(scale=2, n_feats=8, depth=1).parameters()])
    assert torch.equal(result["params"][0], result["params"][1])
    assert not torch.equal(result["params"][0], initial)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    assert (tmp_path / "run" / "model_latest.pt").is_file()


def test_resume_auto_reproduces_the_uninterrupted_losses(tmp_path):
    straight = tiny_config(tmp_path / "a", "--epochs", "3")
    run(straight)
    first = tiny_config(tmp_path / "b", "--epochs", "1")
    run(first)
    resumed = tiny_config(tmp_path / "b", "--epochs", "3", "--resume", "auto")
    run(resumed)

    def losses(folder):
        lines = (folder / "log.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if "loss" in r]

    assert len(losses(tmp_path / "a")) == 3
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    model, found = load_model(tmp_path / "b" / "model_latest.pt")
    assert found["depth"] == 1 and found["n_feats"] == 8


SAVER = """
import sys, torch
from csnln.checkpoint import atomic_save
big = torch.randn(4_000_000)
print("ready", flush=True)
while True:
    atomic_save({"model": {"w": big}, "tag": "new"}, sys.argv[1])
"""


def test_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.zeros(3)}, "tag": "old"}, path)
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = torch.load(path)
    assert loaded["tag"] in ("old", "new")
    assert loaded["model"]["w"].numel() in (3, 4_000_000)


def test_bad_data_path_shows_the_layout(tmp_path):
    with pytest.raises(DataLayoutError, match="expected layout"):
        training_set(load_config(overrides=["--data_path", str(tmp_path)]))
    result = subprocess.run([sys.executable, "train.py", "--data_path", str(tmp_path), "--device", "cpu"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "DIV2K/DIV2K_train_HR/0001.png" in result.stderr


def test_unreadable_image_is_named(tmp_path):
    hr = tmp_path / "DIV2K" / "DIV2K_train_HR"
    hr.mkdir(parents=True)
    (hr / "0001.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="0001.png"):
        training_set(load_config(overrides=["--data_path", str(tmp_path), "--data_range", "1-1/1-1"]))


def test_unknown_config_key_is_refused():
    result = subprocess.run([sys.executable, "train.py", "--learning_rate", "1"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "unknown config key 'learning_rate'" in result.stderr


def test_quickstart_config_reduces_the_training_loss(tmp_path):
    config = load_config(ROOT / "configs" / "quickstart.yaml",
                         ["--data_path", str(DATA), "--epochs", "2", "--test_every", "15", "--data_test", "",
                          "--n_threads", "0", "--save", str(tmp_path / "qs")])
    run(config)
    records = [json.loads(line) for line in (tmp_path / "qs" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and losses[1] < 0.8 * losses[0]
    assert (tmp_path / "qs" / "curves.png").is_file()
