"""The README's shell commands run as written: those that need neither the paper's data, a
full-size checkpoint nor a GPU run in README order in a scratch folder, where `tests/data` holds
small crops of the bundled images; the quick start trains 4 iterations instead of 200."""
import os
import pathlib
import re
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np

from csnln.imresize import imresize

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
CI_COMMAND = "python -m pytest -q tests bench"
INSTALL = "pip install -e '.[test]' && "   # the quick start's set-up, left out here: it changes the environment (.ci/run installs)
NOT_RUN = {  # command -> why this test does not run it
    CI_COMMAND: "the test suite itself",
    "python -m pytest bench": "part of the test suite",
    "python eval.py --ckpt model_x2.pt --data_test Set5+Set14+B100+Urban100 --out results/x2": "the paper's data",
    "python eval.py --ckpt model_x2.pt --data_test DIV2K --data_range 1-800/801-900": "the paper's data",
    "python train.py --scale 2": "the paper's data",
    "python train.py --scale 2 --gpus 8": "the paper's data and GPUs",
    "torchrun --nproc_per_node 8 --nnodes 2 ... train.py": "several machines",
    ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint node1:29500 --rdzv_id csnln_x2 "
     "--max-restarts 3 train.py --scale 2 --save /shared/csnln_x2 --resume auto --checkpoint_every 100"):
        "several machines (tests/test_cluster.py runs two on loopback)",
    'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)': "a SLURM job",
    ('TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint "$head:29500" '
     '--rdzv_id "$SLURM_JOB_ID" --max-restarts 3 train.py --save /shared/csnln_x2 --resume auto '
     '--checkpoint_every 100 --max_minutes 1410'): "a SLURM job",
    "bash bench/gpu_check.sh OUT_DIR [STEP ...]": "a GPU",
    "python bench/stage_gpu_data.py DATA": "a data folder of the benchmark sets (a GPU call's preparation)",
    "python bench/harness_check.py OUT_DIR": "minutes of training runs (run by bench/gpu_check.sh)",
    "python bench/compile_check.py": "minutes of compiling (run by .ci/run)",
}
FAST = {"python train.py --config configs/quickstart.yaml": " --test_every 1"}  # 4 iterations, not 200


def readme_commands():
    """The lines of the README's bash blocks, without comments, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for block in blocks for line in block.splitlines()]
    return [line.removeprefix(INSTALL) for line in lines if line and not line.startswith("#")]


def test_the_quick_start_is_two_commands_that_install_first():
    block = re.search(r"## Quick start\n.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    commands = block.strip().splitlines()
    assert len(commands) == 2 and all(c.startswith(INSTALL) for c in commands)
    assert commands[1].removeprefix(INSTALL) == CI_COMMAND


def small_data(root):
    """tests/data with two 48x48 crops per benchmark set (LR made for x2 and x3) and the DIV2K image."""
    (root / "tests" / "data").mkdir(parents=True)
    (root / "tests" / "data" / "DIV2K").symlink_to(DATA / "DIV2K", target_is_directory=True)
    for name in ("Set5", "Set14"):
        for path in sorted((DATA / "benchmark" / name / "HR").glob("*.png"))[:2]:
            hr = imageio.imread(path)[:48, :48]
            base = root / "tests" / "data" / "benchmark" / name
            (base / "HR").mkdir(parents=True, exist_ok=True)
            imageio.imwrite(base / "HR" / path.name, hr)
            for scale in (2, 3):
                (base / "LR_bicubic" / f"X{scale}").mkdir(parents=True, exist_ok=True)
                imageio.imwrite(base / "LR_bicubic" / f"X{scale}" / f"{path.stem}x{scale}.png", imresize(hr, 1 / scale))


def test_ci_runs_the_readme_test_command():
    assert CI_COMMAND in readme_commands()
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == CI_COMMAND


def test_every_command_left_out_is_still_in_the_readme():
    assert set(NOT_RUN) | set(FAST) <= set(readme_commands())


def test_the_readme_commands_run_as_written(tmp_path):
    for name in ("train.py", "eval.py", "configs", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    small_data(tmp_path)
    (tmp_path / "photos").mkdir()
    imageio.imwrite(tmp_path / "photos" / "cat.png", np.random.default_rng(0).integers(0, 256, (20, 16, 3), np.uint8))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    ran = []
    for command in readme_commands():
        if command in NOT_RUN:
            continue
        result = subprocess.run(["bash", "-c", command + FAST.get(command, "")], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
        ran.append(command)
    assert len(ran) >= 10
    assert (tmp_path / "photos_x2" / "cat_x2.png").is_file()
    assert (tmp_path / "results" / "quickstart" / "figures" / "Set14_x2.png").is_file()
