"""The training harness on CPU: gloo DDP, resume, atomic checkpoints, errors, quick start."""
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import imageio.v2 as imageio
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import eval as eval_cli
import train as train_cli
from csnln import CSNLN
from csnln.checkpoint import CheckpointError, atomic_save, load_model
from csnln.config import ConfigError, load_config
from csnln.data import DataLayoutError, training_set
from csnln.images import ImageError
from csnln.imresize import imresize
from csnln.training import Trainer, match_grad_strides, run

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY = ["--data_path", str(DATA), "--data_range", "4-4/4-4", "--data_test", "", "--n_feats", "8",
        "--depth", "1", "--patch_size", "16", "--batch_size", "4", "--test_every", "3", "--n_threads", "0",
        "--lr", "5e-4", "--device", "cpu", "--print_every", "1"]


def tiny_config(save, *more):
    return load_config(overrides=TINY + ["--save", str(save), *more])


def records(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def epochs_logged(folder):
    return [r["epoch"] for r in records(folder) if "loss" in r]


def losses(folder):
    """The mean loss of each epoch record."""
    return [r["loss"] for r in records(folder) if "loss" in r]


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


def test_channels_last_trains_as_contiguous_and_saves_contiguous_weights(tmp_path):
    for name, flag in (("nchw", "false"), ("nhwc", "true")):
        run(tiny_config(tmp_path / name, "--epochs", "2", "--channels_last", flag))
    assert losses(tmp_path / "nhwc") == pytest.approx(losses(tmp_path / "nchw"), rel=1e-5)
    assert len(losses(tmp_path / "nhwc")) == 2
    weights = torch.load(tmp_path / "nhwc" / "model_latest.pt")
    assert all(w.is_contiguous() for w in weights.values())  # the original layout, loadable anywhere
    model, _, _ = load_model(tmp_path / "nchw" / "model_latest.pt")
    assert weights.keys() == model.state_dict().keys()
    trainer = Trainer(tiny_config(tmp_path / "c", "--channels_last", "true"), torch.device("cpu"))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in trainer.model.parameters() if p.dim() == 4)


def test_the_compiled_step_trains_as_eager(tmp_path):
    """cuda_graphs compiles the step with inductor (mode reduce-overhead). On the CPU inductor
    records no graph, so this checks the compiled step and the loop around it; prepare() refuses
    the key without CUDA, the Trainer here is built directly. About 90 s of compilation when cold."""
    for name, extra in (("eager", []), ("compiled", ["--cuda_graphs", "true"])):
        trainer = Trainer(tiny_config(tmp_path / name, "--epochs", "1", *extra), torch.device("cpu"))
        assert (trainer.step_model is trainer.ddp) == (name == "eager")  # the compiled run steps a compiled model
        trainer.fit()
    step_losses = {name: [r["train_loss"] for r in records(tmp_path / name) if "train_loss" in r]
                   for name in ("eager", "compiled")}
    assert len(step_losses["eager"]) == 3
    assert step_losses["compiled"] == pytest.approx(step_losses["eager"], rel=1e-5)


def test_resume_auto_reproduces_the_uninterrupted_losses(tmp_path):
    straight = tiny_config(tmp_path / "a", "--epochs", "3")
    run(straight)
    first = tiny_config(tmp_path / "b", "--epochs", "1")
    run(first)
    resumed = tiny_config(tmp_path / "b", "--epochs", "3", "--resume", "auto")
    run(resumed)
    assert len(losses(tmp_path / "a")) == 3
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    model, found, _ = load_model(tmp_path / "b" / "model_latest.pt")
    assert found["depth"] == 1 and found["n_feats"] == 8



