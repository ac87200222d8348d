"""Checkpoint files: atomic writes, and loading any CSNLN checkpoint into a model.

Every file is loaded with `torch.load(weights_only=True)`: tensors and plain Python values
only, so a crafted pickle cannot run code. Three kinds load: this project's training checkpoints (a dict with "model" and
"config"), model-only state dicts in the original layout (what training exports
and what the paper released), and such state dicts wrapped as {"state_dict": ...}.
"""
import pathlib
import pickle
import re

import torch

from .config import UserError
from .files import atomic_write
from .model import CSNLN, RGB_MEAN

TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "iteration", "best_psnr", "history",
                 "config", "rng")
TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")  # the zip format of torch.save, the legacy pickle's protocol byte


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or not the model asked for."""


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically (see csnln.files.atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_file(path):
    """torch.load a checkpoint safely (weights_only) onto the CPU; CheckpointError naming `path`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_SAVE_MAGIC):
        raise CheckpointError(f"{path} is not a checkpoint: torch.save writes a zip archive (or, before "
                              "torch 1.6, a pickle), and this file is " + ("empty" if not head else "neither"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"refused to load {path}: it holds Python objects{what} beyond tensors and "
                              "plain values, and loading those could run code") from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a checkpoint?): {reason}") from None


def training_state(path):
    """The full state of a training checkpoint (checkpoints/epoch_*.pt) for resuming."""
    data = load_file(path)
    if not isinstance(data, dict) or any(k not in data for k in TRAINING_KEYS):
        raise CheckpointError(f"{path} is not a training checkpoint (resume from save/checkpoints/epoch_*.pt; "
                              "model_latest.pt and model_best.pt hold the weights only)")
    return data


def read_checkpoint(path):
    """-> (state_dict in the original layout, the training config or None)."""
    data = load_file(path)
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        return data["model"], data.get("config")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        return data["state_dict"], None
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data, None
    raise CheckpointError(f"{path} holds neither a CSNLN state dict nor a training checkpoint")


def infer_model_config(state_dict):
    """Read scale, n_feats, depth, n_colors and rgb_range off an original-layout state dict."""
    try:
        head = state_dict["head.0.0.weight"]
        tail = state_dict["tail.0.weight"]
        upsample = state_dict["SEM.multi_source_projection.upsample.0.weight"]
        bias = state_dict["add_mean.bias"]
    except KeyError as e:
        raise CheckpointError(f"not a CSNLN state dict: it has no {e.args[0]!r}") from e
    n_feats, n_colors = head.shape[0], head.shape[1]
    if "SEM.multi_source_projection_2.upsample.0.weight" in state_dict:
        scale = 4
    else:
        scale = {6: 2, 9: 3}.get(upsample.shape[-1])
        if scale is None:
            raise CheckpointError(f"not a CSNLN state dict: upsample kernel {tuple(upsample.shape)}")
    # MeanShift bias = rgb_range * mean: about 0.45 when rgb_range is 1, about 114 when 255
    rgb_range = round(float(bias[0]) / RGB_MEAN[0])
    return {"scale": scale, "n_feats": n_feats, "depth": tail.shape[1] // n_feats,
            "n_colors": n_colors, "rgb_range": rgb_range}


def load_model(path, expect=None, **model_kwargs):
    """Build a CSNLN from the checkpoint at `path` and load its weights strictly.

    `expect` maps model keys (scale, depth, ...) to the values the caller needs; a
    mismatch raises CheckpointError listing every difference. -> (model, model config, the
    training config of a training checkpoint or None).
    """
    state_dict, training_config = read_checkpoint(path)
    found = infer_model_config(state_dict)
    differences = [f"{k}: checkpoint has {found[k]}, asked for {v}"
                   for k, v in (expect or {}).items() if k in found and v is not None and found[k] != v]
    if differences:
        raise CheckpointError(f"{path} does not match: " + "; ".join(differences))
    model = CSNLN(**found, **model_kwargs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return model, found, training_config
