"""The GPU-check tools, exercised on the CPU: the error table, the candidate sweep, the
benchmark summary, the harness runs, the per-kernel profile and gpu_check.sh's compact result."""
import json
import os
import pathlib
import subprocess
import sys
import tarfile

from bench import candidates, error_table, harness_check, kernel_profile, predictions, summarize
from csnln.checkpoint import load_model

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_error_table_runs_both_kernels_and_passes(tmp_path):
    path = tmp_path / "errors.json"
    assert error_table.main(["--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert {r["op"] for r in rows} == {"in_scale", "cross_scale"}
    assert {r["tensor"] for r in rows} == {"out", "dq", "dk", "dv"}
    assert {r["dtype"] for r in rows} == {"float32", "float16", "bfloat16"}
    sane = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
    assert all(r["ok"] and 0 < r["kernel"] < sane[r["dtype"]] for r in rows)


def test_summary_reports_speedups_within_a_group():
    report = {"datetime": "2026-11-27T00:00:00", "benchmarks": [
        {"group": "g", "params": {"backend": "triton"}, "stats": {"median": 0.001},
         "extra_info": {"tflops": 400.0, "tbps": 1.5, "peak_extra_mb": 12.0, "launches": 14, "device": "GPU",
                        "torch": "t", "triton": "x", "dtype": "float16"}},
        {"group": "g", "params": {"backend": "torch"}, "stats": {"median": 0.004},
         "extra_info": {"tflops": 100.0, "peak_extra_mb": 900.0}},
    ]}
    table = summarize.format_table(report)
    assert "| g | triton | 1.000 | 400 | 1.5 | 12 | 14 | 4.00x vs torch | - | - |" in table
    assert "| g | torch | 4.000 | 100 | - | 900 | - | 0.25x vs triton | - | - |" in table


def test_summary_sets_each_triton_row_beside_its_prediction():
    predicted = predictions.operator_ms("cross-scale", "train-x2", True)
    assert 0.1 < predicted < 5   # a forward+backward at the training shape: sub-millisecond to milliseconds
    report = {"datetime": "2026-12-06T00:00:00", "benchmarks": [
        {"group": "cross-scale train-x2 fwd+bwd", "params": {"backend": backend}, "stats": {"median": median},
         "extra_info": {}} for backend, median in (("triton", 2 * predicted / 1e3), ("batched", 0.005))]}
    table = summarize.format_table(report)
    assert f"| {predicted:.3f} | 2.00 |" in table.splitlines()[4]
    assert table.splitlines()[5].endswith("| - | - |")
    assert summarize.predicted_ms("in-scale cpu-small-s2 fwd", "triton") is None   # no model for CPU shapes


def test_every_autotune_candidate_runs_and_passes(tmp_path):
    path = tmp_path / "candidates.json"
    assert candidates.main(["--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    for module_name, module in candidates.MODULES.items():
        for name, (configs, _) in module._CONFIGS.items():
            ran = [r for r in rows if r["op"] == module_name and r["kernel"] == name]
            assert len(ran) == 2 * len(configs) * len(candidates.SHAPES[module_name]), (module_name, name)
    assert all(r["ok"] for r in rows)


def test_harness_check_trains_evaluates_and_tabulates(tmp_path):
    assert harness_check.main([str(tmp_path), "--runs", "x2", "x3", "eval Set5 chop"]) == 0
    lines = (tmp_path / "harness.md").read_text().splitlines()
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[4:])}
    assert set(rows) == {"x2", "x3", "eval Set5 chop"}
    for name in ("x2", "x3"):
        assert rows[name][1] == "ok" and float(rows[name][2]) > 0 and float(rows[name][3]) > 0
    assert rows["eval Set5 chop"][1].startswith("ok, PSNR") and rows["eval Set5 chop"][3].endswith(" / image")
    assert json.loads((tmp_path / "x3" / "log.jsonl").read_text().splitlines()[-1])["iteration"] == 6
    assert harness_check.main([str(tmp_path), "--runs", "x2"]) == 0  # a rerun into the same folder


def test_harness_check_names_the_runs_it_had_no_time_for(tmp_path):
    assert harness_check.main([str(tmp_path), "--runs", "x2", "eval Set5 whole", "--seconds", "0"]) == 0
    table = (tmp_path / "harness.md").read_text()
    assert "| x2 | not run: out of time |" in table and "| eval Set5 whole | not run: out of time |" in table


def test_kernel_profile_tabulates_each_case(tmp_path):
    path = tmp_path / "profile.md"
    assert kernel_profile.main(["--top", "5", "--cases", "train x2", "train x4", "--out", str(path)]) == 0
    text = path.read_text()
    for case in ("## train x2", "## train x4"):
        section = text.split(case)[1].split("## ")[0]
        assert "per step" in section and len([line for line in section.splitlines() if line.startswith("| ")]) == 1 + 5


def test_gpu_check_leaves_a_few_small_files(tmp_path):
    """Two steps that run on the CPU in three minutes, the harness (its 90 s cap) before the profile:
    OUT holds at most 8 files, none over 16 MiB (summary, profile, one archive of logs without
    checkpoints), and the temporary folder with the run folders is gone."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, GPU_CHECK_SECONDS="200", TMPDIR=str(tmp))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run(["bash", "bench/gpu_check.sh", str(out), "profile", "harness"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]   # the harness runs it had no time for do not fail it
    files = list(out.rglob("*"))
    assert sorted(f.name for f in files) == ["logs.tar.gz", "profile.md", "summary.md"]
    assert all(f.is_file() and f.stat().st_size <= 16 * 2**20 for f in files)
    summary = (out / "summary.md").read_text()
    assert "== profile: exit 0" in summary and "== harness: exit 0" in summary and "| x2 | ok |" in summary
    assert "| eval LR 32 whole | ok, PSNR" in summary   # whole-image inference, at a CPU size
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "./harness/x2/log.jsonl" in names and "./profile.log" in names
    assert not [n for n in names if n.endswith(".pt") or "/data/" in n]
    assert not list(tmp.glob("gpu_check.*"))   # (torch.compile keeps its own cache in TMPDIR)


def test_gpu_check_reports_a_step_that_ran_out_of_time_and_passes(tmp_path):
    """`pytest bench` stopped by the budget: summary.md says so (no JSON, the log's end) and the
    check still exits 0. A plugin stalls pytest's session start, so that the step cannot finish
    in its 23 s however fast the machine."""
    (tmp_path / "stall_session.py").write_text("import time\n\ndef pytest_sessionstart(session):\n    time.sleep(300)\n")
    env = dict(os.environ, GPU_CHECK_SECONDS="35", PYTEST_ADDOPTS="-p stall_session",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path / "out"), "bench"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "== bench: timed out after" in summary and "no results: pytest bench did not finish" in summary
    assert "Traceback" not in summary


def test_gpu_check_demo_step_returns_the_weights_and_their_scores(tmp_path):
    """The demo step on the CPU (a tiny stand-in model): OUT gets the weights, loadable strictly
    and under the 16 MiB a device call returns, and demo.json with eval.py's Set5 and Set14 x2
    scores beside bicubic's; the step's table is in summary.md."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, GPU_CHECK_SECONDS="600", TMPDIR=str(tmp))
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run(["bash", "bench/gpu_check.sh", str(out), "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:]
    files = sorted(f.name for f in out.rglob("*"))
    assert files == ["csnln_x2_demo.pt", "demo.json", "logs.tar.gz", "summary.md"]
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    _, found, _ = load_model(out / "csnln_x2_demo.pt")
    assert found["scale"] == 2 and found["n_feats"] == 8
    demo = json.loads((out / "demo.json").read_text())
    assert demo["iterations"] == 6
    for model in ("csnln", "bicubic"):
        assert set(demo["scores"][model]) == {"Set5", "Set14"}
    assert 33 < demo["scores"]["bicubic"]["Set5"]["psnr"] < 34   # bundled Set5 x2: bicubic 33.64 dB
    summary = (out / "summary.md").read_text()
    assert "== demo: exit 0" in summary and "| bicubic | Set5 |" in summary


def test_launch_overhead_times_both_paths_and_counts_launches():
    """In its own process (kernels compiled for sm_90 by a stand-in driver, not interpreted)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "bench/launch_overhead.py", "--calls", "3", "--count"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "launch" in line][:3]
    assert len(rows) == 3 and all(float(cell) > 0 for row in rows for cell in row.strip("| ").split(" | ")[1:3])
    assert "| in-scale 16 x 48x48 | 3 |" in result.stdout          # forward, delta, fused backward
    assert "| cross-scale s2 16 x 48x48 |" in result.stdout
