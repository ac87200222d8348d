"""Training on a cluster, for real on the CPU: torchrun agents of two "nodes" on loopback (c10d
rendezvous, gloo), a worker killed with SIGKILL and restarted by torchrun, checkpoints inside an
epoch, Ctrl-C under torchrun."""
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from csnln.training import _free_port, run
from tests.test_training import DATA, ROOT, TINY, records, tiny_config

TORCHRUN = str(pathlib.Path(sys.executable).with_name("torchrun"))
# the workers import this checkout; a restart gets a store of its own (see README, Multi-node)
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
QUICKSTART = ["--config", "configs/quickstart.yaml", "--data_path", str(DATA), "--epochs", "1", "--test_every", "3",
              "--data_test", "", "--n_threads", "0", "--print_every", "1"]


def torchrun(launcher, argv, env=ENV, **popen):
    """A torchrun agent running train.py, its output captured."""
    return subprocess.Popen([TORCHRUN, *launcher, "train.py", *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(*agents, timeout=240):
    """Wait for the agents -> [(exit status, stdout, stderr)]."""
    outputs = [a.communicate(timeout=timeout) for a in agents]
    return [(a.returncode, *output) for a, output in zip(agents, outputs)]


def two_nodes(argv_a, argv_b):
    """Two agents of one process each, as two machines meeting at a c10d rendezvous on loopback."""
    launcher = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                "--rdzv_endpoint", f"127.0.0.1:{_free_port()}", "--rdzv_id", "two-nodes"]
    return finish(torchrun(launcher, argv_a), torchrun(launcher, argv_b))


def weights(save):
    return torch.load(save / "model_latest.pt", weights_only=True)


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def step_losses(save):
    """iteration -> training loss, checking that no iteration is logged twice."""
    steps = [(r["iteration"], r["train_loss"]) for r in records(save) if "train_loss" in r]
    assert len({i for i, _ in steps}) == len(steps), steps
    return dict(steps)


def test_a_checkpoint_inside_an_epoch_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    run(tiny_config(straight, "--epochs", "2", "--test_every", "6", "--checkpoint_every", "4",
                    "--keep_checkpoints", "9"))
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == [
        "epoch_0000_iter_00000004.pt", "epoch_0001.pt", "epoch_0001_iter_00000008.pt", "epoch_0002.pt"]
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "checkpoints" / "epoch_0000_iter_00000004.pt", resumed / "checkpoints")
    run(tiny_config(resumed, "--epochs", "2", "--test_every", "6", "--checkpoint_every", "4",
                    "--keep_checkpoints", "2", "--resume", "auto"))
    assert_same_weights(straight, resumed)
    assert step_losses(resumed) == {i: v for i, v in step_losses(straight).items() if i > 4}
    # the first epoch's mean loss counts the steps taken before the checkpoint
    assert [r["loss"] for r in records(resumed) if "loss" in r] == [r["loss"] for r in records(straight) if "loss" in r]
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["epoch_0001_iter_00000008.pt",
                                                                          "epoch_0002.pt"]


def test_two_nodes_train_as_one_node_of_two_processes(tmp_path):
    (status_a, out_a, err_a), (status_b, out_b, err_b) = two_nodes(
        QUICKSTART + ["--save", str(tmp_path / "nodes")], QUICKSTART + ["--save", str(tmp_path / "nodes")])
    assert status_a == status_b == 0, (err_a + err_b)[-3000:]
    assert (out_a + out_b).count("2 process(es) on cpu") == 1   # rank 0 alone prints, and writes
    (status, _, err), = finish(torchrun(["--standalone", "--nproc_per_node", "2"],
                                        QUICKSTART + ["--save", str(tmp_path / "node")]))
    assert status == 0, err[-3000:]
    assert_same_weights(tmp_path / "nodes", tmp_path / "node")
    assert step_losses(tmp_path / "nodes") == step_losses(tmp_path / "node") and len(step_losses(tmp_path / "node")) == 3
    assert [p.name for p in (tmp_path / "nodes" / "checkpoints").iterdir()] == ["epoch_0001.pt"]