def test_max_minutes_stops_inside_an_epoch_and_resume_is_exact(tmp_path, capsys):
    straight = tiny_config(tmp_path / "a", "--epochs", "2")
    run(straight)
    run(tiny_config(tmp_path / "b", "--epochs", "2", "--max_minutes", "1e-6"))   # past it after one step
    assert "max_minutes: stopped after" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["epoch_0000_iter_00000001.pt"]
    assert records(tmp_path / "b")[-1]["epoch"] == pytest.approx(1 / 3)
    run(tiny_config(tmp_path / "b", "--epochs", "2", "--resume", "auto", "--max_minutes", "0"))
    a, b = (torch.load(tmp_path / run_dir / "model_latest.pt") for run_dir in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["iteration"] for r in records(tmp_path / "b") if "train_loss" in r]
    assert steps == list(range(1, 7))


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


def test_ctrl_c_while_saving_waits_for_the_checkpoint(tmp_path):
    """A KeyboardInterrupt inside torch.save's C++-called writer would abort the process."""
    class Pickled:
        def __reduce__(self):
            os.kill(os.getpid(), signal.SIGINT)  # pressed while torch.save is writing
            return (dict, ({"tag": "new"},))

    path = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"model": {"w": torch.arange(5.0)}, "extra": Pickled()}, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded["extra"] == {"tag": "new"} and loaded["model"]["w"].tolist() == [0, 1, 2, 3, 4]
    assert list(tmp_path.iterdir()) == [path]


def test_bad_data_path_shows_the_layout(tmp_path):
    with pytest.raises(DataLayoutError, match="expected data_path/DIV2K/DIV2K_train_HR/0001.png"):
        training_set(load_config(overrides=["--data_path", str(tmp_path)]))


