"""What produced a result: the code's git revision, the library versions, the options."""
import datetime
import hashlib
import importlib.metadata
import pathlib
import platform
import subprocess

import numpy as np
import torch

from .shipped import shipped_checkpoint

CODE_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git(folder, *args):
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_revision(folder=CODE_ROOT):
    """The git commit of the code in `folder`, "+ uncommitted changes" when tracked files differ
    from it, or a sentence saying there is none (an installed copy, or git missing)."""
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if not commit:
        return f"none: {folder} is not a git checkout (or git is not installed)"
    changed = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return commit + (" + uncommitted changes" if changed else "")


def versions():
    """Python and the libraries; torch's own version string, which names its build (+cpu, +cu130)."""
    def installed(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "csnln": installed("csnln"), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "triton": installed("triton"), "numpy": np.__version__,
            "imageio": installed("imageio")}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(config, scale, device, options):
    """eval.py's record of a result: method, network file (--ckpt, --onnx or the shipped model; path,
    SHA-256), the inference `options` (chop, self_ensemble, precision, channels_last as run), device,
    data, date, code revision and versions."""
    network = config["ckpt"] or config["onnx"] or (shipped_checkpoint(scale) if config["model"] == "csnln" else "")
    ckpt = pathlib.Path(network).resolve() if network else None
    return {"model": config["model"], "checkpoint": str(ckpt) if ckpt else None,
            "checkpoint_sha256": sha256(ckpt) if ckpt else None, "scale": scale, **options,
            "metric": config["metric"], "compile": config["compile"],
            "attention_backend": config["attention_backend"], "device": str(device),
            "data_path": str(pathlib.Path(config["data_path"]).resolve()), "data_range": config["data_range"],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code_revision": code_revision(), "versions": versions()}