def test_a_node_that_sees_another_save_folder_stops_with_one_line(tmp_path):
    run(tiny_config(tmp_path / "shared", "--epochs", "1"))   # a checkpoint the other node cannot see
    argv = [*TINY, "--epochs", "2", "--resume", "auto", "--save"]
    results = two_nodes(argv + [str(tmp_path / "shared")], argv + [str(tmp_path / "local")])
    for status, _, err in results:
        errors = [line for line in err.splitlines() if line.startswith("train.py: error: ")]
        assert status != 0 and len(errors) == 1, err[-3000:]
        assert errors[0].endswith("`save` must be on a filesystem all nodes share")
        assert "resumes epoch_0001.pt" in errors[0] and "starts fresh" in errors[0]
    assert [p.name for p in (tmp_path / "shared" / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    assert not (tmp_path / "local" / "checkpoints").exists()


def worker(agent, rank):
    """The process id of the agent's worker of this rank."""
    children = [int(pid) for task in pathlib.Path(f"/proc/{agent.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    for pid in children:
        if f"RANK={rank}".encode() in pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no worker of rank {rank} among {children}")


def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_never_killed(tmp_path):
    argv = [*TINY, "--epochs", "2", "--test_every", "8", "--checkpoint_every", "3", "--overwrite"]
    launcher = ["--standalone", "--nproc_per_node", "2", "--max-restarts", "1", "--monitor-interval", "0.1"]
    killed = torchrun(launcher, argv + ["--save", str(tmp_path / "killed")])
    first = tmp_path / "killed" / "checkpoints" / "epoch_0000_iter_00000003.pt"
    while not first.exists() and killed.poll() is None:
        time.sleep(0.01)
    os.kill(worker(killed, 1), signal.SIGKILL)
    kill_time = time.time()
    (status, out, err), = finish(killed)
    assert status == 0, err[-3000:]
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in err
    log = records(tmp_path / "killed")
    restarts = [r for r in log if "restart" in r]
    assert len(restarts) == 1 and restarts[0]["restart"] == 1 and out.count("torchrun restart 1") == 1
    resumed_from = restarts[0]["iteration"]   # the newest checkpoint: every 3 iterations and at each epoch's end
    assert resumed_from % 3 == 0 or resumed_from % 8 == 0
    assert restarts[0]["checkpoint"] == (f"epoch_{resumed_from // 8:04d}"
                                         + (f"_iter_{resumed_from:08d}.pt" if resumed_from % 8 else ".pt"))
    after = next(r for r in log[log.index(restarts[0]):] if "train_loss" in r)
    assert after["iteration"] == resumed_from + 1
    print(f"restart: {after['time'] - kill_time:.1f} s from the kill to the first step after resuming")

    shared_store = {k: v for k, v in ENV.items() if k != "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"}
    (status, _, err), = finish(torchrun(launcher, argv + ["--save", str(tmp_path / "straight")], env=shared_store))
    assert status == 0, err[-3000:]
    assert err.count("start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1") == 1   # warned, never restarted
    assert_same_weights(tmp_path / "killed", tmp_path / "straight")
    assert step_losses(tmp_path / "killed") == step_losses(tmp_path / "straight")
    assert sorted(step_losses(tmp_path / "killed")) == list(range(1, 17))


def test_ctrl_c_under_torchrun_names_the_torchrun_command(tmp_path):
    argv = [*TINY, "--save", str(tmp_path / "run"), "--epochs", "1000", "--overwrite"]
    launcher = ["--standalone", "--nproc_per_node", "2"]
    agent = torchrun(launcher, argv, start_new_session=True)
    assert agent.stdout.readline().startswith("CSNLN x2")
    time.sleep(0.5)
    os.killpg(agent.pid, signal.SIGINT)   # what Ctrl-C in its terminal does
    (status, _, err), = finish(agent, timeout=60)
    hints = [line for line in err.splitlines() if line.startswith("train.py: interrupted")]
    assert hints == ["train.py: interrupted; continue with: torchrun " + shlex.join(launcher) + " train.py "
                     + shlex.join(argv[:-1]) + " --resume auto"], err[-3000:]
    assert status != 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_more_gpus_than_the_machine_has_is_one_error(tmp_path):
    asked = torch.cuda.device_count() + 1
    result = subprocess.run([sys.executable, "train.py", *TINY, "--device", "cuda", "--gpus", str(asked),
                             "--save", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"train.py: error: --gpus {asked} needs {asked} GPUs, and this machine has "
                                    f"{asked - 1}")