def test_unreadable_image_is_named(tmp_path):
    hr = tmp_path / "DIV2K" / "DIV2K_train_HR"
    hr.mkdir(parents=True)
    (hr / "0001.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="0001.png"):
        training_set(load_config(overrides=["--data_path", str(tmp_path), "--data_range", "1-1/1-1"]))


def test_quickstart_config_reduces_the_training_loss(tmp_path):
    config = load_config(ROOT / "configs" / "quickstart.yaml",
                         ["--data_path", str(DATA), "--epochs", "2", "--test_every", "15", "--data_test", "",
                          "--n_threads", "0", "--save", str(tmp_path / "qs")])
    run(config)
    epochs = [r for r in records(tmp_path / "qs") if "loss" in r]
    assert len(epochs) == 2 and epochs[1]["loss"] < 0.8 * epochs[0]["loss"]
    assert all(r["step_ms"] > 0 and r["peak_memory_mb"] > 0 for r in epochs)  # the speed of each epoch
    assert (tmp_path / "qs" / "curves.png").is_file()


# ----------------------------------------------------------------------------- a finished run

def tiny_benchmark(root):
    """data_path with the bundled DIV2K image and a one-image test set "Tiny" (48x48 HR, a Set5 crop)."""
    root.mkdir()
    (root / "DIV2K").symlink_to(DATA / "DIV2K", target_is_directory=True)
    hr = imageio.imread(DATA / "benchmark" / "Set5" / "HR" / "baby.png")[200:248, 200:248]
    for folder, name, img in (("HR", "crop.png", hr), ("LR_bicubic/X2", "cropx2.png", imresize(hr, 0.5))):
        (root / "benchmark" / "Tiny" / folder).mkdir(parents=True)
        imageio.imwrite(root / "benchmark" / "Tiny" / folder / name, img)
    return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-epoch run validated on "Tiny", written under umask 027 -> (save folder, its config)."""
    base = tmp_path_factory.mktemp("run")
    data = tiny_benchmark(base / "data")
    config = tiny_config(base / "save", "--epochs", "2", "--data_path", str(data), "--data_test", "Tiny")
    old = os.umask(0o027)
    try:
        run(config)
    finally:
        os.umask(old)
    return base / "save", config


def copy_run(finished_run, tmp_path):
    save, config = finished_run
    shutil.copytree(save, tmp_path / "save")
    return tmp_path / "save", dict(config, save=str(tmp_path / "save"))


def test_every_file_the_trainer_writes_loads_safely_and_honours_the_umask(finished_run):
    save, _ = finished_run
    written = [p for p in save.rglob("*") if p.is_file()]
    names = {p.relative_to(save).as_posix() for p in written}
    assert {"checkpoints/epoch_0001.pt", "checkpoints/epoch_0002.pt", "model_latest.pt", "model_best.pt",
            "log.jsonl", "curves.png"} <= names
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}
    for p in written:
        if p.suffix == ".pt":
            torch.load(p, weights_only=True)
            model, found, _ = load_model(p)
            assert (found["n_feats"], found["depth"], found["scale"]) == (8, 1, 2)


def test_validation_psnr_equals_eval_py(finished_run, tmp_path):
    save, config = finished_run
    validated = [r["psnr"]["Tiny"] for r in records(save) if "loss" in r]
    assert len(validated) == 2
    ckpt = save / "checkpoints" / "epoch_0002.pt"
    assert eval_cli.main(["--ckpt", str(ckpt), "--data_path", config["data_path"], "--data_test", "Tiny",
                          "--device", "cpu", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["Tiny"]["x2"]
    assert result["psnr"] == validated[1]
    provenance = result["provenance"]
    assert provenance["checkpoint"] == str(ckpt.resolve())
    assert provenance["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (provenance["chop"], provenance["self_ensemble"], provenance["metric"], provenance["precision"],
            provenance["device"]) == (False, False, "matlab", "fp32", "cpu")


def test_tensorboard_scalars_match_the_log(finished_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    save, _ = finished_run
    events = event_accumulator.EventAccumulator(str(save / "tensorboard"))
    events.Reload()

    def matches(tag, logged, key):
        found = events.Scalars(tag)
        assert [e.step for e in found] == [r["iteration"] for r in logged], tag
        assert [e.value for e in found] == pytest.approx([key(r) for r in logged], rel=1e-6), tag

    epochs = [r for r in records(save) if "loss" in r]
    assert len(epochs) == 2
    matches("psnr/Tiny", epochs, lambda r: r["psnr"]["Tiny"])
    for name in ("loss", "lr", "step_ms", "peak_memory_mb"):
        matches(f"epoch/{name}", epochs, lambda r: r[name])
    matches("train/loss", [r for r in records(save) if "train_loss" in r], lambda r: r["train_loss"])
    assert "train/lr" in events.Tags()["scalars"]


def test_without_tensorboard_training_writes_no_scalars(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    run(tiny_config(tmp_path / "run", "--epochs", "1"))
    assert epochs_logged(tmp_path / "run") == [1] and not (tmp_path / "run" / "tensorboard").exists()


def test_eval_py_takes_the_validation_options_of_a_training_checkpoint(finished_run, tmp_path, capsys):
    save, config = finished_run
    state = torch.load(save / "checkpoints" / "epoch_0002.pt", weights_only=True)
    stored = tmp_path / "stored.pt"  # as if the run had validated with these
    torch.save(dict(state, config=dict(state["config"], chop=True, self_ensemble=True, precision="fp16")), stored)
    base = ["--data_path", config["data_path"], "--data_test", "Tiny", "--device", "cpu"]

    def psnr(ckpt, *argv):
        assert eval_cli.main(["--ckpt", str(ckpt), *base, *argv, "--out", str(tmp_path / "out")]) == 0
        return json.loads((tmp_path / "out" / "results.json").read_text())["Tiny"]["x2"]["psnr"]

    ensembled = psnr(stored)
    assert ("chop true (checkpoint), self_ensemble true (checkpoint), precision fp32 (the checkpoint's fp16 "
            "needs CUDA)") in capsys.readouterr().err
    assert psnr(save / "model_latest.pt", "--chop", "--self_ensemble") == ensembled  # the same weights
    assert "chop true (given), self_ensemble true (given), precision fp32 (default)" in capsys.readouterr().err
    plain = psnr(stored, "--self_ensemble", "false")
    assert "self_ensemble false (given)" in capsys.readouterr().err
    assert plain == records(save)[-1]["psnr"]["Tiny"] != ensembled


class Exploit:
    """Unpickling this creates the file `marker`: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(finished_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = torch.load(finished_run[0] / "checkpoints" / "epoch_0001.pt", weights_only=True)
    torch.save(dict(state, history=[Exploit(marker)]), evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        run(dict(finished_run[1], save=str(tmp_path / "new"), resume=str(evil)))
    assert eval_cli.main(["--ckpt", str(evil), "--data_path", str(DATA)]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_skips_a_truncated_checkpoint_and_drops_stale_log_records(finished_run, tmp_path, capsys):
    save, config = copy_run(finished_run, tmp_path)
    newest = save / "checkpoints" / "epoch_0002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    stale = save / "checkpoints" / ".epoch_0003.pt.x1y2.tmp"  # left by a save killed mid-write
    stale.write_bytes(b"partial")
    run(dict(config, epochs=3, resume="auto"))
    assert f"warning: cannot read checkpoint {newest} (truncated" in capsys.readouterr().err
    assert epochs_logged(save) == [1, 2, 3]
    assert losses(save)[:2] == losses(finished_run[0])
    assert not stale.exists()


def test_a_fresh_run_refuses_a_folder_holding_a_run(finished_run, tmp_path):
    save, config = copy_run(finished_run, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run.*--resume auto.*--overwrite"):
        run(dict(config, epochs=1))
    run(dict(config, epochs=1, overwrite=True))
    assert epochs_logged(save) == [1]
    assert [p.name for p in (save / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    assert len(list((save / "tensorboard").glob("events.out.tfevents.*"))) == (save / "tensorboard").is_dir()


def test_resume_auto_takes_the_stored_options(finished_run, tmp_path, capsys):
    save, _ = copy_run(finished_run, tmp_path)
    assert train_cli.main(["--save", str(save), "--resume", "auto", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "changed: epochs 2 -> 3" in out and "n_feats" not in out
    assert epochs_logged(save) == [1, 2, 3]
    assert train_cli.main(["--save", str(save), "--resume", "auto", "--epochs", "3"]) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert epochs_logged(save) == [1, 2, 3]


# ----------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("argv,message", [
    (["--data_range", "4-4/x"], "'data_range' must look like 1-800/801-810"),
    (["--decay", "3-x"], "'decay' must be epochs"),
    (["--epochs", "0"], "'epochs' must be at least 1"),
    (["--epochs", "-2"], "'epochs' must be at least 1"),
    (["--test_every", "0"], "'test_every' must be at least 1"),
    (["--checkpoint_every", "-1"], "'checkpoint_every' must be 0 (at each epoch's end only) or more"),
    (["--lr", ""], "'lr' needs a value"),
    (["--epoch", "1"], "unknown config key 'epoch'; did you mean epochs"),
    (["--ckpt", "x.pt"], "--ckpt is an option of eval.py and csnln.export; train.py does not use it"),
    (["--data_path", "{tmp}/nowhere"], "no DIV2K training images"),
    (["--data_test", "Set5+Nope"], "Nope: folder not found"),
    (["--patch_size", "2048"], "smaller than the LR patch 1024x1024"),
    (["--resume", "{tmp}/missing.pt"], "checkpoint not found"),
    (["--cuda_graphs", "true"], "cuda_graphs needs a CUDA device, not cpu"),
    (["--save", "{tmp}/file"], "is a file, not a folder"),
    (["--config", "{tmp}/bad.yaml"], "bad.yaml line 2: not valid YAML"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "bad.yaml").write_text("epochs: 2\nlr: 1: 2\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    save = [] if "--save" in argv else ["--save", str(tmp_path / "run")]
    assert train_cli.main(TINY + save + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_help_lists_the_options_of_each_tool(capsys):
    assert train_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--lr 0.0001: Adam learning rate" in out and "--resume '':" in out and "--ckpt" not in out
    assert eval_cli.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert "--ckpt '': checkpoint to evaluate" in out and "--chop false:" in out and "--lr" not in out


def test_ctrl_c_names_the_command_that_continues_the_run(tmp_path):
    argv = [*TINY, "--save", str(tmp_path / "run"), "--epochs", "1000", "--overwrite"]
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.stdout.readline().startswith("CSNLN x2")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    # its own options (--data_test '' quoted), without --overwrite, which would throw the run away
    assert err.splitlines()[-1] == ("train.py: interrupted; continue with: python train.py "
                                    + shlex.join(argv[:-1]) + " --resume auto")
    assert "--data_test '' --n_feats 8" in err


def test_the_continue_command_keeps_the_options_of_a_run_without_a_checkpoint(tmp_path, capsys):
    def hint(*argv):
        return train_cli.interrupted(load_config(overrides=list(argv)), list(argv)).partition("continue with: ")[2]

    argv = [*TINY, "--save", str(tmp_path / "run"), "--epochs", "1", "--overwrite", "false"]
    assert hint(*argv, "--resume=auto") == "python train.py " + shlex.join(argv[:-2]) + " --resume auto"
    # a run resumed from elsewhere keeps its checkpoint until it has written one of its own
    assert hint(*argv, "--resume", "x.pt").endswith("--epochs 1 --resume x.pt")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "epoch_0001.pt").write_bytes(b"")
    assert hint(*argv, "--resume", "x.pt").endswith("--epochs 1 --resume auto")
    (tmp_path / "run" / "checkpoints" / "epoch_0001.pt").unlink()
    (tmp_path / "run" / "log.jsonl").write_text('{"iteration": 1, "epoch": 0.5, "train_loss": 9.0}\n')
    continued = shlex.split(hint(*argv))[2:]
    assert train_cli.main(continued) == 0
    assert "no checkpoint" in capsys.readouterr().out
    assert epochs_logged(tmp_path / "run") == [1] and records(tmp_path / "run")[0]["train_loss"] != 9.0


def test_repeating_the_command_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    (save / "log.jsonl").write_text('{"iteration": 1, "epoch": 0.5, "train_loss": 9.0}\n')
    run(tiny_config(save, "--epochs", "1"))
    assert epochs_logged(save) == [1] and records(save)[0]["train_loss"] != 9.0


def test_an_error_in_local_processes_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train.py", *TINY, "--patch_size", "2048", "--gpus", "2",
                             "--save", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("train.py: error: ") and result.stderr.count("\n") == 1
    assert "smaller than the LR patch 1024x1024" in result.stderr


def test_local_cpu_processes_say_so_once_and_ddp_does_not_warn(tmp_path):
    result = subprocess.run([sys.executable, "train.py", *TINY, "--gpus", "2", "--epochs", "1",
                             "--save", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("--gpus 2 without CUDA: 2 CPU processes with gloo") == 1
    assert result.stdout.count("CSNLN x2") == 1 and result.stdout.count("epoch 1:") == 1
    assert "Warning" not in result.stderr and "strides" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradients_keep_their_parameters_strides(memory_format):
    """What DDP's bucket views need; the values are those without the hooks."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12).to(memory_format=memory_format)
    models = [CSNLN(scale=2, n_feats=8, depth=2, attention_backend="torch").to(memory_format=memory_format)
              for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    match_grad_strides(models[0])
    for model in models:
        model(x).mean().backward()
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        if p.grad is None:  # the last recurrence skips the LR state
            continue
        assert p.grad.stride() == p.stride(), name
        assert torch.equal(p.grad, q.grad), name
